/** Open Inference Protocol v2 routes for consumers (docs/api.md section 2): infer and model metadata. */

import { Hono, type Context } from 'hono';
import { HEADER_LENGTH_HEADER, headerLength, parseInferBody, textsOf } from '../../shared/binary.ts';
import type { InferInput } from '../../shared/protocol.ts';
import { authenticate } from '../auth.ts';
import type { AppEnv } from '../context.ts';
import { readBody, runInference } from '../inference/run.ts';
import { allowedRegions } from '../inference/candidates.ts';
import { modelMetadata } from '../inference/metadata.ts';
import { offered } from '../inference/catalogue.ts';
import { fallbackFor } from '../inference/fallback.ts';

async function infer(c: Context<AppEnv>): Promise<Response> {
  const consumer = await authenticate(c, ['consumer']);
  const body = await readBody(c);
  // Malformed tensors are refused here, before any backend is bothered; binary tensor data is only measured, never decoded.
  const headerBytes = headerLength(c.req.header(HEADER_LENGTH_HEADER), body.byteLength);
  const request = parseInferBody(body, headerBytes);
  // A request whose one input is text may fall back to Hugging Face when no backend can serve it.
  const only = request.inputs.length === 1 ? request.inputs[0]! : undefined;
  const texts = only?.datatype === 'BYTES' ? textsIfAny(only) : undefined;
  const model = c.req.param('model')!;
  const version = c.req.param('version');
  // Answers are checked against the model's metadata (kept a minute per isolate); none only when the request may fall back.
  const metadata = await modelMetadata(c, consumer, model, version).catch((err: unknown) => {
    if (fallbackFor(c.env, err, offered(c.env, model), texts, allowedRegions(c, consumer))) return undefined;
    throw err;
  });
  return runInference(c, {
    consumer,
    model,
    version,
    oipBody: body,
    ...(headerBytes !== undefined ? { headerLength: headerBytes } : {}),
    request,
    ...(metadata ? { metadata } : {}),
    ...(texts ? { texts } : {}),
  });
}

/** A BYTES input's elements as text, or undefined when they are not UTF-8 (an image, say): only text may fall back. */
function textsIfAny(input: InferInput): string[] | undefined {
  try {
    return textsOf(input);
  } catch {
    return undefined;
  }
}

async function metadata(c: Context<AppEnv>): Promise<Response> {
  const consumer = await authenticate(c, ['consumer']);
  return c.json(await modelMetadata(c, consumer, c.req.param('model')!, c.req.param('version')));
}

export const oipRoutes = new Hono<AppEnv>()
  .post('/v2/models/:model/infer', infer)
  .post('/v2/models/:model/versions/:version/infer', infer)
  .get('/v2/models/:model', metadata)
  .get('/v2/models/:model/versions/:version', metadata);
