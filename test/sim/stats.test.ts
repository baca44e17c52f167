import { describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG } from '../../sim/config.ts';
import { COLD, FAILED, HEDGED, type RunRecord } from '../../sim/run.ts';
import { bandOf, BANDS, busyShares, estimateSummaries, executionSummaries, quantiles, summarise } from '../../sim/stats.ts';
import type { World } from '../../sim/world.ts';

function record(latency: number[], flags: number[], floor: number[], city: number[], direct = floor.map((f) => f * 1.5)): RunRecord {
  const n = latency.length;
  return {
    policy: 'p',
    label: 'P',
    requests: n,
    latency: Float32Array.from(latency),
    flags: Uint8Array.from(flags),
    city: Int32Array.from(city),
    pop: new Int16Array(n),
    model: new Uint8Array(n),
    floor: Float32Array.from(floor),
    floorViaPop: Float32Array.from(floor),
    floorDirect: Float32Array.from(direct),
    busyMs: { cloud: 3_600_000, site: 0 },
    executed: { cloud: DEFAULT_CONFIG.models.map(() => ({ jobs: 0, batches: 0, waitMs: 0 })), site: DEFAULT_CONFIG.models.map(() => ({ jobs: 0, batches: 0, waitMs: 0 })) },
    estimates: { cloud: DEFAULT_CONFIG.models.map(() => ({ n: 0, expectedMs: 0, tookMs: 0 })), site: DEFAULT_CONFIG.models.map(() => ({ n: 0, expectedMs: 0, tookMs: 0 })) },
    simulatedMs: 1000,
    arrivalsMs: 1000,
    busyArrivingMs: { cloud: 3_600_000, site: 0 },
    wallMs: 10,
    placement: { loads: 0, unloads: 0 },
  };
}

const world = {
  pops: [{ code: 'FRA', lat: 50, lon: 8, index: 0 }],
  cityCloudKm: Float64Array.from([100, 5_000]),
  backends: [{ kind: 'cloud', slots: 7_200 }],
} as unknown as World;

