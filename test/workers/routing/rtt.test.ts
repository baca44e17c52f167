import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DEFAULT_PATH_INFLATION, FIBRE_KM_PER_MS, greatCircleKm, type LatLon } from '../../../workers/geo/distance.ts';
import { regionById } from '../../../shared/regions.ts';
import { popLocation } from '../../../workers/geo/pops.ts';
import { RttTable, backendLocation, estimateRttMs, physicalFloorMs } from '../../../workers/routing/rtt.ts';
import { backend, pop } from './fixtures.ts';

/** Great-circle fibre time there and back, times the median path inflation: what an unmeasured RTT is. */
const geometricRttMs = (a: LatLon, b: LatLon) => ((2 * greatCircleKm(a, b)) / FIBRE_KM_PER_MS) * DEFAULT_PATH_INFLATION;

const iad = backend('iad-1', 'us-east');
const fra = pop('FRA');
const floorFraIad = physicalFloorMs(greatCircleKm(fra, regionById('us-east')!));

describe('estimateRttMs', () => {
  it('estimates from the great circle to the backend region, times inflation', () => {
    const expected = geometricRttMs(fra, regionById('us-east')!);
    expect(estimateRttMs(fra, iad)).toBeCloseTo(expected, 6);
    expect(expected).toBeGreaterThan(100); // ~6,500 km, twice over, at 200 km/ms, x2
    expect(estimateRttMs(fra, iad, undefined, { inflation: 1.5 })).toBeCloseTo(expected * 0.75, 6);
    expect(floorFraIad).toBeCloseTo(expected / 2, 6);
  });

  it('is corrected by measured RTTs from the same PoP (EWMA), and only for that PoP', () => {
    const table = new RttTable({ alpha: 0.3 });
    table.observe('FRA', 'iad-1', 90);
    expect(estimateRttMs(fra, iad, table)).toBe(90);
    table.observe('FRA', 'iad-1', 80);
    expect(estimateRttMs(fra, iad, table)).toBeCloseTo(87, 6);
    expect(estimateRttMs(pop('CDG'), iad, table)).toBeCloseTo(geometricRttMs(pop('CDG'), regionById('us-east')!), 6);
    expect(estimateRttMs({ lat: fra.lat, lon: fra.lon }, iad, table)).toBeCloseTo(geometricRttMs(fra, regionById('us-east')!), 6);
  });

  it('never goes below the physical floor of 1 ms per 100 km', () => {
    const table = new RttTable();
    table.observe('FRA', 'iad-1', 5); // faster than light: the claim or the sample is wrong
    expect(estimateRttMs(fra, iad, table)).toBeCloseTo(floorFraIad, 6);
    expect(estimateRttMs(fra, iad, undefined, { inflation: 0.5 })).toBeCloseTo(floorFraIad, 6);
  });

  it('keeps a bounded number of pairs', () => {
    const table = new RttTable({ maxEntries: 2 });
    table.observe('FRA', 'a', 1);
    table.observe('FRA', 'b', 2);
    table.observe('FRA', 'c', 3);
    expect(table.measuredMs('FRA', 'a')).toBeUndefined();
    expect(table.measuredMs('FRA', 'c')).toBe(3);
  });

  it('keeps exactly the most recently observed pairs, whatever the order of observations (reference LRU)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 5 }), fc.array(fc.tuple(fc.constantFrom('FRA', 'SIN'), fc.constantFrom('a', 'b', 'c'), fc.nat(100)), { maxLength: 80 }), (max, obs) => {
        const table = new RttTable({ maxEntries: max, alpha: 0.5 });
        const ewma = new Map<string, number>(); // the reference, least recently observed first
        for (const [p, b, ms] of obs) {
          const key = `${p}/${b}`;
          const prev = ewma.get(key);
          const before = table.changes.seq;
          const evicts = prev === undefined && ewma.size >= max;
          if (evicts) ewma.delete(ewma.keys().next().value!);
          ewma.delete(key);
          ewma.set(key, prev === undefined ? ms : prev + 0.5 * (ms - prev));
          table.observe(p, b, ms);
          expect(table.changes.seq - before).toBe(evicts ? 2 : 1); // an eviction is a change too
        }
        for (const p of ['FRA', 'SIN']) {
          for (const b of ['a', 'b', 'c']) {
            expect(table.measuredMs(p, b)).toBe(ewma.get(`${p}/${b}`));
            expect(table.fromPop(p)?.get(b)).toBe(ewma.get(`${p}/${b}`));
          }
        }
      }),
    );
  });
});

describe('where a backend is for routing', () => {
  const sg = backend('sg-far', 'ap-southeast');
  const refuted = (failed: 'reach' | 'ceiling') => ({ ...sg, location: { state: 'refuted', evidence: { pop: 'FRA', failed } } });

  it("is its region's coordinates while its claim is unverified, and the claim once proof of location verified it", () => {
    const claim = { ...sg, lat: 13.75, lon: 100.5 }; // Bangkok, in ap-southeast
    expect(backendLocation(claim)).toEqual(regionById('ap-southeast'));
    expect(backendLocation({ ...claim, location: { state: 'unverified' } })).toEqual(regionById('ap-southeast'));
    expect(backendLocation({ ...claim, location: { state: 'verified', evidence: { pop: 'BKK' } } })).toEqual({ lat: 13.75, lon: 100.5 });
    // So a verified backend near the PoP scores its real distance, not the region's.
    const bkk = { code: 'BKK', ...popLocation('BKK')! };
    expect(estimateRttMs(bkk, { ...claim, location: { state: 'verified' } })).toBeLessThan(estimateRttMs(bkk, claim) / 5);
  });

  it('is the measuring PoP when a round trip too short for its claim refuted it, and scores so', () => {
    const at = backendLocation(refuted('reach'));
    expect(at).toMatchObject({ lat: popLocation('FRA')!.lat, lon: popLocation('FRA')!.lon });
    expect(estimateRttMs(fra, refuted('reach'), new RttTable())).toBeLessThan(estimateRttMs(fra, sg, new RttTable()) / 10);
  });

  it("stays the region's when slowness refuted it (that says only where it is not)", () => {
    expect(backendLocation(refuted('ceiling'))).toEqual(regionById('ap-southeast'));
  });
});
