/**
 * Routing strategy, as pure functions over a snapshot: the edge's hot path and
 * the world simulator call the same code. This is the first strategy: the
 * nearest region (great circle from the PoP) with a ready backend that has the
 * model warm, least-loaded backend first within a region, then the next
 * region, and so on.
 */

import { greatCircleKm, type LatLon } from '../shared/geo.ts';
import { regionById } from '../shared/regions.ts';
import { servesWarm, type BackendEntry } from './directory/backend.ts';

export interface RouteRequest {
  model: string;
  /** A specific model version; any when absent. */
  version?: string;
  /** Where the request entered the mesh. */
  from: LatLon;
  /** When present, only backends in these regions may serve (pinning, data residency). */
  regions?: ReadonlySet<string>;
  /** Backends that failed recently: tried after all others. */
  isEjected?: (backendId: string) => boolean;
  random?: () => number;
}

export interface Candidate {
  backend: BackendEntry;
  /** Great-circle km from the PoP to the backend's region. */
  distanceKm: number;
}

function load(b: BackendEntry): number {
  return (b.capacity.inFlight + b.capacity.queued) / Math.max(1, b.capacity.slots);
}

/**
 * Orders the backends that can serve `req.model` now, best first. An empty
 * list means no ready, warm backend is allowed to serve it.
 */
export function rankCandidates(backends: readonly BackendEntry[], req: RouteRequest): Candidate[] {
  const random = req.random ?? Math.random;
  const scored: (Candidate & { ejected: boolean; load: number; tie: number })[] = [];
  for (const backend of backends) {
    if (!servesWarm(backend, req.model, req.version)) continue;
    if (req.regions && !req.regions.has(backend.region)) continue;
    const region = regionById(backend.region);
    const at = region ?? backend;
    scored.push({
      backend,
      distanceKm: greatCircleKm(req.from, at),
      ejected: req.isEjected?.(backend.id) ?? false,
      load: load(backend),
      tie: random(),
    });
  }
  scored.sort(
    (a, b) =>
      Number(a.ejected) - Number(b.ejected) ||
      a.distanceKm - b.distanceKm ||
      a.load - b.load ||
      a.tie - b.tie,
  );
  return scored.map(({ backend, distanceKm }) => ({ backend, distanceKm }));
}

/** True when any backend, warm or not, ready or not, announces `model` (at `version`, when given). */
export function isKnownModel(backends: readonly BackendEntry[], model: string, version?: string): boolean {
  return backends.some((b) => b.models.some((m) => m.name === model && (version === undefined || m.version === version)));
}
