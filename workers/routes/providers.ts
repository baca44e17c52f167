/**
 * Provider routes (docs/api.md section 3.2): a backend's heartbeat, authenticated
 * by a JWT its provider key signed over the exact body bytes, with a `seq` the
 * region's directory accepts once, and recorded in its region's directory
 * with the PoP that carried it.
 *
 * This module owns the isolate's provider caches: admitted keys (refreshed
 * every PROVIDER_CACHE_MS), issuers found not admitted (negatively, for
 * UNKNOWN_ISSUER_CACHE_MS), and backend ids whose mesh-wide ownership the
 * OperatorRegistry confirmed, so that a steady heartbeat costs the registry
 * no call. Everything the route refuses before the signature is verified
 * answers the same 401, so the answer never tells which provider ids exist.
 */

import { Hono } from 'hono';
import { importJWK, jwtVerify, type JWK } from 'jose';
import { MeshError } from '../../shared/errors.ts';
import { HEARTBEAT_MAX_BYTES, parseHeartbeat, type HeartbeatReply } from '../../shared/heartbeat.ts';
import { parseJson } from '../../shared/protocol.ts';
import { regionById } from '../../shared/regions.ts';
import { ALGORITHMS, decodePayload, HEARTBEAT_AUDIENCE, HEARTBEAT_TTL_MAX_S, TYP, type HeartbeatClaims } from '../../shared/jwt.ts';
import { sha256Hex } from '../../receipts/index.ts';
import { bearer } from '../auth.ts';
import { readWithin } from '../body.ts';
import type { AppEnv } from '../context.ts';
import { settings, type Env } from '../env.ts';
import { invalidateSnapshot } from '../directory/snapshot.ts';
import { resolvePop } from '../geo/pop.ts';
import { regionMisfit } from '../geo/regions.ts';

/** How long an isolate uses an admitted provider's key before asking the registry again (a re-key takes effect within it). */
export const PROVIDER_CACHE_MS = 10_000;
/** How long an isolate remembers that an issuer is not an admitted provider. */
export const UNKNOWN_ISSUER_CACHE_MS = 30_000;
/**
 * How long every region directory refuses a removed provider's heartbeats
 * (`DELETE /admin/providers/{id}`): longer than any cache above, so that no
 * isolate's cached key can bring its backends back.
 */
export const PROVIDER_TOMBSTONE_MS = 60_000;
/** Entries per isolate cache (the oldest goes first). */
const CACHE_MAX = 10_000;
/** A heartbeat token longer than this is refused unread. */
const TOKEN_MAX_CHARS = 8192;
const PROVIDER_ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;
const SHA256_HEX = /^[0-9a-f]{64}$/;

/** The one answer to every token that does not verify, whoever its issuer claims to be. */
const BAD_TOKEN = 'The heartbeat token does not verify with an admitted provider key, or has expired.';
const badToken = (cause?: unknown) => new MeshError('invalid_token', BAD_TOKEN, cause === undefined ? {} : { cause });

interface CachedProvider {
  jwk: JWK;
  key: CryptoKey;
  addedAt: number;
  at: number;
}

const providers = new Map<string, CachedProvider>();
/** issuer -> until (ms): not an admitted provider. */
const unknownIssuers = new Map<string, number>();
/** backend id -> the provider (and its admission) the registry confirmed as owner. */
const owners = new Map<string, { provider: string; addedAt: number }>();

function remember<K, V>(map: Map<K, V>, key: K, value: V): void {
  map.delete(key);
  if (map.size >= CACHE_MAX) map.delete(map.keys().next().value as K);
  map.set(key, value);
}

/**
 * Drops everything this isolate cached about a provider (its key, a negative
 * entry, the backend ids it owns). The admin routes call it when they admit,
 * re-key or remove the provider; other isolates catch up within the cache times.
 */
export function forgetProvider(id: string): void {
  providers.delete(id);
  unknownIssuers.delete(id);
  for (const [backendId, owner] of owners) if (owner.provider === id) owners.delete(backendId);
}

/** The admitted provider's key, or undefined when `id` is not admitted (remembered for UNKNOWN_ISSUER_CACHE_MS). */
async function providerKey(env: Env, id: string): Promise<CachedProvider | undefined> {
  const now = Date.now();
  const hit = providers.get(id);
  if (hit && now - hit.at < PROVIDER_CACHE_MS) return hit;
  const unknownUntil = unknownIssuers.get(id);
  if (unknownUntil !== undefined) {
    if (unknownUntil > now) return undefined;
    unknownIssuers.delete(id);
  }
  const record = await env.OPERATOR_REGISTRY.getByName('global').get(id);
  if (!record) {
    providers.delete(id);
    remember(unknownIssuers, id, now + UNKNOWN_ISSUER_CACHE_MS);
    return undefined;
  }
  const entry: CachedProvider = {
    jwk: record.publicJwk as JWK,
    key: (await importJWK(record.publicJwk as JWK, 'EdDSA')) as CryptoKey,
    addedAt: record.addedAt,
    at: now,
  };
  remember(providers, id, entry);
  return entry;
}

/**
 * Makes sure `provider` owns `backendId` mesh-wide (claiming it if no one
 * does). A confirmed ownership is cached for as long as the provider's
 * admission (its `addedAt`) is the one this isolate knows.
 */
