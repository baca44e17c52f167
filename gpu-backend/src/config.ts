/**
 * The backend's configuration, read once from the environment. Every value is
 * checked here, and a bad one stops the start with a `ConfigError` naming the
 * variable, so nothing downstream re-validates or guesses.
 */

import { readFileSync } from 'node:fs';
import path from 'node:path';
import { isExecutionProvider, type ExecutionProvider } from '../../shared/heartbeat.ts';
import { REGIONS, regionById } from '../../shared/regions.ts';
import { checkProviderJwk, type ProviderJwk } from './mesh/provider-key.ts';
import type { InferenceThread } from './serving/sessions.ts';

export interface BackendConfig {
  backendId: string;
  providerId: string;
  /** The provider's private Ed25519 JWK (from PROVIDER_KEY or PROVIDER_KEY_FILE). */
  providerKey: ProviderJwk;
  host: string;
  port: number;
  /** Base URL the edge dispatches to, no trailing slash. */
  publicUrl: string;
  region: string;
  lat: number;
  lon: number;
  /** The edge's base URL: heartbeats and JWKS go there. */
  edgeUrl: string;
  /** Expected `iss` of dispatch tokens. */
  meshIssuer: string;
  /** Absolute path of the Triton-style model repository. */
  modelRepository: string;
  /** Models to load at start; undefined: every model in the repository. */
  models: string[] | undefined;
  /** In order of preference; always ends with `cpu`. */
  executionProviders: ExecutionProvider[];
  cudaDeviceId: number;
  heartbeatIntervalMs: number;
  maxBodyBytes: number;
  intraOpThreads: number | undefined;
  /**
   * Where `session.run` executes (INFERENCE_THREAD): `worker`, one worker
   * thread per model instance, so the main thread keeps serving HTTP while a
   * batch runs; `main`, on the main thread (onnxruntime-node's `run()` then
   * holds it for the whole execution); `auto` (default): `worker` on CUDA and
   * on CPU hosts of 4 cores or more (serving/sessions.ts says why).
   */
  inferenceThread: InferenceThread;
  /**
   * Threads that serve HTTP (HTTP_THREADS, Triton's `--http-thread-count`):
   * 0, the main thread serves every request; n, n HTTP workers share the
   * port (SO_REUSEPORT) and do each inference's HTTP, token, JSON and
   * attestation work, so the main thread only batches and runs models;
   * `auto` (default): 0 below 4 cores, else half the cores, at most 8
   * (http/http-pool.ts says why).
   */
  httpThreads: number | 'auto';
  /**
   * Model executions (batches) at once over all models (SLOTS, default 1);
   * each model also runs at most the sum of its `instance_group[].count`
   * batches at once. One accelerator runs one batch at a time best in most
   * cases; raise SLOTS to the sum of instance counts where instances really
   * run side by side (several GPUs' worth of device, or CPU cores to spare;
   * each instance is its own session on its own worker thread).
   */
  slots: number;
  /** Inferences that may wait for a slot over all models (MAX_QUEUE, the backstop under each model's max_queue_size); beyond, 429. */
  maxQueue: number;
}

/** A bad or missing environment variable. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  readonly variable: string;

  constructor(variable: string, problem: string, options: { cause?: unknown } = {}) {
    super(`${variable} ${problem}`, options);
    this.variable = variable;
  }
}

/** gpu-backend/models in this checkout. */
export const DEFAULT_MODEL_REPOSITORY = path.resolve(import.meta.dirname, '..', 'models');

const ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;
const MODEL_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/**
 * Reads and checks the backend's configuration.
 *
 * @example
 * const config = loadConfig(process.env); // throws ConfigError('PORT must be ...')
 */
