/**
 * Bearer keys the operator issues (`typ: mesh-key+jwt`, signed by the mesh
 * key): consumer API keys, admin and billing tokens, and providers' status keys. Verified with an explicit
 * algorithm list, typ, issuer, audience and a required `exp`; a verified key is
 * remembered per isolate until it expires, so the hot path pays one signature
 * check per key, not per request. Revoked keys are refused from the isolate's
 * snapshot (fresh within SNAPSHOT_REFRESH_MS), not by a call per request;
 * while the isolate has never loaded that list, every key gets 503 `not_ready`
 * (fail closed), never a pass. A consumer key with an account (limits, budget,
 * CORS origins) gets its lease made live here (workers/account/admission.ts).
 */

import { errors as joseErrors, jwtVerify, type JWTHeaderParameters } from 'jose';
import { MeshError } from '../shared/errors.ts';
import { ALGORITHMS, KEY_AUDIENCE, TYP, type KeyClaims, type KeyRole } from '../shared/jwt.ts';
import type { Context } from 'hono';
import type { AppEnv } from './context.ts';
import { settings, type Env } from './env.ts';
import { signingKeys, type SigningKeys } from './keys.ts';
import { getSnapshot } from './directory/snapshot.ts';
import { attachAccount } from './account/admission.ts';
import { factsOf } from './request-log.ts';

const CACHE_MAX = 10_000;
const verified = new Map<string, KeyClaims>();

export function bearer(header: string | null | undefined): string | undefined {
  if (!header) return undefined;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return m?.[1];
}

function keyResolver(keys: SigningKeys) {
  return (header: JWTHeaderParameters) => {
    const key = header.kid ? keys.verifyKeys.get(header.kid) : undefined;
    if (!key) throw new joseErrors.JWKSNoMatchingKey();
    return key;
  };
}

async function verifyKey(env: Env, token: string): Promise<KeyClaims> {
  const keys = await signingKeys(env);
  try {
    const { payload } = await jwtVerify<KeyClaims>(token, keyResolver(keys), {
      algorithms: ALGORITHMS,
      typ: TYP.key,
      issuer: settings(env).issuer,
      audience: KEY_AUDIENCE,
      requiredClaims: ['exp', 'sub', 'jti', 'role'],
    });
    if (payload.role !== 'consumer' && payload.role !== 'admin' && payload.role !== 'billing' && payload.role !== 'provider') {
      throw new MeshError('invalid_token', 'The key has an unknown role.');
    }
    return payload;
  } catch (cause) {
    if (cause instanceof MeshError) throw cause;
    throw new MeshError('invalid_token', 'The bearer key is invalid or expired.', { cause });
  }
}

/**
 * Authenticates a request's bearer key and checks its role.
 * Throws 401 (`unauthorized` / `invalid_token`), 403 (`forbidden`), or 503
 * (`not_ready`) while this isolate has never loaded the revoked-key list.
 */
export async function authenticate(c: Context<AppEnv>, roles: readonly KeyRole[]): Promise<KeyClaims> {
  const env = c.env;
  const token = bearer(c.req.header('authorization'));
  if (!token) throw new MeshError('unauthorized', 'Send your key as "Authorization: Bearer <key>".');
  let claims = verified.get(token);
  if (claims && claims.exp * 1000 <= Date.now()) {
    verified.delete(token);
    claims = undefined;
  }
  if (!claims) {
    claims = await verifyKey(env, token);
    if (verified.size >= CACHE_MAX) verified.delete(verified.keys().next().value!);
    verified.set(token, claims);
  }
  // For the request's log line: the key's id, never the key (workers/request-log.ts).
  const facts = factsOf(c);
  facts.keyId = claims.jti;
  facts.sub = claims.sub;
  const { snapshotRefreshMs } = settings(env);
  const { revoked, accounts } = await getSnapshot(env, c.executionCtx, snapshotRefreshMs);
  if (!revoked) {
    // Fail closed: this isolate could not load the revoked-key list yet, so a
    // revoked key would look valid. The snapshot refresh retries in the background.
    throw new MeshError('not_ready', 'The edge cannot check key revocations right now; retry shortly.', {
      retryAfter: Math.max(1, Math.ceil(snapshotRefreshMs / 1000)),
    });
  }
  if (revoked.has(claims.jti)) throw new MeshError('invalid_token', 'This key has been revoked.');
  if (!roles.includes(claims.role)) {
    throw new MeshError('forbidden', `This route needs a ${roles.join(' or ')} key; yours is a ${claims.role} key.`);
  }
  // A consumer key with an account: its lease in this isolate and its CORS origins (account/admission.ts).
  if (claims.role === 'consumer') await attachAccount(c, claims, accounts);
  return claims;
}
