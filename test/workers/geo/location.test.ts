import { describe, expect, it } from 'vitest';
import { greatCircleKm } from '../../../workers/geo/distance.ts';
import { ceilingMs, DEFAULT_LOCATION_RULE, locationVerdict, reachKm, type PopRtt } from '../../../workers/geo/location.ts';
import { popLocation } from '../../../workers/geo/pops.ts';
import { regionById } from '../../../shared/regions.ts';

/** The claim: the Singapore region's coordinates (the SIN PoP is about 20 km away, KUL about 300, FRA about 10,000). */
const singapore = regionById('ap-southeast')!;

/** Minima measured at `code`: `probes` of the samples were probes (whose minimum is `probeMinRttMs`, default the same). */
function at(code: string, minRttMs: number, samples: number, probes = samples, probeMinRttMs = minRttMs): PopRtt {
  return { pop: code, ...popLocation(code)!, minRttMs, samples, ...(probes > 0 ? { probeMinRttMs, probeSamples: probes } : {}) };
}

describe('the rule numbers', () => {
  it('allows 100 km of distance per ms of round trip, plus 50 km', () => {
    expect(reachKm(0)).toBe(50);
    expect(reachKm(10)).toBe(1050);
    expect(reachKm(150)).toBe(15_050);
  });

  it('lets a backend near the claim take 3.4 times the fibre time plus 25 ms', () => {
    expect(ceilingMs(0)).toBe(25);
    expect(ceilingMs(500)).toBe(42);
    expect(ceilingMs(1000)).toBe(59);
    expect(DEFAULT_LOCATION_RULE).toEqual({ minSamples: 5, nearKm: 1000, inflation: 3.4, processingMs: 25, slackKm: 50 });
  });
});

