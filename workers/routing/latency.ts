/**
 * Latency memory per backend, as the edge measures it: a peak-EWMA (Finagle's
 * load metric: fast up, slow down; or, without the fast up, a plain EWMA of
 * the mean) and a small decaying log-bucket histogram
 * for quantiles (p50, p95), kept per (backend, model) in a bounded book. Pure
 * data structures: every method takes `now`; nothing reads a clock.
 *
 * What to feed: the time from sending a dispatch to having its answer, as the
 * edge saw it (network round trip, queueing and service together). The scorer
 * subtracts its RTT estimate to get the backend's share, and the hedger uses
 * the quantiles as they are.
 */

import { ChangeLog } from './changes.ts';
import { RecencyList, type Recent } from './recency.ts';

export interface PeakEwmaOptions {
  /** Time constant of the decay toward lower samples (with `fastUp: false`, toward any sample), ms (default 10 s, Finagle's and Linkerd's). */
  decayMs?: number;
  /**
   * Whether a sample above the estimate replaces it at once (default true,
   * Finagle's peak). False: every sample is averaged in with the same
   * time-based weight, a plain EWMA that tracks the mean whatever the sample
   * rate (what scoring reads, isolate.ts).
   */
  fastUp?: boolean;
}

export interface HistogramOptions {
  /** Time constant with which old samples lose weight, ms (default 60 s). */
  decayMs?: number;
}

export interface LatencyOptions {
  /** The (peak-)EWMA's options. */
  ewma?: PeakEwmaOptions;
  /** The quantile histogram's options; false for none (a book only scoring reads needs the EWMA alone). */
  histogram?: HistogramOptions | false;
  /** At most this many (backend, model) entries are kept; the least recently observed goes first (default 4096). */
  maxEntries?: number;
  /** How many changes `LatencyBook.changes` holds (default 1024). */
  changeLogSize?: number;
}

export const DEFAULT_PEAK_DECAY_MS = 10_000;
export const DEFAULT_HISTOGRAM_DECAY_MS = 60_000;
export const DEFAULT_MAX_LATENCY_ENTRIES = 4096;

/**
 * Peak-sensitive EWMA (Finagle's `PeakEwma`): a sample above the estimate
 * replaces it at once; a sample below pulls it down with weight
 * `1 - exp(-elapsed / decayMs)`, so the decay is set by time, not by sample rate.
 * With `fastUp: false` a sample above is weighed the same way: a plain EWMA.
 *
 * @example
 * const e = new PeakEwma();
 * e.observe(20, 0); e.observe(400, 10); // value(10) === 400: the spike counts at once
 * e.observe(20, 30_000);                // value(30_000) ≈ 39: three time constants later
 */
export class PeakEwma {
  readonly #decayMs: number;
  readonly #fastUp: boolean;
  #value: number | undefined;
  #stamp = 0;

  constructor(options: PeakEwmaOptions = {}) {
    this.#decayMs = options.decayMs ?? DEFAULT_PEAK_DECAY_MS;
    this.#fastUp = options.fastUp ?? true;
  }

