/**
 * OpenAPI description of the status route (workers/routes/status.ts,
 * docs/api.md section 2.15): the JSON the status page polls, whose types
 * are workers/status/view.ts.
 */

import { EXECUTION_PROVIDERS } from '../../shared/heartbeat.ts';
import { BACKEND_STATES } from '../status/view.ts';
import { arr, ID, int, MS, nullable, num, obj, oneOfValues, ref, str, type Family } from './build.ts';

const count = int({ minimum: 0 });
const ms = nullable(num({ minimum: 0 }));
const capacity = obj({ slots: count, inFlight: count, queued: count });

export const status: Family = {
  tag: 'Status',
  paths: {
    '/v1/mesh/status': {
      get: {
        summary: "The mesh's status: regions, backends, recent traffic, settlement (what /status shows)",
        see: '2.15',
        auth: 'status',
        headers: ['x-mesh-dev-colo'],
        ok: { 200: { json: ref('MeshStatus'), headers: ['cache-control'] } },
      },
    },
  },
  schemas: {
    Traffic: obj({ requests: count, rps: num({ minimum: 0 }), errors: count, p50Ms: ms, p90Ms: ms, p99Ms: ms }),
    MeshStatus: obj({
      at: MS,
      pop: str(),
      viewer: obj({ role: oneOfValues('admin', 'billing', 'provider') }, { provider: ID }),
      windowSeconds: count,
      regions: arr(
        obj({
          id: str(),
          name: str(),
          lat: num(),
          lon: num(),
          backends: obj({ total: count, unverified: count, refuted: count, ...Object.fromEntries(BACKEND_STATES.map((s) => [s, count])) }),
          capacity,
          warmModels: arr(str()),
          traffic: ref('Traffic'),
        }),
      ),
      backends: arr(
        obj(
          {
            id: ID,
            provider: ID,
            region: str(),
            lat: num(),
            lon: num(),
            state: oneOfValues(...BACKEND_STATES),
            location: oneOfValues('verified', 'unverified', 'refuted'),
            executionProvider: oneOfValues(...EXECUTION_PROVIDERS),
            models: arr(obj({ name: str(), version: str(), warm: { type: 'boolean' } })),
            capacity,
            lastSeen: MS,
          },
          { heartbeatColo: str() },
        ),
      ),
      pops: arr(obj({ code: str(), city: str(), lat: num(), lon: num(), traffic: ref('Traffic'), servedBy: arr(obj({ region: str(), requests: count })) })),
      batches: arr(obj({ id: str(), shard: count, closedAt: MS, count, paid: count, withheld: count }, { charged: count, disputed: count })),
      unavailable: arr(str()),
    }),
  },
};
