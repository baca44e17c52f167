/**
 * OpenAPI description of the verification routes (workers/routes/disputes.ts,
 * docs/api.md section 6): fraud proofs and standing events for billing, and
 * the operator's actions on a provider's standing.
 */

import { about, arr, ID, int, JWT, MS, nullable, num, obj, oneOfValues, ref, str, type Family } from './build.ts';

const limit = str({ pattern: '^(?!0+$)[0-9]{1,6}$', description: 'a positive integer, at most 1000 used; default 100' });
const provider = { id: ID };

export const disputes: Family = {
  tag: 'Verification',
  paths: {
    '/v1/disputes': {
      get: {
        summary: 'List fraud proofs, oldest first',
        see: '6.2',
        auth: 'billing',
        query: { after: str({ description: 'a dispute id from an earlier listing' }), limit, provider: ID },
        ok: {
          200: {
            json: obj({
              disputes: arr(
                obj({
                  id: str(),
                  kind: oneOfValues('mismatch', 'signature'),
                  verdict: oneOfValues('proven', 'unresolved'),
                  accused: nullable(str()),
                  providers: arr(str()),
                  model: str(),
                  withheld: arr(str()),
                  createdAt: MS,
                }),
              ),
              next: nullable(str()),
            }),
          },
        },
        errors: [400],
      },
    },
    '/v1/disputes/{id}': {
      get: {
        summary: 'A fraud proof',
        see: '6.2',
        auth: 'billing',
        ok: {
          200: {
            json: obj({
              id: str(),
              dispute: about(JWT, 'mesh-dispute+jwt'),
              outputs: about(obj({}, {}), "each run's answer bytes, base64, by their SHA-256"),
            }),
          },
        },
        errors: [404],
      },
    },
    '/v1/verification/events': {
      get: {
        summary: "Changes of providers' standing",
        see: '6.3',
        auth: 'billing',
        query: { after: str({ pattern: '^[0-9]{1,15}$' }), limit },
        ok: {
          200: {
            json: obj({
              events: arr(obj({ seq: int(), provider: str(), kind: oneOfValues('proven', 'quarantined', 'cleared'), at: MS, dispute: nullable(str()) })),
              next: nullable(int()),
            }),
          },
        },
        errors: [400],
      },
    },
    '/admin/providers/{id}/clear': {
      post: { summary: 'Clear a quarantined provider', see: '6.3', auth: 'admin', path: provider, ok: { 200: { json: ref('Standing') } }, errors: [400, 404] },
    },
    '/admin/providers/{id}/verification': {
      put: {
        summary: "Set a provider's sample rate",
        see: '6.1',
        auth: 'admin',
        path: provider,
        body: { 'application/json': obj({ sample_rate: about(nullable(num({ minimum: 0, maximum: 1 })), "null: the mesh's rule") }) },
        ok: { 200: { json: ref('Standing') } },
        errors: [404],
      },
    },
  },
  schemas: {
    Standing: obj({ id: str(), addedAt: MS, strikes: int(), lastProvenAt: nullable(MS), quarantinedAt: nullable(MS), sampleRate: nullable(num()) }),
  },
};