describe('run statistics', () => {
  it('takes nearest-rank quantiles', () => {
    const q = quantiles(Float64Array.from({ length: 100 }, (_, i) => 100 - i));
    expect(q).toEqual({ p50: 50, p90: 90, p99: 99 });
    expect(Number.isNaN(quantiles(new Float64Array()).p50)).toBe(true);
  });

  it('puts distances in the bands at their bounds', () => {
    expect(bandOf(0)).toBe(0);
    expect(bandOf(500)).toBe(1);
    expect(bandOf(2_999)).toBe(2);
    expect(bandOf(20_000)).toBe(BANDS.length - 1);
  });

  it('counts failures apart from latency, shares, bands, cost and the floor goal per city', () => {
    // City 0 (band < 500 km): 6 answered at 1.2x their floor; city 1 (> 3000 km): 5 at 2x, 1 failed.
    const latency = [...Array(6).fill(120), ...Array(5).fill(200), 9_999];
    const flags = [COLD, HEDGED, 0, 0, 0, 0, 0, 0, 0, 0, 0, FAILED];
    const floor = Array(12).fill(100);
    const city = [...Array(6).fill(0), ...Array(6).fill(1)];
    const s = summarise(record(latency, flags, floor, city), world, { ...DEFAULT_CONFIG, models: DEFAULT_CONFIG.models.slice(0, 1) });
    expect(s.failedShare).toBeCloseTo(1 / 12);
    expect(s.coldShare).toBeCloseTo(1 / 12);
    expect(s.hedgedShare).toBeCloseTo(1 / 12);
    expect(s.overall.p99).toBe(200); // the failed request's time is not a latency
    expect(s.bands[0]!.p50).toBe(120);
    // The floors of every request in the band, failed ones too: through the PoP, and straight to the nearest region.
    expect(s.bands[0]!).toMatchObject({ floorViaPopP50: 100, floorDirectP50: 150 });
    expect(s.bands[3]!).toMatchObject({ floorViaPopP50: 100, floorDirectP50: 150 });
    expect(s.bands[3]!.failedShare).toBeCloseTo(1 / 6);
    expect(s.withinFloorShare).toBeCloseTo(6 / 11); // city 0's 6 requests of the 11 answered in cities with >= 5
    expect(s.costPer1k).toBeCloseTo((DEFAULT_CONFIG.prices.cloudSlotHour / 12) * 1000);
    expect(s.perPop).toEqual([{ code: 'FRA', lat: 50, lon: 8, requests: 11, p50: 120 }]);
    // Nothing ran on the simulated backends (a baseline's own fleet): no busy share.
    expect(s.busy).toBeUndefined();
    const ran = record(latency, flags, floor, city);
    ran.executed.cloud[0] = { jobs: 11, batches: 11, waitMs: 0 };
    // An hour of slot time in 1 s over 7,200 slots: half of them busy.
    expect(summarise(ran, world, DEFAULT_CONFIG).busy).toMatchObject({ cloud: 0.5, fleet: 0.5 });
  });

  it('says where each model ran: its share per kind of backend, mean batch and mean queue wait', () => {
    const run = (jobs: number, batches: number, waitMs: number) => ({ jobs, batches, waitMs });
    const executed = {
      cloud: [run(30, 30, 60), run(0, 0, 0), run(0, 0, 0)],
      site: [run(90, 45, 900), run(0, 0, 0), run(0, 0, 0)],
    };
    expect(executionSummaries({ executed }, DEFAULT_CONFIG)).toEqual([
      {
        model: DEFAULT_CONFIG.models[0]!.name,
        kinds: [
          { kind: 'cloud', share: 0.25, meanBatch: 1, meanWaitMs: 2 },
          { kind: 'site', share: 0.75, meanBatch: 2, meanWaitMs: 10 },
        ],
      },
    ]);
  });

  it('says how busy the simulated fleet was: slot time computing over slot time, per kind and in all', () => {
    const backends = [
      { kind: 'cloud', slots: 16 },
      { kind: 'site', slots: 2 },
      { kind: 'site', slots: 6 },
    ] as World['backends'];
    // 10 s of arrivals: the cloud's 16 slots computed 40 slot-seconds, the sites' 8 slots 20.
    const busy = busyShares({ busyArrivingMs: { cloud: 40_000, site: 20_000 }, arrivalsMs: 10_000 }, { backends });
    expect(busy.cloud).toBeCloseTo(0.25);
    expect(busy.site).toBeCloseTo(0.25);
    expect(busy.fleet).toBeCloseTo(60 / 240);
    const sitesOnly = busyShares({ busyArrivingMs: { cloud: 0, site: 8_000 }, arrivalsMs: 1_000 }, { backends: backends.slice(1) });
    expect(sitesOnly.site).toBeCloseTo(1);
    expect(Number.isNaN(sitesOnly.cloud)).toBe(true);
    expect(sitesOnly.fleet).toBeCloseTo(1);
  });

  it('says how the score predicted: per model and kind, the calls and their mean expected and actual times', () => {
    const sums = (n: number, expectedMs: number, tookMs: number) => ({ n, expectedMs, tookMs });
    const estimates = {
      cloud: [sums(2, 100, 120), sums(0, 0, 0), sums(0, 0, 0)],
      site: [sums(0, 0, 0), sums(0, 0, 0), sums(4, 1_200, 2_000)],
    };
    expect(estimateSummaries({ estimates }, DEFAULT_CONFIG)).toEqual([
      {
        model: DEFAULT_CONFIG.models[0]!.name,
        kinds: [
          { kind: 'cloud', calls: 2, meanExpectedMs: 50, meanTookMs: 60 },
          { kind: 'site', calls: 0, meanExpectedMs: Number.NaN, meanTookMs: Number.NaN },
        ],
      },
      {
        model: DEFAULT_CONFIG.models[2]!.name,
        kinds: [
          { kind: 'cloud', calls: 0, meanExpectedMs: Number.NaN, meanTookMs: Number.NaN },
          { kind: 'site', calls: 4, meanExpectedMs: 300, meanTookMs: 500 },
        ],
      },
    ]);
  });
});
