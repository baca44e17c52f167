/**
 * What a run's records say: latency quantiles overall and per distance band
 * (the user's distance to the nearest cloud region), shares of failed, cold,
 * hedged and retried requests, cost, the share of users whose median is
 * within 1.3x of their physical floor, and the median per PoP (for the map).
 */

import type { SimConfig } from './config.ts';
import { COLD, FAILED, HEDGED, RETRIED, type RunRecord } from './run.ts';
import type { World } from './world.ts';

export interface Quantiles {
  p50: number;
  p90: number;
  p99: number;
}

export interface Band {
  label: string;
  /** Upper bound of the user's km to the nearest cloud region (exclusive). */
  maxKm: number;
}

export const BANDS: readonly Band[] = [
  { label: '< 500 km', maxKm: 500 },
  { label: '500-1000 km', maxKm: 1000 },
  { label: '1000-3000 km', maxKm: 3000 },
  { label: '> 3000 km', maxKm: Infinity },
];

export interface BandSummary extends Quantiles {
  label: string;
  requests: number;
  failedShare: number;
  coldShare: number;
  /** Medians of the band's physical floors, ms (the same for every policy): through the PoP to the best warm backend, and straight to the nearest cloud region. */
  floorViaPopP50: number;
  floorDirectP50: number;
}

export interface ModelSummary extends Quantiles {
  model: string;
  requests: number;
  failedShare: number;
}

export interface PopSummary {
  code: string;
  lat: number;
  lon: number;
  requests: number;
  p50: number;
}

/** Where one model's requests ran, per kind of backend: their share, mean batch size and mean wait in the backend's queue. */
export interface ExecutionSummary {
  model: string;
  kinds: { kind: 'cloud' | 'site'; share: number; meanBatch: number; meanWaitMs: number }[];
}

/** The share of the simulated backends' slot time spent computing while requests arrived, per kind and over the whole fleet (a batch counts once: it holds one slot). */
export interface BusySummary {
  cloud: number;
  site: number;
  fleet: number;
}

/** Per model and kind of backend: the first attempts that answered, what the routing expected of them and what they took (PoP to backend and back). */
export interface EstimateSummary {
  model: string;
  kinds: { kind: 'cloud' | 'site'; calls: number; meanExpectedMs: number; meanTookMs: number }[];
}

export interface PolicySummary {
  policy: string;
  label: string;
  requests: number;
  /** Quantiles of the answered requests' latency, ms. */
  overall: Quantiles;
  failedShare: number;
  coldShare: number;
  hedgedShare: number;
  retriedShare: number;
  /** Median latency of the requests that met a cold start, ms (NaN when none did). */
  coldP50: number;
  /** Compute cost per 1000 requests, USD (slot time at the config's prices, wasted work included). */
  costPer1k: number;
  bands: BandSummary[];
  /** Quantiles per model: the mix mixes 12 ms and 250 ms models, so tails are judged per model. */
  byModel: ModelSummary[];
  /** Users (cities with at least MIN_CITY_REQUESTS requests, weighted by their requests) whose median is within FLOOR_RATIO of their floor. */
  withinFloorShare: number;
  /** Median of the per-request latency / floor. */
  floorRatioP50: number;
  perPop: PopSummary[];
  /** Per model, what the simulated backends ran (empty for a policy whose fleet is its own). */
  executed: ExecutionSummary[];
  /** How busy the simulated backends were (undefined for a policy whose fleet is its own). */
  busy?: BusySummary;
  /** Per model, its routing score against the outcome (empty for a policy that does not score). */
  estimates: EstimateSummary[];
  simulatedS: number;
  wallS: number;
  placementLoads: number;
}

/** A city counts toward the floor goal when it sent at least this many requests. */
export const MIN_CITY_REQUESTS = 5;
export const FLOOR_RATIO = 1.3;

