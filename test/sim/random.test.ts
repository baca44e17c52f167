import { describe, expect, it } from 'vitest';
import { hashUnit, normalQuantile, Random, skewedLognormalQuantile, WeightedPicker } from '../../sim/random.ts';

describe('the simulator\'s randomness', () => {
  it('repeats a stream for its seed, and forks independent streams', () => {
    const a = new Random(42);
    const b = new Random(42);
    const xs = Array.from({ length: 10 }, () => a.unit());
    expect(Array.from({ length: 10 }, () => b.unit())).toEqual(xs);
    const f1 = new Random(42).fork(1).unit();
    expect(new Random(42).fork(1).unit()).toBe(f1);
    expect(new Random(42).fork(2).unit()).not.toBe(f1);
  });

  it('draws in proportion to the weights (alias method), never a zero weight', () => {
    const picker = new WeightedPicker([1, 0, 3, 6]);
    const random = new Random(3);
    const counts = [0, 0, 0, 0];
    for (let i = 0; i < 100_000; i++) counts[picker.pick(random)]!++;
    expect(counts[1]).toBe(0);
    expect(counts[0]! / 100_000).toBeCloseTo(0.1, 1);
    expect(counts[2]! / 100_000).toBeCloseTo(0.3, 1);
    expect(counts[3]! / 100_000).toBeCloseTo(0.6, 1);
    expect(() => new WeightedPicker([0, 0])).toThrow(/positive weight/);
    expect(() => new WeightedPicker([1, Number.NaN])).toThrow(/weight 1/);
  });

  it('gives lognormal and exponential draws their median and mean', () => {
    const random = new Random(5);
    const logs = Array.from({ length: 20_001 }, () => random.lognormal(12, 0.4)).sort((x, y) => x - y);
    expect(logs[10_000]).toBeGreaterThan(11.5);
    expect(logs[10_000]).toBeLessThan(12.5);
    const mean = Array.from({ length: 20_000 }, () => random.exponential(3)).reduce((s, x) => s + x, 0) / 20_000;
    expect(mean).toBeCloseTo(3, 0);
  });

  it('puts path inflation at its median, p10 and p90', () => {
    expect(normalQuantile(0.5)).toBeCloseTo(0, 9);
    expect(normalQuantile(0.9)).toBeCloseTo(1.2815515655446004, 6);
    expect(skewedLognormalQuantile(0.5, 2, 1.5, 3.4)).toBeCloseTo(2, 9);
    expect(skewedLognormalQuantile(0.1, 2, 1.5, 3.4)).toBeCloseTo(1.5, 6);
    expect(skewedLognormalQuantile(0.9, 2, 1.5, 3.4)).toBeCloseTo(3.4, 6);
    expect(hashUnit(1, 2, 3)).toBe(hashUnit(1, 2, 3));
    expect(hashUnit(1, 2, 3)).not.toBe(hashUnit(1, 3, 2));
  });
});
