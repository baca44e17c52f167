/**
 * The routing index of one directory snapshot: what ranking needs of the
 * snapshot, worked out once per snapshot (about once a second per isolate)
 * rather than once per request, so that a routing decision costs about
 * O(backends this isolate has measured for the model + k), not O(backends in
 * the world). Ranking from it is rank.ts's; keeping candidates in order of
 * a bound of their scores is bound-order.ts's.
 *
 * - model -> candidates: each model name's backends, in snapshot order, with
 *   their entries for that model, their `LatencyBook` keys (no key is built
 *   per lookup) and their providers as numbers (standing read from an array);
 * - geometry per origin: the great-circle km from a PoP to each backend's
 *   routing location (`backendLocation`), a pure function of the two: filled
 *   lazily, per backend, on the first request from that PoP (`kmAt`), and
 *   carried from the previous snapshot's index for backends that did not move;
 * - the bound orders of each model (bound-order.ts), cached per request shape.
 *
 * The caches assume a snapshot's backends, and its quarantine and penalty
 * collections, are never changed in place (directory/snapshot.ts replaces them).
 */

import { greatCircleKm, type LatLon } from '../geo/distance.ts';
import type { HeartbeatModel } from '../../shared/heartbeat.ts';
import type { BackendEntry } from '../directory/backend.ts';
import type { LatencyBook, LatencyStats } from './latency.ts';
import { backendLocation, type RttOrigin, type RttTable } from './rtt.ts';
import { drainMsOf, type RoutingStats } from './score.ts';

/** One model name's candidates, aligned arrays in snapshot order. */
export interface ModelCandidates {
  /** Position of each candidate in the index's `backends` (its slot in the geometry caches). */
  slots: Int32Array;
  backends: BackendEntry[];
  /** Each candidate's heartbeat entries for this model name (every version), in announcement order. */
  entries: HeartbeatModel[][];
  /** The entry a request naming no version gets (warm first, then the fastest), precomputed. */
  anyVersion: HeartbeatModel[];
  /** What a bound reads of each candidate for such a request, as numbers in place of objects (bound-order.ts). */
  facts: CandidateFacts;
  /** Each candidate's provider, as a number (`RoutingIndex.providers`). */
  providerOf: Int32Array;
  /** Candidate position by backend id. */
  position: Map<string, number>;
  /** Whether no two candidates share an id (else requests take the full scan). */
  uniqueIds: boolean;
  /** Bound orders (`boundOrder`), for the provider factors `factorOf`. */
  orders: Map<string, BoundOrder>;
  factorOf: Float64Array | undefined;
}

/**
 * Per candidate, aligned with `ModelCandidates.backends`: the heartbeat's
 * figures that a bound reads for a request naming no version, in typed
 * arrays, so that building an order over a thousand candidates reads
 * contiguous numbers, not three objects each.
 */
export interface CandidateFacts {
  /** 1 when the backend is ready. */
  ready: Uint8Array;
  /** 1 when its `anyVersion` entry is warm. */
  warm: Uint8Array;
  /** That entry's `p50Ms`. */
  p50Ms: Float64Array;
  /** `capacity.inFlight + capacity.queued`. */
  load: Float64Array;
  /** `Math.max(1, capacity.slots)`. */
  slots: Float64Array;
  /** `lastSeen`: when the heartbeat that reported `load` came (score.ts `loadSince`). */
  lastSeen: Float64Array;
  /** score.ts `drainMsOf` of the backend. */
  drainMs: Float64Array;
}

/**
 * One request shape's candidates in order of a lower bound of their scores
 * (`boundAt`), kept in step with one isolate's books through their change logs.
 */
export interface BoundOrder {
  /**
   * The front: candidate positions by bound, then warm, then id, then
   * position; the first `length` are in it. Every one's bound is under `cut`.
   */
  at: Int32Array;
  /** Each one's bound, aligned with `at`. */
  ms: Float64Array;
  length: number;
  /** Every candidate in the front has a bound under it; every one in the rest (unsorted), at or above it. */
  cut: number;
  /** How many candidates are in the rest. */
  restCount: number;
  /** Where each candidate is, by position: 0 excluded (its bound is NaN), 1 the front, 2 the rest. */
  place: Uint8Array;
  /** Each candidate's bound by position; NaN when a filter no measurement touches excludes it. */
  bound: Float64Array;
  /** Whether the entry the request takes from each candidate is warm, by position. */
  warm: Uint8Array;
  /** What the books hold of each candidate, by position, kept in step with them: its service stats, its RTT from the origin (NaN: none). */
  latencyOf: (LatencyStats | undefined)[];
  rttOf: Float64Array;
  /** The calls in flight the bounds count, by position (0 when `pending` is undefined: they are left out). */
  pendingOf: Uint32Array;
  /** The bounds hold for requests at times in [since, until): since, the latest time one was computed at. */
  since: number;
  until: number;
  /** The books the bounds were read from, and how far into their change logs. */
  latency: LatencyBook | undefined;
  latencySeq: number;
  rtt: RttTable | undefined;
  rttSeq: number;
  /** The calls in flight the bounds count, when they keep a change log (else bounds leave calls in flight out). */
  pending: RoutingStats['pending'];
  pendingSeq: number;
}

