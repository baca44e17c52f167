/**
 * One simulation run: a policy serving the world's arrivals on the virtual
 * clock. The arrivals (a Poisson process; city by population, model by share,
 * last mile by access type) and the backends' crashes come from their own
 * random streams, so every policy meets the same requests and the same
 * faults. Records per request what the user saw, and its physical floor.
 */

import { SimBackend, type Execution } from './backend.ts';
import type { SimConfig } from './config.ts';
import { SimDirectory } from './directory.ts';
import { EventQueue } from './events.ts';
import type { Network } from './network.ts';
import type { Policy, SimContext, SimRequest } from './policies/policy.ts';
import { Random, WeightedPicker } from './random.ts';
import type { World } from './world.ts';

export const FAILED = 1;
export const COLD = 2;
export const HEDGED = 4;
export const RETRIED = 8;

export interface RunRecord {
  policy: string;
  label: string;
  requests: number;
  /** Per request: latency as the user saw it, ms (for failed ones, until the user learned it). */
  latency: Float32Array;
  /** Per request: FAILED | COLD | HEDGED | RETRIED. */
  flags: Uint8Array;
  city: Int32Array;
  pop: Int16Array;
  model: Uint8Array;
  /** Per request: its physical floor, ms (see `popModelFloors`): the lesser of the two below. */
  floor: Float32Array;
  /** Per request: its floor through its PoP to the best-placed backend with the model warm, ms. */
  floorViaPop: Float32Array;
  /** Per request: its floor straight to the nearest cloud region, ms. */
  floorDirect: Float32Array;
  /** Slot time spent computing, ms, on cloud fleets and on sites (wasted work included). */
  busyMs: { cloud: number; site: number };
  /** Per kind of backend, per model: what the simulated backends ran (a policy's own fleet, outside them, is not counted). */
  executed: { cloud: Execution[]; site: Execution[] };
  /** Per kind of backend, per model: sums over the first attempts that answered, for policies that score (`Served.estimate`). */
  estimates: { cloud: EstimateSums[]; site: EstimateSums[] };
  /** Simulated time from the first arrival to the last answer, ms. */
  simulatedMs: number;
  /** Simulated time from the first arrival to the last, ms. */
  arrivalsMs: number;
  /** Slot time of the executions the simulated backends started while requests arrived, ms (a load's busy share: over `arrivalsMs`, not the drain after). */
  busyArrivingMs: { cloud: number; site: number };
  /** Wall-clock time of the run, ms. */
  wallMs: number;
  /** Warm placement's loads and unloads. */
  placement: { loads: number; unloads: number };
}

/** Sums of what the routing expected and what the calls took, ms, over `n` calls. */
export interface EstimateSums {
  n: number;
  expectedMs: number;
  tookMs: number;
}

export interface Progress {
  (done: number, total: number): void;
}

const ARRIVALS = 10;
const FAULTS = 20;
const POLICY = 30;

/**
 * Per (PoP, model): the least of backbone RTT + median service over the
 * backends that start with the model warm, ms. A request's floor is its last mile plus the smaller of (its
 * path to its PoP + this) and (its path straight to the nearest cloud region
 * + the model's median service): the answer from the best-placed warm, idle
 * backend, with no jitter and no queue.
 */
export function popModelFloors(config: SimConfig, world: World, network: Network): Float64Array {
  const m = config.models.length;
  const floors = new Float64Array(world.pops.length * m).fill(Infinity);
  for (const pop of world.pops) {
    for (const b of world.backends) {
      const rtt = network.popToBackendMs(pop.index, b.index);
      config.models.forEach((model, j) => {
        if (!b.warm[j]) return;
        const v = rtt + model.serviceMs * b.speed;
        if (v < floors[pop.index * m + j]!) floors[pop.index * m + j] = v;
      });
    }
  }
  return floors;
}

