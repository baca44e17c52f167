/**
 * Provider attestations (API.md section 3): for every answer, a JWS by the
 * provider key over what was computed: the dispatch token's `jti`, the model,
 * the SHA-256 of the exact response body bytes sent, and the billing units.
 * The edge embeds it in the consumer's receipt.
 */

import { SignJWT } from 'jose';
import { TYP, type AttestationClaims, type Units } from '../../shared/tokens.ts';
import type { ProviderKey } from './provider-key.ts';

export interface AttestationInput {
  jti: string;
  model: string;
  outputSha256: string;
  units: Units;
}

export class Attestor {
  readonly #key: ProviderKey;
  readonly #providerId: string;
  readonly #backendId: string;
  readonly #now: () => number;

  constructor(options: { key: ProviderKey; providerId: string; backendId: string; now?: () => number }) {
    this.#key = options.key;
    this.#providerId = options.providerId;
    this.#backendId = options.backendId;
    this.#now = options.now ?? Date.now;
  }

  /** Signs the attestation; the value of the `x-provider-attestation` header. */
  async sign(input: AttestationInput): Promise<string> {
    const claims: AttestationClaims = {
      iss: this.#providerId,
      sub: this.#backendId,
      iat: Math.floor(this.#now() / 1000),
      jti: input.jti,
      model: input.model,
      output_sha256: input.outputSha256,
      units: input.units,
    };
    return new SignJWT({ ...claims })
      .setProtectedHeader({ alg: 'EdDSA', typ: TYP.attestation, kid: this.#key.kid })
      .sign(this.#key.privateKey);
  }
}
