/** What the edge knows of one backend: its last heartbeat, as the directory stores it. */

import type { JWK } from 'jose';
import type { Heartbeat } from '../../shared/heartbeat.ts';

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
}
