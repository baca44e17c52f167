/**
 * OpenAPI description of the operator routes (workers/routes/admin.ts,
 * docs/api.md sections 2.2, 3.1 and 3.9): admitting, listing and removing
 * providers, the backends the mesh knows, issuing and revoking bearer keys.
 */

import { REGIONS } from '../../shared/regions.ts';
import {
  MAX_BUDGET_MICRO_USD,
  MAX_CONCURRENT,
  MAX_ORIGIN_LENGTH,
  MAX_ORIGINS,
  MAX_REQUESTS_PER_MINUTE,
  MAX_TOKENS_PER_MINUTE,
  PERIODS,
} from '../account/settings.ts';
import { about, arr, bool, ID, int, JWT, MS, nullable, num, obj, oneOfValues, ref, str, type Family, type Schema } from './build.ts';

const regions = { enum: REGIONS.map((r) => r.id) };
const role = oneOfValues('consumer', 'billing', 'admin', 'provider');
const jti = str({ minLength: 1, maxLength: 256 });
const upTo = (maximum: number, minimum = 1) => int({ minimum, maximum });
const date = str({ format: 'date-time' });

/** A consumer key's settings (section 2.13), as workers/account/settings.ts checks them; null removes one. */
const keySettings: Record<string, Schema> = {
  limits: nullable(
    obj(
      {},
      {
        requestsPerMinute: nullable(upTo(MAX_REQUESTS_PER_MINUTE)),
        concurrent: nullable(upTo(MAX_CONCURRENT)),
        tokensPerMinute: nullable(upTo(MAX_TOKENS_PER_MINUTE)),
      },
      true,
    ),
  ),
  budget: nullable(obj({ microUsd: upTo(MAX_BUDGET_MICRO_USD, 0), period: { enum: [...PERIODS] } }, {}, true)),
  cors: nullable(
    obj({ origins: arr(str({ maxLength: MAX_ORIGIN_LENGTH, pattern: '^(\\*|https?://[^/?#@\\s]+)$' }), { minItems: 1, maxItems: MAX_ORIGINS }) }, {}, true),
  ),
};
const account = { 200: { json: ref('KeyAccount') } };

export const admin: Family = {
  tag: 'Operator',
  paths: {
    '/admin/providers': {
      post: {
        summary: "Admit a provider, or replace its key",
        see: '3.1',
        auth: 'admin',
        body: { 'application/json': obj({ id: ID, publicJwk: ref('PublicJwk') }) },
        ok: {
          200: { json: ref('Admitted'), description: 'the key of an admitted provider was replaced' },
          201: { json: ref('Admitted'), description: 'admitted' },
        },
      },
      get: {
        summary: 'List providers with their standing',
        see: '3.1',
        auth: 'admin',
        ok: { 200: { json: obj({ providers: arr(obj({ id: str(), publicJwk: ref('PublicJwk'), addedAt: MS }, { strikes: int() })) }) } },
      },
    },
    '/admin/providers/{id}': {
      delete: {
        summary: 'Remove a provider and its backends',
        see: '3.1',
        auth: 'admin',
        path: { id: ID },
        ok: { 200: { json: obj({ id: str(), removed: { const: true }, backends: int() }) } },
        errors: [400, 404],
      },
    },
    '/admin/backends': {
      get: {
        summary: 'Every live backend, in every region',
        see: '3.9',
        auth: 'admin',
        ok: {
          200: {
            json: obj({
              backends: arr(
                about(
                  obj({ id: str(), provider: str(), lastSeen: MS, expiresAt: MS }, { location: obj({ state: oneOfValues('verified', 'unverified', 'refuted') }), heartbeatColo: str() }),
                  'the heartbeat body (backendId as id), and where the mesh sees it',
                ),
              ),
            }),
          },
        },
      },
    },
    '/admin/keys': {
      post: {
        summary: 'Issue a bearer key',
        see: '2.2',
        auth: 'admin',
        body: {
          'application/json': obj(
            { sub: ID },
            { role, regions: arr(regions, { minItems: 1 }), ttlSeconds: about(int({ minimum: 1 }), 'default one year'), ...keySettings },
          ),
        },
        ok: { 201: { json: obj({ key: JWT, sub: str(), role, jti: str(), exp: int() }, keySettings) } },
      },
    },
    '/admin/keys/{jti}': {
      get: { summary: "A consumer key's settings and usage", see: '2.13', auth: 'admin', path: { jti: ID }, ok: account, errors: [400, 404] },
      patch: {
        summary: "Change a consumer key's settings",
        see: '2.13',
        auth: 'admin',
        path: { jti: ID },
        body: { 'application/json': { ...obj({}, keySettings, true), anyOf: ['limits', 'budget', 'cors'].map((k) => ({ required: [k] })) } },
        ok: account,
        errors: [404, 413],
      },
    },
    '/admin/keys/revoke': {
      post: {
        summary: 'Revoke a bearer key',
        see: '2.2',
        auth: 'admin',
        body: {
          'application/json': {
            anyOf: [obj({ jti }, { exp: about(num(), "the key's exp (Unix seconds): the revocation is kept until then") }), obj({ key: JWT })],
          },
        },
        ok: { 200: { json: obj({ jti: str(), revoked: bool, until: str({ format: 'date-time' }) }) } },
      },
    },
  },
  schemas: {
    PublicJwk: about(
      obj({ kty: { const: 'OKP' }, crv: { const: 'Ed25519' }, x: str({ pattern: '^[A-Za-z0-9_-]{43}$' }) }, { kid: str(), d: about({ not: {} }, 'never: no private part') }),
      'an Ed25519 public JWK',
    ),
    Admitted: obj({ id: str(), created: bool }),
    KeyAccount: obj({
      jti: str(),
      sub: str(),
      exp: int(),
      ...keySettings,
      acctClaim: bool,
      version: int(),
      updatedAt: date,
      usage: obj({
        window: obj({ start: date, end: date, requests: int(), tokens: num() }),
        concurrent: int(),
        budget: nullable(obj({ periodStart: date, periodEnd: nullable(date), spentMicroUsd: int(), heldMicroUsd: int(), remainingMicroUsd: int() })),
      }),
    }),
  },
};
