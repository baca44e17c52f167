/** Dispatch tokens signed ahead of a measured run, as the edge signs them (workers/inference/dispatch.ts), so signing is not measured. */

import { SignJWT, type CryptoKey } from 'jose';
import { DISPATCH_TTL_MAX_S, TYP } from '../../shared/jwt.ts';

export interface DispatchTokenOptions {
  key: CryptoKey;
  kid: string;
  issuer: string;
  /** The backend id. */
  aud: string;
  model: string;
  bodySha256: string;
  count: number;
}

/** `count` single-use dispatch tokens for the same body, signed 256 at a time. */
export async function signDispatchTokens(o: DispatchTokenOptions): Promise<string[]> {
  const iat = Math.floor(Date.now() / 1000);
  const sign = () =>
    new SignJWT({ purpose: 'infer', model: o.model, body_sha256: o.bodySha256 })
      .setProtectedHeader({ alg: 'EdDSA', typ: TYP.dispatch, kid: o.kid })
      .setIssuer(o.issuer)
      .setAudience(o.aud)
      .setSubject('bench-consumer')
      .setJti(crypto.randomUUID())
      .setIssuedAt(iat)
      .setExpirationTime(iat + DISPATCH_TTL_MAX_S)
      .sign(o.key);
  const tokens: string[] = [];
  for (let i = 0; i < o.count; i += 256) tokens.push(...(await Promise.all(Array.from({ length: Math.min(256, o.count - i) }, sign))));
  return tokens;
}
