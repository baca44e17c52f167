/**
 * Single-use token ids. Each `jti` is remembered until its token expires, so a
 * replayed dispatch token is refused. Memory is bounded: expired ids are pruned,
 * and when the cap is reached with every id still live, new tokens are refused
 * (503) instead of forgetting live ids, which would reopen replays.
 */

import { MeshError } from '../../../shared/errors.ts';

export class ReplayCache {
  readonly #seen = new Map<string, number>();
  readonly #cap: number;
  #nextPrune = 0;

  constructor(cap = 100_000) {
    if (!Number.isInteger(cap) || cap < 1) throw new RangeError('ReplayCache cap must be a positive integer.');
    this.#cap = cap;
  }

  get size(): number {
    return this.#seen.size;
  }

  /**
   * Records `jti` (valid until `expiresAtS`, in seconds). Returns false when it
   * was seen before and has not expired. Throws 503 `no_capacity` when full.
   */
  use(jti: string, expiresAtS: number, nowS: number): boolean {
    const known = this.#seen.get(jti);
    if (known !== undefined && known >= nowS) return false;
    if (this.#seen.size >= this.#cap || nowS >= this.#nextPrune) this.#prune(nowS);
    if (this.#seen.size >= this.#cap) {
      throw new MeshError('no_capacity', 'Too many dispatch tokens are live at once; retry shortly.', { retryAfter: 1 });
    }
    this.#seen.set(jti, expiresAtS);
    return true;
  }

  #prune(nowS: number): void {
    for (const [jti, exp] of this.#seen) if (exp < nowS) this.#seen.delete(jti);
    this.#nextPrune = nowS + 1;
  }
}
