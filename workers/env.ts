/**
 * The edge Worker's bindings (wrangler.toml: `[vars]`, Durable Object
 * namespaces, the queue and the bucket; secrets: .dev.vars.example), and the
 * parsed, typed view the code reads.
 */

import { DEFAULT_PLACEMENT, type PlacementPolicy } from './directory/placement.ts';

/**
 * The bindings, as `wrangler types` generates them (`npm run cf-typegen`) into
 * worker-configuration.d.ts, the global `Cloudflare.Env` that `env` from
 * `cloudflare:workers` and `cloudflare:test` has too. Not written by hand:
 * change wrangler.toml or .dev.vars.example and regenerate (`npm run check`
 * fails while it is stale). Every var and secret is typed `string`, but an
 * unset secret is `undefined` at runtime: the code checks before use.
 */
export type Env = Cloudflare.Env;

export interface Settings {
  issuer: string;
  dev: boolean;
  /** Round trips from simulated PoPs count for proof of location (`LOCATION_SIMULATED_POPS=1`, dev only). */
  locationSimulatedPops: boolean;
  backendTtlMs: number;
  snapshotRefreshMs: number;
  backendTimeoutMs: number;
  maxBodyBytes: number;
  /** The largest answer read from a backend, bytes (a larger one fails the attempt). */
  maxResponseBytes: number;
  /** Distinct backend ids one provider may own mesh-wide (docs/api.md section 3.1). */
  maxBackendsPerProvider: number;
  placement: PlacementPolicy;
  /** Optimistic verification and penalties (docs/api.md section 6). */
  verify: {
    /** The share of an established provider's answers re-executed elsewhere (`VERIFY_SAMPLE_RATE`, 0..1). */
    sampleRate: number;
    /** Proven frauds that quarantine a provider (`VERIFY_QUARANTINE_AFTER`). */
    quarantineAfter: number;
  };
  /** How often an isolate sends its request counts for the status page (`STATUS_FLUSH_MS`, 1..60000; docs/api.md section 2.15). */
  statusFlushMs: number;
  /** How long a key account's lease lives in an isolate (`KEY_LEASE_SECONDS`, 1..50 s, docs/api.md section 2.14). */
  keyLeaseMs: number;
  settlement: {
    epochMs: number;
    /** Ledger shards receipts are spread over by jti (1..100). */
    shards: number;
    webhookUrl: string | undefined;
    /** How long a receipt waits in its isolate's outbox for others to share its queue send (1..5000 ms). */
    flushMs: number;
  };
}

function int(value: string | undefined, fallback: number): number {
  const n = value === undefined || value === '' ? NaN : Number(value);
  return Number.isFinite(n) && n > 0 ? n : fallback;
}

/** A share in [0, 1]; the fallback when unset or out of range. */
function rate(value: string | undefined, fallback: number): number {
  const n = value === undefined || value === '' ? NaN : Number(value);
  return Number.isFinite(n) && n >= 0 && n <= 1 ? n : fallback;
}

/** `SETTLEMENT_SHARDS` is capped at this: a batch id gives the shard two digits. */
export const MAX_SETTLEMENT_SHARDS = 100;

const cache = new WeakMap<object, Settings>();

/** Parses the vars once per `env` object (one per isolate). */
export function settings(env: Env): Settings {
  let s = cache.get(env);
  if (!s) {
    s = {
      issuer: env.MESH_ISSUER,
      dev: env.MESH_DEV === '1',
      locationSimulatedPops: env.LOCATION_SIMULATED_POPS === '1',
      backendTtlMs: int(env.BACKEND_TTL_SECONDS, 10) * 1000,
      snapshotRefreshMs: int(env.SNAPSHOT_REFRESH_MS, 1000),
      backendTimeoutMs: int(env.BACKEND_TIMEOUT_MS, 15_000),
      maxBodyBytes: int(env.MAX_BODY_BYTES, 8 * 1024 * 1024),
      maxResponseBytes: int(env.MAX_RESPONSE_BYTES, 16 * 1024 * 1024),
      maxBackendsPerProvider: Math.floor(int(env.MAX_BACKENDS_PER_PROVIDER, 64)),
      placement: {
        ...DEFAULT_PLACEMENT,
        demandWindowMs: int(env.DEMAND_WINDOW_SECONDS, DEFAULT_PLACEMENT.demandWindowMs / 1000) * 1000,
        idleUnloadMs: int(env.IDLE_UNLOAD_SECONDS, DEFAULT_PLACEMENT.idleUnloadMs / 1000) * 1000,
      },
      verify: {
        sampleRate: rate(env.VERIFY_SAMPLE_RATE, 0.05),
        quarantineAfter: Math.floor(int(env.VERIFY_QUARANTINE_AFTER, 3)),
      },
      statusFlushMs: Math.min(60_000, int(env.STATUS_FLUSH_MS, 2000)),
      keyLeaseMs: Math.min(50, int(env.KEY_LEASE_SECONDS, 10)) * 1000,
      settlement: {
        epochMs: int(env.SETTLEMENT_EPOCH_SECONDS, 60) * 1000,
        shards: Math.min(MAX_SETTLEMENT_SHARDS, Math.floor(int(env.SETTLEMENT_SHARDS, 4))),
        webhookUrl: env.SETTLEMENT_WEBHOOK_URL || undefined,
        flushMs: Math.min(5000, int(env.RECEIPTS_FLUSH_MS, 200)),
      },
    };
    cache.set(env, s);
  }
  return s;
}
