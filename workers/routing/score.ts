/**
 * Scoring: the expected time to a complete answer from each backend that may
 * serve a request, and the filters that decide which may. Pure: the snapshot,
 * the isolate's measurements and `now` come in; nothing is read or written.
 * Ranking the candidates by it (best first: lower expected time, then warm,
 * then the lower id) is rank.ts's `rankByScore` / `rankIndexed`.
 *
 *   expected = rtt + queue wait + service + cold-start penalty
 *
 * - rtt: `estimateRttMs` (geometry, or measured RTTs from this PoP);
 * - service: the heartbeat's p50 for the model, or, once this isolate has
 *   measured the backend, the EWMA of its service times (what the backend
 *   says it spent, `server-timing: backend;dur`; a mean, not Finagle's peak:
 *   isolate.ts). Service and RTT are
 *   measured apart so that one is not mistaken for the other: a backend's
 *   service time is the same from every PoP, its RTT is not;
 * - queue wait: (load [the heartbeat's inFlight + queued, aged: `loadSince`]
 *   + pending [this isolate's own calls, which the seconds-old heartbeat has
 *   not seen] + 1 [this request]) / slots x service. The heartbeat's load is
 *   aged because a backend works its queue off while the heartbeat grows
 *   old: read as it was, a load reported a second ago kept every isolate off
 *   a backend that had long emptied, and sent them all to one that had
 *   reported none (docs/benchmarks.md, "The heartbeat's load, aged"). The
 *   request itself counts because others send meanwhile: one more request is
 *   a larger share of a small backend ("Queue wait counts the request"). A
 *   measured EWMA already holds the queueing its samples met, so load counts
 *   a little twice: the error is on the side of spreading;
 * - cold start: when the model is not warm there, max(its load time, maxExtraMs).
 *
 * Hard filters, never relaxed: model (and version when given) announced,
 * backend ready and unexpired, region allowed (pin and residency), not ejected,
 * its provider not quarantined (docs/api.md section 6.3),
 * and, when a pin or residency restricts the request, a location not refuted
 * (proof of location, docs/api.md section 3.2: a backend whose round trips
 * contradict its claimed place may not serve a request whose place matters).
 *
 * A provider with proven frauds not yet cleared has its backends' expected
 * time multiplied by its penalty factor (`ScoreOptions.penalties`): a lower
 * routing weight, not a ban.
 *
 * Cold backends: the penalty is never less than `maxExtraMs`, so a cold
 * backend ranks behind every warm one whose expected time is within
 * `maxExtraMs` of the cold one's own time without its load; with real load
 * times (seconds) cold backends rank last unless every warm one is swamped.
 */

import { greatCircleKm, type LatLon } from '../geo/distance.ts';
import type { HeartbeatModel } from '../../shared/heartbeat.ts';
import type { BackendEntry } from '../directory/backend.ts';
import type { ChangeLog } from './changes.ts';
import type { LatencyBook } from './latency.ts';
import { backendLocation, estimateRttMs, type RttOrigin, type RttTable } from './rtt.ts';

/** What is asked, and from where. */
export interface ScoreRequest {
  model: string;
  /** A specific version; any when absent. */
  version?: string;
  /** The PoP the request entered at; its `code` keys measured RTTs. */
  from: RttOrigin;
  /** `x-mesh-region`: only this region may serve. */
  pin?: string;
  /** The consumer key's data residency: only these regions may serve. */
  residency?: ReadonlySet<string>;
}

/** The isolate's own measurements; every part optional (absent: nothing measured). */
export interface RoutingStats {
  /** Measured RTTs per (PoP, backend). */
  rtt?: RttTable;
  /** Edge-measured time to answer per (backend, model). */
  latency?: LatencyBook;
  /** This isolate's calls in flight per backend id; with `changes` (scope ''), rankings follow them without re-reading them. */
  pending?: ReadonlyMap<string, number> & { readonly changes?: ChangeLog };
  /** Ejected backends (an `OutlierDetector`). */
  ejected?: { isEjected(backendId: string, now?: number): boolean };
  /** Measured load (cold-start) time per model name, ms. */
  coldStartMs?: ReadonlyMap<string, number>;
}

export interface ScoreOptions {
  /** Path inflation for geometric RTTs (default 2.0). */
  inflation?: number;
  /** Cold-start penalty when a model's load time was never measured, ms (default 5000). */
  defaultColdStartMs?: number;
  /** Extra expected latency a warm backend may cost before a cold one is preferred, ms (default 150). */
  maxExtraMs?: number;
  /** Whether backends with the model cold are candidates at all (default true). */
  allowCold?: boolean;
  /** Where a backend is, for the geometric RTT (default: its region's coordinates). */
  locate?: (backend: BackendEntry) => LatLon;
  /** Providers that get no traffic (quarantined). */
  quarantined?: ReadonlySet<string>;
  /** Provider id -> factor (> 1) on its backends' expected time (proven frauds). */
  penalties?: ReadonlyMap<string, number>;
}

