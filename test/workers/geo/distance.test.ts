import { describe, expect, it } from 'vitest';
import { estimateRttMs, greatCircleKm } from '../../../workers/geo/distance.ts';
import { popLocation } from '../../../workers/geo/pops.ts';

describe('geo', () => {
  it('measures Singapore to Frankfurt as about 10,300 km', () => {
    const d = greatCircleKm(popLocation('SIN')!, popLocation('FRA')!);
    expect(d).toBeGreaterThan(10_000);
    expect(d).toBeLessThan(10_600);
  });
  it('estimates RTT from distance, fibre speed and path inflation', () => {
    const a = { lat: 0, lon: 0 };
    const b = { lat: 0, lon: 1 }; // ~111 km
    expect(estimateRttMs(a, b, 1)).toBeCloseTo((2 * 111.2) / 200, 1);
    expect(estimateRttMs(a, b, 2)).toBeCloseTo(2 * estimateRttMs(a, b, 1), 6);
  });
  it('knows PoPs case-insensitively and not unknown codes', () => {
    expect(popLocation('cgk')).toBeDefined();
    expect(popLocation('XXX')).toBeUndefined();
  });
});
