/**
 * Demand per region and model, counted in each isolate and sent to the
 * RegionDirectory objects in the background (`ctx.waitUntil`) at most every
 * DEMAND_FLUSH_MS: a request counts for the region nearest its PoP, which is
 * where a warm copy of its model would serve it best. No request waits on it.
 * Counts held back by a recent flush go with the isolate's next request,
 * however late, with the time of the last request they count: the directory
 * dates the demand by it, so a quiet isolate's old counts never pass for
 * demand of the time they arrive.
 */

import type { LatLon } from '../geo/distance.ts';
import { nearestRegion } from '../geo/regions.ts';
import { regionById } from '../../shared/regions.ts';
import type { Env } from '../env.ts';

const DEMAND_FLUSH_MS = 2_000;
/** region -> model -> its count and the time of its last counted request (ms). */
const counts = new Map<string, Map<string, { n: number; lastAt: number }>>();
const nearestByPop = new Map<string, string>();
let lastFlush = 0;

/** Counts one request for `model` entering at `pop`, at `now`. */
export function noteDemand(pop: LatLon & { code: string }, model: string, now = Date.now()): void {
  let region = nearestByPop.get(pop.code);
  if (region === undefined) {
    region = nearestRegion(pop).id;
    nearestByPop.set(pop.code, region);
  }
  let models = counts.get(region);
  if (!models) counts.set(region, (models = new Map()));
  const c = models.get(model);
  if (c) {
    c.n++;
    c.lastAt = Math.max(c.lastAt, now);
  } else models.set(model, { n: 1, lastAt: now });
}

/** Sends the counts, with their last request's time, to the directories in the background when the last flush is old enough. */
export function flushDemand(env: Env, ctx: { waitUntil(p: Promise<unknown>): void }, now = Date.now()): void {
  if (counts.size === 0 || now - lastFlush < DEMAND_FLUSH_MS) return;
  lastFlush = now;
  const batch = [...counts].map(([region, models]) => {
    const n: Record<string, number> = {};
    const lastAt: Record<string, number> = {};
    for (const [model, c] of models) {
      n[model] = c.n;
      lastAt[model] = c.lastAt;
    }
    return [region, n, lastAt] as const;
  });
  counts.clear();
  ctx.waitUntil(
    Promise.allSettled(
      batch.map(([region, n, lastAt]) =>
        env.REGION_DIRECTORY.getByName(region, { locationHint: regionById(region)!.locationHint }).recordDemand(n, lastAt),
      ),
    ),
  );
}
