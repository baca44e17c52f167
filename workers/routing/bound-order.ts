/**
 * Bound orders: for one request shape (origin, version, scoring terms) and
 * one isolate's books, a model's candidates ranked by a lower bound of their
 * score that holds until the isolate measures them again (`boundAt`): exact
 * for a candidate it has not measured (heartbeat p50, geometric RTT,
 * standing) whose heartbeat reported no load, with the measured RTT and the
 * lowest the service estimate can relax to for one it has, and the
 * heartbeat's load as it may stand at the order's end (it only falls). A
 * request follows the books' change logs
 * (routing/changes.ts) to move the few candidates measured since the last
 * request (`rebound`); rank.ts then scores candidates in bound order until
 * the next bound can no longer enter the top k: the cost is the candidates
 * near the top, not every one the isolate ever measured.
 *
 * Only the front of an order is sorted: the candidates whose bounds are under
 * its `cut` (about `IndexOptions.orderPrefix` of them), the rest held
 * unsorted at or above it. A decision reads about ten entries, and an order
 * lives about a second (a snapshot), serving a few requests at a quiet PoP:
 * a full sort of a thousand candidates per order was most of its cost.
 * `extendOrder` sorts more of the rest into the front when a walk reaches
 * the cut with room left in its top k.
 */

import type { LatLon } from '../geo/distance.ts';
import type { LatencyStats } from './latency.ts';
import { physicalFloorMs, type RttOrigin } from './rtt.ts';
import { loadSince, type RoutingStats } from './score.ts';
import { kmAt, pickEntry, type BoundOrder, type ModelCandidates } from './snapshot-index.ts';

/** What ranking reads besides the candidates: one request's constants (built by rank.ts). */
export interface RankContext {
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
  /** The model's measured service times by backend id (`LatencyBook.forModel`). */
  measuredService: ReadonlyMap<string, LatencyStats> | undefined;
  km: Float64Array;
  locations: readonly LatLon[];
  factor: Float64Array;
  maxOrders: number;
  /** How many candidates an order sorts at first (`IndexOptions.orderPrefix`). */
  orderPrefix: number;
}

