/**
 * The heartbeat a backend sends the edge every few seconds (docs/api.md section 3),
 * the edge's reply, and the parser the edge applies to the untrusted body,
 * with the caps on its size and on every list, string and number in it.
 */

import { MeshError } from './errors.ts';
import { isRegionId } from './regions.ts';

/** Where a backend's sessions run: NVIDIA's CUDA, any GPU through WebGPU (Vulkan on Linux), or the CPU. */
export const EXECUTION_PROVIDERS = ['cuda', 'webgpu', 'cpu'] as const;
export type ExecutionProvider = (typeof EXECUTION_PROVIDERS)[number];

export function isExecutionProvider(value: unknown): value is ExecutionProvider {
  return typeof value === 'string' && (EXECUTION_PROVIDERS as readonly string[]).includes(value);
}

export interface HeartbeatModel {
  name: string;
  version: string;
  warm: boolean;
  maxBatchSize: number;
  /** Measured median service time of one request, ms. */
  p50Ms: number;
  /** Memory the model holds, bytes (the backend reports its model file's size, a proxy for its weights). */
  memoryBytes?: number;
}

export interface Capacity {
  slots: number;
  inFlight: number;
  queued: number;
}

export interface Heartbeat {
  backendId: string;
  /** Base URL the edge dispatches to. */
  url: string;
  region: string;
  lat: number;
  lon: number;
  executionProvider: ExecutionProvider;
  /** False while warming up or draining: the edge routes nothing to it. */
  ready: boolean;
  models: HeartbeatModel[];
  /** Models in its repository that it could load on request but has not (warm placement). */
  available?: string[];
  capacity: Capacity;
}

export interface HeartbeatAction {
  op: 'load' | 'unload';
  model: string;
}

export interface HeartbeatReply {
  ok: true;
  /** The edge forgets a backend silent for this long. */
  ttlSeconds: number;
  actions: HeartbeatAction[];
}

const ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;
const VERSION = /^[A-Za-z0-9._-]{1,64}$/;

/** The largest heartbeat body the edge reads, bytes (413 `body_too_large` beyond). */
export const HEARTBEAT_MAX_BYTES = 64 * 1024;

/** Caps on a heartbeat's contents (docs/api.md section 3.2); beyond them the edge answers 400 naming the field. */
export const HEARTBEAT_LIMITS = {
  models: 64,
  available: 256,
  urlChars: 2048,
  versionChars: 64,
  slots: 100_000,
  /** `capacity.inFlight` and `capacity.queued`. */
  requests: 10_000_000,
  maxBatchSize: 1_000_000,
  /** `models[].p50Ms`: one hour. */
  p50Ms: 3_600_000,
  memoryBytes: Number.MAX_SAFE_INTEGER,
} as const;

const invalid = (message: string) => new MeshError('invalid_request', message);

function num(v: unknown, what: string, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) {
    throw invalid(`Heartbeat ${what} must be a number >= ${min} and <= ${max}.`);
  }
  return v;
}

/** Checks an untrusted heartbeat body; throws a 400 `MeshError` naming the bad field. */
export function parseHeartbeat(body: unknown): Heartbeat {
  const L = HEARTBEAT_LIMITS;
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw invalid('The heartbeat body must be a JSON object.');
  const b = body as Record<string, unknown>;
  if (typeof b.backendId !== 'string' || !ID.test(b.backendId)) {
    throw invalid('Heartbeat backendId must be 1-128 characters of letters, digits, ".", "_", ":" or "-".');
  }
  if (typeof b.url !== 'string' || b.url.length > L.urlChars) {
    throw invalid(`Heartbeat url must be an absolute http(s) URL of at most ${L.urlChars} characters.`);
  }
  let url: URL;
  try {
    url = new URL(b.url);
  } catch {
    throw invalid('Heartbeat url must be an absolute http(s) URL.');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw invalid('Heartbeat url must be http(s).');
  const stored = url.origin + url.pathname.replace(/\/+$/, '');
  if (stored.length > L.urlChars) throw invalid(`Heartbeat url must be at most ${L.urlChars} characters once normalised.`);
  if (!isRegionId(b.region)) {
    const shown = typeof b.region === 'string' ? JSON.stringify(b.region.slice(0, 64)) : typeof b.region;
    throw new MeshError('unknown_region', `Heartbeat region ${shown} is not a mesh region.`);
  }
  const lat = num(b.lat, 'lat', -90, 90);
  const lon = num(b.lon, 'lon', -180, 180);
  if (!isExecutionProvider(b.executionProvider)) {
    throw invalid('Heartbeat executionProvider must be "cuda", "webgpu" or "cpu".');
  }
  if (typeof b.ready !== 'boolean') throw invalid('Heartbeat ready must be a boolean.');
  if (!Array.isArray(b.models) || b.models.length > L.models) throw invalid(`Heartbeat models must be an array of at most ${L.models} models.`);
  const models = b.models.map((m: unknown, i): HeartbeatModel => {
    if (typeof m !== 'object' || m === null || Array.isArray(m)) throw invalid(`Heartbeat models[${i}] must be an object.`);
    const x = m as Record<string, unknown>;
    if (typeof x.name !== 'string' || !ID.test(x.name)) throw invalid(`Heartbeat models[${i}].name is not a valid model name.`);
    if (typeof x.version !== 'string' || !VERSION.test(x.version)) {
      throw invalid(`Heartbeat models[${i}].version must be 1-${L.versionChars} characters of letters, digits, ".", "_" or "-".`);
    }
    if (typeof x.warm !== 'boolean') throw invalid(`Heartbeat models[${i}].warm must be a boolean.`);
    const model: HeartbeatModel = {
      name: x.name,
      version: x.version,
      warm: x.warm,
      maxBatchSize: num(x.maxBatchSize, `models[${i}].maxBatchSize`, 0, L.maxBatchSize),
      p50Ms: num(x.p50Ms, `models[${i}].p50Ms`, 0, L.p50Ms),
    };
    if (x.memoryBytes !== undefined) model.memoryBytes = num(x.memoryBytes, `models[${i}].memoryBytes`, 0, L.memoryBytes);
    return model;
  });
  if (typeof b.capacity !== 'object' || b.capacity === null || Array.isArray(b.capacity)) {
    throw invalid('Heartbeat capacity must be an object { slots, inFlight, queued }.');
  }
  const c = b.capacity as Record<string, unknown>;
  const capacity: Capacity = {
    slots: num(c.slots, 'capacity.slots', 1, L.slots),
    inFlight: num(c.inFlight, 'capacity.inFlight', 0, L.requests),
    queued: num(c.queued, 'capacity.queued', 0, L.requests),
  };
  let available: string[] | undefined;
  if (b.available !== undefined) {
    if (!Array.isArray(b.available) || b.available.length > L.available || !b.available.every((n) => typeof n === 'string' && ID.test(n))) {
      throw invalid(`Heartbeat available must be a list of at most ${L.available} model names.`);
    }
    available = b.available as string[];
  }
  return {
    backendId: b.backendId,
    url: stored,
    region: b.region,
    lat,
    lon,
    executionProvider: b.executionProvider,
    ready: b.ready,
    models,
    ...(available ? { available } : {}),
    capacity,
  };
}
