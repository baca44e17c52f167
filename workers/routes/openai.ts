/**
 * OpenAI-compatible routes (docs/api.md section 2.6): `POST /v1/embeddings`,
 * `GET /v1/models` and `GET /v1/models/{model}`, so OpenAI SDKs work with
 * `baseURL = <edge>/v1`. The receipt covers the OpenAI-shaped body the
 * consumer receives; errors carry the field at fault as `param`
 * (workers/errors.ts shapes them as OpenAI's).
 */

import { Hono, type Context } from 'hono';
import { MeshError } from '../../shared/errors.ts';
import { parseJson } from '../../shared/protocol.ts';
import { authenticate } from '../auth.ts';
import type { AppEnv } from '../context.ts';
import { throwIfRejected } from '../errors.ts';
import { readBody, runInference } from '../inference/run.ts';
import { allowedRegions } from '../inference/candidates.ts';
import { rowsCall } from '../inference/metadata.ts';
import { settings } from '../env.ts';
import { getSnapshot } from '../directory/snapshot.ts';
import { isRows, outputRows, type Rows } from '../inference/translate.ts';
import { catalogue } from '../inference/catalogue.ts';
import type { KeyClaims } from '../../shared/jwt.ts';

const EMBEDDING_FIELDS = new Set(['model', 'input', 'encoding_format', 'dimensions', 'user']);
const MAX_INPUTS = 2048;

const invalid = (message: string, param?: string) => new MeshError('invalid_request', message, param === undefined ? {} : { param });

/** A model as `GET /v1/models` lists it. */
function modelEntry(id: string) {
  return { id, object: 'model', created: 0, owned_by: 'edge-inference-mesh' };
}

/** The models the operator offers that some ready backend has warm in the regions this request may use, sorted. */
async function listed(c: Context<AppEnv>, consumer: KeyClaims): Promise<string[]> {
  const regions = allowedRegions(c, consumer);
  const snapshot = await getSnapshot(c.env, c.executionCtx, settings(c.env).snapshotRefreshMs);
  const offered = catalogue(c.env);
  const names = new Set<string>();
  for (const b of snapshot.backends) {
    if (!b.ready || (regions && !regions.has(b.region))) continue;
    for (const m of b.models) if (m.warm && offered.has(m.name)) names.add(m.name);
  }
  return [...names].sort();
}

function base64Floats(row: number[]): string {
  const bytes = new Uint8Array(new Float32Array(row).buffer);
  let bin = '';
  for (let i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]!);
  return btoa(bin);
}

export const openaiRoutes = new Hono<AppEnv>()
  .post('/v1/embeddings', async (c) => {
    const consumer = await authenticate(c, ['consumer']);
    const consumerBody = await readBody(c);
    const req = parseJson(new TextDecoder().decode(consumerBody)) as Record<string, unknown>;
    if (typeof req !== 'object' || req === null || Array.isArray(req)) throw invalid('The body must be a JSON object.');
    for (const key of Object.keys(req)) {
      if (!EMBEDDING_FIELDS.has(key)) throw invalid(`Unknown field "${key}".`, key);
    }
    const { model, input, encoding_format: format = 'float', dimensions } = req;
    if (typeof model !== 'string' || model.length === 0) throw invalid('"model" must be a model name (see GET /v1/models).', 'model');
    if (format !== 'float' && format !== 'base64') throw invalid('"encoding_format" must be "float" or "base64".', 'encoding_format');
    const rows: unknown =
      typeof input === 'string' ? [input] : Array.isArray(input) && input.length > 0 && typeof input[0] === 'number' ? [input] : input;
    if (!isRows(rows)) {
      throw invalid('"input" must be a string, an array of strings, an array of token ids, or an array of token-id arrays (none empty).', 'input');
    }
    if (rows.length > MAX_INPUTS) throw invalid(`"input" may hold at most ${MAX_INPUTS} items.`, 'input');
    const { meta, call } = await rowsCall(c, consumer, model, rows as Rows);
    const width = meta?.outputs[0]?.shape.at(-1);
    if (dimensions !== undefined && meta && dimensions !== width) {
      throw invalid(`"${model}" returns ${width}-dimensional embeddings; "dimensions" cannot change that.`, 'dimensions');
    }
    return runInference(c, {
      consumer,
      model,
      consumerBody,
      ...call,
      shape: (answer, units) => ({
        contentType: 'application/json',
        body: JSON.stringify({
          object: 'list',
          data: outputRows(answer).map((row, index) => ({
            object: 'embedding',
            index,
            embedding: format === 'base64' ? base64Floats(row) : row,
          })),
          model,
          usage: { prompt_tokens: units.input, total_tokens: units.input },
        }),
      }),
    }).then(throwIfRejected);
  })
  .get('/v1/models', async (c) => {
    const consumer = await authenticate(c, ['consumer']);
    return c.json({ object: 'list', data: (await listed(c, consumer)).map(modelEntry) });
  })
  .get('/v1/models/:model', async (c) => {
    const consumer = await authenticate(c, ['consumer']);
    const model = c.req.param('model');
    if (!(await listed(c, consumer)).includes(model)) {
      throw new MeshError('model_not_found', `The model "${model.slice(0, 128)}" is not served here now (see GET /v1/models).`);
    }
    return c.json(modelEntry(model));
  });
