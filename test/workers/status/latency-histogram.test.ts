import { describe, expect, it } from 'vitest';
import { bucketOf, MAX_BUCKET, mergeInto, observe, parseHistogram, quantile, upperBound, type Histogram } from '../../../workers/status/latency-histogram.ts';

/** The exact `q` quantile of `values` (nearest rank). */
function exact(values: number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.max(1, Math.ceil(q * sorted.length)) - 1]!;
}

describe('latency histogram', () => {
  it('puts each latency in the bucket whose upper bound is the first at or above it', () => {
    for (const ms of [0, 0.5, 1, 1.19, 1.2, 1.21, 7, 100, 999.9, 12_345]) {
      const b = bucketOf(ms);
      expect(upperBound(b)).toBeGreaterThanOrEqual(Math.min(ms, upperBound(MAX_BUCKET)) - 1e-9);
      if (b > 0) expect(upperBound(b - 1)).toBeLessThan(ms);
    }
    expect(bucketOf(Number.NaN)).toBe(0);
    expect(bucketOf(1e12)).toBe(MAX_BUCKET);
  });

  it('reads percentiles within 20% above the exact ones', () => {
    // A skewed mix: most answers fast, a tail of slow ones.
    const values = Array.from({ length: 1000 }, (_, i) => (i % 10 === 0 ? 300 + i : 5 + (i % 37)));
    const h: Histogram = {};
    for (const v of values) observe(h, v);
    for (const q of [0.5, 0.9, 0.99]) {
      const got = quantile(h, q)!;
      expect(got).toBeGreaterThanOrEqual(exact(values, q) - 0.05);
      expect(got).toBeLessThanOrEqual(exact(values, q) * 1.2 + 0.05);
    }
    expect(quantile({}, 0.5)).toBeNull();
  });

  it('merges by adding counts', () => {
    const a: Histogram = {};
    const b: Histogram = {};
    observe(a, 10);
    observe(b, 10);
    observe(b, 500);
    mergeInto(a, b);
    expect(a).toEqual({ [bucketOf(10)]: 2, [bucketOf(500)]: 1 });
  });

  it('parses only bounded histograms from untrusted input', () => {
    expect(parseHistogram({ 3: 2, 10: 1 }, 3)).toEqual({ 3: 2, 10: 1 });
    expect(parseHistogram({ 3: 2, 10: 2 }, 3)).toBeUndefined(); // more than the requests counted
    expect(parseHistogram({ [MAX_BUCKET + 1]: 1 }, 10)).toBeUndefined();
    expect(parseHistogram({ '-1': 1 }, 10)).toBeUndefined();
    expect(parseHistogram({ 1: 0 }, 10)).toBeUndefined();
    expect(parseHistogram({ 1: 1.5 }, 10)).toBeUndefined();
    expect(parseHistogram({ __proto__: 1 }, 10)).toEqual({});
    expect(parseHistogram([1], 10)).toBeUndefined();
    expect(parseHistogram(null, 10)).toBeUndefined();
  });
});
