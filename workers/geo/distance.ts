/**
 * Great-circle distance and the round trip it implies over fibre: pure
 * functions the edge's routing scores with (and a world simulator can call).
 */

import type { LatLon } from '../../shared/regions.ts';

export type { LatLon };

const EARTH_RADIUS_KM = 6371.0088;
/** Light in fibre covers about 200 km per ms one way. */
export const FIBRE_KM_PER_MS = 200;
/** Median internet path inflation over the great circle (shared/data/README.md). */
export const DEFAULT_PATH_INFLATION = 2.0;

const rad = (deg: number) => (deg * Math.PI) / 180;

/** Haversine great-circle distance in km. */
export function greatCircleKm(a: LatLon, b: LatLon): number {
  const dLat = rad(b.lat - a.lat);
  const dLon = rad(b.lon - a.lon);
  const h = Math.sin(dLat / 2) ** 2 + Math.cos(rad(a.lat)) * Math.cos(rad(b.lat)) * Math.sin(dLon / 2) ** 2;
  return 2 * EARTH_RADIUS_KM * Math.asin(Math.min(1, Math.sqrt(h)));
}

/** Estimated round-trip time in ms over fibre between two points, with path inflation. */
export function estimateRttMs(a: LatLon, b: LatLon, inflation = DEFAULT_PATH_INFLATION): number {
  return ((2 * greatCircleKm(a, b)) / FIBRE_KM_PER_MS) * inflation;
}
