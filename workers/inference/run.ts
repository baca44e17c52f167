/**
 * One consumer inference, whatever API it came in by: pick candidates from the
 * isolate's snapshot, dispatch to the best, move on to the next when a backend
 * fails, and answer with exactly one signed receipt. The OIP, OpenAI and
 * Hugging Face routes only translate requests and responses around this.
 */

import type { Context } from 'hono';
import { HEADER_LENGTH_HEADER } from '../../shared/binary.ts';
import { MeshError } from '../../shared/errors.ts';
import { sha256Hex } from '../../receipts/index.ts';
import { priceOf } from './pricing.ts';
import type { KeyClaims, ReceiptClaims, Units } from '../../shared/jwt.ts';
import { meter, requestRows } from '../../shared/metering.ts';
import type { InferRequest, InferResponse, ModelMetadata } from '../../shared/protocol.ts';
import type { AppEnv, RequestFacts } from '../context.ts';
import { factsOf } from '../request-log.ts';
import { readWithin } from '../body.ts';
import { offered } from './catalogue.ts';
import { sampleRate } from '../verification/sampling.ts';
import { verifyAfterAnswer, type CheckContext } from '../verification/reexecute.ts';
import { runPair } from '../verification/redundant.ts';
import type { Execution } from '../verification/disputes.ts';
import { announcedVersion, dispatch, type DispatchRequest, type DispatchResult } from './dispatch.ts';
import { embedOnHuggingFace, fallbackFor } from './fallback.ts';
import { planCache, storeAnswer } from './answer-cache.ts';
import { answerFromCache } from './cache-hit.ts';
import type { InferenceCall } from './call.ts';
import { allowedRegions, candidatesFor } from './candidates.ts';
import { forgetMetadata } from './metadata.ts';
import { settings } from '../env.ts';
import { signingKeys } from '../keys.ts';
import type { BackendEntry } from '../directory/backend.ts';
import { flushRtt, noteRtt } from '../directory/rtt-report.ts';
import { scheduleProbes } from '../directory/probes.ts';
import { resolvePop, runtimeColo } from '../geo/pop.ts';
import { signReceipt } from './receipts.ts';
import { admit, settle } from '../account/admission.ts';
import { recordReceipt } from '../settlement/record.ts';
import { AttemptPlan, type Attempt } from '../routing/attempts.ts';
import { isolateRouting } from '../routing/isolate.ts';
import { noteService, serviceExchangeTask } from './service-exchange.ts';
import type { Scored } from '../routing/score.ts';
import type { Snapshot } from '../directory/snapshot.ts';

type Verify = ReceiptClaims['verify'];

export type { InferenceCall } from './call.ts';

/** Reads the request body as a stream within MAX_BODY_BYTES (413 as soon as it passes it). */
export async function readBody(c: Context<AppEnv>): Promise<Uint8Array> {
  const max = settings(c.env).maxBodyBytes;
  const body = await readWithin(c.req.raw, max);
  if (!body) throw new MeshError('body_too_large', `The request body is larger than the ${max}-byte limit.`);
  return body;
}

/**
 * The `x-mesh-verify` mode of the request (default `sampled`, docs/api.md
 * section 6): `none`, no re-execution; `sampled`, a sample re-executed after
 * the answer; `redundant`, two providers compute and must agree.
 */
function verifyMode(c: Context<AppEnv>): Verify {
  const verify = c.req.header('x-mesh-verify') ?? 'sampled';
  if (verify !== 'none' && verify !== 'sampled' && verify !== 'redundant') {
    throw new MeshError('invalid_request', 'x-mesh-verify must be none, sampled or redundant.');
  }
  return verify;
}

/** A backend's 4xx verdict on the request, passed to the consumer as its well-formed error. */
function rejection(result: Extract<DispatchResult, { kind: 'rejected' }>, backend: BackendEntry, facts: RequestFacts): Response {
  facts.error = result.code;
  facts.region = backend.region;
  facts.backend = backend.id;
  facts.provider = backend.provider;
  return new Response(JSON.stringify({ error: { code: result.code, message: result.message } }), {
    status: result.status,
    headers: { 'content-type': 'application/json' },
  });
}

