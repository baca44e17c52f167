/**
 * Model metadata (OIP v2 `GET /v2/models/{m}`), fetched from backends that
 * serve the model, checked (bounded, well-formed, about this model), agreed
 * on by two providers where two serve it, and kept per isolate: the metadata
 * route answers from it, the OpenAI and Hugging Face routes read input names
 * and datatypes from it to build OIP requests, and answers are checked
 * against it. A backend whose metadata does not pass is skipped like one that
 * is down.
 */

import type { Context } from 'hono';
import { MeshError } from '../../shared/errors.ts';
import { DATATYPES, type InferRequest, type ModelMetadata, type TensorMetadata } from '../../shared/protocol.ts';
import type { KeyClaims } from '../../shared/jwt.ts';
import type { AppEnv } from '../context.ts';
import { readWithin } from '../body.ts';
import { settings } from '../env.ts';
import { isolateRouting } from '../routing/isolate.ts';
import { offered } from './catalogue.ts';
import { fallbackFor } from './fallback.ts';
import { allowedRegions, candidatesFor } from './candidates.ts';
import { oipRequest, type Rows } from './translate.ts';

/** Metadata younger than this is used as it is. */
export const METADATA_TTL_MS = 60_000;
/** Older metadata, up to this age, is used while a fresh copy is fetched in the background; older still is fetched first. */
export const METADATA_STALE_MS = 10 * 60_000;
/** The largest metadata document read, bytes. */
export const MAX_METADATA_BYTES = 64 * 1024;
const MAX_TENSORS = 64;
const MAX_RANK = 8;
const MAX_PARAMETERS = 32;
/**
 * One isolate's copies of model metadata and their age: `fresh` (use it),
 * `stale` (use it, and refresh it once in the background), or gone (fetch it
 * first). The clock is injected.
 */
export class MetadataCache {
  readonly #copies = new Map<string, { meta: ModelMetadata; at: number }>();
  readonly #refreshing = new Set<string>();
  readonly #now: () => number;

  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  lookup(key: string): { meta: ModelMetadata; fresh: boolean } | undefined {
    const hit = this.#copies.get(key);
    if (!hit) return undefined;
    const age = this.#now() - hit.at;
    if (age >= METADATA_STALE_MS) return undefined;
    return { meta: hit.meta, fresh: age < METADATA_TTL_MS };
  }

  set(key: string, meta: ModelMetadata): void {
    this.#copies.set(key, { meta, at: this.#now() });
  }

  delete(key: string): void {
    this.#copies.delete(key);
  }

