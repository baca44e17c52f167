/**
 * The isolate's key leases: one `KeyLease` per key with an account that this
 * isolate has served, kept in memory for the isolate's life and bounded
 * (least recently used first out, idle ones before busy ones).
 */

import { KeyLease, realClock, type Clock } from './lease.ts';

/** Most keys whose leases one isolate keeps. */
const MAX_LEASES = 10_000;

export class KeyLeases {
  readonly #leases = new Map<string, KeyLease>();
  readonly #clock: Clock;

  constructor(clock: Clock = realClock) {
    this.#clock = clock;
  }

  /** The lease of key `jti`, created empty the first time. */
  get(jti: string): KeyLease {
    let lease = this.#leases.get(jti);
    if (lease) {
      this.#leases.delete(jti);
      this.#leases.set(jti, lease);
      return lease;
    }
    if (this.#leases.size >= MAX_LEASES) this.#evict();
    lease = new KeyLease(this.#clock);
    this.#leases.set(jti, lease);
    return lease;
  }

  /** Drops the least recently used lease that holds nothing; failing that, the least recently used. */
  #evict(): void {
    for (const [jti, lease] of this.#leases) {
      if (!lease.holding) {
        this.#leases.delete(jti);
        return;
      }
    }
    this.#leases.delete(this.#leases.keys().next().value!);
  }
}

/** This isolate's leases. */
export const isolateLeases = new KeyLeases();
