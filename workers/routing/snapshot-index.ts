/**
 * The routing index of one directory snapshot: what ranking needs of the
 * snapshot, worked out once per snapshot (about once a second per isolate)
 * rather than once per request, so that a routing decision costs about
 * O(backends this isolate has measured for the model + k), not O(backends in
 * the world); `rankByScore` (rank a list once) and `rankIndexed` (rank from a
 * snapshot's memoized index, the per-request path) live here.
 *
 * - model -> candidates: each model name's backends, in snapshot order, with
 *   their entries for that model, their `LatencyBook` keys (no key is built
 *   per lookup) and their providers as numbers (standing read from an array);
 * - geometry per origin: the great-circle km from a PoP to each backend's
 *   routing location (`backendLocation`), a pure function of the two: filled
 *   lazily, per backend, on the first request from that PoP;
 * - bound order per (origin, version, terms, this isolate's books): the
 *   candidates ranked by a lower bound of their score that holds until the
 *   isolate measures them again (`boundAt`): exact for a candidate it has not
 *   measured (heartbeat p50 and load, geometric RTT, standing), with the
 *   measured RTT and the lowest the service estimate can relax to for one it
 *   has. A request follows the books' change logs (routing/changes.ts) to move
 *   the few candidates measured since the last request, then scores candidates
 *   in bound order until the next bound can no longer enter the top k: the
 *   cost is the candidates near the top, not every one the isolate ever
 *   measured;
 * - top-k: callers take the first few candidates (dispatch, hedging and
 *   metadata at most MAX_ATTEMPTS / 5; P2C's pool 5), so the best k are kept
 *   by insertion instead of a full sort. `k = Infinity` gives the full order,
 *   for the callers that need it (verification's other-provider search).
 *
 * The caches assume a snapshot's backends, and its quarantine and penalty
 * collections, are never changed in place (directory/snapshot.ts replaces them).
 *
 * Same filters, same scores and the same order as score.ts's definitions:
 * the terms are computed with the same arithmetic, in the same order, as
 * `estimate`; ties go to warm, then to the lower id, then to snapshot order.
 * Pure apart from the lazily filled caches, which are functions of the index.
 */

import { greatCircleKm, DEFAULT_PATH_INFLATION, type LatLon } from '../geo/distance.ts';
import type { HeartbeatModel } from '../../shared/heartbeat.ts';
import type { BackendEntry } from '../directory/backend.ts';
import { latencyKey, type LatencyBook, type LatencyStats } from './latency.ts';
import { backendLocation, physicalFloorMs, type RttOrigin, type RttTable } from './rtt.ts';
import { allowedRegions, SCORE_DEFAULTS, type RoutingStats, type ScoreOptions, type ScoreRequest, type Scored } from './score.ts';

/** One model name's candidates, aligned arrays in snapshot order. */
export interface ModelCandidates {
  /** Position of each candidate in the index's `backends` (its slot in the geometry caches). */
  slots: Int32Array;
  backends: BackendEntry[];
  /** Each candidate's heartbeat entries for this model name (every version), in announcement order. */
  entries: HeartbeatModel[][];
  /** The entry a request naming no version gets (warm first, then the fastest), precomputed. */
  anyVersion: HeartbeatModel[];
  /** Each candidate's provider, as a number (`RoutingIndex.providers`). */
  providerOf: Int32Array;
  /** Candidate position by backend id. */
  position: Map<string, number>;
  /** Whether no two candidates share an id (else requests take the full scan). */
  uniqueIds: boolean;
  /** Bound orders (`boundOrder`), for the provider factors `factorOf`. */
  orders: Map<string, BoundOrder>;
  factorOf: Float64Array | undefined;
  /** `latencyKey(backend.id, model)` of each candidate. */
  latencyKeys: string[];
}

/**
 * One request shape's candidates in order of a lower bound of their scores
 * (`boundAt`), kept in step with one isolate's books through their change logs.
 */
