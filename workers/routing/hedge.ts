/**
 * Hedging decisions (The Tail at Scale): when the first attempt has not
 * answered by that backend's p95, send one copy to the next candidate and take
 * whichever answers first; at the p95 this costs about 5% more load. While
 * this isolate has too few answers from that backend, the model's own tail
 * stands in: its expected time (the score) times the p95 of the model's
 * answer times over their expected times, across every backend (`RatioBook`);
 * while the model too has too few, a prior: the expected time times
 * `priorRatio`, so that a young or quiet isolate still hedges its stragglers.
 * Pure helpers: the caller owns the timer, the cancellation, and spending the
 * retry budget (`RetryBudget.tryRetry()` before sending the hedge).
 */

import { DecayingHistogram, type LatencyStats } from './latency.ts';

export interface HedgeOptions {
  /** Quantile of the backend's time to answer after which to hedge (default 0.95). */
  quantile?: number;
  /** No hedging until the backend has this much (decayed) sample weight (default 20). */
  minSamples?: number;
  /** Never hedge sooner than this, ms (default 10). */
  minDelayMs?: number;
  /** Never wait longer than this to hedge, ms (default 3000). */
  maxDelayMs?: number;
  /**
   * While the model has fewer than `minSamples` answers in this isolate, hedge
   * at its expected time times this (default 3); 0: not at all until it has them.
   */
  priorRatio?: number;
}

export const HEDGE_DEFAULTS = { quantile: 0.95, minSamples: 20, minDelayMs: 10, maxDelayMs: 3_000, priorRatio: 3 } as const;

/**
 * How long after sending to a backend to hedge, ms: its measured p95 within
 * [minDelayMs, maxDelayMs]; undefined (do not hedge) until it has enough samples.
 *
 * @example
 * const delay = hedgeDelayMs(latency.get(first.backend.id, model), Date.now());
 * if (delay !== undefined) setTimeout(maybeHedge, delay);
 */
export function hedgeDelayMs(stats: LatencyStats | undefined, now: number, options: HedgeOptions = {}): number | undefined {
  if (!stats?.histogram) return undefined;
  if (stats.histogram.weight(now) < (options.minSamples ?? HEDGE_DEFAULTS.minSamples)) return undefined;
  const q = stats.histogram.quantile(options.quantile ?? HEDGE_DEFAULTS.quantile);
  if (q === undefined) return undefined;
  return Math.min(options.maxDelayMs ?? HEDGE_DEFAULTS.maxDelayMs, Math.max(options.minDelayMs ?? HEDGE_DEFAULTS.minDelayMs, q));
}

/** Ratios are kept x100 in a latency histogram (its buckets span 0.25 to 262,144). */
const RATIO_SCALE = 100;

/**
 * Per model, the answer times this isolate waited for over the expected times
 * they were ranked by (each answered attempt's `actual / Scored.expectedMs`),
 * in a decaying histogram: how far past its score a backend's answer may run,
 * learnt from every backend of the model at once. Bounded: past `maxModels`,
 * the model observed least recently is forgotten.
 */
export class RatioBook {
  readonly #byModel = new Map<string, DecayingHistogram>();
  readonly #maxModels: number;

  constructor(maxModels = 256) {
    this.#maxModels = maxModels;
  }

  /** Records one answer: `actualMs` waited where `expectedMs` was expected. */
  observe(model: string, actualMs: number, expectedMs: number, now: number): void {
    if (!(expectedMs > 0) || !(actualMs >= 0)) return;
    let h = this.#byModel.get(model);
    if (h) {
      // Least recently observed first out: a model in use is never the one evicted.
      this.#byModel.delete(model);
    } else {
      if (this.#byModel.size >= this.#maxModels) this.#byModel.delete(this.#byModel.keys().next().value!);
      h = new DecayingHistogram();
    }
    this.#byModel.set(model, h);
    h.observe((actualMs / expectedMs) * RATIO_SCALE, now);
  }

  /** The model's q-quantile of actual / expected, with its sample weight; undefined before any sample. */
  quantile(model: string, q: number, now: number): { ratio: number; weight: number } | undefined {
    const h = this.#byModel.get(model);
    const v = h?.quantile(q);
    return h && v !== undefined ? { ratio: v / RATIO_SCALE, weight: h.weight(now) } : undefined;
  }
}

/**
 * How long after sending to a backend to hedge when it has too few samples of
 * its own (`hedgeDelayMs` undefined): its expected time times the model's p95
 * of actual / expected; while the model has too few samples as well, times
 * `priorRatio`; within [minDelayMs, maxDelayMs]. Undefined with no expected
 * time, or with too few samples and no prior.
 *
 * With a thousand backends and many isolates per PoP, an isolate seldom holds
 * 20 answers of a model, and without the prior hedging was seldom armed
 * (docs/benchmarks.md, "Isolates per PoP").
 */
export function modelHedgeDelayMs(ratios: RatioBook | undefined, model: string, expectedMs: number, now: number, options: HedgeOptions = {}): number | undefined {
  if (!(expectedMs > 0)) return undefined;
  const q = ratios?.quantile(model, options.quantile ?? HEDGE_DEFAULTS.quantile, now);
  const ratio = q && q.weight >= (options.minSamples ?? HEDGE_DEFAULTS.minSamples) ? q.ratio : (options.priorRatio ?? HEDGE_DEFAULTS.priorRatio);
  if (!(ratio > 0)) return undefined;
  return Math.min(options.maxDelayMs ?? HEDGE_DEFAULTS.maxDelayMs, Math.max(options.minDelayMs ?? HEDGE_DEFAULTS.minDelayMs, expectedMs * ratio));
}
