/**
 * Retry budget (Linkerd's and Envoy's idea): over a sliding window, extra
 * attempts (retries and hedges) may be at most `ratio` of the original
 * requests plus a floor of `minPerSecond` per second of window, so that when a
 * region dies the isolate adds at most ~20% load instead of multiplying it.
 * The window is kept in a few fixed buckets (bounded memory); the clock is injected.
 */

export interface RetryBudgetOptions {
  /** Extra attempts allowed per original request (default 0.2). */
  ratio?: number;
  /** Extra attempts always allowed, per second of window (default 3), so low traffic can still retry. */
  minPerSecond?: number;
  /** Sliding window, ms (default 10 s). */
  windowMs?: number;
  /** Buckets the window is kept in (default 10). */
  buckets?: number;
  /** The clock, ms (default `Date.now`). */
  now?: () => number;
}

export const RETRY_BUDGET_DEFAULTS = { ratio: 0.2, minPerSecond: 3, windowMs: 10_000, buckets: 10 } as const;

/** Counts requests and retries over a sliding window and says whether one more retry fits. */
export class RetryBudget {
  readonly #ratio: number;
  readonly #floor: number;
  readonly #bucketMs: number;
  readonly #now: () => number;
  readonly #requests: Float64Array;
  readonly #retries: Float64Array;
  /** The bucket number (time / bucketMs) each slot holds. */
  readonly #epochs: Float64Array;

  constructor(options: RetryBudgetOptions = {}) {
    const windowMs = options.windowMs ?? RETRY_BUDGET_DEFAULTS.windowMs;
    const buckets = Math.max(1, Math.floor(options.buckets ?? RETRY_BUDGET_DEFAULTS.buckets));
    this.#ratio = options.ratio ?? RETRY_BUDGET_DEFAULTS.ratio;
    this.#floor = (options.minPerSecond ?? RETRY_BUDGET_DEFAULTS.minPerSecond) * (windowMs / 1000);
    this.#bucketMs = windowMs / buckets;
    this.#now = options.now ?? Date.now;
    this.#requests = new Float64Array(buckets);
    this.#retries = new Float64Array(buckets);
    this.#epochs = new Float64Array(buckets).fill(-Infinity);
  }

  /** Counts one original request (not a retry or a hedge). */
  recordRequest(): void {
    this.#requests[this.#slot()]! += 1;
  }

  /** Counts one retry or hedge that was sent. */
  recordRetry(): void {
    this.#retries[this.#slot()]! += 1;
  }

  /** True when one more retry stays within ratio x requests + floor over the window. */
  canRetry(): boolean {
    const { requests, retries } = this.totals();
    return retries + 1 <= this.#ratio * requests + this.#floor;
  }

  /** `canRetry()` and, when true, `recordRetry()`: call this right before sending a retry or hedge. */
  tryRetry(): boolean {
    if (!this.canRetry()) return false;
    this.recordRetry();
    return true;
  }

  /** Requests and retries counted in the current window. */
  totals(): { requests: number; retries: number } {
    const current = Math.floor(this.#now() / this.#bucketMs);
    let requests = 0;
    let retries = 0;
    for (let i = 0; i < this.#epochs.length; i++) {
      if (this.#epochs[i]! > current - this.#epochs.length) {
        requests += this.#requests[i]!;
        retries += this.#retries[i]!;
      }
    }
    return { requests, retries };
  }

  #slot(): number {
    const epoch = Math.floor(this.#now() / this.#bucketMs);
    const n = this.#epochs.length;
    const slot = ((epoch % n) + n) % n;
    if (this.#epochs[slot] !== epoch) {
      this.#epochs[slot] = epoch;
      this.#requests[slot] = 0;
      this.#retries[slot] = 0;
    }
    return slot;
  }
}
