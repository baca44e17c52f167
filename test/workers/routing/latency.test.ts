import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DecayingHistogram, LatencyBook, PeakEwma } from '../../../workers/routing/latency.ts';

describe('PeakEwma', () => {
  it('jumps to a spike at once and decays back with its time constant', () => {
    const e = new PeakEwma({ decayMs: 10_000 });
    expect(e.value(0)).toBeUndefined();
    let t = 0;
    for (; t < 20_000; t += 100) e.observe(20, t);
    expect(e.value(t)).toBeCloseTo(20, 6);
    e.observe(500, t);
    expect(e.value(t)).toBe(500); // no averaging on the way up
    t += 100;
    e.observe(20, t);
    expect(e.value(t)!).toBeGreaterThan(490); // one fast sample barely moves it down
    const spikeAt = t;
    for (; t < spikeAt + 10_000; t += 100) e.observe(20, t);
    // One time constant: ~1/e of the excess remains.
    expect(e.value(t)!).toBeGreaterThan(20 + 480 * 0.3);
    expect(e.value(t)!).toBeLessThan(20 + 480 * 0.45);
    for (; t < spikeAt + 50_000; t += 100) e.observe(20, t);
    expect(e.value(t)!).toBeLessThan(25);
  });

  it('decays by elapsed time, not by how many samples came', () => {
    const sparse = new PeakEwma({ decayMs: 10_000 });
    const dense = new PeakEwma({ decayMs: 10_000 });
    sparse.observe(500, 0);
    dense.observe(500, 0);
    sparse.observe(20, 10_000);
    for (let t = 10; t <= 10_000; t += 10) dense.observe(20, t);
    expect(sparse.value(10_000)!).toBeCloseTo(dense.value(10_000)!, 0);
  });

  it('without the fast up, weighs a sample above the estimate like one below: a plain EWMA of the mean', () => {
    const e = new PeakEwma({ decayMs: 1_000, fastUp: false });
    let t = 0;
    // Answers of 10 and 30 ms in turn, every 10 ms: the estimate sits at their mean, not at the top.
    for (; t < 10_000; t += 10) e.observe(t % 20 === 0 ? 10 : 30, t);
    expect(e.value(t)!).toBeGreaterThan(19);
    expect(e.value(t)!).toBeLessThan(21);
    // One spike moves it by its time-weighted share only (10 ms of a 1 s constant: 1%).
    e.observe(500, t);
    expect(e.value(t)!).toBeLessThan(30);
    // A lasting change is followed with the time constant: ~63% of the way after 1 s.
    const changedAt = t;
    for (t += 10; t <= changedAt + 1_000; t += 10) e.observe(60, t);
    expect(e.value(t)!).toBeGreaterThan(20 + 40 * 0.55);
    expect(e.value(t)!).toBeLessThan(20 + 40 * 0.75);
  });

  it('relaxes toward a prior while no samples arrive, and costs estimate x (pending + 1)', () => {
    const e = new PeakEwma({ decayMs: 10_000 });
    e.observe(1_000, 0);
    expect(e.value(0, 50)).toBe(1_000);
    expect(e.value(50_000, 50)!).toBeLessThan(60);
    expect(e.value(50_000)).toBe(1_000); // without a prior it keeps what it measured
    expect(e.cost(3, 0)).toBe(4_000);
    expect(new PeakEwma().cost(3, 0)).toBe(0);
  });
});

describe('DecayingHistogram', () => {
  it('estimates p50 and p95 within a bucket (~10%)', () => {
    const h = new DecayingHistogram();
    for (let i = 1; i <= 1000; i++) h.observe(i / 10, 0); // uniform 0.1 .. 100 ms
    expect(h.quantile(0.5)!).toBeGreaterThan(45);
    expect(h.quantile(0.5)!).toBeLessThan(55);
    expect(h.quantile(0.95)!).toBeGreaterThan(86);
    expect(h.quantile(0.95)!).toBeLessThan(104);
    expect(new DecayingHistogram().quantile(0.5)).toBeUndefined();
  });

  it('forgets an old regime', () => {
    const h = new DecayingHistogram({ decayMs: 60_000 });
    for (let i = 0; i < 200; i++) h.observe(10, i);
    expect(h.quantile(0.5)!).toBeLessThan(11);
    for (let i = 0; i < 50; i++) h.observe(100, 300_000 + i);
    // 200 old samples weigh 200 x e^-5 ≈ 1.3 now: the median is the new regime.
    expect(h.quantile(0.5)!).toBeGreaterThan(90);
    expect(h.weight(300_049)).toBeLessThan(52);
  });
});