export function loadConfig(env: NodeJS.ProcessEnv): BackendConfig {
  const get = (name: string): string | undefined => {
    const v = env[name]?.trim();
    return v === undefined || v === '' ? undefined : v;
  };
  const required = (name: string, what: string): string => {
    const v = get(name);
    if (v === undefined) throw new ConfigError(name, `is required: ${what}.`);
    return v;
  };
  const id = (name: string, what: string): string => {
    const v = required(name, what);
    if (!ID.test(v)) throw new ConfigError(name, `must be 1-128 letters, digits, ".", "_", ":" or "-", got ${JSON.stringify(v)}.`);
    return v;
  };

  const backendId = id('BACKEND_ID', 'the id this backend announces in heartbeats (the `aud` of its dispatch tokens)');
  const providerId = id('PROVIDER_ID', 'the provider id the operator admitted');
  const providerKey = readProviderKey(get('PROVIDER_KEY'), get('PROVIDER_KEY_FILE'));

  const host = get('HOST') ?? '127.0.0.1';
  const port = integer(get('PORT'), 'PORT', 9101, 0, 65535);
  const publicUrl = url(get('PUBLIC_URL') ?? `http://${host.includes(':') ? `[${host}]` : host}:${port}`, 'PUBLIC_URL');

  const regionId = required('REGION', `one of ${REGIONS.map((r) => r.id).join(', ')}`);
  const region = regionById(regionId);
  if (!region) throw new ConfigError('REGION', `must be one of ${REGIONS.map((r) => r.id).join(', ')}, got ${JSON.stringify(regionId)}.`);
  const lat = number(get('LAT'), 'LAT', region.lat, -90, 90);
  const lon = number(get('LON'), 'LON', region.lon, -180, 180);

  const edgeUrl = url(required('EDGE_URL', 'the edge base URL, e.g. http://127.0.0.1:8787'), 'EDGE_URL');
  const meshIssuer = get('MESH_ISSUER') ?? edgeUrl;

  const modelRepository = path.resolve(get('MODEL_REPOSITORY') ?? DEFAULT_MODEL_REPOSITORY);
  const models = list(get('MODELS'));
  for (const m of models ?? []) {
    if (!MODEL_NAME.test(m)) throw new ConfigError('MODELS', `must be a comma-separated list of model names, got ${JSON.stringify(m)}.`);
  }

  const providers = list(get('EXECUTION_PROVIDERS')) ?? ['cuda', 'cpu'];
  const executionProviders: ExecutionProvider[] = [];
  for (const p of providers) {
    const name = p.toLowerCase();
    if (!isExecutionProvider(name)) {
      throw new ConfigError('EXECUTION_PROVIDERS', `must be a comma-separated list of "cuda", "webgpu" and "cpu", got ${JSON.stringify(p)}.`);
    }
    if (!executionProviders.includes(name)) executionProviders.push(name);
  }
  // CPU is always the last resort (docs/design.md: "cpu always as fallback").
  if (!executionProviders.includes('cpu')) executionProviders.push('cpu');
  executionProviders.sort((a, b) => (a === 'cpu' ? 1 : 0) - (b === 'cpu' ? 1 : 0));

  return {
    backendId,
    providerId,
    providerKey,
    host,
    port,
    publicUrl,
    region: region.id,
    lat,
    lon,
    edgeUrl,
    meshIssuer,
    modelRepository,
    models,
    executionProviders,
    cudaDeviceId: integer(get('CUDA_DEVICE_ID'), 'CUDA_DEVICE_ID', 0, 0, 1024),
    heartbeatIntervalMs: integer(get('HEARTBEAT_INTERVAL_MS'), 'HEARTBEAT_INTERVAL_MS', 2000, 100, 60_000),
    maxBodyBytes: integer(get('MAX_BODY_BYTES'), 'MAX_BODY_BYTES', 8 * 1024 * 1024, 1024, 1024 * 1024 * 1024),
    intraOpThreads: get('INTRA_OP_THREADS') === undefined ? undefined : integer(get('INTRA_OP_THREADS'), 'INTRA_OP_THREADS', 1, 1, 1024),
    inferenceThread: inferenceThread(get('INFERENCE_THREAD')),
    httpThreads: get('HTTP_THREADS')?.toLowerCase() === 'auto' ? 'auto' : integerOr(get('HTTP_THREADS'), 'HTTP_THREADS', 'auto', 0, 64),
    slots: integer(get('SLOTS'), 'SLOTS', 1, 1, 1024),
    maxQueue: integer(get('MAX_QUEUE'), 'MAX_QUEUE', 64, 0, 100_000),
  };
}

function inferenceThread(value: string | undefined): InferenceThread {
  const v = (value ?? 'auto').trim().toLowerCase();
  if (v !== 'auto' && v !== 'worker' && v !== 'main') {
    throw new ConfigError('INFERENCE_THREAD', `must be "auto", "worker" or "main", got ${JSON.stringify(value)}.`);
  }
  return v;
}

function readProviderKey(inline: string | undefined, file: string | undefined): ProviderJwk {
  if (inline !== undefined && file !== undefined) {
    throw new ConfigError('PROVIDER_KEY', 'and PROVIDER_KEY_FILE are both set: set only one.');
  }
  let name: string;
  let text: string;
  if (inline !== undefined) {
    name = 'PROVIDER_KEY';
    text = inline;
  } else if (file !== undefined) {
    name = 'PROVIDER_KEY_FILE';
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      throw new ConfigError(name, `names a file that cannot be read (${file}): ${(err as Error).message}.`, { cause: err });
    }
  } else {
    throw new ConfigError(
      'PROVIDER_KEY',
      'or PROVIDER_KEY_FILE is required: the private Ed25519 JWK (with kid) of the provider (`npm run keygen` makes one).',
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(name, 'is not valid JSON: it must hold a private Ed25519 JWK.', { cause: err });
  }
  try {
    return checkProviderJwk(json);
  } catch (err) {
    throw new ConfigError(name, `is not a usable provider key: ${(err as Error).message}.`, { cause: err });
  }
}

function integer(raw: string | undefined, name: string, fallback: number, min: number, max: number): number {
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!/^-?\d+$/.test(raw) || !Number.isSafeInteger(n) || n < min || n > max) {
    throw new ConfigError(name, `must be an integer from ${min} to ${max}, got ${JSON.stringify(raw)}.`);
  }
  return n;
}

function integerOr<T>(raw: string | undefined, name: string, fallback: T, min: number, max: number): number | T {
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!/^\d+$/.test(raw) || !Number.isSafeInteger(n) || n < min || n > max) {
    throw new ConfigError(name, `must be "auto" or an integer from ${min} to ${max}, got ${JSON.stringify(raw)}.`);
  }
  return n;
}

function number(raw: string | undefined, name: string, fallback: number, min: number, max: number): number {
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < min || n > max) {
    throw new ConfigError(name, `must be a number from ${min} to ${max}, got ${JSON.stringify(raw)}.`);
  }
  return n;
}

function url(raw: string, name: string): string {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw new ConfigError(name, `must be an absolute http(s) URL, got ${JSON.stringify(raw)}.`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new ConfigError(name, `must be http or https, got ${JSON.stringify(raw)}.`);
  return (u.origin + u.pathname).replace(/\/+$/, '');
}

function list(raw: string | undefined): string[] | undefined {
  if (raw === undefined) return undefined;
  const items = raw.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
  return items.length === 0 ? undefined : items;
}