  /** Adds one sample taken at `now` (ms). */
  observe(sampleMs: number, now: number): void {
    if (this.#value === undefined || (this.#fastUp && sampleMs > this.#value)) {
      this.#value = sampleMs;
    } else {
      const w = Math.exp(-Math.max(0, now - this.#stamp) / this.#decayMs);
      this.#value = this.#value * w + sampleMs * (1 - w);
    }
    this.#stamp = Math.max(this.#stamp, now);
  }

  /**
   * Takes `valueMs` as the estimate as of `stamp`, when that is no older than
   * the last sample: an estimate made elsewhere from these samples and more
   * (the PoP's book, pop-book.ts). Returns whether it was taken.
   */
  adopt(valueMs: number, stamp: number): boolean {
    if (this.#value !== undefined && stamp < this.#stamp) return false;
    this.#value = valueMs;
    this.#stamp = stamp;
    return true;
  }

  /**
   * The estimate at `now`; undefined before any sample (or `prior` when given).
   * With a `prior`, an estimate that no sample refreshes relaxes toward it with
   * the same time constant, so a backend penalised by one spike and then
   * avoided is tried again rather than starved for ever.
   */
  value(now: number, prior?: number): number | undefined {
    if (this.#value === undefined) return prior;
    if (prior === undefined) return this.#value;
    const w = Math.exp(-Math.max(0, now - this.#stamp) / this.#decayMs);
    return prior + (this.#value - prior) * w;
  }

  /**
   * The lowest `value(t, prior)` for any t from `now` to `until`, if no sample
   * comes in between: the estimate moves monotonically from its last value
   * toward `prior`, so the lowest is at one end. Undefined before any sample.
   */
  lowestUntil(now: number, until: number, prior: number): number | undefined {
    if (this.#value === undefined) return undefined;
    return Math.min(this.value(now, prior)!, this.value(until, prior)!);
  }

  /** Finagle's load metric: estimate x (pending + 1); 0 before any sample and without a prior. */
  cost(pending: number, now: number, prior?: number): number {
    return (this.value(now, prior) ?? 0) * (pending + 1);
  }
}

/** Histogram buckets: [MIN x GROWTH^i, MIN x GROWTH^(i+1)), GROWTH = 2^(1/4) (at most ~9% error). */
const MIN_MS = 0.25;
const GROWTH = 2 ** 0.25;
const BUCKETS = 80; // 0.25 ms .. ~262 s; values outside land in the end buckets.
const LOG_GROWTH = Math.log(GROWTH);

function bucketOf(ms: number): number {
  if (!(ms > MIN_MS)) return 0;
  return Math.min(BUCKETS - 1, Math.floor(Math.log(ms / MIN_MS) / LOG_GROWTH));
}

/** Forward decay rescales its counts when the newest weight passes e^RESCALE_AT (far inside a double's range). */
const RESCALE_AT = 40;

/**
 * Streaming quantiles in bounded memory: 80 log-spaced buckets whose counts
 * decay exponentially with time, so the quantiles follow the recent past.
 * Forward decay (Cormode et al., 2009): a sample at time t counts
 * e^((t - landmark) / decayMs) instead of every older count being multiplied
 * down, so an observation touches one bucket, not 80; the counts are rescaled
 * to a new landmark only when the weights grow large.
 */
export class DecayingHistogram {
  readonly #decayMs: number;
  readonly #counts = new Float64Array(BUCKETS);
  #total = 0;
  /** The latest sample's time: an older one counts as if taken then. */
  #stamp = 0;
  #landmark = 0;

  constructor(options: HistogramOptions = {}) {
    this.#decayMs = options.decayMs ?? DEFAULT_HISTOGRAM_DECAY_MS;
  }

  /** Adds one sample taken at `now` (ms). */
  observe(sampleMs: number, now: number): void {
    this.#stamp = Math.max(this.#stamp, now);
    let age = (this.#stamp - this.#landmark) / this.#decayMs;
    if (age > RESCALE_AT) {
      const w = Math.exp(-age);
      for (let i = 0; i < BUCKETS; i++) this.#counts[i]! *= w;
      this.#total *= w;
      this.#landmark = this.#stamp;
      age = 0;
    }
    const weight = Math.exp(age);
    this.#counts[bucketOf(sampleMs)]! += weight;
    this.#total += weight;
  }

  /** The decayed number of samples at `now`: how much the quantiles can be trusted. */
  weight(now: number): number {
    return this.#total * Math.exp(-(Math.max(now, this.#stamp) - this.#landmark) / this.#decayMs);
  }

  /** The q-quantile (0..1) in ms, interpolated within its bucket; undefined when empty. */
  quantile(q: number): number | undefined {
    if (this.#total <= 0) return undefined;
    const target = Math.min(1, Math.max(0, q)) * this.#total;
    let seen = 0;
    for (let i = 0; i < BUCKETS; i++) {
      const c = this.#counts[i]!;
      if (c <= 0) continue;
      if (seen + c >= target) {
        const frac = Math.min(1, Math.max(0, (target - seen) / c));
        return MIN_MS * GROWTH ** (i + frac);
      }
      seen += c;
    }
    return MIN_MS * GROWTH ** BUCKETS;
  }
}

/** What the edge knows of one backend's latency for one model. */
export class LatencyStats {
  /** A peak-EWMA, or a plain EWMA with `fastUp: false`. */
  readonly ewma: PeakEwma;
  /** Absent when the book keeps none (`LatencyOptions.histogram: false`). */
  readonly histogram: DecayingHistogram | undefined;

  constructor(options: LatencyOptions = {}) {
    this.ewma = new PeakEwma(options.ewma);
    this.histogram = options.histogram === false ? undefined : new DecayingHistogram(options.histogram);
  }

  observe(sampleMs: number, now: number): void {
    this.ewma.observe(sampleMs, now);
    this.histogram?.observe(sampleMs, now);
  }
}

/** One (backend, model) entry of a `LatencyBook`, in its recency list. */
interface BookEntry extends Recent {
  readonly stats: LatencyStats;
  readonly id: string;
  readonly model: string;
}

/**
 * Latency per (backend, model), bounded: the least recently observed entry is
 * dropped first. Every observation and eviction is noted in `changes` (scope:
 * the model, id: the backend). An observation finds its entry through the
 * model's row by backend id (strings whose hashes are cached), builds no key,
 * and moves the entry to the newest end of a linked recency list
 * (recency.ts), not of a map.
 */
export class LatencyBook {
  /** What changed, by model: a reader can follow the book without re-reading it. */
  readonly changes: ChangeLog;
  readonly #options: LatencyOptions;
  readonly #max: number;
  /** The entries per model, by backend id: an observation's lookup, without building a key. */
  readonly #rows = new Map<string, Map<string, BookEntry>>();
  /** Their stats per model, by backend id: which backends of a model were measured, without a scan. */
  readonly #byModel = new Map<string, Map<string, LatencyStats>>();
  readonly #recency = new RecencyList<BookEntry>();

  constructor(options: LatencyOptions = {}) {
    this.#options = options;
    this.#max = options.maxEntries ?? DEFAULT_MAX_LATENCY_ENTRIES;
    this.changes = new ChangeLog(options.changeLogSize);
  }

  /** Records one dispatch's edge-measured time to its answer. */
  observe(backendId: string, model: string, sampleMs: number, now: number): void {
    this.#entry(backendId, model).observe(sampleMs, now);
    this.changes.note(model, backendId);
  }

  /**
   * Takes `valueMs` as the (peak-)EWMA of `backendId` for `model` as of
   * `stamp` (`PeakEwma.adopt`), unless the book holds a later sample; the
   * histogram, if any, is left alone. Returns whether it was taken.
   */
  adopt(backendId: string, model: string, valueMs: number, stamp: number): boolean {
    if (!this.#entry(backendId, model).ewma.adopt(valueMs, stamp)) return false;
    this.changes.note(model, backendId);
    return true;
  }

  /** The entry of (backend, model), made (and the oldest evicted at the bound) when there is none; now the most recent. */
  #entry(backendId: string, model: string): LatencyStats {
    let row = this.#rows.get(model);
    let entry = row?.get(backendId);
    if (entry) {
      this.#recency.touch(entry);
    } else {
      if (this.#recency.size >= this.#max) this.#evict();
      row = this.#rows.get(model); // eviction may have dropped the model's row
      entry = { stats: new LatencyStats(this.#options), id: backendId, model, older: undefined, newer: undefined };
      if (!row) this.#rows.set(model, (row = new Map()));
      row.set(backendId, entry);
      let stats = this.#byModel.get(model);
      if (!stats) this.#byModel.set(model, (stats = new Map()));
      stats.set(backendId, entry.stats);
      this.#recency.add(entry);
    }
    return entry.stats;
  }

  /** Drops the least recently observed entry. */
  #evict(): void {
    const entry = this.#recency.takeOldest();
    if (!entry) return;
    const row = this.#rows.get(entry.model)!;
    row.delete(entry.id);
    this.#byModel.get(entry.model)!.delete(entry.id);
    if (row.size === 0) {
      this.#rows.delete(entry.model);
      this.#byModel.delete(entry.model);
    }
    this.changes.note(entry.model, entry.id);
  }

  /** The stats of a backend for a model, when it has been measured. */
  get(backendId: string, model: string): LatencyStats | undefined {
    return this.#rows.get(model)?.get(backendId)?.stats;
  }

  /** The measured backends of `model`, by id; undefined when none is. */
  forModel(model: string): ReadonlyMap<string, LatencyStats> | undefined {
    return this.#byModel.get(model);
  }
}