describe('PeakEwma.adopt', () => {
  it('takes an estimate made elsewhere as of its time, unless it holds a later sample, and relaxes from there', () => {
    const e = new PeakEwma({ decayMs: 2_000, fastUp: false });
    expect(e.adopt(30, 1_000)).toBe(true);
    expect(e.value(1_000)).toBe(30);
    expect(e.value(3_000, 10)).toBeCloseTo(10 + 20 / Math.E, 9);
    e.observe(50, 1_500);
    expect(e.adopt(90, 1_400)).toBe(false);
    expect(e.value(1_500)).toBeCloseTo(30 * Math.exp(-0.25) + 50 * (1 - Math.exp(-0.25)), 9);
    expect(e.adopt(90, 1_500)).toBe(true);
    expect(e.value(1_500)).toBe(90);
  });
});

describe('LatencyBook', () => {
  it('adopts an estimate into a new or held entry and notes the change, and notes nothing when it refuses one', () => {
    const book = new LatencyBook({ histogram: false, ewma: { fastUp: false } });
    const seq = book.changes.seq;
    expect(book.adopt('a', 'embed', 30, 100)).toBe(true);
    expect(book.forModel('embed')!.get('a')!.ewma.value(100)).toBe(30);
    book.observe('a', 'embed', 10, 200);
    expect(book.adopt('a', 'embed', 99, 150)).toBe(false);
    expect(book.changes.seq).toBe(seq + 2);
    const seen: string[] = [];
    book.changes.since(seq, 'embed', (id) => seen.push(id));
    expect(seen).toEqual(['a', 'a']);
  });

  it('keeps stats per (backend, model) and drops the least recently observed beyond its bound', () => {
    const book = new LatencyBook({ maxEntries: 2 });
    book.observe('a', 'embed', 10, 0);
    book.observe('a', 'clf', 30, 0);
    expect(book.get('a', 'embed')!.ewma.value(0)).toBe(10);
    expect(book.get('a', 'clf')!.ewma.value(0)).toBe(30);
    book.observe('a', 'embed', 12, 1); // 'a/embed' is now the most recent
    book.observe('b', 'embed', 50, 2);
    expect(book.get('a', 'clf')).toBeUndefined();
    expect(book.get('a', 'embed')).toBeDefined();
    expect(book.get('b', 'embed')).toBeDefined();
  });

  it('keeps exactly the most recently observed entries, whatever the order of observations (reference LRU)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 5 }), fc.array(fc.tuple(fc.constantFrom('a', 'b', 'c', 'd'), fc.constantFrom('embed', 'clf')), { maxLength: 80 }), (max, obs) => {
        const book = new LatencyBook({ maxEntries: max, histogram: false });
        let recent: string[] = []; // the reference: keys, least recently observed first
        obs.forEach(([id, model], t) => {
          const key = `${id}/${model}`;
          const before = book.changes.seq;
          const evicts = !recent.includes(key) && recent.length >= max;
          if (evicts) recent.shift();
          recent = [...recent.filter((k) => k !== key), key];
          book.observe(id, model, t, t);
          expect(book.changes.seq - before).toBe(evicts ? 2 : 1); // an eviction is a change too
        });
        for (const id of ['a', 'b', 'c', 'd']) {
          for (const model of ['embed', 'clf']) {
            const kept = recent.includes(`${id}/${model}`);
            expect(book.get(id, model) !== undefined).toBe(kept);
            expect(book.forModel(model)?.has(id) ?? false).toBe(kept);
          }
        }
      }),
    );
  });
});

