/**
 * The network model: round-trip times over great circles at light-in-fibre
 * speed (about 1 ms of RTT per 100 km) times a path inflation fixed per path,
 * plus a fixed cost per leg and a little jitter per request. Users reach
 * their PoP (or a cloud region, for the centralized baselines) over the
 * internet (two-piece lognormal inflation, median ~2.0, p10 ~1.5, p90 ~3.4)
 * after their last mile; PoPs reach backends over a backbone (1.25-1.6x).
 */

import { greatCircleKm, type LatLon } from '../workers/geo/distance.ts';
import type { AccessType, SimConfig } from './config.ts';
import { pathUnit, type World } from './world.ts';
import { Random, skewedLognormalQuantile, WeightedPicker } from './random.ts';

/** km of great circle per ms of round trip in fibre (200 km/ms one way). */
export const KM_PER_RTT_MS = 100;

const USER_PATH = 1;
const BACKBONE_PATH = 2;
const DIRECT_PATH = 3;

export class Network {
  private readonly seed: number;
  private readonly net: SimConfig['network'];
  private readonly world: World;
  private readonly access: WeightedPicker;
  /** RTT from each PoP to each backend before jitter, ms (pops x backends). */
  private readonly backbone: Float64Array;

  constructor(config: SimConfig, world: World) {
    this.seed = config.seed;
    this.net = config.network;
    this.world = world;
    this.access = new WeightedPicker(config.network.access.map((a) => a.share));
    const nb = world.backends.length;
    this.backbone = new Float64Array(world.pops.length * nb);
    for (const pop of world.pops) {
      for (const b of world.backends) {
        const f = this.net.backbone.min + (this.net.backbone.max - this.net.backbone.min) * pathUnit(this.seed, BACKBONE_PATH, pop.index, b.index);
        this.backbone[pop.index * nb + b.index] = (greatCircleKm(pop, b) / KM_PER_RTT_MS) * f + this.net.hopMs;
      }
    }
  }

  /** Internet path inflation of the path from city `city` to endpoint `to` (of `kind`). */
  inflation(kind: number, city: number, to: number): number {
    const { median, p10, p90 } = this.net.inflation;
    return Math.max(1, skewedLognormalQuantile(pathUnit(this.seed, kind, city, to), median, p10, p90));
  }

  /** A user's last mile, drawn per request. */
  lastMile(random: Random): AccessType {
    return this.net.access[this.access.pick(random)]!;
  }

  /** RTT from a city to its PoP over the internet, ms, before jitter and last mile. */
  userToPopMs(city: number): number {
    const pop = this.world.cityPop[city]!;
    return (this.world.cityPopKm[city]! / KM_PER_RTT_MS) * this.inflation(USER_PATH, city, pop) + this.net.hopMs;
  }

  /** RTT from a city straight to a cloud region over the internet, ms, before jitter and last mile. */
  userToCloudMs(city: number, region: number): number {
    const km = greatCircleKm(this.world.cities[city]!, this.world.cloudRegions[region]!);
    return (km / KM_PER_RTT_MS) * this.inflation(DIRECT_PATH, city, region) + this.net.hopMs;
  }

  /** RTT from a PoP to a backend over the backbone, ms, before jitter. */
  popToBackendMs(pop: number, backend: number): number {
    return this.backbone[pop * this.world.backends.length + backend]!;
  }

  /** The jitter one request adds to one round trip, ms. */
  jitter(random: Random): number {
    return random.exponential(this.net.jitterMs);
  }

  /** Great-circle km between two points (for the floor and the bands). */
  static km(a: LatLon, b: LatLon): number {
    return greatCircleKm(a, b);
  }
}
