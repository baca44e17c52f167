/**
 * What a routing policy is to the simulator: given one request (who, what,
 * from where, when), it drives that request to an answer or a failure on the
 * simulated world's clock, and reports what happened through `finish`.
 */

import type { SimBackend } from '../backend.ts';
import type { SimConfig } from '../config.ts';
import type { SimDirectory } from '../directory.ts';
import type { EventQueue } from '../events.ts';
import type { Network } from '../network.ts';
import type { Random } from '../random.ts';
import type { World } from '../world.ts';

export interface SimRequest {
  index: number;
  /** When the user sent it, ms. */
  t0: number;
  city: number;
  /** The city's PoP (index into world.pops). */
  pop: number;
  model: number;
  lastMileMs: number;
  /** Round trip user <-> PoP over the internet, jitter included, last mile not. */
  userPopMs: number;
}

export interface Served {
  /** From the user's send to the user's receipt of the answer, ms. */
  latencyMs: number;
  cold: boolean;
  /** A hedge was sent, or a retry after a failure. */
  hedged: boolean;
  retried: boolean;
  /** When the policy scores candidates and its first attempt answered: what it expected of that call and what it took. */
  estimate?: Estimate;
}

/** A routing score against the outcome, for one call: from the PoP to the backend and back, ms. */
export interface Estimate {
  expectedMs: number;
  tookMs: number;
  /** The backend was a site (else a cloud backend). */
  site: boolean;
}

export interface SimContext {
  config: SimConfig;
  world: World;
  network: Network;
  events: EventQueue;
  /** The world's backends, by index (world.backends). */
  backends: readonly SimBackend[];
  directory: SimDirectory;
  /** This policy's own random stream. */
  random: Random;
  /** The request was answered. */
  served(request: SimRequest, served: Served): void;
  /** The request failed (no backend, every attempt failed, or the one attempt failed); `latencyMs` until the user learned it. */
  failed(request: SimRequest, latencyMs: number): void;
}

export interface Policy {
  name: string;
  label: string;
  /** Whether the world's directory answers heartbeats with warm placement (the mesh's own mechanism). */
  placement: boolean;
  /** Called once before the first request (fleets, caches). */
  setup?(ctx: SimContext): void;
  /** Slot time its own fleets spent computing, ms (fleets outside the world's backends: the cloud baselines'). */
  busyMs?(): number;
  /** Called at the request's `t0`. */
  serve(request: SimRequest, ctx: SimContext): void;
}

/** The half of the user's round trip to the PoP (last mile included), ms: the request reaches the PoP this long after `t0`. */
export function toPopMs(request: SimRequest): number {
  return (request.lastMileMs + request.userPopMs) / 2;
}