async function claimOwnership(env: Env, provider: string, addedAt: number, backendId: string): Promise<void> {
  const known = owners.get(backendId);
  if (known && known.provider === provider && known.addedAt === addedAt) return;
  const max = settings(env).maxBackendsPerProvider;
  const result = await env.OPERATOR_REGISTRY.getByName('global').claimBackend(provider, backendId, max);
  if (result.ok) {
    remember(owners, backendId, { provider, addedAt });
    return;
  }
  if (known?.provider === provider) owners.delete(backendId);
  switch (result.reason) {
    case 'unknown':
      forgetProvider(provider);
      throw badToken();
    case 'owned':
      throw new MeshError('forbidden', `Backend id "${backendId}" is owned by another provider; announce a BACKEND_ID of your own.`);
    case 'too_many':
      throw new MeshError(
        'forbidden',
        `Provider "${provider}" already owns ${max} backend ids (MAX_BACKENDS_PER_PROVIDER); "${backendId}" would be one more. Reuse an id, or ask the operator.`,
      );
  }
}

/** The body, read as a stream within HEARTBEAT_MAX_BYTES; a declared `content-length` above it is refused unread. */
async function readHeartbeatBody(req: Request): Promise<Uint8Array> {
  const bytes = await readWithin(req, HEARTBEAT_MAX_BYTES);
  if (!bytes) throw new MeshError('body_too_large', `A heartbeat body may be at most ${HEARTBEAT_MAX_BYTES} bytes.`);
  return bytes;
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false });

/**
 * The PoP anycast carried a heartbeat through (`request.cf.colo`; with
 * MESH_DEV, `x-mesh-dev-colo`): kept on the entry as a second witness of where
 * the backend is. Undefined when the runtime names none.
 */
function heartbeatColo(req: Request, dev: boolean): string | undefined {
  try {
    const { code } = resolvePop(req, dev);
    return code === 'unknown' ? undefined : code;
  } catch {
    return undefined;
  }
}

export const providerRoutes = new Hono<AppEnv>().post('/v1/providers/heartbeat', async (c) => {
  const token = bearer(c.req.header('authorization'));
  if (!token) throw new MeshError('unauthorized', 'A heartbeat needs "Authorization: Bearer <JWT signed by your provider key>".');
  const bytes = await readHeartbeatBody(c.req.raw);

  // Checked before any registry call, with the one answer for every bad token.
  if (token.length > TOKEN_MAX_CHARS) throw badToken();
  const unverified = decodePayload<Partial<HeartbeatClaims>>(token);
  const providerId = unverified?.iss;
  if (typeof providerId !== 'string' || !PROVIDER_ID.test(providerId)) throw badToken();
  if (typeof unverified?.exp !== 'number' || unverified.exp * 1000 <= Date.now()) throw badToken();
  const provider = await providerKey(c.env, providerId);
  if (!provider) throw badToken();
  let claims: HeartbeatClaims;
  try {
    ({ payload: claims } = await jwtVerify<HeartbeatClaims>(token, provider.key, {
      algorithms: ALGORITHMS,
      typ: TYP.heartbeat,
      issuer: providerId,
      audience: HEARTBEAT_AUDIENCE,
      requiredClaims: ['exp', 'iat', 'sub', 'body_sha256', 'seq'],
      maxTokenAge: HEARTBEAT_TTL_MAX_S,
    }));
  } catch (cause) {
    throw badToken(cause);
  }

  // From here the caller holds the provider key: the answers may be specific.
  if (claims.exp - Math.floor(Date.now() / 1000) > HEARTBEAT_TTL_MAX_S) {
    throw new MeshError('invalid_token', `Heartbeat tokens may live at most ${HEARTBEAT_TTL_MAX_S} s.`);
  }
  if (!Number.isSafeInteger(claims.seq) || claims.seq < 0) {
    throw new MeshError('invalid_token', 'The heartbeat token\'s "seq" must be an integer >= 0, above the last one sent for this backend.');
  }
  if (typeof claims.body_sha256 !== 'string' || !SHA256_HEX.test(claims.body_sha256)) {
    throw new MeshError('invalid_token', 'The heartbeat token\'s "body_sha256" must be the lowercase hex SHA-256 of the body.');
  }
  if ((await sha256Hex(bytes)) !== claims.body_sha256) {
    throw new MeshError('invalid_token', 'The heartbeat token\'s "body_sha256" is not the SHA-256 of this body: sign the exact bytes you send.');
  }
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch {
    throw new MeshError('invalid_json', 'The heartbeat body is not UTF-8 JSON.');
  }
  const hb = parseHeartbeat(parseJson(text));
  if (claims.sub !== hb.backendId) {
    throw new MeshError('forbidden', `The token is for backend "${claims.sub}", the body for "${hb.backendId}".`);
  }
  const misfit = regionMisfit(hb.region, hb);
  if (misfit) {
    throw new MeshError(
      'invalid_request',
      `Heartbeat lat/lon (${hb.lat}, ${hb.lon}) is ${Math.round(misfit.km)} km from region "${hb.region}"; a backend there announces the region it is in (nearest: "${misfit.nearest.id}").`,
    );
  }
  await claimOwnership(c.env, providerId, provider.addedAt, hb.backendId);

  const region = regionById(hb.region)!;
  const { backendTtlMs: ttl, placement, dev } = settings(c.env);
  const result = await c.env.REGION_DIRECTORY.getByName(region.id, { locationHint: region.locationHint }).heartbeat(
    providerId,
    provider.jwk,
    hb,
    { seq: claims.seq, expiresAt: claims.exp * 1000 },
    ttl,
    placement,
    heartbeatColo(c.req.raw, dev),
  );
  if (!result.ok) {
    if (result.reason === 'removed') {
      forgetProvider(providerId);
      throw badToken();
    }
    throw new MeshError(result.code, result.message);
  }
  if (result.created) invalidateSnapshot();
  const reply: HeartbeatReply = { ok: true, ttlSeconds: ttl / 1000, actions: result.actions };
  return c.json(reply);
});
