import { describe, expect, it } from 'vitest';
import { greatCircleKm } from '../../../workers/geo/distance.ts';
import { popLocation } from '../../../workers/geo/pops.ts';

describe('geo', () => {
  it('measures Singapore to Frankfurt as about 10,300 km', () => {
    const d = greatCircleKm(popLocation('SIN')!, popLocation('FRA')!);
    expect(d).toBeGreaterThan(10_000);
    expect(d).toBeLessThan(10_600);
  });
  it('measures one degree of longitude at the equator as about 111.2 km', () => {
    expect(greatCircleKm({ lat: 0, lon: 0 }, { lat: 0, lon: 1 })).toBeCloseTo(111.2, 1);
  });
  it('knows PoPs case-insensitively and not unknown codes', () => {
    expect(popLocation('cgk')).toBeDefined();
    expect(popLocation('XXX')).toBeUndefined();
  });
});
