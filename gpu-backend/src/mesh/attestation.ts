/**
 * Provider attestations (docs/api.md section 3): for every answer, a JWS by
 * the provider key over the dispatch token's `jti`, the model, the SHA-256 of
 * the exact response body sent and the billing units; the edge embeds it in
 * the consumer's receipt. Signed synchronously with Node's own Ed25519
 * (cheaper per answer than jose's WebCrypto path), as a plain compact JWS
 * (RFC 7515) that every JOSE library verifies.
 */

import { KeyObject, sign } from 'node:crypto';
import { TYP, type AttestationClaims, type Units } from '../../../shared/jwt.ts';
import type { ProviderKey } from './provider-key.ts';

interface AttestationInput {
  jti: string;
  model: string;
  outputSha256: string;
  units: Units;
}

export class Attestor {
  readonly #providerId: string;
  readonly #backendId: string;
  readonly #now: () => number;
  readonly #signingKey: KeyObject;
  /** `base64url(protected header) + "."`, the same for every attestation. */
  readonly #headerPrefix: string;

  constructor(options: { key: ProviderKey; providerId: string; backendId: string; now?: () => number }) {
    this.#providerId = options.providerId;
    this.#backendId = options.backendId;
    this.#now = options.now ?? Date.now;
    this.#signingKey = KeyObject.from(options.key.privateKey);
    const header = { alg: 'EdDSA', typ: TYP.attestation, kid: options.key.kid };
    this.#headerPrefix = `${Buffer.from(JSON.stringify(header)).toString('base64url')}.`;
  }

  /** Signs the attestation; the value of the `x-provider-attestation` header. */
  sign(input: AttestationInput): string {
    const claims: AttestationClaims = {
      iss: this.#providerId,
      sub: this.#backendId,
      iat: Math.floor(this.#now() / 1000),
      jti: input.jti,
      model: input.model,
      output_sha256: input.outputSha256,
      units: input.units,
    };
    const signingInput = this.#headerPrefix + Buffer.from(JSON.stringify(claims)).toString('base64url');
    const signature = sign(null, Buffer.from(signingInput), this.#signingKey).toString('base64url');
    return `${signingInput}.${signature}`;
  }
}
