import { describe, expect, it } from 'vitest';
import { hedgeDelayMs } from '../../../workers/routing/hedge.ts';
import { LatencyStats } from '../../../workers/routing/latency.ts';

describe('hedging decisions', () => {
  it('hedges at the backend p95, only once it has enough samples', () => {
    const stats = new LatencyStats();
    expect(hedgeDelayMs(undefined, 0)).toBeUndefined();
    for (let i = 1; i <= 19; i++) stats.observe(i * 5, 0);
    expect(hedgeDelayMs(stats, 0)).toBeUndefined(); // 19 samples
    for (let i = 20; i <= 100; i++) stats.observe(i, 0);
    for (let i = 0; i < 100; i++) stats.observe(20 + (i % 10) * 10, 0); // 20..110 ms
    const delay = hedgeDelayMs(stats, 0)!;
    expect(delay).toBeGreaterThan(85);
    expect(delay).toBeLessThan(120);
    // Bounded both ways.
    expect(hedgeDelayMs(stats, 0, { maxDelayMs: 50 })).toBe(50);
    const fast = new LatencyStats();
    for (let i = 0; i < 50; i++) fast.observe(1, 0);
    expect(hedgeDelayMs(fast, 0)).toBe(10);
    // Samples fade: an hour later there is too little left to trust.
    expect(hedgeDelayMs(stats, 3_600_000)).toBeUndefined();
  });
});
