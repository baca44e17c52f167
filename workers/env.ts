/**
 * The edge Worker's bindings and settings (wrangler.toml `[vars]`, secrets and
 * Durable Object namespaces), and the parsed, typed view the code reads.
 */

import { DEFAULT_PLACEMENT, type PlacementPolicy } from './directory/placement.ts';
import type { RegionDirectory } from './directory/RegionDirectory.ts';
import type { OperatorRegistry } from './operator/OperatorRegistry.ts';
import type { SettlementLedger } from './settlement/SettlementLedger.ts';

export interface Env {
  REGION_DIRECTORY: DurableObjectNamespace<RegionDirectory>;
  OPERATOR_REGISTRY: DurableObjectNamespace<OperatorRegistry>;
  SETTLEMENT_LEDGER: DurableObjectNamespace<SettlementLedger>;
  /** Queue of signed receipts, consumed into the ledger. */
  RECEIPTS: Queue<unknown>;
  /** R2 bucket: closed batches (receipts NDJSON, batch JWT, JWKS) and dead letters. */
  SETTLEMENT_ARCHIVE: R2Bucket;
  /** Secret: the mesh's private signing keys, a JWKS of Ed25519 private JWKs with `kid` (and optional `use_from`); the first usable one signs. */
  MESH_SIGNING_KEYS?: string;
  MESH_ISSUER: string;
  MESH_DEV?: string;
  BACKEND_TTL_SECONDS?: string;
  SNAPSHOT_REFRESH_MS?: string;
  BACKEND_TIMEOUT_MS?: string;
  MAX_BODY_BYTES?: string;
  DEMAND_WINDOW_SECONDS?: string;
  IDLE_UNLOAD_SECONDS?: string;
  /** Public JWKS of retired signing keys, each with `retired_at` (see docs/key-rotation.md). */
  MESH_RETIRED_KEYS?: string;
  /** Days a receipt can be disputed; a retired key stays in the JWKS this long. */
  RECEIPT_DISPUTE_DAYS?: string;
  SETTLEMENT_EPOCH_SECONDS?: string;
  SETTLEMENT_SHARDS?: string;
  /** How long a receipt waits in its isolate for others to share one queue send, ms. */
  RECEIPTS_FLUSH_MS?: string;
  /** Billing system URL that receives each closed batch (optional). */
  SETTLEMENT_WEBHOOK_URL?: string;
  /** Hugging Face inference endpoint to fall back to when no backend can serve (optional). */
  HF_ENDPOINT_URL?: string;
  /** Secret: its access token. */
  HF_TOKEN?: string;
}

export interface Settings {
  issuer: string;
  dev: boolean;
  backendTtlMs: number;
  snapshotRefreshMs: number;
  backendTimeoutMs: number;
  maxBodyBytes: number;
  placement: PlacementPolicy;
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

const cache = new WeakMap<object, Settings>();

/** Parses the vars once per `env` object (one per isolate). */
export function settings(env: Env): Settings {
  let s = cache.get(env);
  if (!s) {
    s = {
      issuer: env.MESH_ISSUER,
      dev: env.MESH_DEV === '1',
      backendTtlMs: int(env.BACKEND_TTL_SECONDS, 10) * 1000,
      snapshotRefreshMs: int(env.SNAPSHOT_REFRESH_MS, 1000),
      backendTimeoutMs: int(env.BACKEND_TIMEOUT_MS, 15_000),
      maxBodyBytes: int(env.MAX_BODY_BYTES, 8 * 1024 * 1024),
      placement: {
        ...DEFAULT_PLACEMENT,
        demandWindowMs: int(env.DEMAND_WINDOW_SECONDS, DEFAULT_PLACEMENT.demandWindowMs / 1000) * 1000,
        idleUnloadMs: int(env.IDLE_UNLOAD_SECONDS, DEFAULT_PLACEMENT.idleUnloadMs / 1000) * 1000,
      },
      settlement: {
        epochMs: int(env.SETTLEMENT_EPOCH_SECONDS, 60) * 1000,
        shards: Math.min(100, Math.floor(int(env.SETTLEMENT_SHARDS, 4))),
        webhookUrl: env.SETTLEMENT_WEBHOOK_URL || undefined,
        flushMs: Math.min(5000, int(env.RECEIPTS_FLUSH_MS, 200)),
      },
    };
    cache.set(env, s);
  }
  return s;
}