interface BoundOrder {
  /** Candidate positions, by bound, then warm, then id, then position; the first `length` are live. */
  at: Int32Array;
  /** Each one's bound, aligned with `at`. */
  ms: Float64Array;
  length: number;
  /** Each candidate's bound by position; NaN when a filter no measurement touches excludes it. */
  bound: Float64Array;
  /** Whether the entry the request takes from each candidate is warm, by position. */
  warm: Uint8Array;
  /** What the books hold of each candidate, by position, kept in step with them: its service stats, its RTT from the origin (NaN: none). */
  latencyOf: (LatencyStats | undefined)[];
  rttOf: Float64Array;
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
  /** The providers of the backends, numbered. */
  readonly providers: readonly string[];
  /** Per provider number: its expected-time factor, NaN when quarantined; for the last (quarantined, penalties) pair seen. */
  standing?: { quarantined: ReadonlySet<string> | undefined; penalties: ReadonlyMap<string, number> | undefined; factor: Float64Array };
  /** The caches' bounds (`IndexOptions`). */
  readonly maxOrigins: number;
  readonly maxOrders: number;
}

export interface IndexOptions {
  /** At most this many origins' geometry is kept (default 16: an isolate serves one PoP, simulated ones in dev). */
  maxOrigins?: number;
  /** At most this many bound orders are kept per model: origins x versions x option sets (default 32). */
  maxOrders?: number;
  /**
   * The previous snapshot's index: when every backend is where it was, in the
   * same place in the list, its geometry is carried over instead of computed again.
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
  const lists = new Map<string, { slots: number[]; backends: BackendEntry[]; entries: HeartbeatModel[][]; latencyKeys: string[]; providerOf: number[] }>();
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
      if (!list) lists.set(name, (list = { slots: [], backends: [], entries: [], latencyKeys: [], providerOf: [] }));
      list.providerOf.push(provider);
      list.slots.push(slot);
      list.backends.push(backend);
      list.entries.push(entries);
      list.latencyKeys.push(latencyKey(backend.id, name));
    }
  });
  const byModel = new Map<string, ModelCandidates>();
  for (const [name, l] of lists) {
    byModel.set(name, {
      ...l,
      slots: Int32Array.from(l.slots),
      providerOf: Int32Array.from(l.providerOf),
      anyVersion: l.entries.map((e) => pickEntry(e, undefined)!),
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
    geometry: sameGeometry(options.previous, locations, locate) ? options.previous!.geometry : new Map(),
    providers: [...providerNumber.keys()],
    maxOrigins: options.maxOrigins ?? 16,
    maxOrders: options.maxOrders ?? 32,
  };
}

/** Whether `previous`'s geometry holds for `locations` (same locate, same places in the same order). */
function sameGeometry(previous: RoutingIndex | undefined, locations: readonly LatLon[], locate: RoutingIndex['locate']): boolean {
  if (!previous || previous.locate !== locate || previous.locations.length !== locations.length) return false;
  for (let i = 0; i < locations.length; i++) {
    const a = previous.locations[i]!;
    const b = locations[i]!;
    if (a.lat !== b.lat || a.lon !== b.lon) return false;
  }
  return true;
}

const memo = new WeakMap<readonly BackendEntry[], RoutingIndex>();
/** The index built last: the next snapshot's carries its geometry over when nothing moved. */
let lastBuilt: RoutingIndex | undefined;

/**
 * The index of a snapshot's `backends`, built on first use and kept while the
 * array lives (a snapshot's backends are never changed in place; copies of a
 * snapshot share the array, and so the index).
 */
export function routingIndexFor(backends: readonly BackendEntry[]): RoutingIndex {
  let index = memo.get(backends);
  if (!index) {
    index = buildRoutingIndex(backends, backendLocation, lastBuilt ? { previous: lastBuilt } : {});
    memo.set(backends, (lastBuilt = index));
  }
  return index;
}

const originKeys = new WeakMap<RttOrigin, string>();

/** An origin's cache key, built once per origin object (origins are never changed in place; a number's string is not free). */
function originKey(from: RttOrigin): string {
  let key = originKeys.get(from);
  if (key === undefined) {
    key = `${from.code ?? ''}\u0000${from.lat}\u0000${from.lon}`;
    originKeys.set(from, key);
  }
  return key;
}

/** The km from `from` (its `originKey`) to every backend of the index, filled for `slots` on demand. */
function geometryFor(index: RoutingIndex, key: string): Float64Array {
  let km = index.geometry.get(key);
  if (!km) {
    if (index.geometry.size >= index.maxOrigins) index.geometry.clear();
    km = new Float64Array(index.backends.length).fill(Number.NaN);
    index.geometry.set(key, km);
  }
  return km;
}

/** Each provider's factor on expected time (NaN: quarantined), kept for the snapshot's standing while it is the one asked for. */
function standingFor(index: RoutingIndex, quarantined: ReadonlySet<string> | undefined, penalties: ReadonlyMap<string, number> | undefined): Float64Array {
  const last = index.standing;
  if (last && last.quarantined === quarantined && last.penalties === penalties) return last.factor;
  const factor = Float64Array.from(index.providers, (p) => (quarantined?.has(p) ? Number.NaN : (penalties?.get(p) ?? 1)));
  index.standing = { quarantined, penalties, factor };
  return factor;
}

/** The entry `modelEntry` picks among one backend's entries for the model: warm first, then the fastest. */
function pickEntry(entries: readonly HeartbeatModel[], version: string | undefined): HeartbeatModel | undefined {
  let best: HeartbeatModel | undefined;
  for (const m of entries) {
    if (version !== undefined && m.version !== version) continue;
    if (!best || (m.warm && !best.warm) || (m.warm === best.warm && m.p50Ms < best.p50Ms)) best = m;
  }
  return best;
}

/** What scoring one candidate reads besides the candidate: the request's constants. */
interface Request {
  list: ModelCandidates;
  version: string | undefined;
  from: RttOrigin;
  now: number;
  allowed: ReadonlySet<string> | undefined;
  allowCold: boolean;
  inflation: number;
  extraMs: number;
  /** The cold-start term of a cold entry of this model. */
  coldMs: number;
  stats: RoutingStats;
  measuredRtt: ReadonlyMap<string, number> | undefined;
  km: Float64Array;
  locations: readonly LatLon[];
  factor: Float64Array;
  maxOrders: number;
}

/**
 * Candidate `i` scored as score.ts's `estimate` scores it, or undefined when a
 * hard filter excludes it or `admit` (given its expected time) turns it away:
 * no object is built for a candidate that would not be kept. `latency`: the
 * candidate's stats for the model when the caller already has them, `false`
 * when it is known to have none, null to look them up; `rtt`: its measured
 * RTT from the origin when the caller has it (NaN: none), null to look it up.
 */
function scoreAt(
  r: Request,
  i: number,
  admit: ((expectedMs: number, warm: boolean, id: string, i: number) => boolean) | undefined,
  latency: LatencyStats | false | null,
  rtt: number | null,
): Scored | undefined {
  const { list, now } = r;
  const backend = list.backends[i]!;
  if (!backend.ready || backend.expiresAt <= now) return undefined;
  if (r.allowed && (!r.allowed.has(backend.region) || backend.location?.state === 'refuted')) return undefined;
  const penalty = r.factor[list.providerOf[i]!]!;
  if (Number.isNaN(penalty)) return undefined; // quarantined
  const model = r.version === undefined ? list.anyVersion[i]! : pickEntry(list.entries[i]!, r.version);
  if (!model || (!model.warm && !r.allowCold)) return undefined;
  const distanceKm = kmAt(r, i);
  const floor = physicalFloorMs(distanceKm);
  const sample = rtt === null ? r.measuredRtt?.get(backend.id) : Number.isNaN(rtt) ? undefined : rtt;
  const rttMs = sample !== undefined ? Math.max(floor, sample) : Math.max(floor, floor * r.inflation);
  const stats = latency === null ? r.stats.latency?.getByKey(list.latencyKeys[i]!) : latency || undefined;
  const measured = stats?.peak.value(now, model.p50Ms);
  const serviceMs = measured === undefined ? model.p50Ms : Math.max(0, measured);
  const { slots, inFlight, queued } = backend.capacity;
  const load = inFlight + queued + (r.stats.pending?.size ? (r.stats.pending.get(backend.id) ?? 0) : 0);
  const queueMs = (load / Math.max(1, slots)) * serviceMs;
  const coldMs = model.warm ? 0 : r.coldMs;
  const expectedMs = (rttMs + queueMs + serviceMs + coldMs) * penalty;
  // Ejection is a filter like those above; asked last, as it is the one that costs a lookup.
  if ((admit && !admit(expectedMs, model.warm, backend.id, i)) || r.stats.ejected?.isEjected(backend.id, now)) return undefined;
  return { backend, model, warm: model.warm, distanceKm, rttMs, queueMs, serviceMs, coldMs, expectedMs };
}

function kmAt(r: Request, i: number): number {
  const slot = r.list.slots[i]!;
  let km = r.km[slot]!;
  if (Number.isNaN(km)) r.km[slot] = km = greatCircleKm(r.from, r.locations[slot]!);
  return km;
}

/** score.ts's order: lower expected time, then warm, then the lower id; then snapshot order (a stable sort's). */
function before(aMs: number, aWarm: boolean, aId: string, aAt: number, bMs: number, bWarm: boolean, bId: string, bAt: number): boolean {
  if (aMs !== bMs) return aMs < bMs;
  if (aWarm !== bWarm) return aWarm;
  if (aId !== bId) return aId < bId;
  return aAt < bAt;
}

/** A bound may sit this far (relatively) under its score: room for the last bits the two computations round apart. */
const BOUND_SLACK = 1 - 1e-9;
/**
 * How long an order's bounds hold: a measured service estimate relaxes toward
 * the heartbeat's p50 as time passes, so a bound is the lowest it reaches
 * within this horizon, and the order is rebuilt after it (about as often as
 * a snapshot, hence its index, is replaced).
 */
const BOUND_HORIZON_MS = 1_000;

/**
 * A lower bound of candidate `i`'s score (`scoreAt`) that holds until the
 * isolate's books change for it, or NaN when a filter no measurement touches
 * excludes it (not ready, quarantined, no such model or version, cold when
 * cold is not allowed). The terms are `scoreAt`'s, with the service time at
 * the lowest its estimate reaches from now to `until`
 * (`PeakEwma.lowestUntil`), and calls in flight counted only when their map
 * keeps a change log (they only add): for a candidate with no service time
 * measured, the bound is its score, exactly, when they are counted.
 */
function boundAt(r: Request, order: BoundOrder, i: number, until: number): number {
  const { list } = r;
  const backend = list.backends[i]!;
  const penalty = r.factor[list.providerOf[i]!]!;
  const model = r.version === undefined ? list.anyVersion[i]! : pickEntry(list.entries[i]!, r.version);
  if (!backend.ready || Number.isNaN(penalty) || !model || (!model.warm && !r.allowCold)) return Number.NaN;
  const floor = physicalFloorMs(kmAt(r, i));
  const sample = order.rttOf[i]!;
  const rttMs = !Number.isNaN(sample) ? Math.max(floor, sample) : Math.max(floor, floor * r.inflation);
  const lowest = order.latencyOf[i]?.peak.lowestUntil(r.now, until, model.p50Ms);
  const serviceMs = lowest === undefined ? model.p50Ms : Math.max(0, lowest) * BOUND_SLACK;
  const { slots, inFlight, queued } = backend.capacity;
  const pending = order.pending?.size ? (order.pending.get(backend.id) ?? 0) : 0;
  const queueMs = ((inFlight + queued + pending) / Math.max(1, slots)) * serviceMs;
  return (rttMs + queueMs + serviceMs + (model.warm ? 0 : r.coldMs)) * penalty;
}

/** Reads candidate `i`'s measurements from the books into the order. */
function remeasure(r: Request, order: BoundOrder, i: number): void {
  order.latencyOf[i] = r.stats.latency?.getByKey(r.list.latencyKeys[i]!);
  order.rttOf[i] = r.measuredRtt?.get(r.list.backends[i]!.id) ?? Number.NaN;
}

/** Whether candidate `a` (bound `aMs`) comes before `b` in an order's sort. */
function orderedBefore(list: ModelCandidates, order: BoundOrder, aMs: number, a: number, bMs: number, b: number): boolean {
  return before(aMs, order.warm[a] === 1, list.backends[a]!.id, a, bMs, order.warm[b] === 1, list.backends[b]!.id, b);
}

/** Where a candidate with bound `ms` at position `i` goes in the order: the first place whose occupant does not come before it. */
function placeOf(list: ModelCandidates, order: BoundOrder, ms: number, i: number): number {
  let lo = 0;
  let hi = order.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (orderedBefore(list, order, order.ms[mid]!, order.at[mid]!, ms, i)) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Every candidate's bound, sorted: what a request shape starts from, and what it falls back to when the books' logs no longer reach back. */
function buildOrder(r: Request): BoundOrder {
  const { list, stats } = r;
  const n = list.backends.length;
  const until = r.now + BOUND_HORIZON_MS;
  const order: BoundOrder = {
    at: new Int32Array(n),
    ms: new Float64Array(n),
    length: 0,
    bound: new Float64Array(n),
    warm: new Uint8Array(n),
    latencyOf: new Array<LatencyStats | undefined>(n),
    rttOf: new Float64Array(n),
    since: r.now,
    until,
    latency: stats.latency,
    latencySeq: stats.latency?.changes.seq ?? 0,
    rtt: stats.rtt,
    rttSeq: stats.rtt?.changes.seq ?? 0,
    pending: stats.pending?.changes ? stats.pending : undefined,
    pendingSeq: stats.pending?.changes?.seq ?? 0,
  };
  const { bound, warm } = order;
  const live: number[] = [];
  for (let i = 0; i < n; i++) {
    const model = r.version === undefined ? list.anyVersion[i]! : pickEntry(list.entries[i]!, r.version);
    warm[i] = model?.warm ? 1 : 0;
    remeasure(r, order, i);
    bound[i] = boundAt(r, order, i, until);
    if (!Number.isNaN(bound[i]!)) live.push(i);
  }
  const id = (i: number) => list.backends[i]!.id;
  // Most pairs differ in bound: compared as numbers first, the full order only for ties.
  live.sort((a, b) => bound[a]! - bound[b]! || (a === b ? 0 : before(bound[a]!, warm[a] === 1, id(a), a, bound[b]!, warm[b] === 1, id(b), b) ? -1 : 1));
  live.forEach((i, j) => {
    order.at[j] = i;
    order.ms[j] = bound[i]!;
  });
  order.length = live.length;
  return order;
}

/** Moves candidate `i` to where its bound now puts it; false when the order is not as expected (rebuild it). */
function rebound(r: Request, order: BoundOrder, i: number): boolean {
  const old = order.bound[i]!;
  if (Number.isNaN(old)) return true; // excluded by a filter no measurement changes
  remeasure(r, order, i);
  const next = boundAt(r, order, i, order.until);
  if (next === old) return true;
  const { list } = r;
  const from = placeOf(list, order, old, i);
  if (order.at[from] !== i) return false;
  const to = placeOf(list, order, next, i);
  if (to > from + 1) {
    order.at.copyWithin(from, from + 1, to);
    order.ms.copyWithin(from, from + 1, to);
    order.at[to - 1] = i;
    order.ms[to - 1] = next;
  } else if (to < from) {
    order.at.copyWithin(to + 1, to, from);
    order.ms.copyWithin(to + 1, to, from);
    order.at[to] = i;
    order.ms[to] = next;
  } else {
    order.ms[from] = next;
  }
  order.bound[i] = next;
  return true;
}

/**
 * The model's bound order for this request shape and this isolate's books,
 * brought up to date: the candidates measured since it was last read move to
 * their new bounds. Cached per (origin, version, terms); rebuilt when the
 * books are other ones, their logs no longer reach back to its last read, or
 * `now` is outside the times its bounds hold for.
 */
function boundOrder(r: Request, model: string, key: string): BoundOrder {
  const { list, stats } = r;
  if (list.factorOf !== r.factor) {
    list.orders.clear();
    list.factorOf = r.factor;
  }
  let order = list.orders.get(key);
  const pending = stats.pending?.changes ? stats.pending : undefined;
  if (order && order.latency === stats.latency && order.rtt === stats.rtt && order.pending === pending && r.now >= order.since && r.now < order.until) {
    let ok = true;
    const move = (id: string) => {
      const i = list.position.get(id);
      if (ok && i !== undefined) ok = rebound(r, order!, i);
    };
    if (stats.latency) ok = stats.latency.changes.since(order.latencySeq, model, move) && ok;
    if (ok && stats.rtt && r.from.code !== undefined) ok = stats.rtt.changes.since(order.rttSeq, r.from.code, move) && ok;
    if (ok && pending) ok = pending.changes!.since(order.pendingSeq, '', move) && ok;
    if (ok) {
      order.since = r.now;
      order.latencySeq = stats.latency?.changes.seq ?? 0;
      order.rttSeq = stats.rtt?.changes.seq ?? 0;
      order.pendingSeq = pending?.changes!.seq ?? 0;
      return order;
    }
  }
  order = buildOrder(r);
  if (list.orders.size >= r.maxOrders) list.orders.clear();
  list.orders.set(key, order);
  return order;
}

/**
 * The first `k` of the backends that may serve `request` as `rankByScore`
 * orders them (best first), with the same scores; all of them, in order,
 * when `k` is Infinity. `options.locate`, when given, must be the index's.
 *
 * The first k: the candidates this isolate has measured (a service time for
 * the model, an RTT from this PoP, a call in flight) are scored; the others'
 * scores are their static ones, so they are taken in their cached static
 * order until one can no longer enter the top k. O(measured + k) for a
 * request with no region restriction; O(candidates) at worst.
 *
 * @example
 * const top = rankIndexed(routingIndexFor(snapshot.backends), { model, from: pop }, stats, Date.now(), {}, 8);
 */
export function rankIndexed(
  index: RoutingIndex,
  request: ScoreRequest,
  stats: RoutingStats,
  now: number,
  options: ScoreOptions = {},
  k = Number.POSITIVE_INFINITY,
): Scored[] {
  if (options.locate !== undefined && options.locate !== index.locate) {
    throw new Error("rankIndexed: options.locate differs from the index's; build the index with it");
  }
  const list = index.byModel.get(request.model);
  if (!list || k <= 0) return [];
  const allowed = allowedRegions(request.pin, request.residency);
  if (allowed && allowed.size === 0) return [];
  const { from } = request;
  const origin = originKey(from);
  const coldMeasured = stats.coldStartMs?.get(request.model);
  const r: Request = {
    list,
    version: request.version,
    from,
    now,
    allowed,
    allowCold: options.allowCold ?? true,
    inflation: options.inflation ?? DEFAULT_PATH_INFLATION,
    extraMs: options.maxExtraMs ?? SCORE_DEFAULTS.maxExtraMs,
    coldMs: Math.max(coldMeasured ?? options.defaultColdStartMs ?? SCORE_DEFAULTS.defaultColdStartMs, options.maxExtraMs ?? SCORE_DEFAULTS.maxExtraMs),
    stats,
    measuredRtt: from.code === undefined ? undefined : stats.rtt?.fromPop(from.code),
    km: geometryFor(index, origin),
    locations: index.locations,
    factor: standingFor(index, options.quarantined, options.penalties),
    maxOrders: index.maxOrders,
  };
  const out: Scored[] = [];

  if (k >= list.backends.length || !list.uniqueIds) {
    for (let i = 0; i < list.backends.length; i++) {
      const scored = scoreAt(r, i, undefined, null, null);
      if (scored) out.push(scored);
    }
    out.sort(
      (a, b) =>
        a.expectedMs - b.expectedMs ||
        Number(b.warm) - Number(a.warm) ||
        (a.backend.id < b.backend.id ? -1 : a.backend.id > b.backend.id ? 1 : 0),
    );
    return out.slice(0, k);
  }

  // Top k, best first; `outAt`: each one's place in the list (the last tie-break).
  const outAt: number[] = [];
  const enters = (ms: number, warm: boolean, id: string, i: number) =>
    out.length < k || before(ms, warm, id, i, out[k - 1]!.expectedMs, out[k - 1]!.warm, out[k - 1]!.backend.id, outAt[k - 1]!);
  const insert = (scored: Scored, i: number) => {
    let at = Math.min(out.length, k - 1);
    while (at > 0 && before(scored.expectedMs, scored.warm, scored.backend.id, i, out[at - 1]!.expectedMs, out[at - 1]!.warm, out[at - 1]!.backend.id, outAt[at - 1]!)) at--;
    if (out.length >= k) {
      out.pop();
      outAt.pop();
    }
    out.splice(at, 0, scored);
    outAt.splice(at, 0, i);
  };

  // Candidates in bound order, each scored, until the next bound cannot enter: no later score can either.
  const key = `${origin}\u0000${request.version ?? ''}\u0000${r.inflation}\u0000${r.coldMs}\u0000${r.allowCold}`;
  const order = boundOrder(r, request.model, key);
  for (let j = 0; j < order.length; j++) {
    const i = order.at[j]!;
    if (!enters(order.ms[j]!, order.warm[i] === 1, list.backends[i]!.id, i)) break;
    const scored = scoreAt(r, i, enters, order.latencyOf[i] ?? false, order.rttOf[i]!);
    if (scored) insert(scored, i);
  }
  return out;
}

/**
 * The backends that may serve `request`, best (lowest expected time) first;
 * ties go to warm, then to the lower id. Empty when none may. Builds an index
 * of `backends` for this one call; the per-request path ranks from the
 * snapshot's memoized index instead (`rankIndexed(routingIndexFor(...))`) and
 * keeps only the first few.
 *
 * @example
 * const ranked = rankByScore(snapshot.backends, { model, version, from: pop, pin, residency }, stats, Date.now());
 * const attempts = pickAttempts(ranked, Math.random);
 */
export function rankByScore(
  backends: readonly BackendEntry[],
  request: ScoreRequest,
  stats: RoutingStats,
  now: number,
  options: ScoreOptions = {},
): Scored[] {
  return rankIndexed(buildRoutingIndex(backends, options.locate ?? backendLocation), request, stats, now, options);
}
