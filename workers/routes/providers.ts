/**
 * Provider routes (docs/api.md section 3): a backend's heartbeat, authenticated by
 * a JWT its provider key signed, recorded in its region's directory.
 */

import { Hono } from 'hono';
import { importJWK, jwtVerify, type JWK } from 'jose';
import { MeshError } from '../../shared/errors.ts';
import { parseHeartbeat, type HeartbeatReply } from '../../shared/heartbeat.ts';
import { parseJson } from '../../shared/protocol.ts';
import { regionById } from '../../shared/regions.ts';
import { ALGORITHMS, decodePayload, HEARTBEAT_AUDIENCE, HEARTBEAT_TTL_MAX_S, TYP, type HeartbeatClaims } from '../../shared/jwt.ts';
import { bearer } from '../auth.ts';
import type { AppEnv } from '../context.ts';
import { settings, type Env } from '../env.ts';
import { invalidateSnapshot } from '../directory/snapshot.ts';

const PROVIDER_CACHE_MS = 10_000;
const providers = new Map<string, { jwk: JWK; key: CryptoKey; at: number }>();

async function providerKey(env: Env, id: string): Promise<{ jwk: JWK; key: CryptoKey }> {
  const hit = providers.get(id);
  if (hit && Date.now() - hit.at < PROVIDER_CACHE_MS) return hit;
  const record = await env.OPERATOR_REGISTRY.getByName('global').get(id);
  if (!record) {
    providers.delete(id);
    throw new MeshError('unknown_provider', `Provider "${id}" is not admitted; the operator adds it with POST /admin/providers.`);
  }
  const entry = { jwk: record.publicJwk as JWK, key: (await importJWK(record.publicJwk as JWK, 'EdDSA')) as CryptoKey, at: Date.now() };
  providers.set(id, entry);
  return entry;
}

export const providerRoutes = new Hono<AppEnv>().post('/v1/providers/heartbeat', async (c) => {
  const token = bearer(c.req.header('authorization'));
  if (!token) throw new MeshError('unauthorized', 'A heartbeat needs "Authorization: Bearer <JWT signed by your provider key>".');
  const providerId = decodePayload<Partial<HeartbeatClaims>>(token)?.iss;
  if (typeof providerId !== 'string') throw new MeshError('invalid_token', 'The heartbeat token has no issuer (provider id).');
  const { jwk, key } = await providerKey(c.env, providerId);
  let claims: HeartbeatClaims;
  try {
    ({ payload: claims } = await jwtVerify<HeartbeatClaims>(token, key, {
      algorithms: ALGORITHMS,
      typ: TYP.heartbeat,
      issuer: providerId,
      audience: HEARTBEAT_AUDIENCE,
      requiredClaims: ['exp', 'iat', 'sub'],
      maxTokenAge: HEARTBEAT_TTL_MAX_S,
    }));
  } catch (cause) {
    throw new MeshError('invalid_token', 'The heartbeat token does not verify with the provider key, or has expired.', { cause });
  }
  if (claims.exp - Math.floor(Date.now() / 1000) > HEARTBEAT_TTL_MAX_S) {
    throw new MeshError('invalid_token', `Heartbeat tokens may live at most ${HEARTBEAT_TTL_MAX_S} s.`);
  }
  const hb = parseHeartbeat(parseJson(await c.req.text()));
  if (claims.sub !== hb.backendId) {
    throw new MeshError('forbidden', `The token is for backend "${claims.sub}", the body for "${hb.backendId}".`);
  }
  const region = regionById(hb.region)!;
  const ttl = settings(c.env).backendTtlMs;
  const result = await c.env.REGION_DIRECTORY.getByName(region.id, { locationHint: region.locationHint }).heartbeat(providerId, jwk, hb, ttl, settings(c.env).placement);
  if (!result.ok) throw new MeshError(result.code, result.message);
  if (result.created) invalidateSnapshot();
  const reply: HeartbeatReply = { ok: true, ttlSeconds: ttl / 1000, actions: result.actions };
  return c.json(reply);
});
