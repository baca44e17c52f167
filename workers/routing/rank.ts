/**
 * Ranking the backends that may serve a request, from a snapshot's routing
 * index (snapshot-index.ts): `rankIndexed`, the per-request path, keeps the
 * best k by insertion, scoring candidates in bound order (bound-order.ts)
 * until no later one can enter; `rankByScore` ranks a list once. Callers
 * take the first few candidates (dispatch, hedging and metadata at most
 * MAX_ATTEMPTS / 5; P2C's pool 5); `k = Infinity` gives the full order, for
 * the callers that need it (verification's other-provider search).
 *
 * Same filters, same scores and the same order as score.ts's definitions:
 * the terms are computed with the same arithmetic, in the same order, as
 * `estimate`; ties go to warm, then to the lower id, then to snapshot order.
 * Pure apart from the index's lazily filled caches, which are functions of it.
 */

import { DEFAULT_PATH_INFLATION } from '../geo/distance.ts';
import type { BackendEntry } from '../directory/backend.ts';
import type { LatencyStats } from './latency.ts';
import { backendLocation, physicalFloorMs, type RttOrigin } from './rtt.ts';
import { allowedRegions, loadSince, SCORE_DEFAULTS, type RoutingStats, type ScoreOptions, type ScoreRequest, type Scored } from './score.ts';
import { before, boundOrder, extendOrder, type RankContext } from './bound-order.ts';
import { buildRoutingIndex, geometryFor, kmAt, originKey, pickEntry, standingFor, type RoutingIndex } from './snapshot-index.ts';

/**
 * Candidate `i` scored as score.ts's `estimate` scores it, or undefined when a
 * hard filter excludes it or `admit` (given its expected time) turns it away:
 * no object is built for a candidate that would not be kept. `latency`: the
 * candidate's stats for the model when the caller already has them, `false`
 * when it is known to have none, null to look them up; `rtt`: its measured
 * RTT from the origin when the caller has it (NaN: none), null to look it up.
 */
function scoreAt(
  r: RankContext,
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
  const stats = latency === null ? r.measuredService?.get(backend.id) : latency || undefined;
  const measured = stats?.ewma.value(now, model.p50Ms);
  const serviceMs = measured === undefined ? model.p50Ms : Math.max(0, measured);
  const { facts } = list;
  const slots = facts.slots[i]!;
  const reported = loadSince(facts.load[i]!, slots, now - facts.lastSeen[i]!, Math.max(facts.drainMs[i]!, serviceMs));
  const load = reported + (r.stats.pending?.size ? (r.stats.pending.get(backend.id) ?? 0) : 0);
  const queueMs = ((load + 1) / slots) * serviceMs;
  const coldMs = model.warm ? 0 : r.coldMs;
  const expectedMs = (rttMs + queueMs + serviceMs + coldMs) * penalty;
  // Ejection is a filter like those above; asked last, as it is the one that costs a lookup.
  if ((admit && !admit(expectedMs, model.warm, backend.id, i)) || r.stats.ejected?.isEjected(backend.id, now)) return undefined;
  return { backend, model, warm: model.warm, distanceKm, rttMs, queueMs, serviceMs, coldMs, expectedMs, crowdMs: (serviceMs / slots) * penalty };
}

/** The shapes an origin was ranked for, each with its order key. */
interface Shape {
  version: string | undefined;
  inflation: number;
  coldMs: number;
  allowCold: boolean;
  key: string;
}

const shapeKeys = new WeakMap<RttOrigin, Shape[]>();

/**
 * The key of a request shape's bound order, the same string each time the
 * shape comes again from the same origin object (a PoP's is one object), so
 * that the orders' map finds it without building and hashing a new string per
 * request. An origin keeps its last 8 shapes.
 */
function shapeKey(from: RttOrigin, origin: string, version: string | undefined, inflation: number, coldMs: number, allowCold: boolean): string {
  let known = shapeKeys.get(from);
  if (!known) shapeKeys.set(from, (known = []));
  for (const s of known) if (s.version === version && s.inflation === inflation && s.coldMs === coldMs && s.allowCold === allowCold) return s.key;
  const key = `${origin}\u0000${version ?? ''}\u0000${inflation}\u0000${coldMs}\u0000${allowCold}`;
  if (known.length >= 8) known.shift();
  known.push({ version, inflation, coldMs, allowCold, key });
  return key;
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
  const r: RankContext = {
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
    measuredService: stats.latency?.forModel(request.model),
    km: geometryFor(index, origin),
    locations: index.locations,
    factor: standingFor(index, options.quarantined, options.penalties),
    maxOrders: index.maxOrders,
    orderPrefix: index.orderPrefix,
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
  // Past the order's sorted front, the rest's bounds are at or above its cut: sort more of it only if the cut can enter.
  const order = boundOrder(r, request.model, shapeKey(from, origin, request.version, r.inflation, r.coldMs, r.allowCold));
  for (let j = 0; j < order.length || (enters(order.cut, true, '', -1) && extendOrder(r, order)); j++) {
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