/** Who computed an answer, for the receipt and the response headers. */
interface Served {
  /** OIP v2 response bytes. */
  oip: Uint8Array;
  /** Their JSON header's length, when they are in the binary tensor extension. */
  headerLength?: string;
  /** The same, parsed and checked. */
  answer: InferResponse;
  /** SHA-256 of `oip`, when already known. */
  oipSha256?: string;
  units: Units;
  /** What the consumer pays, micro-USD. */
  amount: number;
  /** The Hugging Face model that answered, for a fallback. */
  upstreamModel?: string;
  provider: string;
  backend: string;
  region: string;
  /** The answering backend's proof of location, as its directory entry has it (none for the fallback). */
  location?: ReceiptClaims['location'];
  modelVersion: string;
  attestation?: string;
  /**
   * The backend that answered, its region's size (for ejection), and what a
   * re-execution of its answer needs: to settle its attestation and, when
   * `sample`, verify the answer elsewhere after the answer has left.
   */
  answeredBy?: { entry: BackendEntry; regionSize: number; check: CheckContext; sample: boolean };
  /** Redundant mode: the second backend, whose answer agreed. */
  second?: { backend: BackendEntry; result: Extract<DispatchResult, { kind: 'ok' }> };
  /** Time spent waiting for it, ms. */
  ms: number;
}

