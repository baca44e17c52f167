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
 * - static order per (origin, version, terms): the candidates ranked by the
 *   score each has while the isolate has measured nothing of it (heartbeat
 *   p50 and load, geometric RTT, standing). A request scores the candidates
 *   it has measured (found through the books' per-model and per-PoP views)
 *   and takes the others in static order until one can no longer enter the
 *   top k;
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
import { latencyKey, type LatencyStats } from './latency.ts';
import { backendLocation, physicalFloorMs, type RttOrigin } from './rtt.ts';
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
  /** Per-request marks (the measured candidates), by `stamp`. */
  marks: Int32Array;
  stamp: number;
  /** Static orders (`staticOrder`), for the provider factors `factorOf`. */
  orders: Map<string, { at: Int32Array; ms: Float64Array }>;
  factorOf: Float64Array | undefined;
  /** `latencyKey(backend.id, model)` of each candidate. */
  latencyKeys: string[];
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
}

/** At most this many origins' geometry is kept per index (an isolate serves one PoP, simulated ones in dev). */
const MAX_ORIGINS = 16;
/** At most this many static orders are kept per model (origins x versions x option sets). */
const MAX_ORDERS = 32;

/** Builds the index of `backends` (one snapshot's). O(backends x models announced). */
export function buildRoutingIndex(backends: readonly BackendEntry[], locate: (backend: BackendEntry) => LatLon = backendLocation): RoutingIndex {
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
      marks: new Int32Array(l.backends.length),
      stamp: 0,
      orders: new Map(),
      factorOf: undefined,
    });
  }
  return { backends, locations, locate, byModel, geometry: new Map(), providers: [...providerNumber.keys()] };
}

const memo = new WeakMap<readonly BackendEntry[], RoutingIndex>();

/**
 * The index of a snapshot's `backends`, built on first use and kept while the
 * array lives (a snapshot's backends are never changed in place; copies of a
 * snapshot share the array, and so the index).
 */
export function routingIndexFor(backends: readonly BackendEntry[]): RoutingIndex {
  let index = memo.get(backends);
  if (!index) memo.set(backends, (index = buildRoutingIndex(backends)));
  return index;
}

/** The km from `from` to every backend of the index, filled for `slots` on demand. */
function geometryFor(index: RoutingIndex, from: RttOrigin): Float64Array {
  const key = `${from.code ?? ''}\u0000${from.lat}\u0000${from.lon}`;
  let km = index.geometry.get(key);
  if (!km) {
    if (index.geometry.size >= MAX_ORIGINS) index.geometry.clear();
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
}

/**
 * Candidate `i` scored as score.ts's `estimate` scores it, or undefined when a
 * hard filter excludes it or `admit` (given its expected time) turns it away:
 * no object is built for a candidate that would not be kept. `latency`: the
 * candidate's stats for the model when the caller already has them, `false`
 * when it is known to have none, null to look them up.
 */
function scoreAt(
  r: Request,
  i: number,
  admit: ((expectedMs: number, warm: boolean, id: string, i: number) => boolean) | undefined,
  latency: LatencyStats | false | null,
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
  const sample = r.measuredRtt?.get(backend.id);
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

/**
 * The model's candidates that pass every filter no request-time state
 * touches, in the order of the score each has while this isolate has no
 * measurement of it (no service time, no RTT from this PoP, no call in
 * flight): its static score. Cached per (origin, version, terms).
 */
function staticOrder(r: Request, key: string): { at: Int32Array; ms: Float64Array } {
  const { list } = r;
  if (list.factorOf !== r.factor) {
    list.orders.clear();
    list.factorOf = r.factor;
  }
  const cached = list.orders.get(key);
  if (cached) return cached;
  const at: number[] = [];
  const msOf = new Float64Array(list.backends.length);
  const warmOf: boolean[] = [];
  for (let i = 0; i < list.backends.length; i++) {
    const backend = list.backends[i]!;
    const penalty = r.factor[list.providerOf[i]!]!;
    const model = r.version === undefined ? list.anyVersion[i]! : pickEntry(list.entries[i]!, r.version);
    warmOf.push(model?.warm ?? false);
    if (!backend.ready || Number.isNaN(penalty) || !model || (!model.warm && !r.allowCold)) continue;
    const floor = physicalFloorMs(kmAt(r, i));
    const rttMs = Math.max(floor, floor * r.inflation);
    const serviceMs = model.p50Ms;
    const { slots, inFlight, queued } = backend.capacity;
    const queueMs = ((inFlight + queued + 0) / Math.max(1, slots)) * serviceMs;
    msOf[i] = (rttMs + queueMs + serviceMs + (model.warm ? 0 : r.coldMs)) * penalty;
    at.push(i);
  }
  const id = (i: number) => list.backends[i]!.id;
  at.sort((a, b) => (a === b ? 0 : before(msOf[a]!, warmOf[a]!, id(a), a, msOf[b]!, warmOf[b]!, id(b), b) ? -1 : 1));
  const order = { at: Int32Array.from(at), ms: Float64Array.from(at, (i) => msOf[i]!) };
  if (list.orders.size >= MAX_ORDERS) list.orders.clear();
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
    km: geometryFor(index, from),
    locations: index.locations,
    factor: standingFor(index, options.quarantined, options.penalties),
  };
  const out: Scored[] = [];

  if (k >= list.backends.length || !list.uniqueIds) {
    for (let i = 0; i < list.backends.length; i++) {
      const scored = scoreAt(r, i, undefined, null);
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

  // The measured candidates, each scored.
  const stamp = (list.stamp = (list.stamp + 1) | 0);
  // First those with service times for the model (their stats at hand): every candidate left unmarked after it has none.
  // (forEach, not for-of over entries: no [id, stats] pair is allocated per candidate.)
  stats.latency?.forModel(request.model)?.forEach((latency, id) => {
    const i = list.position.get(id);
    if (i === undefined || list.marks[i] === stamp) return;
    list.marks[i] = stamp;
    const scored = scoreAt(r, i, enters, latency);
    if (scored) insert(scored, i);
  });
  const mark = (ids: Iterable<string> | undefined) => {
    if (!ids) return;
    for (const id of ids) {
      const i = list.position.get(id);
      if (i === undefined || list.marks[i] === stamp) continue;
      list.marks[i] = stamp;
      const scored = scoreAt(r, i, enters, false);
      if (scored) insert(scored, i);
    }
  };
  mark(r.measuredRtt?.keys());
  mark(stats.pending?.keys());

  // The others, in static order, while they can still enter.
  const key = `${from.code ?? ''}\u0000${from.lat}\u0000${from.lon}\u0000${request.version ?? ''}\u0000${r.inflation}\u0000${r.coldMs}\u0000${r.allowCold}`;
  const order = staticOrder(r, key);
  for (let j = 0; j < order.at.length; j++) {
    const i = order.at[j]!;
    if (list.marks[i] === stamp) continue;
    const backend = list.backends[i]!;
    const warm = (r.version === undefined ? list.anyVersion[i]! : pickEntry(list.entries[i]!, r.version)!).warm;
    if (!enters(order.ms[j]!, warm, backend.id, i)) break;
    const scored = scoreAt(r, i, undefined, false);
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
