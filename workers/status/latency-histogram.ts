/**
 * Latency histograms for the status page: log-spaced buckets (each 20% wider
 * than the one below, so a percentile read from them is within 20% of the
 * true one), kept sparse as `{ bucket: count }` so that they travel to and
 * from the directories as JSON and merge by adding. Percentiles answer the
 * bucket's upper bound.
 */

/** Each bucket's upper bound is GROWTH times the one below it; bucket 0 holds everything up to 1 ms. */
const GROWTH = 1.2;
const LOG_GROWTH = Math.log(GROWTH);
/** The last bucket (about 10 minutes) holds everything above it too. */
export const MAX_BUCKET = 72;

/** `{ bucket index: count }`, only non-empty buckets. */
export type Histogram = Record<number, number>;

/** The bucket a latency of `ms` falls in. */
export function bucketOf(ms: number): number {
  if (!(ms > 1)) return 0;
  return Math.min(MAX_BUCKET, Math.ceil(Math.log(ms) / LOG_GROWTH - 1e-9));
}

/** A bucket's upper bound, ms. */
export function upperBound(bucket: number): number {
  return GROWTH ** bucket;
}

/** Adds one observation. */
export function observe(h: Histogram, ms: number): void {
  const b = bucketOf(ms);
  h[b] = (h[b] ?? 0) + 1;
}

/** Adds `from` into `into`. */
export function mergeInto(into: Histogram, from: Histogram): void {
  for (const [k, n] of Object.entries(from)) {
    const b = Number(k);
    into[b] = (into[b] ?? 0) + n;
  }
}

/**
 * A histogram from untrusted JSON, or undefined when anything in it is out of
 * bounds: bucket indexes 0..MAX_BUCKET, counts positive integers summing to
 * at most `maxTotal`.
 */
export function parseHistogram(v: unknown, maxTotal: number): Histogram | undefined {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return undefined;
  const out: Histogram = {};
  let total = 0;
  for (const [k, n] of Object.entries(v)) {
    if (!/^\d{1,2}$/.test(k) || Number(k) > MAX_BUCKET) return undefined;
    if (!Number.isSafeInteger(n) || (n as number) < 1) return undefined;
    total += n as number;
    if (total > maxTotal) return undefined;
    out[Number(k)] = n as number;
  }
  return out;
}

/** The `q` quantile (0..1) as its bucket's upper bound, ms rounded to 0.1; null for an empty histogram. */
export function quantile(h: Histogram, q: number): number | null {
  const buckets = Object.keys(h)
    .map(Number)
    .sort((a, b) => a - b);
  let total = 0;
  for (const b of buckets) total += h[b]!;
  if (total === 0) return null;
  // The smallest bucket whose cumulative count reaches rank ceil(q * total).
  const rank = Math.max(1, Math.ceil(q * total));
  let seen = 0;
  for (const b of buckets) {
    seen += h[b]!;
    if (seen >= rank) return Math.round(upperBound(b) * 10) / 10;
  }
  return Math.round(upperBound(buckets.at(-1)!) * 10) / 10;
}
