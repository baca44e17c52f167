/**
 * The last resort (docs/design.md, "The routing brain"; docs/api.md section
 * 2.11): when no backend in the mesh can serve a request, a Hugging Face
 * inference endpoint the operator configured (`HF_ENDPOINT_URL` var,
 * `HF_TOKEN` secret), for the models the operator's catalogue gives a
 * fallback (mesh model -> upstream model id and price) and only where the
 * request's residency and region pin allow. Called with one `fetch` that
 * sends what `@huggingface/inference` sends for feature-extraction to an
 * `endpointUrl` (the package stays the client the compatibility tests use; in
 * the Worker it was most of the bundle). Only text embedding
 * (feature-extraction) falls back: the answer is reshaped into the OIP
 * response the mesh's own backends would give, so every consumer route and
 * the receipt work unchanged.
 */

import { MeshError } from '../../shared/errors.ts';
import type { InferResponse } from '../../shared/protocol.ts';
import type { Env } from '../env.ts';
import { readWithin } from '../body.ts';
import type { CatalogueModel, Fallback } from './catalogue.ts';

export interface FallbackAnswer {
  /** OIP v2 response bytes, as a mesh backend would have sent them. */
  body: Uint8Array;
  /** The same, parsed. */
  answer: InferResponse;
  /** Host of the endpoint, named as the receipt's `backend`. */
  endpoint: string;
  ms: number;
}

/** True when the operator configured a Hugging Face endpoint. */
export function fallbackConfigured(env: Env): boolean {
  return Boolean(env.HF_ENDPOINT_URL);
}

const FALLBACK_CODES = new Set(['no_capacity', 'model_not_found', 'backend_failed', 'backend_timeout']);

/**
 * The fallback for a request that failed with `err`, when it may take one: `err`
 * means no mesh backend can serve; the request is text; the operator configured
 * an endpoint and gave `model` a fallback; and, when the request may only be
 * served in `regions` (residency or pin), the fallback's region is one of them.
 */
export function fallbackFor(
  env: Env,
  err: unknown,
  model: CatalogueModel,
  texts: readonly string[] | undefined,
  regions: ReadonlySet<string> | undefined,
): Fallback | undefined {
  const f = model.fallback;
  if (!f || texts === undefined || !fallbackConfigured(env) || !(err instanceof MeshError) || !FALLBACK_CODES.has(err.code)) return undefined;
  if (regions && (f.region === undefined || !regions.has(f.region))) return undefined;
  return f;
}


/** The largest answer read from the endpoint, bytes; a larger one is refused (`backend_failed`) unparsed. */
export const HF_MAX_ANSWER_BYTES = 16 * 1024 * 1024;


function rows(output: unknown, n: number): number[][] {
  const isRow = (v: unknown): v is number[] => Array.isArray(v) && v.every((x) => typeof x === 'number');
  if (n === 1 && isRow(output)) return [output];
  if (Array.isArray(output) && output.length === n && output.every(isRow)) return output;
  throw new MeshError('backend_failed', 'The Hugging Face endpoint answered in a shape that is not one embedding per input.');
}

/** The client's own check of a feature-extraction answer: nested arrays of numbers, at most 4 deep. */
function isNumberArray(value: unknown[], maxDepth = 3, depth = 0): boolean {
  if (depth > maxDepth) return false;
  if (value.every((x) => Array.isArray(x))) return value.every((x) => isNumberArray(x as unknown[], maxDepth, depth + 1));
  return value.every((x) => typeof x === 'number');
}

/** Resolves after `ms`, or rejects as soon as `signal` aborts. */
function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * Feature extraction on the endpoint, as `@huggingface/inference` (4.x) does it
 * for `new InferenceClient(token, { endpointUrl }).featureExtraction({ inputs })`:
 * POST `{ inputs }` as JSON with the token as a bearer (none without a token);
 * a 503 (the endpoint scaling up) is retried after a short, growing pause
 * (the client retries at once) until `signal` ends it;
 * any other non-2xx, a non-JSON answer or one that is not nested arrays of
 * numbers is an error. Throws on every failure; the caller maps it.
 */
async function featureExtraction(url: string, token: string | undefined, inputs: string | string[], signal: AbortSignal): Promise<unknown> {
  const headers: Record<string, string> = { 'content-type': 'application/json', 'user-agent': 'edge-inference-mesh' };
  if (token) headers.authorization = `Bearer ${token}`;
  const body = JSON.stringify({ inputs });
  let res = await fetch(url, { method: 'POST', headers, body, signal });
  for (let retry = 1; res.status === 503; retry++) {
    await res.body?.cancel();
    // The client retries at once; a short, growing pause spares an endpoint that is scaling up.
    await pause(Math.min(1000, 100 * retry), signal);
    res = await fetch(url, { method: 'POST', headers, body, signal });
  }
  if (!res.ok) {
    await res.body?.cancel();
    throw new Error(`The Hugging Face endpoint answered HTTP ${res.status}.`);
  }
  if (!res.headers.get('content-type')?.startsWith('application/json')) {
    await res.body?.cancel();
    throw new Error(`The Hugging Face endpoint answered ${res.headers.get('content-type') ?? 'no content type'}, not JSON.`);
  }
  const bytes = await readWithin(res, HF_MAX_ANSWER_BYTES);
  if (!bytes) throw new Error(`The Hugging Face endpoint's answer is larger than ${HF_MAX_ANSWER_BYTES} bytes.`);
  const output: unknown = JSON.parse(new TextDecoder().decode(bytes));
  if (!Array.isArray(output) || !isNumberArray(output)) {
    throw new Error('The Hugging Face endpoint answered JSON that is not nested arrays of numbers.');
  }
  return output;
}

/** The endpoint URL for `upstream`: `HF_ENDPOINT_URL` with `{model}` replaced by the upstream model id. */
export function endpointFor(env: Env, upstream: string): string {
  return env.HF_ENDPOINT_URL.replaceAll('{model}', upstream);
}

/**
 * Embeds `texts` with the upstream model `upstream` on the configured endpoint;
 * the answer as OIP bytes with output `outputName`, named as mesh model `model`.
 */
export async function embedOnHuggingFace(
  env: Env,
  model: string,
  upstream: string,
  texts: string[],
  outputName: string,
  timeoutMs: number,
): Promise<FallbackAnswer> {
  const endpointUrl = endpointFor(env, upstream);
  const started = Date.now();
  let output: unknown;
  try {
    output = await featureExtraction(endpointUrl, env.HF_TOKEN, texts.length === 1 ? texts[0]! : texts, AbortSignal.timeout(timeoutMs));
  } catch (cause) {
    throw new MeshError('backend_failed', `No mesh backend could serve "${model}" and the Hugging Face fallback failed too.`, { cause });
  }
  const embeddings = rows(output, texts.length);
  const width = embeddings[0]?.length ?? 0;
  const response: InferResponse = {
    model_name: model,
    model_version: 'huggingface',
    outputs: [{ name: outputName, datatype: 'FP32', shape: [embeddings.length, width], data: embeddings.flat() }],
  };
  return {
    body: new TextEncoder().encode(JSON.stringify(response)),
    answer: response,
    endpoint: new URL(endpointUrl).host,
    ms: Date.now() - started,
  };
}
