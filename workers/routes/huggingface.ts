/**
 * Hugging Face Inference-compatible routes (docs/api.md section 2.7):
 * `POST /models/{model}` and `POST /models/{model}/pipeline/{task}` with
 * `{ "inputs": ... }`, so `@huggingface/inference` works with
 * `endpointUrl: <edge>/models/<model>`. Tasks: feature-extraction (the
 * model's first output, one row per input, with Hugging Face's parameters
 * where they mean something here) and sentence-similarity (cosine
 * similarity of each sentence to the source), named by the path or, on
 * `/models/{model}`, told apart by the shape of `inputs`; and image-to-text
 * (the body is a PNG or JPEG file, sent on to the model's BYTES input in the
 * binary tensor extension; named by the path, or by an image or
 * octet-stream content type). A request the mesh has no capacity for waits
 * for it, up to a bound (`x-wait-for-model`), instead of answering 503 at once.
 */

import { Hono, type Context } from 'hono';
import { isMeshError, MeshError } from '../../shared/errors.ts';
import { parseJson } from '../../shared/protocol.ts';
import { authenticate } from '../auth.ts';
import type { AppEnv } from '../context.ts';
import { throwIfRejected } from '../errors.ts';
import { readBody, runInference } from '../inference/run.ts';
import { modelMetadata, rowsCall } from '../inference/metadata.ts';
import { answerText, imageRequest, isRows, outputRows, type Rows } from '../inference/translate.ts';
import type { KeyClaims } from '../../shared/jwt.ts';

const TASKS = new Set(['feature-extraction', 'sentence-similarity', 'image-to-text']);
/** Content types of a body that is an image file, not JSON. */
const IMAGE_BODY = /^(image\/[a-z0-9.+-]+|application\/octet-stream)$/;
/** Hugging Face's feature-extraction parameters: top-level (as `@huggingface/inference` sends them) or under `parameters`. */
const FEATURE_PARAMETERS = ['normalize', 'truncate', 'truncation_direction', 'prompt_name'] as const;
const FIELDS = new Set<string>(['inputs', 'parameters', 'options', ...FEATURE_PARAMETERS]);
const OPTIONS = new Set(['wait_for_model', 'use_cache']);

/** How long a request waits for capacity: by default, and with `x-wait-for-model: true` (or `options.wait_for_model`). */
export const WAIT_DEFAULT_MS = 5_000;
export const WAIT_FOR_MODEL_MS = 30_000;
/** How often a waiting request looks again. */
const WAIT_POLL_MS = 1_000;

/** A JSON (text or vector) call, as read from the body: what to run and how to shape the answer. */
export interface JsonCall {
  task: 'feature-extraction' | 'sentence-similarity';
  rows: Rows;
  /** One input, not a list: the answer is one vector. */
  single: boolean;
  /** feature-extraction's `normalize`: each answer row scaled to unit L2 norm. */
  normalize: boolean;
  /** `options.wait_for_model`, when given. */
  waitForModel?: boolean;
  /** `options.use_cache: false`: a fresh answer, not one from the answer cache (docs/api.md section 2.13). */
  noCache?: boolean;
}

const invalid = (message: string) => new MeshError('invalid_request', message);

/** `v` unless it is absent or null. */
const given = (v: unknown) => (v === undefined || v === null ? undefined : v);

/**
 * Reads a JSON body of the Hugging Face routes: the task (`pathTask`, or the
 * shape of `inputs`), the rows, and the parameters, each checked; a 400 that
 * names the field or parameter otherwise.
 */