/** Runs the call on the best backend that answers and returns the consumer's response, receipt attached. */
export async function runInference(c: Context<AppEnv>, call: InferenceCall): Promise<Response> {
  const started = Date.now();
  const s = settings(c.env);
  // What the request's log line says of it (workers/request-log.ts).
  const facts = factsOf(c);
  facts.model = call.model;
  const verify = verifyMode(c);
  const entry = offered(c.env, call.model);
  // The key's limits and budget (account/admission.ts): 429 or 402 before any work, cache hits included; settled from the receipt.
  await admit(c, call, entry, verify);
  const pop = resolvePop(c.req.raw, s.dev);
  facts.pop = pop.code;
  // The PoP's answer cache (answer-cache.ts): a deterministic model's answer may be here already.
  const [keys, oipSha256, consumerSha256, cache] = await Promise.all([
    signingKeys(c.env),
    sha256Hex(call.oipBody),
    call.consumerBody ? sha256Hex(call.consumerBody) : undefined,
    planCache(c, call, entry, verify, pop),
  ]);
  facts.cache = cache.state;
  if (cache.hit) {
    const hit = await answerFromCache(c, call, { entry, hit: cache.hit, keys, verify, pop: pop.code, inputSha256: consumerSha256 ?? oipSha256, started });
    if (hit) return hit;
    cache.state = facts.cache = 'miss';
  }
  const routing = isolateRouting;
  routing.budget.recordRequest();
  routing.hedges.recordRequest();
  /** Work for after the response has left (`afterResponse`). */
  const later: (() => unknown)[] = [];

  let served: Served;
  try {
    const { candidates, snapshot, withEjected, all } = await candidatesFor(c, call.consumer, call.model, call.version, pop);
    const req: AttemptRequest = {
      keys,
      issuer: s.issuer,
      consumer: call.consumer.sub,
      model: call.model,
      version: call.version,
      body: call.oipBody,
      bodySha256: oipSha256,
      ...(call.headerLength !== undefined ? { headerLength: call.headerLength } : {}),
      timeoutMs: s.backendTimeoutMs,
      maxResponseBytes: s.maxResponseBytes,
      requestId: c.get('requestId'),
      expect: {
        model: call.model,
        rows: requestRows(call.request.inputs),
        ...(call.request.outputs?.length ? { requested: call.request.outputs.map((o) => o.name) } : {}),
        ...(call.metadata ? { metadata: call.metadata } : {}),
      },
      meter: (answer) => meter(entry, call.request.inputs, answer.outputs),
    };
    const regionSize = (b: BackendEntry) => snapshot.byRegion.get(b.region)?.length ?? 1;
    // Verification searches every candidate for another provider: ranked beyond the first few only if a check runs.
    const checkOf = (modelVersion: string): CheckContext => ({ env: c.env, request: req, entry, get candidates() { return all(); }, withEjected, regionSize, pop: pop.code, modelVersion });
    /** What the isolate learns from an answer: latency, and the round trip for routing and proof of location. */
    const learn = (backend: BackendEntry, result: Extract<DispatchResult, { kind: 'ok' }>) => {
      routing.answer.observe(backend.id, call.model, result.ms, Date.now());
      // Service time as the backend reports it, and the network's share (the rest of the wait) per PoP.
      if (result.backendMs === undefined) return;
      routing.latency.observe(backend.id, call.model, result.backendMs, Date.now());
      // And for the book the data centre's isolates share, exchanged after the response at most once a second (service-exchange.ts).
      noteService(backend.id, call.model, result.backendMs);
      const exchange = serviceExchangeTask(runtimeColo(c.req.raw));
      if (exchange) later.push(exchange);
      const rttMs = Math.max(0, result.ms - result.backendMs);
      if (!pop.simulated) routing.rtt.observe(pop.code, backend.id, rttMs);
      // For proof of location, after the response (directory/rtt-report.ts); simulated PoPs only when LOCATION_SIMULATED_POPS says so.
      if (!pop.simulated || s.locationSimulatedPops) {
        later.push(() => {
          noteRtt(pop.code, backend, rttMs, 'dispatch');
          flushRtt(c.env, c.executionCtx);
          // Signed probes of backends with too few round trips from this PoP, in waitUntil (directory/probes.ts).
          scheduleProbes(c.env, c.executionCtx, pop.code, snapshot.backends);
        });
      }
    };
    const servedBy = (backend: BackendEntry, result: Extract<DispatchResult, { kind: 'ok' }>, check: CheckContext): Served => ({
      oip: result.body,
      ...(result.headerLength !== undefined ? { headerLength: result.headerLength } : {}),
      answer: result.answer,
      oipSha256: result.outputSha256,
      units: result.units,
      amount: priceOf(entry.price, result.units),
      provider: backend.provider,
      backend: backend.id,
      region: backend.region,
      ...(backend.location ? { location: backend.location.state } : {}),
      modelVersion: check.modelVersion,
      attestation: result.attestation,
      answeredBy: { entry: backend, regionSize: regionSize(backend), check, sample: false },
      ms: result.ms,
    });
    if (verify === 'redundant') {
      // Two providers, answers compared (verification/redundant.ts); priced as two executions.
      const check = checkOf(call.version ?? announcedVersion(candidates[0]!.backend, call.model) ?? '1');
      const pair = await runPair(check, (p) => c.executionCtx.waitUntil(p));
      if (pair.kind === 'rejected') return rejection(pair.result, pair.backend, facts);
      const { first, second } = pair;
      facts.attempts = 2;
      facts.tried = [first.backend.id, second.backend.id];
      learn(first.backend, first.result);
      learn(second.backend, second.result);
      served = servedBy(first.backend, first.result, check);
      served.amount *= 2;
      served.ms = Math.max(first.result.ms, second.result.ms);
      served.second = { backend: second.backend, result: second.result };
    } else {
      const { backend, result } = await attempt(call, candidates, snapshot, req, facts);
      if (result.kind === 'rejected') return rejection(result, backend, facts);
      learn(backend, result);
      const modelVersion = call.version ?? announcedVersion(backend, call.model) ?? '1';
      served = servedBy(backend, result, checkOf(modelVersion));
      served.answeredBy!.sample =
        verify === 'sampled' && Math.random() < sampleRate(snapshot.providers.get(backend.provider), s.verify.sampleRate, Date.now());
    }
  } catch (err) {
    // No backend anywhere could serve it: the operator's Hugging Face fallback for this model, when it has one, the input is text and the rules allow it.
    // Never for redundant mode: one upstream computation cannot be checked against another.
    const fallback = verify === 'redundant' ? undefined : fallbackFor(c.env, err, entry, call.texts, allowedRegions(c, call.consumer));
    if (!fallback) throw err;
    console.warn(`infer ${call.model}: ${(err as Error).message} Falling back to Hugging Face (${fallback.model}).`);
    const hf = await embedOnHuggingFace(c.env, call.model, fallback.model, call.texts!, call.outputName ?? 'embedding', s.backendTimeoutMs);
    const units = meter(entry, call.request.inputs, hf.answer.outputs);
    served = {
      oip: hf.body,
      answer: hf.answer,
      units,
      amount: priceOf(fallback.price, units),
      upstreamModel: fallback.model,
      provider: 'huggingface',
      backend: hf.endpoint,
      region: 'huggingface',
      modelVersion: 'huggingface',
      ms: hf.ms,
    };
  }

  let body: Uint8Array = served.oip;
  let contentType = served.headerLength === undefined ? 'application/json' : 'application/octet-stream';
  let binaryHeader = served.headerLength;
  let outputSha256 = served.oipSha256;
  if (call.shape) {
    binaryHeader = undefined;
    const shaped = call.shape(served.answer, served.units);
    body = typeof shaped.body === 'string' ? new TextEncoder().encode(shaped.body) : shaped.body;
    contentType = shaped.contentType;
    outputSha256 = undefined;
  }
  outputSha256 ??= await sha256Hex(body);
  const total = Date.now() - started;
  const jti = crypto.randomUUID();
  facts.region = served.region;
  facts.backend = served.backend;
  facts.provider = served.provider;
  facts.receipt = jti;
  const receipt = await signReceipt(keys, {
    iss: s.issuer,
    sub: call.consumer.sub,
    jti,
    iat: Math.floor(Date.now() / 1000),
    model: call.model,
    model_version: served.modelVersion,
    provider: served.provider,
    backend: served.backend,
    region: served.region,
    pop: pop.code,
    units: served.units,
    amount: served.amount,
    input_sha256: consumerSha256 ?? oipSha256,
    output_sha256: outputSha256,
    latency_ms: total,
    cache: 'miss',
    verify,
    ...(served.attestation ? { attestation: served.attestation } : {}),
    ...(served.upstreamModel ? { upstream_model: served.upstreamModel } : {}),
    ...(served.location ? { location: served.location } : {}),
    ...(served.second
      ? { second: { provider: served.second.backend.provider, backend: served.second.backend.id, attestation: served.second.result.attestation } }
      : {}),
  });
  // The key's budget and tokens per minute are charged what the receipt says, not the admission's bound.
  settle(c, served.amount, served.units);
  // To settlement: awaited in waitUntil, retried, never dropped (settlement/record.ts).
  later.push(() => recordReceipt(c.env, jti, receipt));
  // The attestation's signature (a bad one withholds the provider's payout, attestation.ts)
  // and, for a sample of answers, a re-execution on another provider (verification/reexecute.ts).
  if (served.attestation && served.answeredBy) {
    const { entry: answering, regionSize, check, sample } = served.answeredBy;
    const run: Execution = { backend: answering, attestation: served.attestation, outputSha256: served.oipSha256!, oip: served.oip, receipt, receiptJti: jti };
    const { key } = cache;
    later.push(async () => {
      const stands = await verifyAfterAnswer(check, run, regionSize, sample);
      // Into the answer cache only once its attestation verified (and, when sampled, its re-execution agreed).
      if (!stands || !key || !entry.cache || served.second) return;
      const shapes = served.answer.outputs.map((o) => o.shape);
      const binary = served.headerLength !== undefined ? { headerLength: served.headerLength } : {};
      await storeAnswer(key, { oip: served.oip, ...binary, version: served.modelVersion, shapes, origin: jti, provider: served.provider }, entry.cache.ttlSeconds);
    });
    if (served.second) {
      const { backend: b, result: r } = served.second;
      const other: Execution = { backend: b, attestation: r.attestation, outputSha256: r.outputSha256, oip: r.body, receipt, receiptJti: jti };
      later.push(() => verifyAfterAnswer(check, other, check.regionSize(b), false));
    }
  }
  c.executionCtx.waitUntil(afterResponse(later));
  return new Response(body, {
    status: 200,
    headers: {
      'content-type': contentType,
      ...(binaryHeader !== undefined ? { [HEADER_LENGTH_HEADER]: binaryHeader } : {}),
      'x-mesh-receipt': receipt,
      'x-mesh-region': served.region,
      'x-mesh-backend': served.backend,
      'x-mesh-cache': cache.state,
      'server-timing': `edge;dur=${Math.max(0, total - served.ms)}, backend;dur=${served.ms}, total;dur=${total}`,
    },
  });
}

