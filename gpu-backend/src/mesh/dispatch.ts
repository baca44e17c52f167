/**
 * Dispatch tokens (docs/api.md section 3.4): the edge's permission to run one
 * request here. A token must be an EdDSA JWT of `typ` mesh-dispatch+jwt from
 * the mesh key (found by `kid` in the edge's JWKS), issued by the mesh for this
 * backend (`aud`), of the route's `purpose` (`infer` for inference, `control`
 * for the repository routes), expiring at most 60 s after this backend's now
 * and living at most 60 s (`exp - iat`), bound to this model and to the exact
 * request body bytes (`body_sha256`), and never seen before (`jti`). An infer
 * token that names a `model_version` is good only where the model is served at
 * that version (`checkModelVersion`, once the served version is known). Every
 * failure is a 401 `invalid_token` (jose's error, if any, kept as `cause`); a
 * missing bearer token is a 401 `unauthorized`.
 */

import { KeyObject, verify as verifySignature, type webcrypto } from 'node:crypto';
import { createRemoteJWKSet, type CompactJWSHeaderParameters, type JWTVerifyGetKey } from 'jose';
import { MeshError } from '../../../shared/errors.ts';
import { ALGORITHMS, decodeCompact, DISPATCH_TTL_MAX_S, TYP, type DispatchClaims, type DispatchPurpose } from '../../../shared/jwt.ts';
import { sha256HexSync } from './hash.ts';
import { ReplayCache } from './replay-cache.ts';

export interface DispatchVerifierOptions {
  /** This backend's id: the tokens' `aud`. */
  backendId: string;
  /** The mesh's issuer: the tokens' `iss`. */
  issuer: string;
  /** Resolves the mesh's public key by the token's header (jose `createRemoteJWKSet` / `createLocalJWKSet`). */
  getKey: JWTVerifyGetKey;
  /** Wall-clock milliseconds (tests freeze it). */
  now?: () => number;
  /**
   * Seconds of clock difference tolerated between edge and backend, for an
   * expired token and one issued in the future only: `exp` is never more than
   * 60 s after this backend's now, whatever the tolerance.
   */
  clockToleranceS?: number;
  /** Most jtis remembered at once. */
  maxLiveTokens?: number;
}

/**
 * How long a resolved key is used without asking `getKey` again: jose's
 * remote JWKS keeps its own copy for 10 minutes and refetches on an unknown
 * kid, so a key the edge retires stops verifying here within this long.
 */
const KEY_CACHE_MS = 30_000;
/** Kids remembered at once (a token names any kid it likes; unknown ones fail in `getKey` and are not kept). */
const MAX_CACHED_KEYS = 16;

/** The model claim that allows `POST /v2/repository/index`. */
export const ANY_MODEL = '*';

/** The routes each purpose allows, for error messages. */
const ROUTES_OF: Record<DispatchPurpose, string> = {
  infer: 'the inference routes',
  control: 'the repository routes',
};

const invalid = (message: string, cause?: unknown) => new MeshError('invalid_token', message, { cause });

/** The JWKS of the edge, fetched from `<edgeUrl>/.well-known/jwks.json` (jose caches it and refetches on an unknown kid, with a cooldown). */
export function edgeJwks(edgeUrl: string): JWTVerifyGetKey {
  return createRemoteJWKSet(new URL('/.well-known/jwks.json', edgeUrl));
}

export class DispatchVerifier {
  readonly #options: DispatchVerifierOptions;
  readonly #now: () => number;
  readonly #tolerance: number;
  readonly #replays: ReplayCache;
  readonly #keys = new Map<string, { key: KeyObject; at: number }>();

  constructor(options: DispatchVerifierOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
    this.#tolerance = options.clockToleranceS ?? 5;
    this.#replays = new ReplayCache(options.maxLiveTokens ?? 100_000);
  }

  /**
   * Verifies the `Authorization` header of a request for `model` whose body
   * is `body`, on a route that needs a token of `purpose`, and spends the
   * token's jti. Returns the claims.
   */
  async verify(authorization: string | undefined, body: Uint8Array, model: string, purpose: DispatchPurpose): Promise<DispatchClaims> {
    const claims = await this.check(authorization, body, model, purpose);
    this.spend(claims);
    return claims;
  }

