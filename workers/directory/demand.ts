/**
 * Demand per region and model, counted in each isolate and sent to the
 * RegionDirectory objects in the background (`ctx.waitUntil`) at most every
 * DEMAND_FLUSH_MS: a request counts for the region nearest its PoP, which is
 * where a warm copy of its model would serve it best. No request waits on it.
 */

import type { LatLon } from '../geo/distance.ts';
import { nearestRegion } from '../geo/regions.ts';
import { regionById } from '../../shared/regions.ts';
import type { Env } from '../env.ts';

const DEMAND_FLUSH_MS = 2_000;
const counts = new Map<string, Map<string, number>>();
const nearestByPop = new Map<string, string>();
let lastFlush = 0;

/** Counts one request for `model` entering at `pop`. */
export function noteDemand(pop: LatLon & { code: string }, model: string): void {
  let region = nearestByPop.get(pop.code);
  if (region === undefined) {
    region = nearestRegion(pop).id;
    nearestByPop.set(pop.code, region);
  }
  let models = counts.get(region);
  if (!models) counts.set(region, (models = new Map()));
  models.set(model, (models.get(model) ?? 0) + 1);
}

/** Sends the counts to the directories in the background when the last flush is old enough. */
export function flushDemand(env: Env, ctx: { waitUntil(p: Promise<unknown>): void }, now = Date.now()): void {
  if (counts.size === 0 || now - lastFlush < DEMAND_FLUSH_MS) return;
  lastFlush = now;
  const batch = [...counts].map(([region, models]) => [region, Object.fromEntries(models)] as const);
  counts.clear();
  ctx.waitUntil(
    Promise.allSettled(
      batch.map(([region, models]) =>
        env.REGION_DIRECTORY.getByName(region, { locationHint: regionById(region)!.locationHint }).recordDemand(models),
      ),
    ),
  );
}