export function readJsonCall(req: unknown, pathTask: string | undefined): JsonCall {
  if (typeof req !== 'object' || req === null || Array.isArray(req)) throw invalid('The body must be a JSON object with "inputs".');
  const body = req as Record<string, unknown>;
  for (const key of Object.keys(body)) if (!FIELDS.has(key)) throw invalid(`Unknown field "${key}".`);
  // With `endpointUrl` the client posts every task to the same URL: the inputs' shape tells the task.
  const looksLikeSimilarity = typeof body.inputs === 'object' && body.inputs !== null && 'source_sentence' in body.inputs;
  const task = pathTask ?? (looksLikeSimilarity ? 'sentence-similarity' : 'feature-extraction');
  if (!TASKS.has(task)) throw invalid(`Task "${task}" is not served; use ${[...TASKS].join(' or ')}.`);
  if (task === 'image-to-text') throw invalid('image-to-text takes the image file as the body (image/png, image/jpeg or application/octet-stream), not JSON.');

  const parameters = given(body.parameters) ?? {};
  if (typeof parameters !== 'object' || Array.isArray(parameters)) throw invalid('"parameters" must be an object.');
  const params: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(parameters)) {
    if (!(FEATURE_PARAMETERS as readonly string[]).includes(key)) {
      throw invalid(`Unknown parameter "${key}"; feature-extraction takes ${FEATURE_PARAMETERS.join(', ')}.`);
    }
    params[key] = value;
  }
  for (const key of FEATURE_PARAMETERS) {
    if (!(key in body)) continue;
    if (key in params) throw invalid(`"${key}" is given both at the top level and in "parameters"; send it once.`);
    params[key] = body[key];
  }
  const named = Object.keys(params).filter((k) => given(params[k]) !== undefined);
  if (task === 'sentence-similarity' && named.length > 0) throw invalid(`sentence-similarity takes no parameters ("${named[0]}" was given).`);

  const normalize = given(params.normalize) ?? false;
  if (typeof normalize !== 'boolean') throw invalid('"normalize" must be true or false.');
  const truncate = given(params.truncate) ?? true;
  if (typeof truncate !== 'boolean') throw invalid('"truncate" must be true or false.');
  if (!truncate) {
    throw invalid('"truncate": false is not supported: the mesh always truncates each text to the model\'s max_sequence_length tokens, keeping its start. Send true or leave it out.');
  }
  const direction = given(params.truncation_direction);
  if (direction !== undefined) {
    if (typeof direction !== 'string' || !['left', 'right'].includes(direction.toLowerCase())) {
      throw invalid('"truncation_direction" must be "left" or "right".');
    }
    if (direction.toLowerCase() === 'left') {
      throw invalid('"truncation_direction": "left" is not supported: texts are truncated on the right (their start is kept).');
    }
  }
  if (given(params.prompt_name) !== undefined) {
    throw invalid('"prompt_name" is not supported: the models of this mesh have no prompts.');
  }

  const options = given(body.options) ?? {};
  if (typeof options !== 'object' || Array.isArray(options)) throw invalid('"options" must be an object.');
  for (const [key, value] of Object.entries(options)) {
    if (!OPTIONS.has(key)) throw invalid(`Unknown option "${key}"; the options are ${[...OPTIONS].join(' and ')}.`);
    if (given(value) !== undefined && typeof value !== 'boolean') throw invalid(`"options.${key}" must be true or false.`);
  }
  const waitForModel = given((options as Record<string, unknown>).wait_for_model) as boolean | undefined;
  const noCache = given((options as Record<string, unknown>).use_cache) === false;

  let rows: unknown;
  let single = false;
  const inputs = body.inputs;
  if (task === 'sentence-similarity') {
    const { source_sentence: source, sentences } = (inputs ?? {}) as Record<string, unknown>;
    if (typeof source !== 'string' || !Array.isArray(sentences) || !sentences.every((s) => typeof s === 'string')) {
      throw invalid('"inputs" must be { "source_sentence": string, "sentences": string[] }.');
    }
    rows = [source, ...sentences];
  } else if (typeof inputs === 'string' || (Array.isArray(inputs) && typeof inputs[0] === 'number')) {
    rows = [inputs];
    single = true;
  } else {
    rows = inputs;
  }
  if (!isRows(rows)) {
    throw invalid('"inputs" must be a string, a list of strings, a list of numbers, or a list of number lists.');
  }
  return { task: task as JsonCall['task'], rows, single, normalize, ...(waitForModel !== undefined ? { waitForModel } : {}), ...(noCache ? { noCache } : {}) };
}

/**
 * How long this request may wait for capacity, ms: `x-wait-for-model`
 * (`true`/`1`, or `false`/`0`) when sent, else `options.wait_for_model`, else
 * the default.
 */
