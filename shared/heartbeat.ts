/**
 * The heartbeat a backend sends the edge every few seconds (docs/api.md section 3),
 * the edge's reply, and the parser the edge applies to the untrusted body.
 */

import { MeshError } from './errors.ts';
import { isRegionId } from './regions.ts';

export type ExecutionProvider = 'cuda' | 'cpu';

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

const invalid = (message: string) => new MeshError('invalid_request', message);

function num(v: unknown, what: string, min = 0): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min) throw invalid(`Heartbeat ${what} must be a number >= ${min}.`);
  return v;
}

/** Checks an untrusted heartbeat body; throws a 400 `MeshError` naming the bad field. */
export function parseHeartbeat(body: unknown): Heartbeat {
  if (typeof body !== 'object' || body === null) throw invalid('The heartbeat body must be a JSON object.');
  const b = body as Record<string, unknown>;
  if (typeof b.backendId !== 'string' || !ID.test(b.backendId)) {
    throw invalid('Heartbeat backendId must be 1-128 characters of letters, digits, ".", "_", ":" or "-".');
  }
  let url: URL;
  try {
    url = new URL(String(b.url));
  } catch {
    throw invalid('Heartbeat url must be an absolute http(s) URL.');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw invalid('Heartbeat url must be http(s).');
  if (!isRegionId(b.region)) throw new MeshError('unknown_region', `Heartbeat region ${JSON.stringify(b.region)} is not a mesh region.`);
  const lat = num(b.lat, 'lat', -90);
  const lon = num(b.lon, 'lon', -180);
  if (lat > 90 || lon > 180) throw invalid('Heartbeat lat/lon are out of range.');
  if (b.executionProvider !== 'cuda' && b.executionProvider !== 'cpu') {
    throw invalid('Heartbeat executionProvider must be "cuda" or "cpu".');
  }
  if (typeof b.ready !== 'boolean') throw invalid('Heartbeat ready must be a boolean.');
  if (!Array.isArray(b.models) || b.models.length > 256) throw invalid('Heartbeat models must be an array (at most 256).');
  const models = b.models.map((m: unknown, i): HeartbeatModel => {
    const x = (m ?? {}) as Record<string, unknown>;
    if (typeof x.name !== 'string' || !ID.test(x.name)) throw invalid(`Heartbeat models[${i}].name is not a valid model name.`);
    if (typeof x.version !== 'string' || x.version.length === 0) throw invalid(`Heartbeat models[${i}].version must be a string.`);
    if (typeof x.warm !== 'boolean') throw invalid(`Heartbeat models[${i}].warm must be a boolean.`);
    const model: HeartbeatModel = {
      name: x.name,
      version: x.version,
      warm: x.warm,
      maxBatchSize: num(x.maxBatchSize, `models[${i}].maxBatchSize`),
      p50Ms: num(x.p50Ms, `models[${i}].p50Ms`),
    };
    if (x.memoryBytes !== undefined) model.memoryBytes = num(x.memoryBytes, `models[${i}].memoryBytes`);
    return model;
  });
  const c = (b.capacity ?? {}) as Record<string, unknown>;
  const capacity: Capacity = {
    slots: num(c.slots, 'capacity.slots', 1),
    inFlight: num(c.inFlight, 'capacity.inFlight'),
    queued: num(c.queued, 'capacity.queued'),
  };
  let available: string[] | undefined;
  if (b.available !== undefined) {
    if (!Array.isArray(b.available) || b.available.length > 256 || !b.available.every((n) => typeof n === 'string' && ID.test(n))) {
      throw invalid('Heartbeat available must be a list of model names (at most 256).');
    }
    available = b.available as string[];
  }
  return {
    backendId: b.backendId,
    url: url.origin + url.pathname.replace(/\/+$/, ''),
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