  /** Runs `refresh` for `key` unless a refresh of it is running; returns its promise, or undefined when one was running. */
  refreshOnce(key: string, refresh: () => Promise<unknown>): Promise<unknown> | undefined {
    if (this.#refreshing.has(key)) return undefined;
    this.#refreshing.add(key);
    return refresh()
      .catch(() => undefined)
      .finally(() => this.#refreshing.delete(key));
  }
}

const cache = new MetadataCache();

const keyOf = (model: string, version?: string) => `${model}\u0000${version ?? ''}`;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function checkTensors(v: unknown, what: string): TensorMetadata[] | string {
  if (!Array.isArray(v) || v.length === 0 || v.length > MAX_TENSORS) return `${what} must be 1..${MAX_TENSORS} tensors`;
  const out: TensorMetadata[] = [];
  for (const t of v) {
    if (!isObject(t) || typeof t.name !== 'string' || t.name.length === 0 || t.name.length > 256) return `${what}: a tensor has no valid name`;
    if (typeof t.datatype !== 'string' || !(DATATYPES as readonly string[]).includes(t.datatype)) return `${what} "${t.name}": unknown datatype`;
    if (!Array.isArray(t.shape) || t.shape.length > MAX_RANK || !t.shape.every((d) => Number.isSafeInteger(d) && d >= -1)) {
      return `${what} "${t.name}": invalid shape`;
    }
    out.push({ name: t.name, datatype: t.datatype as TensorMetadata['datatype'], shape: t.shape as number[] });
  }
  return out;
}

/**
 * Checks a backend's metadata document for `model` and keeps only what the
 * mesh reads (names, datatypes, shapes, scalar parameters); a string says why
 * it is refused.
 */
export function checkMetadata(raw: unknown, model: string): ModelMetadata | string {
  if (!isObject(raw)) return 'not a JSON object';
  if (raw.name !== model) return 'it names another model';
  const versions = raw.versions ?? [];
  if (!Array.isArray(versions) || versions.length > 16 || !versions.every((v) => typeof v === 'string' && v.length <= 64)) return 'invalid versions';
  if (typeof raw.platform !== 'string' || raw.platform.length > 64) return 'invalid platform';
  const inputs = checkTensors(raw.inputs, 'inputs');
  if (typeof inputs === 'string') return inputs;
  const outputs = checkTensors(raw.outputs, 'outputs');
  if (typeof outputs === 'string') return outputs;
  const meta: ModelMetadata & { parameters?: Record<string, string | number | boolean> } = { name: model, versions: versions as string[], platform: raw.platform, inputs, outputs };
  if (raw.parameters !== undefined) {
    if (!isObject(raw.parameters)) return 'parameters is not an object';
    const entries = Object.entries(raw.parameters);
    if (entries.length > MAX_PARAMETERS) return `more than ${MAX_PARAMETERS} parameters`;
    const parameters: Record<string, string | number | boolean> = Object.create(null);
    for (const [k, v] of entries) {
      if (k.length > 64 || !(typeof v === 'number' || typeof v === 'boolean' || (typeof v === 'string' && v.length <= 256))) return `parameter "${k.slice(0, 64)}" is not a short scalar`;
      parameters[k] = v;
    }
    meta.parameters = { ...parameters };
  }
  return meta;
}

/** Drops the model's metadata (an answer contradicted it), so the next request fetches it afresh. */
export function forgetMetadata(model: string, version?: string): void {
  cache.delete(keyOf(model, version));
}

/**
 * The model's metadata: from this isolate's copy while it is fresh; from a
 * stale copy while a fresh one is fetched in the background (`waitUntil`), so
 * only an isolate without any copy makes a request wait for a backend.
 */
export async function modelMetadata(c: Context<AppEnv>, consumer: KeyClaims, model: string, version?: string): Promise<ModelMetadata> {
  const key = keyOf(model, version);
  const hit = cache.lookup(key);
  if (hit && !hit.fresh) {
    const refresh = cache.refreshOnce(key, () =>
      fetchMetadata(c, consumer, model, version).catch((err: unknown) => {
        console.warn(`metadata ${model}: background refresh failed (${(err as Error).message})`);
      }),
    );
    if (refresh) c.executionCtx.waitUntil(refresh);
  }
  return hit ? hit.meta : fetchMetadata(c, consumer, model, version);
}

/** Backends asked at most for one model's metadata. */
const MAX_METADATA_ASKS = 5;

/** One backend's metadata document: checked, or why not (`notFound` for a 404). */
async function askMetadata(url: string, model: string, timeoutMs: number): Promise<ModelMetadata | { failure: string; notFound?: true }> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    const body = await readWithin(res, MAX_METADATA_BYTES);
    if (res.status === 404) return { failure: 'HTTP 404', notFound: true };
    if (res.status !== 200) return { failure: `HTTP ${res.status}` };
    if (!body) return { failure: `metadata larger than ${MAX_METADATA_BYTES} bytes` };
    let parsed: unknown;
    try {
      parsed = JSON.parse(new TextDecoder().decode(body));
    } catch {
      parsed = undefined;
    }
    const meta = checkMetadata(parsed, model);
    return typeof meta === 'string' ? { failure: `invalid metadata (${meta})` } : meta;
  } catch (err) {
    return { failure: (err as Error).message };
  }
}

/**
 * Fetches the metadata from the model's best candidates. Where two or more
 * providers serve the model, a document counts only once backends of two
 * different providers give the same one: one provider cannot make the edge
 * check (and fail) everyone else's answers against metadata of its own
 * making. When backends of only one provider give a valid document, it is
 * used (nothing contradicts it). A backend whose document is missing or
 * malformed is skipped and counted towards its ejection; disagreeing ones are
 * not (the edge cannot tell which is right): with no two providers agreeing,
 * the answer is 502.
 */
