/**
 * What a cache hit answers (docs/api.md section 2.13): the cached OIP answer
 * as the consumer's route shapes it, and a fresh receipt signed for this
 * consumer and these bytes. The receipt says `cache: "hit"`, is priced at the
 * model's cache price for the units the mesh meters (as for a computed
 * answer), names no provider, backend, region or attestation, and names the
 * receipt of the computation it served (`origin`). It goes to settlement like
 * any receipt: the consumer is charged, no provider is paid.
 */

import type { Context } from 'hono';
import { HEADER_LENGTH_HEADER } from '../../shared/binary.ts';
import type { ReceiptClaims, Units } from '../../shared/jwt.ts';
import { meter, requestRows } from '../../shared/metering.ts';
import { sha256Hex } from '../../receipts/index.ts';
import type { AppEnv } from '../context.ts';
import { settings } from '../env.ts';
import type { SigningKeys } from '../keys.ts';
import { factsOf } from '../request-log.ts';
import { recordReceipt } from '../settlement/record.ts';
import type { CachedAnswer } from './answer-cache.ts';
import { checkAnswer } from './answer.ts';
import type { CatalogueModel } from './catalogue.ts';
import { priceOf } from './pricing.ts';
import { signReceipt } from './receipts.ts';
import type { InferenceCall } from './call.ts';

/** What the hit's receipt needs besides the call. */
export interface HitContext {
  entry: CatalogueModel;
  hit: CachedAnswer;
  keys: SigningKeys;
  verify: ReceiptClaims['verify'];
  pop: string;
  /** SHA-256 of the request body the consumer sent. */
  inputSha256: string;
  /** When the inference started on the edge (ms), for `latency_ms` and `server-timing`. */
  started: number;
}

/**
 * The consumer's response to a hit, receipt attached; undefined when the
 * entry's answer does not fit this request after all (then it is computed).
 */
export async function answerFromCache(c: Context<AppEnv>, call: InferenceCall, h: HitContext): Promise<Response | undefined> {
  const { entry, hit } = h;
  let body = hit.oip;
  let contentType = hit.headerLength === undefined ? 'application/json' : 'application/octet-stream';
  let binaryHeader = hit.headerLength;
  let units: Units;
  if (call.shape) {
    // The OpenAI and Hugging Face routes shape the parsed answer, checked as a backend's is.
    const answer = checkAnswer(
      hit.oip,
      {
        model: call.model,
        rows: requestRows(call.request.inputs),
        ...(call.request.outputs?.length ? { requested: call.request.outputs.map((o) => o.name) } : {}),
        ...(call.metadata ? { metadata: call.metadata } : {}),
      },
      hit.headerLength,
    );
    if (typeof answer === 'string') {
      console.warn(`answer cache: the cached answer of ${call.model} does not fit this request (${answer}); computing it`);
      return undefined;
    }
    units = meter(entry, call.request.inputs, answer.outputs);
    const shaped = call.shape(answer, units);
    body = typeof shaped.body === 'string' ? new TextEncoder().encode(shaped.body) : shaped.body;
    contentType = shaped.contentType;
    binaryHeader = undefined;
  } else {
    units = meter(entry, call.request.inputs, hit.shapes.map((shape) => ({ shape })));
  }
  const outputSha256 = await sha256Hex(body);
  const total = Date.now() - h.started;
  const jti = crypto.randomUUID();
  const facts = factsOf(c);
  facts.cache = 'hit';
  facts.receipt = jti;
  const receipt = await signReceipt(h.keys, {
    iss: settings(c.env).issuer,
    sub: call.consumer.sub,
    jti,
    iat: Math.floor(Date.now() / 1000),
    model: call.model,
    model_version: hit.version,
    pop: h.pop,
    units,
    amount: priceOf(entry.cache!.price, units),
    input_sha256: h.inputSha256,
    output_sha256: outputSha256,
    latency_ms: total,
    cache: 'hit',
    verify: h.verify,
    origin: hit.origin,
  });
  // To settlement, after the response has left (a turn of the event loop first, as run.ts does).
  c.executionCtx.waitUntil(scheduler.wait(0).then(() => recordReceipt(c.env, jti, receipt)));
  return new Response(body, {
    status: 200,
    headers: {
      'content-type': contentType,
      ...(binaryHeader !== undefined ? { [HEADER_LENGTH_HEADER]: binaryHeader } : {}),
      'x-mesh-receipt': receipt,
      'x-mesh-cache': 'hit',
      'server-timing': `edge;dur=${total}, backend;dur=0, total;dur=${total}`,
    },
  });
}
