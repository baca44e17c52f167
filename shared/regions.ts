/**
 * The mesh's regions: where GPU backends are grouped, one RegionDirectory
 * Durable Object each. Coordinates are the matching cloud regions'
 * (docs/design.md, "Latency-model reference facts"); the id is what backends announce and what
 * `x-mesh-region` pins.
 */

/** A point on Earth, degrees. */
export interface LatLon {
  lat: number;
  lon: number;
}

export interface Region extends LatLon {
  id: string;
  name: string;
  /** Durable Object location hint nearest to the region. */
  locationHint: 'wnam' | 'enam' | 'sam' | 'weur' | 'eeur' | 'apac' | 'oc' | 'afr' | 'me';
}

export const REGIONS: readonly Region[] = [
  { id: 'us-east', name: 'Ashburn', lat: 39.04, lon: -77.49, locationHint: 'enam' },
  { id: 'us-west', name: 'Oregon', lat: 45.84, lon: -119.7, locationHint: 'wnam' },
  { id: 'sa-east', name: 'Sao Paulo', lat: -23.55, lon: -46.63, locationHint: 'sam' },
  { id: 'eu-west', name: 'Frankfurt', lat: 50.11, lon: 8.68, locationHint: 'weur' },
  { id: 'af-south', name: 'Cape Town', lat: -33.92, lon: 18.42, locationHint: 'afr' },
  { id: 'ap-south', name: 'Mumbai', lat: 19.08, lon: 72.88, locationHint: 'apac' },
  { id: 'ap-southeast', name: 'Singapore', lat: 1.35, lon: 103.82, locationHint: 'apac' },
  { id: 'ap-southeast-3', name: 'Jakarta', lat: -6.21, lon: 106.85, locationHint: 'apac' },
  { id: 'ap-northeast', name: 'Tokyo', lat: 35.68, lon: 139.69, locationHint: 'apac' },
];

const BY_ID = new Map(REGIONS.map((r) => [r.id, r]));

export function regionById(id: string): Region | undefined {
  return BY_ID.get(id);
}

export function isRegionId(id: unknown): id is string {
  return typeof id === 'string' && BY_ID.has(id);
}
