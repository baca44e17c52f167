/**
 * Signed location probes (docs/api.md section 3.6, `POST /v2/mesh/probe`):
 * the edge times a round trip to this backend and checks, with the provider's
 * admitted key, that the answer came from the holder of the provider key and
 * names this backend, so a probe cannot be answered by some nearer machine
 * that does not hold it. Signed synchronously with Node's own Ed25519, like
 * the Attestor: the signature is part of the round trip being measured.
 */

import { KeyObject, sign } from 'node:crypto';
import { MeshError } from '../../../shared/errors.ts';
import { PROBE_NONCE, probeMessage, type ProbeAnswer } from '../../../shared/probe.ts';
import type { ProviderKey } from './provider-key.ts';

export type { ProbeAnswer };

/** The largest probe request body, bytes. */
export const PROBE_MAX_BODY_BYTES = 1024;
/**
 * Probes signed per second at most, per thread; beyond, 429 `rate_limited`.
 * The edge sends each backend at most one per 10 s per isolate: this only
 * bounds what anyone can make the backend sign.
 */
export const PROBES_PER_SECOND = 50;

export class ProbeSigner {
  readonly #backendId: string;
  readonly #signingKey: KeyObject;
  readonly #now: () => number;
  readonly #perSecond: number;
  #second = 0;
  #signed = 0;

  constructor(options: { key: ProviderKey; backendId: string; now?: () => number; perSecond?: number }) {
    this.#backendId = options.backendId;
    this.#signingKey = KeyObject.from(options.key.privateKey);
    this.#now = options.now ?? Date.now;
    this.#perSecond = options.perSecond ?? PROBES_PER_SECOND;
  }

  /**
   * Checks the parsed probe request (`{ "nonce": ... }`) and signs its nonce;
   * 400 `invalid_request` when it is not one, 429 `rate_limited` past
   * PROBES_PER_SECOND.
   */
  answer(request: unknown): ProbeAnswer {
    const second = Math.floor(this.#now() / 1000);
    if (second !== this.#second) {
      this.#second = second;
      this.#signed = 0;
    }
    if (this.#signed >= this.#perSecond) {
      throw new MeshError('rate_limited', `This backend answers at most ${this.#perSecond} probes a second; retry shortly.`, { retryAfter: 1 });
    }
    if (typeof request !== 'object' || request === null || Array.isArray(request)) {
      throw new MeshError('invalid_request', 'A probe must be a JSON object: {"nonce": "<16 to 64 base64url characters>"}.');
    }
    const nonce = (request as Record<string, unknown>).nonce;
    if (typeof nonce !== 'string' || !PROBE_NONCE.test(nonce)) {
      throw new MeshError('invalid_request', '"nonce" must be 16 to 64 base64url characters (A-Z, a-z, 0-9, "-", "_").');
    }
    this.#signed++;
    return { nonce, signature: this.sign(nonce) };
  }

  /** The signature over `probeMessage(backendId, nonce)`, base64url. */
  sign(nonce: string): string {
    return sign(null, Buffer.from(probeMessage(this.#backendId, nonce), 'utf8'), this.#signingKey).toString('base64url');
  }
}
