/**
 * OpenAPI description of the unauthenticated routes (workers/routes/health.ts,
 * docs/api.md sections 2.10 and 4.4): liveness, readiness, the JWKS and the
 * JWKS archive.
 */

import { arr, obj, str, type Family, type Op } from './build.ts';

const jwk = { kty: { const: 'OKP' }, crv: { const: 'Ed25519' }, x: str(), kid: str(), alg: { const: 'EdDSA' }, use: { const: 'sig' } };

const jwks = (summary: string, keys: Record<string, unknown>): Op => ({
  summary,
  see: '4.4',
  ok: { 200: { json: obj({ keys: arr(keys) }), headers: ['cache-control'] } },
  errors: [503],
});

export const health: Family = {
  tag: 'Public',
  paths: {
    '/v2/health/live': { get: { summary: 'Liveness', see: '2.10', ok: { 200: { json: obj({ live: { const: true } }) } } } },
    '/v2/health/ready': {
      get: {
        summary: 'Readiness',
        see: '2.10',
        ok: {
          200: { json: obj({ ready: { const: true } }) },
          503: { json: obj({ ready: { const: false }, reason: str() }), description: 'no usable signing key' },
        },
      },
    },
    '/.well-known/jwks.json': { get: jwks('The keys receipts verify with now', obj(jwk)) },
    '/.well-known/jwks-archive.json': {
      get: jwks('Every key the mesh ever signed with', obj(jwk, { retired_at: str({ format: 'date-time' }) })),
    },
  },
};