/** score.ts's order: lower expected time, then warm, then the lower id; then snapshot order (a stable sort's). */
export function before(aMs: number, aWarm: boolean, aId: string, aAt: number, bMs: number, bWarm: boolean, bId: string, bAt: number): boolean {
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
 * (`PeakEwma.lowestUntil`), the heartbeat's load aged to `until`
 * (score.ts `loadSince`), and calls in flight counted only when their map
 * keeps a change log (they only add): for a candidate with no service time
 * measured and no load reported, the bound is its score, exactly, when they
 * are counted.
 */
function boundAt(r: RankContext, order: BoundOrder, i: number, until: number): number {
  const { list } = r;
  const penalty = r.factor[list.providerOf[i]!]!;
  let p50Ms: number;
  let warm: boolean;
  let load: number;
  let slots: number;
  if (r.version === undefined) {
    // The heartbeat's figures from the index's typed arrays: no object read per candidate.
    const { facts } = list;
    warm = facts.warm[i] === 1;
    if (facts.ready[i] === 0 || Number.isNaN(penalty) || (!warm && !r.allowCold)) return Number.NaN;
    p50Ms = facts.p50Ms[i]!;
    load = facts.load[i]!;
    slots = facts.slots[i]!;
  } else {
    const backend = list.backends[i]!;
    const model = pickEntry(list.entries[i]!, r.version);
    if (!backend.ready || Number.isNaN(penalty) || !model || (!model.warm && !r.allowCold)) return Number.NaN;
    ({ p50Ms, warm } = model);
    load = backend.capacity.inFlight + backend.capacity.queued;
    slots = Math.max(1, backend.capacity.slots);
  }
  const floor = physicalFloorMs(kmAt(r, i));
  const sample = order.rttOf[i]!;
  const rttMs = !Number.isNaN(sample) ? Math.max(floor, sample) : Math.max(floor, floor * r.inflation);
  const lowest = order.latencyOf[i]?.ewma.lowestUntil(r.now, until, p50Ms);
  const serviceMs = lowest === undefined ? p50Ms : Math.max(0, lowest) * BOUND_SLACK;
  // The load as it may stand at `until`, worked off at the lowest service time: the least it can be in the order's span.
  load = loadSince(load, slots, until - list.facts.lastSeen[i]!, Math.max(list.facts.drainMs[i]!, serviceMs));
  const queueMs = ((load + order.pendingOf[i]! + 1) / slots) * serviceMs;
  return (rttMs + queueMs + serviceMs + (warm ? 0 : r.coldMs)) * penalty;
}

/** Reads candidate `i`'s measurements from the books into the order. */
function remeasure(r: RankContext, order: BoundOrder, i: number): void {
  order.latencyOf[i] = r.measuredService?.get(r.list.backends[i]!.id);
  order.rttOf[i] = r.measuredRtt?.get(r.list.backends[i]!.id) ?? Number.NaN;
  if (order.pending) order.pendingOf[i] = order.pending.get(r.list.backends[i]!.id) ?? 0;
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

/** Where a candidate is in its order (`BoundOrder.place`). */
const EXCLUDED = 0;
const FRONT = 1;
const REST = 2;

/** Sorts `positions` by bound in an order's full order (bound, then warm, then id, then position). */
function sortByBound(list: ModelCandidates, order: BoundOrder, positions: number[]): void {
  const { bound, warm } = order;
  const id = (i: number) => list.backends[i]!.id;
  // Most pairs differ in bound: compared as numbers first, the full order only for ties.
  positions.sort((a, b) => bound[a]! - bound[b]! || (a === b ? 0 : before(bound[a]!, warm[a] === 1, id(a), a, bound[b]!, warm[b] === 1, id(b), b) ? -1 : 1));
}

/**
 * Moves the rest's candidates with the `count` lowest bounds (and any tied
 * with the last of them) to the end of the front, sorted, and raises the cut
 * to the lowest bound left in the rest (Infinity when none is). Every bound
 * moved is at or above the old cut, so the front stays sorted.
 */
function takeFromRest(list: ModelCandidates, order: BoundOrder, count: number): void {
  const { bound, place } = order;
  const rest: number[] = [];
  for (let i = 0; i < place.length; i++) if (place[i] === REST) rest.push(i);
  let taken = rest;
  let cut = Number.POSITIVE_INFINITY;
  if (rest.length > count) {
    const limit = kthSmallest(rest.map((i) => bound[i]!), count);
    taken = [];
    for (const i of rest) {
      const ms = bound[i]!;
      if (ms <= limit) taken.push(i);
      else if (ms < cut) cut = ms;
    }
  }
  sortByBound(list, order, taken);
  for (const i of taken) {
    place[i] = FRONT;
    order.at[order.length] = i;
    order.ms[order.length++] = bound[i]!;
  }
  order.restCount -= taken.length;
  order.cut = cut;
}

/** The `k`-th smallest (1-based) of `values`, which it reorders: Hoare's selection, O(n) on average. */
function kthSmallest(values: number[], k: number): number {
  let lo = 0;
  let hi = values.length - 1;
  const want = k - 1;
  while (lo < hi) {
    const pivot = values[(lo + hi) >>> 1]!;
    let i = lo;
    let j = hi;
    while (i <= j) {
      while (values[i]! < pivot) i++;
      while (values[j]! > pivot) j--;
      if (i <= j) {
        const t = values[i]!;
        values[i++] = values[j]!;
        values[j--] = t;
      }
    }
    if (want <= j) hi = j;
    else if (want >= i) lo = i;
    else break;
  }
  return values[want]!;
}

/**
 * Every candidate's bound, the lowest `orderPrefix` sorted: what a request
 * shape starts from, and what it falls back to when the books' logs no
 * longer reach back. What the books hold is read from their side (the
 * model's measured backends, the PoP's measured RTTs: the few this isolate
 * has seen), not looked up per candidate.
 */
function buildOrder(r: RankContext): BoundOrder {
  const { list, stats } = r;
  const n = list.backends.length;
  const until = r.now + BOUND_HORIZON_MS;
  const order: BoundOrder = {
    at: new Int32Array(n),
    ms: new Float64Array(n),
    length: 0,
    cut: Number.POSITIVE_INFINITY,
    restCount: 0,
    place: new Uint8Array(n),
    bound: new Float64Array(n),
    warm: new Uint8Array(n),
    latencyOf: new Array<LatencyStats | undefined>(n).fill(undefined),
    rttOf: new Float64Array(n),
    pendingOf: new Uint32Array(n),
    since: r.now,
    until,
    latency: stats.latency,
    latencySeq: stats.latency?.changes.seq ?? 0,
    rtt: stats.rtt,
    rttSeq: stats.rtt?.changes.seq ?? 0,
    pending: stats.pending?.changes ? stats.pending : undefined,
    pendingSeq: stats.pending?.changes?.seq ?? 0,
  };
  const { bound, warm, place } = order;
  order.rttOf.fill(Number.NaN);
  for (const [id, measured] of r.measuredService ?? []) {
    const i = list.position.get(id);
    if (i !== undefined) order.latencyOf[i] = measured;
  }
  for (const [id, rtt] of r.measuredRtt ?? []) {
    const i = list.position.get(id);
    if (i !== undefined) order.rttOf[i] = rtt;
  }
  for (const [id, calls] of order.pending ?? []) {
    const i = list.position.get(id);
    if (i !== undefined) order.pendingOf[i] = calls;
  }
  for (let i = 0; i < n; i++) {
    warm[i] = r.version === undefined ? list.facts.warm[i]! : pickEntry(list.entries[i]!, r.version)?.warm ? 1 : 0;
    bound[i] = boundAt(r, order, i, until);
    if (!Number.isNaN(bound[i]!)) {
      place[i] = REST;
      order.restCount++;
    }
  }
  takeFromRest(list, order, r.orderPrefix);
  return order;
}

/**
 * Sorts more of `order`'s rest into its front (twice as many as it holds, at
 * least `orderPrefix`): for a walk that reached the cut with room left in its
 * top k. False when the rest is empty.
 */
export function extendOrder(r: RankContext, order: BoundOrder): boolean {
  if (order.restCount === 0) return false;
  takeFromRest(r.list, order, Math.max(r.orderPrefix, 2 * order.length));
  return true;
}

/** Takes front entry `from` out, closing the gap. */
function removeFront(order: BoundOrder, from: number): void {
  order.at.copyWithin(from, from + 1, order.length);
  order.ms.copyWithin(from, from + 1, order.length);
  order.length--;
}

/** Puts candidate `i` (bound `ms`, under the cut) into the front, in order. */
function insertFront(list: ModelCandidates, order: BoundOrder, ms: number, i: number): void {
  const to = placeOf(list, order, ms, i);
  order.at.copyWithin(to + 1, to, order.length);
  order.ms.copyWithin(to + 1, to, order.length);
  order.at[to] = i;
  order.ms[to] = ms;
  order.length++;
}

/** Moves candidate `i` to where its bound now puts it; false when the order is not as expected (rebuild it). */
function rebound(r: RankContext, order: BoundOrder, i: number): boolean {
  const where = order.place[i]!;
  if (where === EXCLUDED) return true; // excluded by a filter no measurement changes
  const old = order.bound[i]!;
  remeasure(r, order, i);
  const next = boundAt(r, order, i, order.until);
  if (next === old) return true;
  const { list } = r;
  order.bound[i] = next;
  if (where === FRONT) {
    const from = placeOf(list, order, old, i);
    if (order.at[from] !== i) return false;
    if (next < order.cut) {
      // Within the front: shift the entries between its old and new places by one.
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
      return true;
    }
    removeFront(order, from);
    order.place[i] = REST;
    order.restCount++;
  } else if (next < order.cut) {
    order.place[i] = FRONT;
    order.restCount--;
    insertFront(list, order, next, i);
  }
  return true;
}

/**
 * The model's bound order for this request shape and this isolate's books,
 * brought up to date: the candidates measured since it was last read move to
 * their new bounds. Cached per (origin, version, terms); rebuilt when the
 * books are other ones, their logs no longer reach back to its last read, or
 * `now` is outside the times its bounds hold for.
 */
export function boundOrder(r: RankContext, model: string, key: string): BoundOrder {
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
