/**
 * OpenAPI description of the provider route (workers/routes/providers.ts,
 * docs/api.md section 3.2): the heartbeat, with the caps of
 * shared/heartbeat.ts, whose parser checks it.
 */

import { EXECUTION_PROVIDERS, HEARTBEAT_LIMITS as L } from '../../shared/heartbeat.ts';
import { REGIONS } from '../../shared/regions.ts';
import { about, arr, bool, ID, num, obj, oneOfValues, ref, str, type Family } from './build.ts';

const range = (minimum: number, maximum: number) => num({ minimum, maximum });

export const providers: Family = {
  tag: 'Providers',
  paths: {
    '/v1/providers/heartbeat': {
      post: {
        summary: "A backend's heartbeat",
        see: '3.2',
        auth: 'heartbeat',
        headers: ['x-mesh-dev-colo'],
        body: { 'application/json': ref('Heartbeat') },
        ok: { 200: { json: ref('HeartbeatReply') } },
        errors: [403, 413],
      },
    },
  },
  schemas: {
    Heartbeat: about(
      obj(
        {
          backendId: ID,
          url: str({ format: 'uri', maxLength: L.urlChars, pattern: '^https?://' }),
          region: { enum: REGIONS.map((r) => r.id) },
          lat: range(-90, 90),
          lon: range(-180, 180),
          executionProvider: oneOfValues(...EXECUTION_PROVIDERS),
          ready: bool,
          models: arr(
            obj(
              {
                name: ID,
                version: str({ pattern: `^[A-Za-z0-9._-]{1,${L.versionChars}}$` }),
                warm: bool,
                maxBatchSize: range(0, L.maxBatchSize),
                p50Ms: range(0, L.p50Ms),
              },
              { memoryBytes: range(0, L.memoryBytes) },
            ),
            { maxItems: L.models },
          ),
          capacity: obj({ slots: range(1, L.slots), inFlight: range(0, L.requests), queued: range(0, L.requests) }),
        },
        { available: arr(ID, { maxItems: L.available }) },
      ),
      'lat/lon must fit the region (section 3.2). Unknown fields are ignored.',
    ),
    HeartbeatReply: obj({
      ok: { const: true },
      ttlSeconds: num(),
      actions: arr(obj({ op: oneOfValues('load', 'unload'), model: str() })),
    }),
  },
};
