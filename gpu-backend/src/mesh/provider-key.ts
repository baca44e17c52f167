/**
 * The provider's Ed25519 signing key: checking the private JWK an operator
 * configures, importing it once for signing (heartbeats and attestations), and
 * generating a fresh pair (`keygen.ts`, tests and benchmarks). The public
 * half is what the operator admits with `POST /admin/providers`.
 */

import { importJWK, type CryptoKey, type JWK } from 'jose';
import { generateEd25519 } from '../../../shared/keys.ts';

/** A private Ed25519 JWK as the backend reads it from PROVIDER_KEY / PROVIDER_KEY_FILE. */
export interface ProviderJwk extends JWK {
  kty: 'OKP';
  crv: 'Ed25519';
  x: string;
  d: string;
  kid: string;
}

/** The imported signing key, ready for jose's `SignJWT#sign`. */
export interface ProviderKey {
  kid: string;
  privateKey: CryptoKey;
  /** The public half (no `d`), with kid, alg and use. */
  publicJwk: JWK;
}

const B64URL = /^[A-Za-z0-9_-]+$/;

/**
 * Checks that `value` is a private Ed25519 JWK with a `kid`; returns it typed,
 * or throws an `Error` saying what is wrong (the caller names the variable).
 */
export function checkProviderJwk(value: unknown): ProviderJwk {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error('it is not a JSON object (a JWK)');
  const jwk = value as Record<string, unknown>;
  if (jwk.kty !== 'OKP' || jwk.crv !== 'Ed25519') {
    throw new Error(`it must be an Ed25519 key (kty "OKP", crv "Ed25519"), got kty ${JSON.stringify(jwk.kty)} crv ${JSON.stringify(jwk.crv)}`);
  }
  if (typeof jwk.x !== 'string' || !B64URL.test(jwk.x)) throw new Error('its "x" (public key) is missing or not base64url');
  if (typeof jwk.d !== 'string' || !B64URL.test(jwk.d)) throw new Error('its "d" is missing: it must be the PRIVATE key');
  if (typeof jwk.kid !== 'string' || jwk.kid.length === 0) throw new Error('its "kid" is missing: the edge finds the public key by kid');
  if (jwk.alg !== undefined && jwk.alg !== 'EdDSA' && jwk.alg !== 'Ed25519') throw new Error(`its "alg" must be EdDSA, got ${JSON.stringify(jwk.alg)}`);
  return jwk as unknown as ProviderJwk;
}

/** Imports the private JWK once, for every signature the backend makes. */
export async function importProviderKey(jwk: ProviderJwk): Promise<ProviderKey> {
  const privateKey = (await importJWK({ ...jwk, alg: 'EdDSA' }, 'EdDSA')) as CryptoKey;
  return { kid: jwk.kid, privateKey, publicJwk: publicHalf(jwk) };
}

function publicHalf(jwk: ProviderJwk): JWK {
  return { kty: 'OKP', crv: 'Ed25519', x: jwk.x, kid: jwk.kid, alg: 'EdDSA', use: 'sig' };
}

/**
 * Generates a provider key pair. The private JWK goes in the backend's
 * PROVIDER_KEY(_FILE); the public JWK is what the operator admits.
 *
 * @example
 * const { privateJwk, publicJwk } = await generateProviderKey('provider-sg-1');
 */
export async function generateProviderKey(kid: string): Promise<{ privateJwk: ProviderJwk; publicJwk: JWK }> {
  const privateJwk = checkProviderJwk((await generateEd25519(kid)).privateJwk);
  return { privateJwk, publicJwk: publicHalf(privateJwk) };
}