export interface RoutingIndex {
  readonly backends: readonly BackendEntry[];
  /** Where each backend is for routing, aligned with `backends`. */
  readonly locations: readonly LatLon[];
  /** The `locate` the locations came from. */
  readonly locate: (backend: BackendEntry) => LatLon;
  readonly byModel: ReadonlyMap<string, ModelCandidates>;
  /** Great-circle km from an origin to each backend, aligned with `backends`; NaN until computed. */
  readonly geometry: Map<string, Float64Array>;
  /** The previous index's geometry, and per slot the slot there of the same backend at the same place (-1: none), copied from when an origin is first asked for. */
  readonly carried?: { geometry: ReadonlyMap<string, Float64Array>; slotOf: Int32Array };
  /** The providers of the backends, numbered. */
  readonly providers: readonly string[];
  /** Per provider number: its expected-time factor, NaN when quarantined; for the last (quarantined, penalties) pair seen. */
  standing?: { quarantined: ReadonlySet<string> | undefined; penalties: ReadonlyMap<string, number> | undefined; factor: Float64Array };
  /** The caches' bounds (`IndexOptions`). */
  readonly maxOrigins: number;
  readonly maxOrders: number;
  readonly orderPrefix: number;
}

export interface IndexOptions {
  /** At most this many origins' geometry is kept (default 16: an isolate serves one PoP, simulated ones in dev). */
  maxOrigins?: number;
  /** At most this many bound orders are kept per model: origins x versions x option sets (default 32). */
  maxOrders?: number;
  /** How many candidates a bound order sorts when it is built; more are sorted when a walk needs them (default 32). */
  orderPrefix?: number;
  /**
   * The previous snapshot's index: its geometry is carried over for the
   * backends that are where they were, instead of computed again.
   */
  previous?: RoutingIndex;
}

/** Builds the index of `backends` (one snapshot's). O(backends x models announced). */
export function buildRoutingIndex(
  backends: readonly BackendEntry[],
  locate: (backend: BackendEntry) => LatLon = backendLocation,
  options: IndexOptions = {},
): RoutingIndex {
  const locations = backends.map(locate);
  const providerNumber = new Map<string, number>();
  const lists = new Map<string, { slots: number[]; backends: BackendEntry[]; entries: HeartbeatModel[][]; providerOf: number[] }>();
  backends.forEach((backend, slot) => {
    let provider = providerNumber.get(backend.provider);
    if (provider === undefined) providerNumber.set(backend.provider, (provider = providerNumber.size));
    const mine = new Map<string, HeartbeatModel[]>();
    for (const m of backend.models) {
      const list = mine.get(m.name);
      if (list) list.push(m);
      else mine.set(m.name, [m]);
    }
    for (const [name, entries] of mine) {
      let list = lists.get(name);
      if (!list) lists.set(name, (list = { slots: [], backends: [], entries: [], providerOf: [] }));
      list.providerOf.push(provider);
      list.slots.push(slot);
      list.backends.push(backend);
      list.entries.push(entries);
    }
  });
  const byModel = new Map<string, ModelCandidates>();
  for (const [name, l] of lists) {
    const anyVersion = l.entries.map((e) => pickEntry(e, undefined)!);
    byModel.set(name, {
      ...l,
      slots: Int32Array.from(l.slots),
      providerOf: Int32Array.from(l.providerOf),
      anyVersion,
      facts: {
        ready: Uint8Array.from(l.backends, (b) => (b.ready ? 1 : 0)),
        warm: Uint8Array.from(anyVersion, (m) => (m.warm ? 1 : 0)),
        p50Ms: Float64Array.from(anyVersion, (m) => m.p50Ms),
        load: Float64Array.from(l.backends, (b) => b.capacity.inFlight + b.capacity.queued),
        slots: Float64Array.from(l.backends, (b) => Math.max(1, b.capacity.slots)),
        lastSeen: Float64Array.from(l.backends, (b) => b.lastSeen),
        drainMs: Float64Array.from(l.backends, drainMsOf),
      },
      position: new Map(l.backends.map((b, i) => [b.id, i])),
      uniqueIds: new Set(l.backends.map((b) => b.id)).size === l.backends.length,
      orders: new Map(),
      factorOf: undefined,
    });
  }
  return {
    backends,
    locations,
    locate,
    byModel,
    ...carryGeometry(options.previous, backends, locations, locate),
    providers: [...providerNumber.keys()],
    maxOrigins: options.maxOrigins ?? 16,
    maxOrders: options.maxOrders ?? 32,
    orderPrefix: Math.max(1, options.orderPrefix ?? 32),
  };
}

/**
 * What an index takes of `previous`'s geometry: its very cache when every
 * backend is where it was, in the same place in the list (nothing to redo);
 * else, for each slot whose backend was in the previous list at the same
 * location, that slot there (`carried`), so that an origin's distances are
 * copied across when first asked for, not computed again (a snapshot that
 * lost or gained a backend shifts every slot after it).
 */