/** One candidate with its expected time and the terms that make it up (ms). */
export interface Scored {
  backend: BackendEntry;
  /** The heartbeat's entry for the model this backend would serve. */
  model: HeartbeatModel;
  warm: boolean;
  /** Great-circle km from the PoP to the backend's location. */
  distanceKm: number;
  rttMs: number;
  queueMs: number;
  serviceMs: number;
  coldMs: number;
  /** (rttMs + queueMs + serviceMs + coldMs) x the provider's penalty factor: the ranking key. */
  expectedMs: number;
  /** What one more request ahead of this one would add to `expectedMs`: serviceMs / slots x the penalty factor (the queue term's + 1; p2c.ts). */
  crowdMs: number;
}

/** Everything `estimate` reads besides the backend. */
export interface ScoreContext {
  from: RttOrigin;
  stats: RoutingStats;
  now: number;
  options?: ScoreOptions;
}

export const SCORE_DEFAULTS = { defaultColdStartMs: 5_000, maxExtraMs: 150 } as const;

/**
 * Regions a request may be served in: the pin within the residency; undefined
 * means any region, an empty set means none (a pin outside the residency).
 */
export function allowedRegions(pin: string | undefined, residency: ReadonlySet<string> | undefined): ReadonlySet<string> | undefined {
  if (pin === undefined) return residency;
  if (residency && !residency.has(pin)) return new Set();
  return new Set([pin]);
}

/**
 * A heartbeat's load (in flight + queued) as it may stand `ageMs` after the
 * heartbeat: less what the backend's `slots` can have served meanwhile, one
 * request per `drainMs` each, never below 0. Callers pass `drainMsOf`, or
 * the service time this isolate measured when that is longer: the
 * heartbeat's p50s set the pace only until the mesh has measured its own.
 * What others sent since is not known here; this isolate's own sends are
 * its `pending`.
 */
export function loadSince(reported: number, slots: number, ageMs: number, drainMs: number): number {
  if (!(ageMs > 0)) return reported;
  return Math.max(0, reported - (ageMs * Math.max(1, slots)) / Math.max(1, drainMs));
}

/**
 * How long one of the backend's slots takes per queued request, ms, for
 * `loadSince`: the slowest p50 among its warm models (its queue may hold any
 * of them; the slowest errs on the side of a load that lasts), or among all
 * its models when none is warm; at least 1.
 */
export function drainMsOf(backend: Pick<BackendEntry, 'models'>): number {
  let warm = 0;
  let any = 0;
  for (const m of backend.models) {
    if (m.p50Ms > any) any = m.p50Ms;
    if (m.warm && m.p50Ms > warm) warm = m.p50Ms;
  }
  return Math.max(1, warm || any);
}

/** The backend's entry for `model` (at `version`): warm first, then the fastest; undefined when it has none. */
export function modelEntry(backend: BackendEntry, model: string, version?: string): HeartbeatModel | undefined {
  let best: HeartbeatModel | undefined;
  for (const m of backend.models) {
    if (m.name !== model || (version !== undefined && m.version !== version)) continue;
    if (!best || (m.warm && !best.warm) || (m.warm === best.warm && m.p50Ms < best.p50Ms)) best = m;
  }
  return best;
}

/** The expected time to a complete answer from `backend` serving `model`, term by term. */
export function estimate(backend: BackendEntry, model: HeartbeatModel, ctx: ScoreContext): Scored {
  const o = ctx.options ?? {};
  const locate = o.locate ?? backendLocation;
  const rttMs = estimateRttMs(ctx.from, backend, ctx.stats.rtt, { inflation: o.inflation, locate });
  const measured = ctx.stats.latency?.get(backend.id, model.name)?.ewma.value(ctx.now, model.p50Ms);
  const serviceMs = measured === undefined ? model.p50Ms : Math.max(0, measured);
  const { slots, inFlight, queued } = backend.capacity;
  const load = loadSince(inFlight + queued, slots, ctx.now - backend.lastSeen, Math.max(drainMsOf(backend), serviceMs)) + (ctx.stats.pending?.get(backend.id) ?? 0);
  const queueMs = ((load + 1) / Math.max(1, slots)) * serviceMs;
  const factor = o.penalties?.get(backend.provider) ?? 1;
  const coldMs = model.warm
    ? 0
    : Math.max(
        ctx.stats.coldStartMs?.get(model.name) ?? o.defaultColdStartMs ?? SCORE_DEFAULTS.defaultColdStartMs,
        o.maxExtraMs ?? SCORE_DEFAULTS.maxExtraMs,
      );
  return {
    backend,
    model,
    warm: model.warm,
    distanceKm: greatCircleKm(ctx.from, locate(backend)),
    rttMs,
    queueMs,
    serviceMs,
    coldMs,
    expectedMs: (rttMs + queueMs + serviceMs + coldMs) * factor,
    crowdMs: (serviceMs / Math.max(1, slots)) * factor,
  };
}