/**
 * Runs `tasks` after the response has left, each awaited (in the request's
 * `waitUntil`). A turn of the event loop first: the synchronous start of a
 * promise handed to `waitUntil` (a signature check, a timer) would otherwise
 * run before the runtime sends the response, on the consumer's time.
 */
async function afterResponse(tasks: readonly (() => unknown)[]): Promise<void> {
  await scheduler.wait(0);
  await Promise.allSettled(tasks.map(async (task) => task()));
}

/** What one attempt needs besides its backend (see `DispatchRequest`). */
type AttemptRequest = Omit<DispatchRequest, 'controller' | 'onResponse'>;

/** A backend's answer: its result, or its 4xx verdict on the request. */
type Answer = Exclude<DispatchResult, { kind: 'failed' }>;

/** What the edge attaches to each attempt: its dispatch and the means to cancel it. */
interface Running {
  controller: AbortController;
  settled: Promise<{ result: DispatchResult; attempt: Attempt<Running> }>;
}

/**
 * Tries the candidates until one answers, as routing/attempts.ts decides: the
 * first at once; the next when an attempt fails (a retry) or when the first
 * has not started answering by the p95 of that backend's answers as this
 * isolate waited for them (a hedge, at most one). The first answer wins and
 * the other attempt is aborted; a backend's 4xx verdict on the request counts
 * as an answer. Throws 502/504 when every candidate tried failed, 503 when
 * the budget stopped the retries.
 */
