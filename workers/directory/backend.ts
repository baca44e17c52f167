/** What the edge knows of one backend: its last heartbeat, as the directory stores it. */

import type { JWK } from 'jose';
import type { Heartbeat } from '../../shared/heartbeat.ts';
import type { LocationVerdict } from '../geo/location.ts';

/** A heartbeat's body (docs/api.md section 3) under the backend's `id`, with who sent it and when. */
export interface BackendEntry extends Omit<Heartbeat, 'backendId'> {
  id: string;
  provider: string;
  /** The provider's public key, to verify its attestations. */
  providerKey?: JWK;
  /** ms since epoch of the last heartbeat. */
  lastSeen: number;
  /** ms since epoch after which the directory drops it. */
  expiresAt: number;
  /**
   * Proof of location: its claimed lat/lon against the round trips the edge
   * measured to it (geo/location.ts). The directory always sets it; absent
   * only in entries built elsewhere (tests), where it counts as unverified.
   */
  location?: LocationVerdict;
  /** The PoP that carried its last heartbeat (`request.cf.colo`): a second witness shown with the verdict, not used by it. */
  heartbeatColo?: string;
}
