/**
 * The centralized baselines: every user talks straight to a cloud region over
 * the internet (no PoP), to a fleet provisioned for the load it gets (its
 * slots sized for `provisionedUtilisation` of the region's share of the
 * arrivals), every model warm, failing a tenth as often as a site and never
 * crashing. `us-east`: one region for the world; `nearest`: each user's
 * nearest cloud region.
 */

import { newJob, SimBackend } from '../backend.ts';
import type { SimConfig } from '../config.ts';
import type { World } from '../world.ts';
import type { Policy, SimContext } from './policy.ts';

/** Mean service time per request across the model mix, ms (lognormal means, stalls included). */
export function meanServiceMs(config: SimConfig): number {
  const stall = 1 + config.faults.stallShare * (config.faults.stallFactor - 1);
  return config.models.reduce((sum, m) => sum + m.share * m.serviceMs * Math.exp((m.serviceSigma * m.serviceSigma) / 2), 0) * stall;
}

/** Each cloud region's share of the users (by population), for `nearest`. */
function regionShares(world: World): number[] {
  const shares = world.cloudRegions.map(() => 0);
  let total = 0;
  world.cities.forEach((c, i) => {
    shares[world.cityCloud[i]!]! += c.population;
    total += c.population;
  });
  return shares.map((s) => s / total);
}

export function cloudPolicy(mode: 'us-east' | 'nearest'): Policy {
  let pools: SimBackend[] = [];
  let fixedRegion = -1;

  return {
    name: mode === 'us-east' ? 'cloud-us-east' : 'cloud-nearest',
    label: mode === 'us-east' ? 'cloud, one region (us-east)' : 'cloud, nearest region',
    placement: false,
    setup(ctx: SimContext) {
      const { config, world } = ctx;
      const shares = mode === 'us-east' ? world.cloudRegions.map((r) => (r.id === 'us-east' ? 1 : 0)) : regionShares(world);
      fixedRegion = mode === 'us-east' ? world.cloudRegions.findIndex((r) => r.id === 'us-east') : -1;
      if (mode === 'us-east' && fixedRegion < 0) throw new Error('sim: the cloud-us-east policy needs us-east among config.cloud.regions');
      const perSlot = 1000 / meanServiceMs(config);
      pools = world.cloudRegions.map(
        (r, i) =>
          new SimBackend(
            {
              index: i,
              id: `pool-${r.id}`,
              provider: `cloud-${r.id}`,
              kind: 'cloud',
              region: r.id,
              lat: r.lat,
              lon: r.lon,
              slots: Math.max(1, Math.ceil((config.ratePerSecond * shares[i]!) / perSlot / config.cloud.provisionedUtilisation)),
              speed: 1,
              warm: config.models.map(() => true),
            },
            config,
            ctx.events,
            ctx.random.fork(100 + i),
          ),
      );
    },
    busyMs() {
      return pools.reduce((sum, p) => sum + p.busyMs, 0);
    },
    serve(request, ctx) {
      const region = fixedRegion >= 0 ? fixedRegion : ctx.world.cityCloud[request.city]!;
      const pool = pools[region]!;
      const rtt = request.lastMileMs + ctx.network.userToCloudMs(request.city, region) + ctx.network.jitter(ctx.random);
      const job = newJob(request.model, (outcome) =>
        ctx.events.after(rtt / 2, () => {
          const latencyMs = ctx.events.now - request.t0;
          if (outcome.kind === 'ok') ctx.served(request, { latencyMs, cold: outcome.cold, hedged: false, retried: false });
          else ctx.failed(request, latencyMs);
        }),
      );
      ctx.events.after(rtt / 2, () => pool.arrive(job));
    },
  };
}