async function attempt(
  call: InferenceCall,
  candidates: readonly Scored[],
  snapshot: Snapshot,
  req: AttemptRequest,
  facts: RequestFacts,
): Promise<{ backend: BackendEntry; result: Answer }> {
  const routing = isolateRouting;
  const plan = new AttemptPlan<Running>(candidates, routing, {
    model: call.model,
    regionSize: (c) => snapshot.byRegion.get(c.backend.region)?.length ?? 1,
    now: Date.now,
  });

  const send = (a: Attempt<Running> | undefined): void => {
    if (!a) return;
    facts.attempts = (facts.attempts ?? 0) + 1;
    (facts.tried ??= []).push(a.candidate.backend.id);
    const controller = new AbortController();
    const settled = dispatch(a.candidate.backend, {
      ...req,
      controller,
      onResponse: () => {
        a.answered = true;
      },
    })
      .finally(a.release)
      .then((result) => ({ result, attempt: a }));
    a.driver = { controller, settled };
  };

  send(plan.start());
  const startedAt = Date.now();
  while (plan.running.size > 0) {
    const contenders: Promise<{ result: DispatchResult; attempt: Attempt<Running> } | 'hedge'>[] = [...plan.running].map((a) => a.driver!.settled);
    const at = plan.hedgeAfterMs();
    let timer: ReturnType<typeof setTimeout> | undefined;
    if (at !== undefined) {
      contenders.push(new Promise((resolve) => (timer = setTimeout(() => resolve('hedge'), Math.max(0, startedAt + at - Date.now())))));
    }
    const winner = await Promise.race(contenders);
    if (timer !== undefined) clearTimeout(timer);
    if (winner === 'hedge') {
      const hedge = plan.hedge();
      send(hedge);
      if (hedge) console.warn(`infer ${call.model}: no answer yet, hedging to ${hedge.candidate.backend.id}`);
      continue;
    }
    const backend = winner.attempt.candidate.backend;
    let { result } = winner;
    if (result.kind !== 'failed') routing.rejections.record(backend.id, result.kind === 'rejected');
    // An answer that does not fit the model's metadata may mean the metadata is wrong: fetch it afresh next time.
    if (result.kind === 'failed' && result.metadataMismatch) forgetMetadata(call.model, call.version);
    if (result.kind === 'rejected' && routing.rejections.suspect(backend.id)) {
      result = { kind: 'failed', reason: `HTTP ${result.status} (${result.code}), and it refuses far more requests than other backends`, timeout: false };
    }
    if (result.kind === 'failed') {
      console.warn(`infer ${call.model}: backend ${backend.id} failed (${result.reason})`);
      send(plan.failed(winner.attempt, result.timeout));
      continue;
    }
    // Its success counts once its attestation's signature verifies, after the answer (attestation.ts).
    // The other attempt lost: cancel it (its backend's answer would never be billed anyway).
    if (result.kind === 'ok') plan.learn(winner.attempt, result.ms);
    for (const loser of plan.won(winner.attempt)) loser.driver!.controller.abort();
    return { backend, result };
  }
  // What failed where stays in the log (above); the consumer learns what happened, not which backend or why.
  switch (plan.outcome) {
    case 'budget':
      throw new MeshError('no_capacity', `The backends tried for "${call.model}" failed, and the retry budget is spent; retry shortly.`, {
        retryAfter: 1,
      });
    case 'timeout':
      throw new MeshError('backend_timeout', `Every backend tried for "${call.model}" timed out.`);
    default:
      throw new MeshError('backend_failed', `Every backend tried for "${call.model}" failed.`);
  }
}