describe('proof of location', () => {
  it('verifies a claim that five probes from a nearby PoP fit', () => {
    const verdict = locationVerdict(singapore, [at('SIN', 2, 5)]);
    expect(verdict.state).toBe('verified');
    expect(verdict.evidence).toMatchObject({ pop: 'SIN', minRttMs: 2, samples: 5, probeSamples: 5 });
    expect(verdict.evidence!.distanceKm).toBeGreaterThan(10);
    expect(verdict.evidence!.distanceKm).toBeLessThan(30);
    expect(verdict.evidence!.ceilingMs).toBeCloseTo(ceilingMs(verdict.evidence!.distanceKm), 0);
    expect(verdict.evidence!.failed).toBeUndefined();
  });

  it('shows the nearest verifying PoP', () => {
    const verdict = locationVerdict(singapore, [at('KUL', 8, 9), at('SIN', 2, 5)]);
    expect(verdict).toMatchObject({ state: 'verified', evidence: { pop: 'SIN' } });
  });

  it('stays unverified with too few samples, or none near the claim', () => {
    expect(locationVerdict(singapore, [])).toEqual({ state: 'unverified' });
    // Four are not five: neither a verdict of fit nor of misfit.
    expect(locationVerdict(singapore, [at('SIN', 2, 4)])).toMatchObject({ state: 'unverified', evidence: { pop: 'SIN', samples: 4 } });
    expect(locationVerdict(singapore, [at('SIN', 150, 4)]).state).toBe('unverified');
    // Far PoPs whose round trips allow the claim say nothing for it.
    expect(locationVerdict(singapore, [at('FRA', 170, 50), at('SYD', 95, 50)]).state).toBe('unverified');
  });

  it('never verifies from dispatch samples alone (their service time is the backend\'s word)', () => {
    expect(locationVerdict(singapore, [at('SIN', 2, 100, 0)]).state).toBe('unverified');
    expect(locationVerdict(singapore, [at('SIN', 2, 100, 4)]).state).toBe('unverified');
    expect(locationVerdict(singapore, [at('SIN', 2, 100, 5, 3)]).state).toBe('verified');
  });

  it('refutes (a): a far PoP whose round trip puts the backend near it', () => {
    // A backend in Frankfurt claiming Singapore: FRA measures 3 ms, so it is within 350 km of FRA.
    const verdict = locationVerdict(singapore, [at('FRA', 3, 5, 0), at('SIN', 2, 3)]);
    expect(verdict.state).toBe('refuted');
    expect(verdict.evidence).toMatchObject({ pop: 'FRA', minRttMs: 3, samples: 5, reachKm: 350, failed: 'reach' });
    expect(verdict.evidence!.distanceKm).toBeGreaterThan(10_000);
    // Even when a PoP near the claim would have verified it.
    expect(locationVerdict(singapore, [at('FRA', 3, 5), at('SIN', 2, 5)]).state).toBe('refuted');
  });

  it('refutes (b): a PoP near the claim that sees the backend too slow to be there', () => {
    // The local test's case: a fault proxy puts 150 ms between SIN and a backend that claims Singapore.
    const verdict = locationVerdict(singapore, [at('SIN', 150, 5)]);
    expect(verdict.state).toBe('refuted');
    expect(verdict.evidence).toMatchObject({ pop: 'SIN', minRttMs: 150, failed: 'ceiling' });
    expect(verdict.evidence!.ceilingMs).toBeLessThan(26);
    // Dispatch samples alone refute too (an honest backend reports its service time honestly).
    expect(locationVerdict(singapore, [at('SIN', 150, 5, 0)]).state).toBe('refuted');
  });

  it('refutes by probes whatever the dispatch samples say', () => {
    // A backend that overstates its service time makes its dispatches look near: its probes still cannot.
    const verdict = locationVerdict(singapore, [at('SIN', 1, 50, 5, 150)]);
    expect(verdict).toMatchObject({ state: 'refuted', evidence: { pop: 'SIN', minRttMs: 1, probeMinRttMs: 150, failed: 'ceiling' } });
  });

  it('shows a physics refutation before a slowness one', () => {
    const verdict = locationVerdict(singapore, [at('SIN', 150, 5), at('FRA', 3, 5)]);
    expect(verdict.evidence).toMatchObject({ pop: 'FRA', failed: 'reach' });
  });

  it('holds exactly at the bounds and fails just past them', () => {
    const sin = { pop: 'SIN', ...popLocation('SIN')! };
    const d = greatCircleKm(sin, singapore);
    // (b): a minimum exactly at the ceiling verifies; a hair above refutes.
    const ceiling = ceilingMs(d);
    expect(locationVerdict(singapore, [{ ...sin, minRttMs: ceiling, samples: 5, probeMinRttMs: ceiling, probeSamples: 5 }]).state).toBe('verified');
    const above = ceiling + 1e-9;
    expect(locationVerdict(singapore, [{ ...sin, minRttMs: above, samples: 5, probeMinRttMs: above, probeSamples: 5 }]).state).toBe('refuted');

    // (a): the claim exactly at a far PoP's reach is allowed; a hair nearer the PoP refutes.
    const fra = { pop: 'FRA', ...popLocation('FRA')! };
    const far = greatCircleKm(fra, singapore);
    let r = (far - 50) / 100;
    while (reachKm(r) < far) r += r * Number.EPSILON;
    expect(reachKm(r)).toBeGreaterThanOrEqual(far);
    expect(locationVerdict(singapore, [{ ...fra, minRttMs: r, samples: 5 }]).state).toBe('unverified');
    expect(locationVerdict(singapore, [{ ...fra, minRttMs: r - 1e-9, samples: 5 }]).state).toBe('refuted');

    // nearKm: a PoP exactly that far from the claim is near (it can verify); a hair farther is not.
    const kul = { pop: 'KUL', ...popLocation('KUL')!, minRttMs: 5, samples: 5, probeMinRttMs: 5, probeSamples: 5 };
    const dk = greatCircleKm(kul, singapore);
    expect(locationVerdict(singapore, [kul], { ...DEFAULT_LOCATION_RULE, nearKm: dk }).state).toBe('verified');
    expect(locationVerdict(singapore, [kul], { ...DEFAULT_LOCATION_RULE, nearKm: dk - 1e-9 }).state).toBe('unverified');

    // minSamples: exactly enough counts.
    expect(locationVerdict(singapore, [at('SIN', 2, 5)], { ...DEFAULT_LOCATION_RULE, minSamples: 5 }).state).toBe('verified');
    expect(locationVerdict(singapore, [at('SIN', 2, 5)], { ...DEFAULT_LOCATION_RULE, minSamples: 6 }).state).toBe('unverified');
  });

  it('ignores entries with inconsistent numbers', () => {
    expect(locationVerdict(singapore, [at('FRA', Number.NaN, 5)]).state).toBe('unverified');
    expect(locationVerdict(singapore, [at('FRA', -1, 5)]).state).toBe('unverified');
    // A probe minimum below the overall minimum cannot be.
    expect(locationVerdict(singapore, [at('SIN', 5, 5, 5, 2)]).state).toBe('unverified');
    expect(locationVerdict(singapore, [at('SIN', 2, 4, 5)]).state).toBe('unverified');
  });
});