function carryGeometry(
  previous: RoutingIndex | undefined,
  backends: readonly BackendEntry[],
  locations: readonly LatLon[],
  locate: RoutingIndex['locate'],
): Pick<RoutingIndex, 'geometry' | 'carried'> {
  if (!previous || previous.locate !== locate) return { geometry: new Map() };
  const at = (a: LatLon, b: LatLon) => a.lat === b.lat && a.lon === b.lon;
  const n = locations.length;
  if (previous.locations.length === n && locations.every((l, i) => at(l, previous.locations[i]!))) return { geometry: previous.geometry };
  if (previous.geometry.size === 0) return { geometry: new Map() };
  const slotOf = new Int32Array(n).fill(-1);
  let byId: Map<string, number> | undefined;
  for (let i = 0; i < n; i++) {
    let p = i < previous.backends.length && previous.backends[i]!.id === backends[i]!.id ? i : -1;
    if (p < 0) {
      byId ??= new Map(previous.backends.map((b, j) => [b.id, j]));
      p = byId.get(backends[i]!.id) ?? -1;
    }
    if (p >= 0 && at(previous.locations[p]!, locations[i]!)) slotOf[i] = p;
  }
  return { geometry: new Map(), carried: { geometry: previous.geometry, slotOf } };
}

const memo = new WeakMap<readonly BackendEntry[], RoutingIndex>();
/** The index built last: the next snapshot's carries its geometry over when nothing moved. */
let lastBuilt: RoutingIndex | undefined;

/**
 * The index of a snapshot's `backends`, built on first use and kept while the
 * array lives (a snapshot's backends are never changed in place; copies of a
 * snapshot share the array, and so the index). The edge's background snapshot
 * refresh builds it (directory/snapshot.ts), so requests find it built.
 */
export function routingIndexFor(backends: readonly BackendEntry[]): RoutingIndex {
  return builtIndexFor(backends) ?? buildIndexFor(backends);
}

/** The index of `backends` when it has been built already; never builds it. */
export function builtIndexFor(backends: readonly BackendEntry[]): RoutingIndex | undefined {
  return memo.get(backends);
}

function buildIndexFor(backends: readonly BackendEntry[]): RoutingIndex {
  const index = buildRoutingIndex(backends, backendLocation, lastBuilt ? { previous: lastBuilt } : {});
  memo.set(backends, (lastBuilt = index));
  return index;
}

const originKeys = new WeakMap<RttOrigin, string>();

/** An origin's cache key, built once per origin object (origins are never changed in place; a number's string is not free). */
export function originKey(from: RttOrigin): string {
  let key = originKeys.get(from);
  if (key === undefined) {
    key = `${from.code ?? ''}\u0000${from.lat}\u0000${from.lon}`;
    originKeys.set(from, key);
  }
  return key;
}

/** The km from `from` (its `originKey`) to every backend of the index, filled for `slots` on demand. */
export function geometryFor(index: RoutingIndex, key: string): Float64Array {
  let km = index.geometry.get(key);
  if (!km) {
    if (index.geometry.size >= index.maxOrigins) index.geometry.clear();
    km = new Float64Array(index.backends.length).fill(Number.NaN);
    const before = index.carried?.geometry.get(key);
    if (before) {
      const { slotOf } = index.carried!;
      for (let i = 0; i < km.length; i++) if (slotOf[i]! >= 0) km[i] = before[slotOf[i]!]!;
    }
    index.geometry.set(key, km);
  }
  return km;
}

/** Each provider's factor on expected time (NaN: quarantined), kept for the snapshot's standing while it is the one asked for. */
export function standingFor(index: RoutingIndex, quarantined: ReadonlySet<string> | undefined, penalties: ReadonlyMap<string, number> | undefined): Float64Array {
  const last = index.standing;
  if (last && last.quarantined === quarantined && last.penalties === penalties) return last.factor;
  const factor = Float64Array.from(index.providers, (p) => (quarantined?.has(p) ? Number.NaN : (penalties?.get(p) ?? 1)));
  index.standing = { quarantined, penalties, factor };
  return factor;
}

/** The entry `modelEntry` picks among one backend's entries for the model: warm first, then the fastest. */
export function pickEntry(entries: readonly HeartbeatModel[], version: string | undefined): HeartbeatModel | undefined {
  let best: HeartbeatModel | undefined;
  for (const m of entries) {
    if (version !== undefined && m.version !== version) continue;
    if (!best || (m.warm && !best.warm) || (m.warm === best.warm && m.p50Ms < best.p50Ms)) best = m;
  }
  return best;
}

/** The km from the request's origin to candidate `i` of `list`, computed once per origin and backend. */
export function kmAt(r: { list: ModelCandidates; km: Float64Array; from: LatLon; locations: readonly LatLon[] }, i: number): number {
  const slot = r.list.slots[i]!;
  let km = r.km[slot]!;
  if (Number.isNaN(km)) r.km[slot] = km = greatCircleKm(r.from, r.locations[slot]!);
  return km;
}
