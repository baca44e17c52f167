/**
 * The scan that `rankByScore` was before the per-snapshot routing index
 * (workers/routing/snapshot-index.ts): every backend filtered and scored with
 * `estimate`, then a full sort. Kept as the reference the index is checked
 * against (snapshot-index.test.ts) and measured against (bench/routing.ts);
 * production never calls it.
 */

import type { BackendEntry } from '../../../workers/directory/backend.ts';
import {
  allowedRegions,
  estimate,
  modelEntry,
  type RoutingStats,
  type ScoreContext,
  type ScoreOptions,
  type ScoreRequest,
  type Scored,
} from '../../../workers/routing/score.ts';

/** The backends that may serve `request`, best first; ties to warm, then to the lower id. */
export function rankByScoreReference(
  backends: readonly BackendEntry[],
  request: ScoreRequest,
  stats: RoutingStats,
  now: number,
  options: ScoreOptions = {},
): Scored[] {
  const allowed = allowedRegions(request.pin, request.residency);
  if (allowed && allowed.size === 0) return [];
  const allowCold = options.allowCold ?? true;
  const ctx: ScoreContext = { from: request.from, stats, now, options };
  const out: Scored[] = [];
  for (const backend of backends) {
    if (!backend.ready || backend.expiresAt <= now) continue;
    if (allowed && (!allowed.has(backend.region) || backend.location?.state === 'refuted')) continue;
    if (options.quarantined?.has(backend.provider)) continue;
    const model = modelEntry(backend, request.model, request.version);
    if (!model || (!model.warm && !allowCold)) continue;
    if (stats.ejected?.isEjected(backend.id, now)) continue;
    out.push(estimate(backend, model, ctx));
  }
  out.sort(
    (a, b) =>
      a.expectedMs - b.expectedMs ||
      Number(b.warm) - Number(a.warm) ||
      (a.backend.id < b.backend.id ? -1 : a.backend.id > b.backend.id ? 1 : 0),
  );
  return out;
}