async function fetchMetadata(c: Context<AppEnv>, consumer: KeyClaims, model: string, version?: string): Promise<ModelMetadata> {
  const { candidates, snapshot } = await candidatesFor(c, consumer, model, version);
  const path = `/v2/models/${encodeURIComponent(model)}${version ? `/versions/${encodeURIComponent(version)}` : ''}`;
  const timeoutMs = settings(c.env).backendTimeoutMs;
  const tried = candidates.slice(0, MAX_METADATA_ASKS).map((x) => x.backend);
  const needed = new Set(tried.map((b) => b.provider)).size >= 2 ? 2 : 1;
  /** Documents seen, by their canonical JSON: the providers that gave each. */
  const seen = new Map<string, { meta: ModelMetadata; providers: Set<string> }>();
  let notFound = 0;
  let disagreed = false;
  // The first two from different providers at once; then one at a time until two agree.
  const second = tried.findIndex((b) => b.provider !== tried[0]?.provider);
  const order = second > 0 ? [tried[0]!, tried[second]!, ...tried.filter((_, i) => i !== 0 && i !== second)] : tried;
  const answers = order.map((b, i) => (i < needed ? askMetadata(b.url + path, model, timeoutMs) : undefined));
  for (const [i, backend] of order.entries()) {
    const answer = await (answers[i] ?? askMetadata(backend.url + path, model, timeoutMs));
    if ('failure' in answer) {
      if (answer.notFound) notFound++;
      else {
        console.warn(`metadata ${model}: backend ${backend.id} failed (${answer.failure})`);
        isolateRouting.ejected.recordFailure(backend, snapshot.byRegion.get(backend.region)?.length ?? 1);
      }
      continue;
    }
    const key = JSON.stringify(answer);
    const entry = seen.get(key) ?? { meta: answer, providers: new Set<string>() };
    entry.providers.add(backend.provider);
    seen.set(key, entry);
    if (seen.size > 1) disagreed = true;
    if (entry.providers.size >= needed) {
      cache.set(keyOf(model, version), entry.meta);
      return entry.meta;
    }
  }
  if (notFound === order.length) {
    const what = version === undefined ? `"${model}"` : `version "${version}" of "${model}"`;
    throw new MeshError('model_not_found', `No backend in the mesh serves ${what}.`);
  }
  if (disagreed) {
    console.warn(`metadata ${model}: backends of different providers disagree about it; none is used`);
    throw new MeshError('backend_failed', `The backends serving "${model}" disagree about its metadata; retry shortly.`);
  }
  // One document, from one provider: no other provider gave a valid one to compare it with.
  const only = [...seen.values()][0];
  if (only) {
    cache.set(keyOf(model, version), only.meta);
    return only.meta;
  }
  throw new MeshError('backend_failed', `No backend answered the metadata of "${model}".`);
}

/** What `rowsCall` gives `runInference` (the fields of `InferenceCall`, inference/run.ts, of the same names). */
export interface RowsCall {
  oipBody: Uint8Array;
  request: InferRequest;
  metadata?: ModelMetadata;
  texts?: string[];
  outputName?: string;
}

/**
 * The OIP side of a call made of `rows` (OpenAI and Hugging Face routes): the
 * request built from the model's metadata. When no backend can serve the model
 * and the rows are texts that may fall back to Hugging Face, there is no
 * metadata, and the call carries what the fallback needs instead.
 */
export async function rowsCall(
  c: Context<AppEnv>,
  consumer: KeyClaims,
  model: string,
  rows: Rows,
): Promise<{ meta: ModelMetadata | undefined; call: RowsCall }> {
  const texts = typeof rows[0] === 'string' ? (rows as string[]) : undefined;
  const entry = offered(c.env, model);
  const meta = await modelMetadata(c, consumer, model).catch((err: unknown) => {
    if (fallbackFor(c.env, err, entry, texts, allowedRegions(c, consumer))) return undefined;
    throw err;
  });
  let call: RowsCall;
  if (meta) {
    const { request, bytes } = oipRequest(meta, rows);
    call = { oipBody: bytes, request, metadata: meta };
    if (meta.outputs[0]) call.outputName = meta.outputs[0].name;
  } else {
    // Only the fallback will see it: the texts as the one BYTES input, which is what the mesh meters.
    const request: InferRequest = { inputs: [{ name: 'text', shape: [texts!.length], datatype: 'BYTES', data: texts! }] };
    call = { oipBody: new Uint8Array(), request };
  }
  if (texts) call.texts = texts;
  return { meta, call };
}
