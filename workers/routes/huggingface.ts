/**
 * Hugging Face Inference-compatible routes (docs/api.md section 2):
 * `POST /models/{model}` and `POST /models/{model}/pipeline/{task}` with
 * `{ "inputs": ... }`, so `@huggingface/inference` works with
 * `endpointUrl: <edge>/models/<model>`. Tasks: feature-extraction (the
 * model's first output, one row per input) and sentence-similarity (cosine
 * similarity of each sentence to the source), named by the path or, on
 * `/models/{model}`, told apart by the shape of `inputs`; and image-to-text
 * (the body is a PNG or JPEG file, sent on to the model's BYTES input in the
 * binary tensor extension; named by the path, or by an image or
 * octet-stream content type).
 */

import { Hono, type Context } from 'hono';
import { MeshError } from '../../shared/errors.ts';
import { parseJson } from '../../shared/protocol.ts';
import { authenticate } from '../auth.ts';
import type { AppEnv } from '../context.ts';
import { readBody, runInference } from '../inference/run.ts';
import { modelMetadata, rowsCall } from '../inference/metadata.ts';
import { answerText, imageRequest, isRows, outputRows, type Rows } from '../inference/translate.ts';
import type { KeyClaims } from '../../shared/jwt.ts';

const TASKS = new Set(['feature-extraction', 'sentence-similarity', 'image-to-text']);
/** Content types of a body that is an image file, not JSON. */
const IMAGE_BODY = /^(image\/[a-z0-9.+-]+|application\/octet-stream)$/;
const FIELDS = new Set(['inputs', 'parameters', 'options']);

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
  });
}

async function run(c: Context<AppEnv>): Promise<Response> {
  const consumer = await authenticate(c, ['consumer']);
  const model = c.req.param('model')!;
  const consumerBody = await readBody(c);
  const contentType = (c.req.header('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
  const pathTask = c.req.param('task');
  if (pathTask === 'image-to-text' || (pathTask === undefined && IMAGE_BODY.test(contentType))) return imageToText(c, consumer, model, consumerBody);
  const req = parseJson(new TextDecoder().decode(consumerBody)) as Record<string, unknown>;
  if (typeof req !== 'object' || req === null || Array.isArray(req)) throw new MeshError('invalid_request', 'The body must be a JSON object with "inputs".');
  for (const key of Object.keys(req)) if (!FIELDS.has(key)) throw new MeshError('invalid_request', `Unknown field "${key}".`);
  // With `endpointUrl` the client posts every task to the same URL: the inputs' shape tells the task.
  const looksLikeSimilarity = typeof req.inputs === 'object' && req.inputs !== null && 'source_sentence' in req.inputs;
  const task = pathTask ?? (looksLikeSimilarity ? 'sentence-similarity' : 'feature-extraction');
  if (!TASKS.has(task)) throw new MeshError('invalid_request', `Task "${task}" is not served; use ${[...TASKS].join(' or ')}.`);

  let rows: unknown;
  let single = false;
  let similarity = false;
  const inputs = req.inputs;
  if (task === 'sentence-similarity') {
    const { source_sentence: source, sentences } = (inputs ?? {}) as Record<string, unknown>;
    if (typeof source !== 'string' || !Array.isArray(sentences) || !sentences.every((s) => typeof s === 'string')) {
      throw new MeshError('invalid_request', '"inputs" must be { "source_sentence": string, "sentences": string[] }.');
    }
    rows = [source, ...sentences];
    similarity = true;
  } else if (typeof inputs === 'string' || (Array.isArray(inputs) && typeof inputs[0] === 'number')) {
    rows = [inputs];
    single = true;
  } else {
    rows = inputs;
  }
  if (!isRows(rows)) {
    throw new MeshError('invalid_request', '"inputs" must be a string, a list of strings, a list of numbers, or a list of number lists.');
  }
  const { call } = await rowsCall(c, consumer, model, rows as Rows);
  return runInference(c, {
    consumer,
    model,
    consumerBody,
    ...call,
    shape: (answer) => {
      const out = outputRows(answer);
      const result = similarity ? out.slice(1).map((row) => cosine(out[0]!, row)) : single ? out[0] : out;
      return { contentType: 'application/json', body: JSON.stringify(result) };
    },
  });
}

export const huggingfaceRoutes = new Hono<AppEnv>().post('/models/:model', run).post('/models/:model/pipeline/:task', run);