/** Quantiles of `values` (nearest rank); NaN when empty. */
export function quantiles(values: Float64Array | Float32Array): Quantiles {
  const sorted = Float64Array.from(values).sort();
  const at = (p: number) => (sorted.length === 0 ? Number.NaN : sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))]!);
  return { p50: at(0.5), p90: at(0.9), p99: at(0.99) };
}

/** The band of a distance. */
export function bandOf(km: number): number {
  for (let i = 0; i < BANDS.length; i++) if (km < BANDS[i]!.maxKm) return i;
  return BANDS.length - 1;
}

export function summarise(record: RunRecord, world: World, config: SimConfig): PolicySummary {
  const n = record.requests;
  const served: number[] = [];
  const bandServed: number[][] = BANDS.map(() => []);
  const bandCount = BANDS.map(() => 0);
  const bandFailed = BANDS.map(() => 0);
  const bandCold = BANDS.map(() => 0);
  const bandViaPop: number[][] = BANDS.map(() => []);
  const bandDirect: number[][] = BANDS.map(() => []);
  const popServed = new Map<number, number[]>();
  const cold: number[] = [];
  const modelServed: number[][] = config.models.map(() => []);
  const modelCount = config.models.map(() => 0);
  const modelFailed = config.models.map(() => 0);
  const ratios: number[] = [];
  let failed = 0;
  let coldN = 0;
  let hedged = 0;
  let retried = 0;
  // Per city: latency / floor of its answered requests.
  const cityRatios = new Map<number, number[]>();
  for (let i = 0; i < n; i++) {
    const flags = record.flags[i]!;
    const band = bandOf(world.cityCloudKm[record.city[i]!]!);
    bandCount[band]!++;
    bandViaPop[band]!.push(record.floorViaPop[i]!);
    bandDirect[band]!.push(record.floorDirect[i]!);
    if (flags & HEDGED) hedged++;
    if (flags & RETRIED) retried++;
    const model = record.model[i]!;
    modelCount[model]!++;
    if (flags & FAILED) {
      modelFailed[model]!++;
      failed++;
      bandFailed[band]!++;
      continue;
    }
    const ms = record.latency[i]!;
    served.push(ms);
    bandServed[band]!.push(ms);
    modelServed[model]!.push(ms);
    if (flags & COLD) {
      coldN++;
      bandCold[band]!++;
      cold.push(ms);
    }
    const pop = record.pop[i]!;
    let list = popServed.get(pop);
    if (!list) popServed.set(pop, (list = []));
    list.push(ms);
    const ratio = ms / record.floor[i]!;
    ratios.push(ratio);
    const city = record.city[i]!;
    let cr = cityRatios.get(city);
    if (!cr) cityRatios.set(city, (cr = []));
    cr.push(ratio);
  }
  let considered = 0;
  let within = 0;
  for (const list of cityRatios.values()) {
    if (list.length < MIN_CITY_REQUESTS) continue;
    considered += list.length;
    if (quantiles(Float64Array.from(list)).p50 <= FLOOR_RATIO) within += list.length;
  }
  const executed = executionSummaries(record, config);
  const slotHourMs = 3_600_000;
  const cost = (record.busyMs.cloud / slotHourMs) * config.prices.cloudSlotHour + (record.busyMs.site / slotHourMs) * config.prices.siteSlotHour;
  return {
    policy: record.policy,
    label: record.label,
    requests: n,
    overall: quantiles(Float64Array.from(served)),
    failedShare: failed / n,
    coldShare: coldN / n,
    hedgedShare: hedged / n,
    retriedShare: retried / n,
    coldP50: quantiles(Float64Array.from(cold)).p50,
    costPer1k: (cost / n) * 1000,
    bands: BANDS.map((b, i) => ({
      label: b.label,
      requests: bandCount[i]!,
      failedShare: bandCount[i]! ? bandFailed[i]! / bandCount[i]! : Number.NaN,
      coldShare: bandCount[i]! ? bandCold[i]! / bandCount[i]! : Number.NaN,
      ...quantiles(Float64Array.from(bandServed[i]!)),
      floorViaPopP50: quantiles(Float64Array.from(bandViaPop[i]!)).p50,
      floorDirectP50: quantiles(Float64Array.from(bandDirect[i]!)).p50,
    })),
    byModel: config.models.map((m, i) => ({
      model: m.name,
      requests: modelCount[i]!,
      failedShare: modelCount[i]! ? modelFailed[i]! / modelCount[i]! : Number.NaN,
      ...quantiles(Float64Array.from(modelServed[i]!)),
    })),
    withinFloorShare: considered ? within / considered : Number.NaN,
    floorRatioP50: quantiles(Float64Array.from(ratios)).p50,
    perPop: [...popServed]
      .map(([pop, list]) => ({ code: world.pops[pop]!.code, lat: world.pops[pop]!.lat, lon: world.pops[pop]!.lon, requests: list.length, p50: quantiles(Float64Array.from(list)).p50 }))
      .sort((a, b) => a.code.localeCompare(b.code)),
    executed,
    ...(executed.length > 0 ? { busy: busyShares(record, world) } : {}),
    estimates: estimateSummaries(record, config),
    simulatedS: record.simulatedMs / 1000,
    wallS: record.wallMs / 1000,
    placementLoads: record.placement.loads,
  };
}

