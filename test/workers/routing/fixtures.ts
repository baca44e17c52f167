/** Fixtures for the routing strategy tests: directory entries, PoPs and a seeded random source. */

import { popLocation } from '../../../workers/geo/pops.ts';
import type { HeartbeatModel } from '../../../shared/heartbeat.ts';
import type { BackendEntry } from '../../../workers/directory/backend.ts';
import type { RttOrigin } from '../../../workers/routing/rtt.ts';

export function model(over: Partial<HeartbeatModel> = {}): HeartbeatModel {
  return { name: 'embed', version: '1', warm: true, maxBatchSize: 8, p50Ms: 20, ...over };
}

export function backend(id: string, region: string, over: Partial<BackendEntry> = {}): BackendEntry {
  return {
    id,
    provider: 'p',
    region,
    url: `http://127.0.0.1/${id}`,
    lat: 0,
    lon: 0,
    executionProvider: 'cuda',
    ready: true,
    models: [model()],
    capacity: { slots: 4, inFlight: 0, queued: 0 },
    lastSeen: 0,
    expiresAt: Infinity,
    ...over,
  };
}

/** A PoP by IATA code, with its code (which keys measured RTTs). */
export function pop(code: string): RttOrigin {
  const at = popLocation(code);
  if (!at) throw new Error(`no PoP ${code}`);
  return { code, ...at };
}

/** A small seeded PRNG (gpu-backend/src/demo-models/random.ts), so distribution tests are reproducible. */
export { seededUnit as seeded } from '../../../gpu-backend/src/demo-models/random.ts';

export const ids = (list: readonly { backend: { id: string } }[]) => list.map((c) => c.backend.id);
