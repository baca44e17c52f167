/**
 * Hedging decisions (The Tail at Scale): when the first attempt has not
 * answered by that backend's p95, send one copy to the next candidate and take
 * whichever answers first; at the p95 this costs about 5% more load. Pure
 * helpers: the caller owns the timer, the cancellation, and spending the
 * retry budget (`RetryBudget.tryRetry()` before sending the hedge).
 */

import type { LatencyStats } from './latency.ts';

export interface HedgeOptions {
  /** Quantile of the backend's time to answer after which to hedge (default 0.95). */
  quantile?: number;
  /** No hedging until the backend has this much (decayed) sample weight (default 20). */
  minSamples?: number;
  /** Never hedge sooner than this, ms (default 10). */
  minDelayMs?: number;
  /** Never wait longer than this to hedge, ms (default 3000). */
  maxDelayMs?: number;
}

export const HEDGE_DEFAULTS = { quantile: 0.95, minSamples: 20, minDelayMs: 10, maxDelayMs: 3_000 } as const;

/**
 * How long after sending to a backend to hedge, ms: its measured p95 within
 * [minDelayMs, maxDelayMs]; undefined (do not hedge) until it has enough samples.
 *
 * @example
 * const delay = hedgeDelayMs(latency.get(first.backend.id, model), Date.now());
 * if (delay !== undefined) setTimeout(maybeHedge, delay);
 */
export function hedgeDelayMs(stats: LatencyStats | undefined, now: number, options: HedgeOptions = {}): number | undefined {
  if (!stats) return undefined;
  if (stats.histogram.weight(now) < (options.minSamples ?? HEDGE_DEFAULTS.minSamples)) return undefined;
  const q = stats.histogram.quantile(options.quantile ?? HEDGE_DEFAULTS.quantile);
  if (q === undefined) return undefined;
  return Math.min(options.maxDelayMs ?? HEDGE_DEFAULTS.maxDelayMs, Math.max(options.minDelayMs ?? HEDGE_DEFAULTS.minDelayMs, q));
}
