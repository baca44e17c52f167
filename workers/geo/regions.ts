/**
 * The mesh's regions on the map: the region nearest a point (where demand
 * from a PoP counts), and whether a backend's claimed location is consistent
 * with the region it names (docs/api.md section 3.2). Pure functions.
 */

import { REGIONS, regionById, type Region } from '../../shared/regions.ts';
import { greatCircleKm, type LatLon } from './distance.ts';

/** A claimed location this close to its region always fits it, km. */
export const REGION_RADIUS_KM = 1500;
/** Otherwise the named region may be at most this many times farther than the nearest region. */
export const NEAREST_REGION_SLACK = 1.5;

/** The region nearest to a point (by great circle). */
export function nearestRegion(at: LatLon): Region {
  let best = REGIONS[0]!;
  let bestKm = greatCircleKm(at, best);
  for (const r of REGIONS) {
    const km = greatCircleKm(at, r);
    if (km < bestKm) {
      best = r;
      bestKm = km;
    }
  }
  return best;
}

/**
 * Whether a backend at `at` may announce `regionId`: within REGION_RADIUS_KM
 * of it, or no more than NEAREST_REGION_SLACK times as far as the nearest
 * region (so a backend between two regions may pick either, and one far from
 * every region joins one of the nearest). `undefined` when it fits; else what
 * a provider needs to fix it.
 */
export function regionMisfit(regionId: string, at: LatLon): { km: number; nearest: Region } | undefined {
  const region = regionById(regionId);
  if (!region) return undefined;
  const km = greatCircleKm(at, region);
  if (km <= REGION_RADIUS_KM) return undefined;
  const nearest = nearestRegion(at);
  return km <= NEAREST_REGION_SLACK * greatCircleKm(at, nearest) ? undefined : { km, nearest };
}