export function runPolicy(config: SimConfig, world: World, network: Network, policy: Policy, progress?: Progress, floors = popModelFloors(config, world, network)): RunRecord {
  const started = performance.now();
  const n = config.requests;
  const events = new EventQueue();
  const root = new Random(config.seed);
  const backends = world.backends.map((spec) => new SimBackend(spec, config, events, root.fork(1000 + spec.index)));
  const directory = new SimDirectory(backends, config, events, policy.placement);
  const record: RunRecord = {
    policy: policy.name,
    label: policy.label,
    requests: n,
    latency: new Float32Array(n),
    flags: new Uint8Array(n),
    city: new Int32Array(n),
    pop: new Int16Array(n),
    model: new Uint8Array(n),
    floor: new Float32Array(n),
    floorViaPop: new Float32Array(n),
    floorDirect: new Float32Array(n),
    busyMs: { cloud: 0, site: 0 },
    executed: { cloud: config.models.map(() => ({ jobs: 0, batches: 0, waitMs: 0 })), site: config.models.map(() => ({ jobs: 0, batches: 0, waitMs: 0 })) },
    estimates: { cloud: config.models.map(() => ({ n: 0, expectedMs: 0, tookMs: 0 })), site: config.models.map(() => ({ n: 0, expectedMs: 0, tookMs: 0 })) },
    simulatedMs: 0,
    arrivalsMs: 0,
    busyArrivingMs: { cloud: 0, site: 0 },
    wallMs: 0,
    placement: { loads: 0, unloads: 0 },
  };
  let finished = 0;
  const finish = () => {
    finished++;
  };
  const ctx: SimContext = {
    config,
    world,
    network,
    events,
    backends,
    directory,
    random: root.fork(POLICY),
    served(request, served) {
      record.latency[request.index] = served.latencyMs;
      record.flags[request.index] = (served.cold ? COLD : 0) | (served.hedged ? HEDGED : 0) | (served.retried ? RETRIED : 0);
      const e = served.estimate;
      if (e) {
        const sums = record.estimates[e.site ? 'site' : 'cloud'][request.model]!;
        sums.n++;
        sums.expectedMs += e.expectedMs;
        sums.tookMs += e.tookMs;
      }
      finish();
    },
    failed(request, latencyMs) {
      record.latency[request.index] = latencyMs;
      record.flags[request.index] = FAILED;
      finish();
    },
  };
  policy.setup?.(ctx);

  // Crashes: the same schedule for every policy (sites only; cloud fleets do not crash).
  const { crashesPerHour, downMs, hangShare } = config.faults;
  if (crashesPerHour > 0) {
    for (const b of backends) {
      if (b.spec.kind !== 'site') continue;
      const faults = root.fork(FAULTS).fork(b.spec.index);
      const next = (from: number) => {
        const at = from + faults.exponential(3_600_000 / crashesPerHour);
        const mode = faults.unit() < hangShare ? 'hanging' : 'refusing';
        const ms = faults.lognormal(downMs, 0.5);
        events.at(at, () => {
          b.crash(mode, ms);
          next(events.now + ms);
        });
      };
      next(0);
    }
  }

  for (const o of config.faults.scripted ?? []) {
    const b = backends[o.backend];
    if (!b) throw new Error(`sim config: scripted outage of backend ${o.backend}, which does not exist`);
    events.at(o.atMs, () => b.crash(o.mode, o.ms));
  }

  // Arrivals: generated one ahead, from their own stream.
  const arrivals = root.fork(ARRIVALS);
  const models = new WeightedPicker(config.models.map((m) => m.share));
  const userPop = new Float64Array(world.cities.length).fill(Number.NaN);
  const userCloud = new Float64Array(world.cities.length).fill(Number.NaN);
  const m = config.models.length;
  const meanGapMs = 1000 / config.ratePerSecond;
  let issued = 0;
  let t = 0;
  const step = Math.max(1, Math.floor(n / 100));
  const arrive = () => {
    const index = issued++;
    const city = world.cityPicker.pick(arrivals);
    const model = models.pick(arrivals);
    const lastMileMs = network.lastMile(arrivals).ms;
    let toPop = userPop[city]!;
    if (Number.isNaN(toPop)) userPop[city] = toPop = network.userToPopMs(city);
    const request: SimRequest = { index, t0: events.now, city, pop: world.cityPop[city]!, model, lastMileMs, userPopMs: toPop + network.jitter(arrivals) };
    record.city[index] = city;
    record.pop[index] = request.pop;
    record.model[index] = model;
    const viaPop = lastMileMs + toPop + floors[request.pop * m + model]!;
    let toCloud = userCloud[city]!;
    if (Number.isNaN(toCloud)) userCloud[city] = toCloud = network.userToCloudMs(city, world.cityCloud[city]!);
    const direct = lastMileMs + toCloud + config.models[model]!.serviceMs;
    record.floor[index] = Math.min(viaPop, direct);
    record.floorViaPop[index] = viaPop;
    record.floorDirect[index] = direct;
    policy.serve(request, ctx);
    if (progress && issued % step === 0) progress(issued, n);
    if (issued < n) {
      t += arrivals.exponential(meanGapMs);
      events.at(t, arrive);
    } else {
      record.arrivalsMs = events.now;
      for (const b of backends) record.busyArrivingMs[b.spec.kind] += b.busyMs;
    }
  };
  if (n > 0) events.at(0, arrive);
  while (finished < n && events.step()) {
    /* run */
  }
  if (finished < n) throw new Error(`sim: ${policy.name} finished ${finished} of ${n} requests (the event queue ran dry)`);
  record.simulatedMs = events.now;
  for (const b of backends) {
    record.busyMs[b.spec.kind] += b.busyMs;
    b.executed.forEach((e, m) => {
      const sum = record.executed[b.spec.kind][m]!;
      sum.jobs += e.jobs;
      sum.batches += e.batches;
      sum.waitMs += e.waitMs;
    });
  }
  record.busyMs.cloud += policy.busyMs?.() ?? 0;
  record.placement = { loads: directory.loads, unloads: directory.unloads };
  record.wallMs = performance.now() - started;
  return record;
}
