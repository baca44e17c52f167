/**
 * Great-circle distance and the constants of light in fibre: the geometry the
 * edge's routing (routing/rtt.ts) and demand reports (directory/demand.ts)
 * are built on. Pure functions.
 */

import type { LatLon } from '../../shared/regions.ts';

export type { LatLon };

const EARTH_RADIUS_KM = 6371.0088;
/** Light in fibre covers about 200 km per ms one way. */
export const FIBRE_KM_PER_MS = 200;
/** Median internet path inflation over the great circle (docs/design.md, "Latency-model reference facts"). */
export const DEFAULT_PATH_INFLATION = 2.0;

const rad = (deg: number) => (deg * Math.PI) / 180;

/** Haversine great-circle distance in km. */
export function greatCircleKm(a: LatLon, b: LatLon): number {
  const dLat = rad(b.lat - a.lat);
  const dLon = rad(b.lon - a.lon);
  const h = Math.sin(dLat / 2) ** 2 + Math.cos(rad(a.lat)) * Math.cos(rad(b.lat)) * Math.sin(dLon / 2) ** 2;
  return 2 * EARTH_RADIUS_KM * Math.asin(Math.min(1, Math.sqrt(h)));
}
