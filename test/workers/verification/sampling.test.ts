/** How often a provider is re-executed, how its strikes weigh on routing, and who a three-run comparison accuses. */

import { describe, expect, it } from 'vitest';
import type { ProviderStanding } from '../../../workers/operator/standing.ts';
import { accusedOf } from '../../../workers/verification/reexecute.ts';
import { AFTER_FRAUD_MS, AFTER_FRAUD_RATE, NEW_PROVIDER_MS, NEW_PROVIDER_RATE, sampleRate, strikePenalty } from '../../../workers/verification/sampling.ts';

const NOW = 1_800_000_000_000;
const standing = (over: Partial<ProviderStanding> = {}): ProviderStanding => ({
  id: 'p',
  addedAt: NOW - 30 * 24 * 3600_000,
  strikes: 0,
  lastProvenAt: null,
  quarantinedAt: null,
  sampleRate: null,
  ...over,
});

describe('sampleRate', () => {
  it('is the base rate for an established provider with no recent fraud', () => {
    expect(sampleRate(standing(), 0.05, NOW)).toBe(0.05);
  });

  it('is raised for a new provider; one the snapshot does not carry is established and clean', () => {
    expect(sampleRate(standing({ addedAt: NOW - NEW_PROVIDER_MS + 1 }), 0.05, NOW)).toBe(NEW_PROVIDER_RATE);
    expect(sampleRate(undefined, 0.05, NOW)).toBe(0.05);
  });

  it('is raised after a proven fraud, for a day', () => {
    expect(sampleRate(standing({ lastProvenAt: NOW - 1000 }), 0.05, NOW)).toBe(AFTER_FRAUD_RATE);
    expect(sampleRate(standing({ lastProvenAt: NOW - AFTER_FRAUD_MS - 1 }), 0.05, NOW)).toBe(0.05);
  });

  it("never lowers a base rate above the raised ones, and the operator's rate wins over everything", () => {
    expect(sampleRate(standing({ addedAt: NOW }), 0.9, NOW)).toBe(0.9);
    expect(sampleRate(standing({ addedAt: NOW, lastProvenAt: NOW, sampleRate: 0 }), 0.05, NOW)).toBe(0);
    expect(sampleRate(standing({ sampleRate: 1 }), 0.05, NOW)).toBe(1);
  });
});

describe('strikePenalty', () => {
  it('multiplies expected time by one more per strike', () => {
    expect(strikePenalty(0)).toBe(1);
    expect(strikePenalty(1)).toBe(2);
    expect(strikePenalty(2)).toBe(3);
  });
});

describe('accusedOf', () => {
  const agree = (a: number, b: number) => a === b;

  it('accuses the one run that disagrees with two that agree', () => {
    expect(accusedOf([1, 2, 2], agree)).toBe(1);
    expect(accusedOf([2, 1, 2], agree)).toBe(1);
    expect(accusedOf([2, 2, 1], agree)).toBe(1);
  });

  it('accuses nobody with two runs, three different answers, or all agreeing', () => {
    expect(accusedOf([1, 2], agree)).toBeUndefined();
    expect(accusedOf([1, 2, 3], agree)).toBeUndefined();
    expect(accusedOf([2, 2, 2], agree)).toBeUndefined();
  });

  it('accuses nobody when agreement is not transitive (tolerances): the odd one must disagree with both, the others agree', () => {
    // a~b and b~c but not a~c: no run disagrees with both others.
    const near = (a: number, b: number) => Math.abs(a - b) <= 1;
    expect(accusedOf([0, 1, 2], near)).toBeUndefined();
  });
});
