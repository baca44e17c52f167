/**
 * The mesh's signing keys: imported once per isolate from the
 * `MESH_SIGNING_KEYS` secret (a JWKS of Ed25519 private JWKs, each with a
 * `kid`). The first key signs; every key's public half is published at
 * `/.well-known/jwks.json`, so keys rotate by prepending a new one.
 */

import { importJWK, SignJWT, type JWK, type JWTPayload } from 'jose';
import { MeshError } from '../shared/errors.ts';
import type { Env } from './env.ts';

export interface SigningKeys {
  kid: string;
  key: CryptoKey;
  /** Public keys, for the JWKS and for verifying what this edge issued. */
  publicJwks: { keys: JWK[] };
  verifyKeys: Map<string, CryptoKey>;
}

let cached: { source: string; keys: Promise<SigningKeys> } | undefined;

function publicPart(jwk: JWK): JWK {
  const { kty, crv, x, kid } = jwk;
  return { kty, crv, x, kid, alg: 'EdDSA', use: 'sig' };
}

async function load(source: string): Promise<SigningKeys> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(source);
  } catch (cause) {
    throw new MeshError('not_ready', 'MESH_SIGNING_KEYS is not valid JSON.', { cause });
  }
  const list = (Array.isArray((parsed as { keys?: unknown }).keys) ? (parsed as { keys: JWK[] }).keys : [parsed]) as JWK[];
  if (list.length === 0) throw new MeshError('not_ready', 'MESH_SIGNING_KEYS holds no key.');
  const verifyKeys = new Map<string, CryptoKey>();
  for (const jwk of list) {
    if (jwk.kty !== 'OKP' || jwk.crv !== 'Ed25519' || !jwk.d || !jwk.kid) {
      throw new MeshError('not_ready', 'Every key in MESH_SIGNING_KEYS must be an Ed25519 private JWK with a kid.');
    }
    verifyKeys.set(jwk.kid, (await importJWK(publicPart(jwk), 'EdDSA')) as CryptoKey);
  }
  const first = list[0]!;
  return {
    kid: first.kid!,
    key: (await importJWK({ ...first, alg: 'EdDSA' }, 'EdDSA')) as CryptoKey,
    publicJwks: { keys: list.map(publicPart) },
    verifyKeys,
  };
}

/** The isolate's signing keys; a 503 `not_ready` when the secret is missing or bad. */
export function signingKeys(env: Env): Promise<SigningKeys> {
  const source = env.MESH_SIGNING_KEYS;
  if (!source) {
    return Promise.reject(
      new MeshError('not_ready', 'The edge has no signing key: set the MESH_SIGNING_KEYS secret (wrangler secret put).'),
    );
  }
  if (!cached || cached.source !== source) {
    const keys = load(source);
    cached = { source, keys };
    keys.catch(() => {
      if (cached?.keys === keys) cached = undefined;
    });
  }
  return cached.keys;
}

/** Signs claims as a compact JWS with the active key and the given `typ`. */
export async function sign(keys: SigningKeys, typ: string, claims: JWTPayload): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ alg: 'EdDSA', typ, kid: keys.kid }).sign(keys.key);
}