export function waitMs(header: string | undefined, option: boolean | undefined): number {
  if (header !== undefined) {
    const v = header.trim().toLowerCase();
    if (v === 'true' || v === '1') return WAIT_FOR_MODEL_MS;
    if (v === 'false' || v === '0') return 0;
    throw invalid('x-wait-for-model must be true or false.');
  }
  if (option === undefined) return WAIT_DEFAULT_MS;
  return option ? WAIT_FOR_MODEL_MS : 0;
}

/** `row` scaled to unit L2 norm (a zero row stays zero). */
export function l2normalize(row: number[]): number[] {
  let sum = 0;
  for (const x of row) sum += x * x;
  if (sum === 0) return row;
  const norm = Math.sqrt(sum);
  return row.map((x) => x / norm);
}

function cosine(a: number[], b: number[]): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i]! * b[i]!;
    na += a[i]! * a[i]!;
    nb += b[i]! * b[i]!;
  }
  return na === 0 || nb === 0 ? 0 : dot / Math.sqrt(na * nb);
}

/**
 * Runs `serve` until it stops answering 503 `no_capacity` or `budgetMs` has
 * passed, looking again every WAIT_POLL_MS; then that `no_capacity` goes to
 * the client (as 429 with `retry-after` on these routes, workers/errors.ts).
 */
async function withCapacity(budgetMs: number, serve: () => Promise<Response>): Promise<Response> {
  const deadline = Date.now() + budgetMs;
  for (;;) {
    try {
      return await serve();
    } catch (err) {
      if (!isMeshError(err) || err.code !== 'no_capacity') throw err;
      const left = deadline - Date.now();
      if (left <= 0) {
        if (budgetMs === 0) throw err;
        throw new MeshError('no_capacity', `${err.message} Waited ${budgetMs / 1000} s for capacity.`, { retryAfter: err.retryAfter ?? 1 });
      }
      await scheduler.wait(Math.min(WAIT_POLL_MS, left));
    }
  }
}

/** image-to-text: the body is the image file; the answer `{ "generated_text" }`, the lines read joined by newlines. */
async function imageToText(c: Context<AppEnv>, consumer: KeyClaims, model: string, consumerBody: Uint8Array): Promise<Response> {
  const meta = await modelMetadata(c, consumer, model);
  const { request, bytes, headerLength } = imageRequest(meta, consumerBody);
  return runInference(c, {
    consumer,
    model,
    oipBody: bytes,
    headerLength,
    request,
    metadata: meta,
    consumerBody,
    shape: (answer) => ({ contentType: 'application/json', body: JSON.stringify({ generated_text: answerText(answer) }) }),
  }).then(throwIfRejected);
}

async function jsonCall(c: Context<AppEnv>, consumer: KeyClaims, model: string, consumerBody: Uint8Array, call: JsonCall): Promise<Response> {
  const { call: oip } = await rowsCall(c, consumer, model, call.rows);
  return runInference(c, {
    consumer,
    model,
    consumerBody,
    ...oip,
    ...(call.noCache ? { noCache: true } : {}),
    shape: (answer) => {
      let out = outputRows(answer);
      if (call.normalize) out = out.map(l2normalize);
      const result = call.task === 'sentence-similarity' ? out.slice(1).map((row) => cosine(out[0]!, row)) : call.single ? out[0] : out;
      return { contentType: 'application/json', body: JSON.stringify(result) };
    },
  }).then(throwIfRejected);
}

async function run(c: Context<AppEnv>): Promise<Response> {
  const consumer = await authenticate(c, ['consumer']);
  const model = c.req.param('model')!;
  const consumerBody = await readBody(c);
  const contentType = (c.req.header('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
  const pathTask = c.req.param('task');
  const header = c.req.header('x-wait-for-model');
  if (pathTask === 'image-to-text' || (pathTask === undefined && IMAGE_BODY.test(contentType))) {
    return withCapacity(waitMs(header, undefined), () => imageToText(c, consumer, model, consumerBody));
  }
  const call = readJsonCall(parseJson(new TextDecoder().decode(consumerBody)), pathTask);
  return withCapacity(waitMs(header, call.waitForModel), () => jsonCall(c, consumer, model, consumerBody, call));
}

export const huggingfaceRoutes = new Hono<AppEnv>().post('/models/:model', run).post('/models/:model/pipeline/:task', run);
