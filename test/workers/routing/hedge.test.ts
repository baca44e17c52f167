import { describe, expect, it } from 'vitest';
import { hedgeDelayMs, modelHedgeDelayMs, RatioBook } from '../../../workers/routing/hedge.ts';
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

  it("falls back to the model's tail: expected time x the p95 of actual / expected, once the model has enough samples; before, a prior", () => {
    const ratios = new RatioBook();
    // No answers yet: the prior, 3x the expected time (none with the prior off, or no expected time).
    expect(modelHedgeDelayMs(ratios, 'embed', 40, 0)).toBe(120);
    expect(modelHedgeDelayMs(undefined, 'embed', 40, 0)).toBe(120);
    expect(modelHedgeDelayMs(ratios, 'embed', 40, 0, { priorRatio: 0 })).toBeUndefined();
    expect(modelHedgeDelayMs(ratios, 'embed', 0, 0)).toBeUndefined();
    expect(modelHedgeDelayMs(ratios, 'embed', Number.NaN, 0)).toBeUndefined();
    // 19 answers at their expected time: not yet enough to replace the prior.
    for (let i = 0; i < 19; i++) ratios.observe('embed', 40, 40, 0);
    expect(modelHedgeDelayMs(ratios, 'embed', 40, 0)).toBe(120);
    expect(modelHedgeDelayMs(ratios, 'embed', 40, 0, { priorRatio: 0 })).toBeUndefined();
    // 100 answers at 1.0-2.0x their expected time (uniform): p95 about 1.95x.
    for (let i = 0; i < 100; i++) ratios.observe('embed', 50 * (1 + i / 100), 50, 0);
    const delay = modelHedgeDelayMs(ratios, 'embed', 40, 0)!;
    expect(delay).toBeGreaterThan(40 * 1.8);
    expect(delay).toBeLessThan(40 * 2.1);
    // Per model, bounded both ways, and a backend with an expected time of its own scales it.
    expect(modelHedgeDelayMs(ratios, 'chat', 40, 0)).toBe(120); // another model: its own samples, none yet
    expect(modelHedgeDelayMs(ratios, 'embed', 400, 0)! / delay).toBeCloseTo(10, 5);
    expect(modelHedgeDelayMs(ratios, 'embed', 4_000, 0)).toBe(3_000);
    expect(modelHedgeDelayMs(ratios, 'embed', 1, 0)).toBe(10);
    // Nonsense samples are not recorded.
    ratios.observe('bad', 10, 0, 0);
    ratios.observe('bad', Number.NaN, 10, 0);
    expect(ratios.quantile('bad', 0.5, 0)).toBeUndefined();
  });

  it('keeps at most maxModels models, forgetting the one observed least recently', () => {
    const ratios = new RatioBook(2);
    ratios.observe('embed', 40, 40, 0);
    ratios.observe('ocr', 40, 40, 0);
    ratios.observe('embed', 40, 40, 0); // embed in use again: ocr is now the oldest
    ratios.observe('chat', 40, 40, 0);
    expect(ratios.quantile('embed', 0.5, 0)?.weight).toBe(2);
    expect(ratios.quantile('ocr', 0.5, 0)).toBeUndefined();
    expect(ratios.quantile('chat', 0.5, 0)?.weight).toBe(1);
  });
});
