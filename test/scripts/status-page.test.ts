/**
 * The status page's pure parts (workers/status/page/format.ts, api.ts): how
 * it writes money, latencies, ages and states, its one-sentence summary, the
 * PoPs' latency bands, and how it reads an answer of GET /v1/mesh/status.
 * The page itself runs in a browser: test/integration/status-page.test.ts.
 */

import { describe, expect, it } from 'vitest';
import type { MeshStatus, RegionStatus } from '../../workers/status/view.ts';
import { errorMessage, isMeshStatus } from '../../workers/status/page/api.ts';
import { age, count, latencyBand, latencyBandLabel, LATENCY_BANDS, ms, rps, stateCounts, summary, usd, utc } from '../../workers/status/page/format.ts';

const traffic = { requests: 0, rps: 0, errors: 0, p50Ms: null, p90Ms: null, p99Ms: null };
const counts = (over: Partial<RegionStatus['backends']>): RegionStatus['backends'] => ({
  total: 0, down: 0, quarantined: 0, ejected: 0, starting: 0, cold: 0, warm: 0, unverified: 0, refuted: 0, ...over,
});
const region = (id: string, backends: RegionStatus['backends']): RegionStatus => ({
  id, name: id, lat: 0, lon: 0, backends, capacity: { slots: 0, inFlight: 0, queued: 0 }, warmModels: [], traffic,
});
const backend = (id: string, state: MeshStatus['backends'][number]['state']): MeshStatus['backends'][number] => ({
  id, provider: 'p', region: 'eu-west', lat: 50, lon: 8, state, location: 'verified', executionProvider: 'cpu',
  models: [], capacity: { slots: 1, inFlight: 0, queued: 0 }, lastSeen: 0,
});

const STATUS: MeshStatus = {
  at: Date.UTC(2026, 10, 20, 14, 2, 3),
  pop: 'FRA',
  viewer: { role: 'admin' },
  windowSeconds: 60,
  regions: [region('eu-west', counts({ total: 2, warm: 1, down: 1 })), region('us-east', counts({ total: 1, warm: 1 })), region('sa-east', counts({}))],
  backends: [backend('fra-1', 'warm'), backend('fra-2', 'down'), backend('iad-1', 'warm')],
  pops: [{ code: 'FRA', city: 'Frankfurt', lat: 50, lon: 8, traffic: { ...traffic, requests: 12, rps: 0.2, p50Ms: 20, p90Ms: 40, p99Ms: 80 }, servedBy: [{ region: 'eu-west', requests: 11 }] }],
  batches: [],
  unavailable: [],
};

describe('status page formatting', () => {
  it('writes micro-USD as dollars, exact to the micro-dollar', () => {
    expect(usd(0)).toBe('$0.00');
    expect(usd(1)).toBe('$0.000001');
    expect(usd(300)).toBe('$0.0003');
    expect(usd(5_000_000)).toBe('$5.00');
    expect(usd(12_345_678)).toBe('$12.345678');
    expect(usd(1_234_567_890_000)).toBe('$1,234,567.89');
    expect(usd(-250_000)).toBe('-$0.25');
    expect(usd(undefined)).toBe('–');
  });

  it('writes latencies, rates, counts, ages and times', () => {
    expect([ms(null), ms(undefined), ms(0.4), ms(12.6), ms(999.4), ms(1250)]).toEqual(['–', '–', '0 ms', '13 ms', '999 ms', '1.25 s']);
    expect([rps(0), rps(0.333), rps(9.999), rps(12.34)]).toEqual(['0.00', '0.33', '10.00', '12.3']);
    expect(count(1234567)).toBe('1,234,567');
    expect([age(-5), age(999), age(59_999), age(60_000), age(3_599_999), age(7_200_000), age(4 * 86_400_000)]).toEqual([
      '0 s', '0 s', '59 s', '1 min', '59 min', '2 h', '4 d',
    ]);
    expect(utc(Date.UTC(2026, 10, 20, 14, 2, 3, 900))).toBe('2026-11-20 14:02:03 UTC');
  });

  it('lists backends by state, most severe first, and says "none" for none', () => {
    expect(stateCounts(counts({ total: 3, warm: 2, down: 1 }))).toBe('1 down, 2 warm');
    expect(stateCounts(counts({ total: 4, quarantined: 1, ejected: 1, starting: 1, cold: 1 }))).toBe('1 quarantined, 1 ejected, 1 starting, 1 cold');
    expect(stateCounts(counts({}))).toBe('none');
  });

  it('says the status in one sentence', () => {
    expect(summary(STATUS)).toBe('2 regions with backends; 3 backends: 1 down, 2 warm; 1 PoP with traffic in the last 60 s.');
    expect(summary({ ...STATUS, regions: [], backends: [], pops: [] })).toBe('0 regions with backends; 0 backends; 0 PoPs with traffic in the last 60 s.');
  });

  it('puts every latency in one band, with a legend label per band', () => {
    expect([null, 0, 49.9, 50, 99, 100, 250, 399.9, 400, 10_000].map(latencyBand)).toEqual([undefined, 0, 0, 1, 1, 2, 3, 3, 4, 4]);
    expect(Array.from({ length: LATENCY_BANDS.length + 1 }, (_, i) => latencyBandLabel(i))).toEqual([
      '< 50 ms', '50–100 ms', '100–200 ms', '200–400 ms', '≥ 400 ms',
    ]);
  });
});

describe('status page reading the status', () => {
  it('takes a MeshStatus and nothing that lacks its lists', () => {
    expect(isMeshStatus(STATUS)).toBe(true);
    expect(isMeshStatus(JSON.parse(JSON.stringify(STATUS)))).toBe(true);
    for (const bad of [null, 'x', [], {}, { ...STATUS, regions: undefined }, { ...STATUS, at: '1' }, { ...STATUS, batches: {} }]) {
      expect(isMeshStatus(bad)).toBe(false);
    }
  });

  it('shows the server\'s error message and code, or the HTTP status', () => {
    expect(errorMessage({ error: { code: 'invalid_token', message: 'The key has expired.' } }, 401)).toBe('The key has expired. (invalid_token)');
    expect(errorMessage({ error: { message: 'No.' } }, 403)).toBe('No.');
    expect(errorMessage(undefined, 502)).toBe('HTTP 502');
    expect(errorMessage({ error: 'x' }, 500)).toBe('HTTP 500');
  });
});