  /**
   * Spends the jti of claims that `check` accepted: throws 401 when the token
   * was used before. Kept apart so that HTTP workers check tokens in parallel
   * while one replay cache, on the main thread, spends them (http/http-pool.ts).
   */
  spend(claims: Pick<DispatchClaims, 'jti' | 'exp'>): void {
    const nowS = Math.floor(this.#now() / 1000);
    if (!this.#replays.use(claims.jti, claims.exp + this.#tolerance, nowS)) throw invalid('The dispatch token was already used.');
  }

  /**
   * Everything `verify` checks except single use: signature, algorithm,
   * `typ`, issuer, audience, purpose, times, model and body binding. Returns
   * the claims; the caller must `spend` them before acting on the request (and,
   * for an inference, `checkModelVersion` them once the served version is known).
   */
  async check(authorization: string | undefined, body: Uint8Array, model: string, purpose: DispatchPurpose): Promise<DispatchClaims> {
    const token = bearer(authorization);
    const jws = decodeCompact(token);
    if (!jws) throw invalid('The dispatch token is not valid: not a compact JWS.');
    const { header } = jws;
    if (!ALGORITHMS.includes(header.alg as (typeof ALGORITHMS)[number])) throw invalid(`The dispatch token is not valid: alg ${JSON.stringify(header.alg)} is not allowed.`);
    if (header.typ !== TYP.dispatch) throw invalid(`The dispatch token is not valid: typ ${JSON.stringify(header.typ)} is not "${TYP.dispatch}".`);
    if (header.crit !== undefined || header.b64 !== undefined) throw invalid('The dispatch token is not valid: "crit" and "b64" are not supported.');
    // The one await, and only for a kid not seen in the last KEY_CACHE_MS: the key then verifies synchronously.
    const key = this.#cachedKey(header.kid) ?? (await this.#resolveKey(header));
    if (!verifySignature(null, Buffer.from(jws.signingInput), key, jws.signature)) throw invalid('The dispatch token is not valid: signature verification failed.');
    const claims = checkedClaims(jws.payload, this.#options, Math.floor(this.#now() / 1000), this.#tolerance);
    if (typeof claims.jti !== 'string' || claims.jti.length === 0 || claims.jti.length > 256) throw invalid('The dispatch token has no usable "jti".');
    if (typeof claims.model !== 'string' || typeof claims.body_sha256 !== 'string') {
      throw invalid('The dispatch token\'s "model" and "body_sha256" must be strings.');
    }
    if (claims.purpose !== purpose) {
      const other: DispatchPurpose = purpose === 'infer' ? 'control' : 'infer';
      const claimed = claims.purpose === other ? `"${other}", good for ${ROUTES_OF[other]} only` : `${JSON.stringify(claims.purpose)}, not a purpose`;
      throw invalid(`The dispatch token's purpose is ${claimed}; this route needs purpose "${purpose}".`);
    }
    if (claims.model_version !== undefined && (typeof claims.model_version !== 'string' || claims.model_version.length === 0)) {
      throw invalid('The dispatch token\'s "model_version" must be a non-empty string when present.');
    }
    // No clock tolerance on this side: a token never lives longer here than the contract allows.
    const nowS = Math.floor(this.#now() / 1000);
    if (claims.exp - nowS > DISPATCH_TTL_MAX_S) {
      throw invalid(`The dispatch token expires ${claims.exp - nowS} s from now; at most ${DISPATCH_TTL_MAX_S} s is allowed.`);
    }
    if (claims.exp - claims.iat > DISPATCH_TTL_MAX_S) {
      throw invalid(`The dispatch token lives ${claims.exp - claims.iat} s (exp - iat); at most ${DISPATCH_TTL_MAX_S} s is allowed.`);
    }
    if (claims.model !== model) throw invalid(`The dispatch token is for model "${claims.model}", not "${model}".`);
    if (claims.body_sha256.toLowerCase() !== sha256HexSync(body)) {
      throw invalid('The dispatch token is bound to another request body (body_sha256 differs).');
    }
    return claims;
  }

  /** The verification key of `kid`, when resolved within the last KEY_CACHE_MS. */
  #cachedKey(kid: unknown): KeyObject | undefined {
    if (typeof kid !== 'string') return undefined;
    const hit = this.#keys.get(kid);
    if (!hit || this.#now() - hit.at > KEY_CACHE_MS) return undefined;
    return hit.key;
  }

  /** Resolves the key through `getKey` (jose's JWKS: refetched on an unknown kid) and caches it by kid. */
  async #resolveKey(header: Record<string, unknown>): Promise<KeyObject> {
    let key: KeyObject;
    try {
      const found = await this.#options.getKey(header as unknown as CompactJWSHeaderParameters, { payload: '', signature: '' });
      key = found instanceof KeyObject ? found : KeyObject.from(found as webcrypto.CryptoKey);
    } catch (err) {
      throw invalid(`The dispatch token is not valid: ${err instanceof Error ? err.message : String(err)}.`, err);
    }
    if (key.asymmetricKeyType !== 'ed25519') throw invalid('The dispatch token is not valid: its key is not an Ed25519 key.');
    if (typeof header.kid === 'string') {
      if (this.#keys.size >= MAX_CACHED_KEYS) this.#keys.clear();
      this.#keys.set(header.kid, { key, at: this.#now() });
    }
    return key;
  }
}

/**
 * The registered claims a dispatch token must carry and their checks (what
 * jose's `jwtVerify` checked before): `iss`, `aud` (a string or a list with
 * this backend), `exp` not passed and `iat` not ahead (with the tolerance),
 * `nbf` if present, the token not older than DISPATCH_TTL_MAX_S, and the
 * required claims present.
 */
function checkedClaims(payload: Record<string, unknown>, options: DispatchVerifierOptions, nowS: number, tolerance: number): DispatchClaims {
  for (const claim of ['exp', 'iat', 'jti', 'body_sha256', 'model', 'purpose']) {
    if (payload[claim] === undefined) throw invalid(`The dispatch token is not valid: missing required "${claim}" claim.`);
  }
  const { iss, aud, exp, iat, nbf } = payload;
  if (iss !== options.issuer) throw invalid(`The dispatch token is not valid: unexpected "iss" claim value.`);
  if (!(aud === options.backendId || (Array.isArray(aud) && aud.includes(options.backendId)))) throw invalid('The dispatch token is not valid: unexpected "aud" claim value.');
  if (!Number.isSafeInteger(exp) || !Number.isSafeInteger(iat)) throw invalid('The dispatch token is not valid: "exp" and "iat" must be integers.');
  if ((exp as number) <= nowS - tolerance) throw invalid('The dispatch token is not valid: "exp" claim timestamp check failed (it has expired).');
  if ((iat as number) > nowS + tolerance) throw invalid('The dispatch token is not valid: "iat" claim timestamp check failed (it is in the future).');
  if (nowS - (iat as number) > DISPATCH_TTL_MAX_S + 2 * tolerance) throw invalid('The dispatch token is not valid: "iat" claim timestamp check failed (too far in the past).');
  if (nbf !== undefined && (!Number.isSafeInteger(nbf) || (nbf as number) > nowS + tolerance)) throw invalid('The dispatch token is not valid: "nbf" claim timestamp check failed.');
  return payload as unknown as DispatchClaims;
}

/**
 * Refuses (401 `invalid_token`) an infer token for `model` whose
 * `model_version` (`claimed`, if any) is not `served`, the version this
 * request is served at.
 */
export function checkModelVersion(model: string, claimed: string | undefined, served: string): void {
  if (claimed !== undefined && claimed !== served) {
    throw invalid(`The dispatch token is for version "${claimed}" of model "${model}", but this request is served at version "${served}".`);
  }
}

function bearer(authorization: string | undefined): string {
  const match = /^Bearer[ ]+([A-Za-z0-9._~+/=-]+)\s*$/i.exec(authorization ?? '');
  if (!match) throw new MeshError('unauthorized', 'This route needs a dispatch token from the edge (Authorization: Bearer <JWT>).');
  return match[1]!;
}