/**
 * How busy the simulated backends were while requests arrived: the slot time
 * of the executions they started then, over the slot time of the arrivals'
 * span, per kind and in all (the drain after the last arrival, up to a hung
 * call's timeout, would dilute it).
 */
export function busyShares(record: Pick<RunRecord, 'busyArrivingMs' | 'arrivalsMs'>, world: Pick<World, 'backends'>): BusySummary {
  let cloud = 0;
  let site = 0;
  for (const b of world.backends) {
    if (b.kind === 'cloud') cloud += b.slots;
    else site += b.slots;
  }
  const { busyArrivingMs: busy, arrivalsMs } = record;
  const share = (ms: number, slots: number) => (slots > 0 && arrivalsMs > 0 ? ms / (slots * arrivalsMs) : Number.NaN);
  return {
    cloud: share(busy.cloud, cloud),
    site: share(busy.site, site),
    fleet: share(busy.cloud + busy.site, cloud + site),
  };
}

/** Per model, the share of its executions on cloud backends and on sites, with their mean batch and queue wait. */
export function executionSummaries(record: Pick<RunRecord, 'executed'>, config: Pick<SimConfig, 'models'>): ExecutionSummary[] {
  return config.models.flatMap((m, i) => {
    const kinds = (['cloud', 'site'] as const).map((kind) => ({ kind, e: record.executed[kind][i]! }));
    const total = kinds.reduce((n, k) => n + k.e.jobs, 0);
    if (total === 0) return [];
    return [
      {
        model: m.name,
        kinds: kinds.map(({ kind, e }) => ({
          kind,
          share: e.jobs / total,
          meanBatch: e.batches ? e.jobs / e.batches : Number.NaN,
          meanWaitMs: e.jobs ? e.waitMs / e.jobs : Number.NaN,
        })),
      },
    ];
  });
}

/** Per model, the mean expected and actual time of the first attempts that answered, per kind of backend; models with none are left out. */
export function estimateSummaries(record: Pick<RunRecord, 'estimates'>, config: Pick<SimConfig, 'models'>): EstimateSummary[] {
  return config.models.flatMap((m, i) => {
    const kinds = (['cloud', 'site'] as const).map((kind) => ({ kind, e: record.estimates[kind][i]! }));
    if (kinds.every((k) => k.e.n === 0)) return [];
    return [
      {
        model: m.name,
        kinds: kinds.map(({ kind, e }) => ({
          kind,
          calls: e.n,
          meanExpectedMs: e.n ? e.expectedMs / e.n : Number.NaN,
          meanTookMs: e.n ? e.tookMs / e.n : Number.NaN,
        })),
      },
    ];
  });
}
