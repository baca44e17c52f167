/**
 * The edge Worker's bindings and settings (wrangler.toml `[vars]`, secrets and
 * Durable Object namespaces), and the parsed, typed view the code reads.
 */

import { DEFAULT_PLACEMENT, type PlacementPolicy } from './directory/placement.ts';
import type { RegionDirectory } from './directory/RegionDirectory.ts';
import type { OperatorRegistry } from './operator/OperatorRegistry.ts';

export interface Env {
  REGION_DIRECTORY: DurableObjectNamespace<RegionDirectory>;
  OPERATOR_REGISTRY: DurableObjectNamespace<OperatorRegistry>;
  /** Secret: the mesh's private signing keys, a JWKS of Ed25519 private JWKs with `kid`; the first signs. */
  MESH_SIGNING_KEYS?: string;
  MESH_ISSUER: string;
  MESH_DEV?: string;
  BACKEND_TTL_SECONDS?: string;
  SNAPSHOT_REFRESH_MS?: string;
  BACKEND_TIMEOUT_MS?: string;
  MAX_BODY_BYTES?: string;
  DEMAND_WINDOW_SECONDS?: string;
  IDLE_UNLOAD_SECONDS?: string;
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
    };
    cache.set(env, s);
  }
  return s;
}
