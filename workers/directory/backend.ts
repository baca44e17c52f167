/** What the edge knows of one backend: its last heartbeat, as the directory stores it. */

import type { JWK } from 'jose';
import type { Capacity, ExecutionProvider, HeartbeatModel } from '../../shared/heartbeat.ts';

export interface BackendEntry {
  id: string;
  provider: string;
  /** The provider's public key, to verify its attestations. */
  providerKey?: JWK;
  region: string;
  url: string;
  lat: number;
  lon: number;
  executionProvider: ExecutionProvider;
  ready: boolean;
  models: HeartbeatModel[];
  capacity: Capacity;
  /** ms since epoch of the last heartbeat. */
  lastSeen: number;
  /** ms since epoch after which the directory drops it. */
  expiresAt: number;
  /** Models it could load on request (warm placement). */
  available?: string[];
}

/** True when the backend is ready and has `model` (at `version`, when given) loaded and warm. */
export function servesWarm(b: BackendEntry, model: string, version?: string): boolean {
  return b.ready && b.models.some((m) => m.name === model && m.warm && (version === undefined || m.version === version));
}

