/**
 * Operator keys: issuing the bearer keys of docs/api.md (consumer API keys, admin
 * and billing tokens) and generating Ed25519 key pairs. Used by the edge's
 * admin route and by the local-mesh launcher, in workerd and in Node alike.
 */

import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK, type KeyObject } from 'jose';
import { KEY_AUDIENCE, TYP, type KeyClaims, type KeyRole } from './jwt.ts';

export interface IssueKeyOptions {
  issuer: string;
  /** Consumer (or operator) id. */
  sub: string;
  role: KeyRole;
  /** Data residency: regions the consumer may be served in. */
  regions?: string[];
  /** Lifetime; default one year. */
  ttlSeconds?: number;
  /** The key has settings in its KeyAccount: sets the `acct` claim (docs/api.md section 2.14). */
  account?: boolean;
}

/** Signs an operator-issued bearer key with the mesh key `kid`. */
export async function issueKey(signingKey: CryptoKey | KeyObject | Uint8Array, kid: string, opts: IssueKeyOptions): Promise<string> {
  const iat = Math.floor(Date.now() / 1000);
  const claims: Omit<KeyClaims, 'iss' | 'aud' | 'iat' | 'exp' | 'jti' | 'sub'> = { role: opts.role };
  if (opts.regions) claims.regions = opts.regions;
  if (opts.account) claims.acct = true;
  return new SignJWT({ ...claims })
    .setProtectedHeader({ alg: 'EdDSA', typ: TYP.key, kid })
    .setIssuer(opts.issuer)
    .setAudience(KEY_AUDIENCE)
    .setSubject(opts.sub)
    .setJti(crypto.randomUUID())
    .setIssuedAt(iat)
    .setExpirationTime(iat + (opts.ttlSeconds ?? 365 * 24 * 3600))
    .sign(signingKey);
}

export interface KeyPairJwks {
  /** Private JWK (keep secret), with kid and alg. */
  privateJwk: JWK;
  /** Public JWK, with kid and alg. */
  publicJwk: JWK;
}

/** A fresh Ed25519 key pair as JWKs, tagged with `kid`. */
export async function generateEd25519(kid: string): Promise<KeyPairJwks> {
  const { privateKey, publicKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true });
  const privateJwk = { ...(await exportJWK(privateKey)), kid, alg: 'EdDSA' };
  const publicJwk = { ...(await exportJWK(publicKey)), kid, alg: 'EdDSA' };
  return { privateJwk, publicJwk };
}

const B64URL_32 = /^[A-Za-z0-9_-]{43}$/;

/** True for an Ed25519 public JWK (and not a private one). */
export function isEd25519PublicJwk(jwk: unknown): jwk is JWK {
  if (typeof jwk !== 'object' || jwk === null) return false;
  const j = jwk as Record<string, unknown>;
  return j.kty === 'OKP' && j.crv === 'Ed25519' && typeof j.x === 'string' && B64URL_32.test(j.x) && j.d === undefined;
}
