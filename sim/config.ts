/**
 * What the simulated world is made of, and its defaults: the models and their
 * service times, the providers (cloud regions and smaller sites), their
 * faults, the network model (docs/design.md, "Latency-model reference facts")
 * and the edge's settings. Every figure here is an assumption of the model,
 * stated once; docs/benchmarks.md lists them with the results.
 */

import { POP_BOOK_EXCHANGE_MS } from '../workers/routing/pop-book.ts';

export interface ModelSpec {
  name: string;
  /** Share of the requests. */
  share: number;
  /** Median service time on a reference GPU, ms, and its lognormal sigma. */
  serviceMs: number;
  serviceSigma: number;
  /** Time to load the model (a cold start), ms, median. */
  loadMs: number;
}

export interface AccessType {
  name: string;
  share: number;
  /** Last-mile round trip, ms. */
  ms: number;
}

export interface SimConfig {
  seed: number;
  /** Requests per policy. */
  requests: number;
  /** Mean arrival rate, requests per second (a Poisson process). */
  ratePerSecond: number;
  models: ModelSpec[];
  cloud: {
    /** Cloud regions (shared/regions.ts ids) where providers run backends in the mesh. */
    regions: string[];
    backendsPerRegion: number;
    slots: number;
    /** Utilisation the centralized baselines are provisioned for (their fleet scales with the load). */
    provisionedUtilisation: number;
  };
  sites: {
    count: number;
    slotsMin: number;
    slotsMax: number;
    /** Service-time factor against the reference GPU: lognormal median and sigma (consumer and older GPUs are slower). */
    speedMedian: number;
    speedSigma: number;
    /** Chance that a site starts with a given model warm (at least one is). */
    warmChance: number;
    /** Sites are placed at cities drawn with weight population^spread (1: like people, 0: every city alike). */
    spread: number;
    /** Most models a site holds warm. */
    maxWarm: number;
  };
  faults: {
    /** Share of requests a site fails (a 5xx after the service time); cloud backends fail a tenth as often. */
    requestFailure: number;
    /** Share of requests that stall (a GC pause, a throttled GPU): their service time is multiplied by `stallFactor`. */
    stallShare: number;
    stallFactor: number;
    /** Crashes per site per hour; a crash lasts a lognormal time of median `downMs`. */
    crashesPerHour: number;
    downMs: number;
    /** Share of crashes that hang (connections accepted, never answered) instead of refusing connections. */
    hangShare: number;
    /** Outages at set times, besides the random ones (for scenarios and tests): backend index, start, length, mode. */
    scripted?: { backend: number; atMs: number; ms: number; mode: 'refusing' | 'hanging' }[];
  };
  network: {
    /** Internet path inflation over the great circle: median, p10, p90 (a two-piece lognormal per path). */
    inflation: { median: number; p10: number; p90: number };
    /** Backbone inflation from a PoP to a backend, uniform in [min, max] per path. */
    backbone: { min: number; max: number };
    /** Fixed cost of each network leg (switching, TLS on a warm connection), ms. */
    hopMs: number;
    /** Round-trip jitter per request: exponential with this mean, ms. */
    jitterMs: number;
    access: AccessType[];
  };
  edge: {
    snapshotRefreshMs: number;
    /**
     * The directory answers snapshot fetches from a copy it rebuilds at most
     * this often, so that isolates refreshing within the same span share one
     * snapshot and its routing index: the simulator's economy (each real
     * isolate fetches and indexes its own), at the price of up to this much
     * more staleness.
     */
    snapshotPublishMs: number;
    heartbeatMs: number;
    /**
     * Isolates per PoP, each with its own routing memory and snapshot; a
     * request lands on one at random. A real PoP runs many, each knowing
     * less; 1 (the default) is the best-informed mesh.
     */
    isolatesPerPop: number;
    /**
     * How often each isolate exchanges service times with its PoP's book
     * (workers/routing/pop-book.ts), ms; 0: the isolates of a PoP share
     * nothing.
     */
    popBookExchangeMs: number;
    backendTtlMs: number;
    timeoutMs: number;
    /** The edge's own time per request (auth, receipt), ms. */
    overheadMs: number;
  };
  /** Price per slot-hour, USD: what a second of a slot's busy time costs. */
  prices: { cloudSlotHour: number; siteSlotHour: number };
}

export const DEFAULT_CONFIG: SimConfig = {
  seed: 1,
  requests: 1_000_000,
  ratePerSecond: 20_000,
  models: [
    { name: 'embed', share: 0.5, serviceMs: 12, serviceSigma: 0.25, loadMs: 1_500 },
    { name: 'ocr', share: 0.3, serviceMs: 60, serviceSigma: 0.3, loadMs: 3_000 },
    { name: 'chat', share: 0.2, serviceMs: 250, serviceSigma: 0.4, loadMs: 20_000 },
  ],
  cloud: { regions: ['us-east', 'us-west', 'sa-east', 'eu-west', 'af-south', 'ap-south', 'ap-southeast', 'ap-southeast-3', 'ap-northeast'], backendsPerRegion: 8, slots: 16, provisionedUtilisation: 0.6 },
  sites: { count: 928, slotsMin: 2, slotsMax: 6, speedMedian: 1.3, speedSigma: 0.25, warmChance: 0.6, spread: 0.75, maxWarm: 2 },
  faults: { requestFailure: 0.002, stallShare: 0.01, stallFactor: 10, crashesPerHour: 0.5, downMs: 60_000, hangShare: 0.3 },
  network: {
    inflation: { median: 2.0, p10: 1.5, p90: 3.4 },
    backbone: { min: 1.25, max: 1.6 },
    hopMs: 0.5,
    jitterMs: 1,
    access: [
      { name: 'fibre', share: 0.3, ms: 1.5 },
      { name: 'cable', share: 0.25, ms: 7 },
      { name: 'dsl', share: 0.15, ms: 20 },
      { name: 'mobile', share: 0.3, ms: 35 },
    ],
  },
  edge: { snapshotRefreshMs: 1_000, snapshotPublishMs: 100, heartbeatMs: 2_000, isolatesPerPop: 1, popBookExchangeMs: POP_BOOK_EXCHANGE_MS, backendTtlMs: 10_000, timeoutMs: 15_000, overheadMs: 1 },
  prices: { cloudSlotHour: 0.5, siteSlotHour: 0.25 },
};
