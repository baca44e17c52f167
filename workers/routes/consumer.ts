/**
 * Consumer routes (API.md section 2): OIP v2 infer and model metadata, routed
 * to the nearest warm backend from the isolate's snapshot, with a signed
 * receipt on every answer.
 */

import { Hono, type Context } from 'hono';
import { MeshError } from '../../shared/errors.ts';
import { sha256Hex } from '../../shared/hash.ts';
import { parseInferRequest, parseJson } from '../../shared/protocol.ts';
import { priceOf } from '../../shared/pricing.ts';
import { isRegionId } from '../../shared/regions.ts';
import type { KeyClaims, ReceiptClaims } from '../../shared/tokens.ts';
import { authenticate } from '../auth.ts';
import type { AppEnv } from '../context.ts';
import { dispatch } from '../dispatch.ts';
import { settings } from '../env.ts';
import { signingKeys } from '../keys.ts';
import { isEjected, reportFailure, reportSuccess } from '../outliers.ts';
import { resolvePop } from '../pop.ts';
import { signReceipt } from '../receipts.ts';
import { isKnownModel, rankCandidates, type Candidate } from '../routing.ts';
import { getSnapshot } from '../snapshot.ts';

/** At most this many backends are tried for one request. */
const MAX_ATTEMPTS = 3;
const RETRY_AFTER_S = 5;
const VERIFY_MODES = new Set(['none', 'sampled', 'redundant']);

type Verify = ReceiptClaims['verify'];

/** Regions this request may be served in: the `x-mesh-region` pin within the key's residency. */
function allowedRegions(c: Context<AppEnv>, consumer: KeyClaims): Set<string> | undefined {
  const pin = c.req.header('x-mesh-region');
  const residency = consumer.regions ? new Set(consumer.regions) : undefined;
  if (pin === undefined) return residency;
  if (!isRegionId(pin)) throw new MeshError('unknown_region', `x-mesh-region: "${pin}" is not a mesh region.`);
  if (residency && !residency.has(pin)) {
    throw new MeshError('forbidden', `Your key may only be served in ${[...residency].join(', ')}, not ${pin}.`);
  }
  return new Set([pin]);
}

async function candidatesFor(c: Context<AppEnv>, model: string, regions: Set<string> | undefined) {
  const s = settings(c.env);
  const pop = resolvePop(c.req.raw, s.dev);
  const snapshot = await getSnapshot(c.env, c.executionCtx, s.snapshotRefreshMs);
  const candidates = rankCandidates(snapshot.backends, { model, from: pop, regions, isEjected });
  if (candidates.length === 0) {
    if (!isKnownModel(snapshot.backends, model)) {
      throw new MeshError('model_not_found', `No backend in the mesh serves a model named "${model}".`);
    }
    const where = regions ? ` in ${[...regions].join(', ')}` : '';
    throw new MeshError('no_capacity', `No ready backend has "${model}" warm${where} right now; retry shortly.`, {
      retryAfter: RETRY_AFTER_S,
    });
  }
  return { pop, candidates };
}

async function readBody(c: Context<AppEnv>): Promise<Uint8Array> {
  const max = settings(c.env).maxBodyBytes;
  const declared = Number(c.req.header('content-length'));
  const tooLarge = () => new MeshError('body_too_large', `The request body is larger than the ${max}-byte limit.`);
  if (declared > max) throw tooLarge();
  const body = new Uint8Array(await c.req.arrayBuffer());
  if (body.byteLength > max) throw tooLarge();
  return body;
}

async function infer(c: Context<AppEnv>): Promise<Response> {
  const started = Date.now();
  const s = settings(c.env);
  const consumer = await authenticate(c.env, c.req.header('authorization'), ['consumer']);
  const model = c.req.param('model')!;
  const version = c.req.param('version');
  const verify = (c.req.header('x-mesh-verify') ?? 'sampled') as Verify;
  if (!VERIFY_MODES.has(verify)) throw new MeshError('invalid_request', 'x-mesh-verify must be none, sampled or redundant.');
  const regions = allowedRegions(c, consumer);
  const body = await readBody(c);
  parseInferRequest(parseJson(new TextDecoder().decode(body)));
  const [keys, bodySha256, { pop, candidates }] = await Promise.all([
    signingKeys(c.env),
    sha256Hex(body),
    candidatesFor(c, model, regions),
  ]);

  let lastTimeout = false;
  const failures: string[] = [];
  for (const { backend } of candidates.slice(0, MAX_ATTEMPTS) as Candidate[]) {
    const result = await dispatch(backend, {
      keys,
      issuer: s.issuer,
      consumer: consumer.sub,
      model,
      version,
      body,
      bodySha256,
      timeoutMs: s.backendTimeoutMs,
    });
    if (result.kind === 'failed') {
      reportFailure(backend.id);
      failures.push(`${backend.id}: ${result.reason}`);
      lastTimeout = result.timeout;
      console.warn(`infer ${model}: backend ${backend.id} failed (${result.reason}); trying the next one`);
      continue;
    }
    reportSuccess(backend.id);
    if (result.kind === 'rejected') {
      return new Response(result.body, { status: result.status, headers: { 'content-type': result.contentType } });
    }
    const total = Date.now() - started;
    const receipt = await signReceipt(keys, {
      iss: s.issuer,
      sub: consumer.sub,
      jti: crypto.randomUUID(),
      iat: Math.floor(Date.now() / 1000),
      model,
      model_version: version ?? backend.models.find((m) => m.name === model)?.version ?? '1',
      provider: backend.provider,
      backend: backend.id,
      region: backend.region,
      pop: pop.code,
      units: result.units,
      amount: priceOf(model, result.units),
      input_sha256: bodySha256,
      output_sha256: result.outputSha256,
      latency_ms: total,
      cache: 'miss',
      verify,
      attestation: result.attestation,
    });
    return new Response(result.body, {
      status: 200,
      headers: {
        'content-type': result.contentType,
        'x-mesh-receipt': receipt,
        'x-mesh-region': backend.region,
        'x-mesh-backend': backend.id,
        'x-mesh-cache': 'miss',
        'server-timing': `edge;dur=${Math.max(0, total - result.ms)}, backend;dur=${result.ms}, total;dur=${total}`,
      },
    });
  }
  const detail = failures.join('; ');
  throw lastTimeout
    ? new MeshError('backend_timeout', `Every backend tried for "${model}" timed out (${detail}).`)
    : new MeshError('backend_failed', `Every backend tried for "${model}" failed (${detail}).`);
}

async function metadata(c: Context<AppEnv>): Promise<Response> {
  const consumer = await authenticate(c.env, c.req.header('authorization'), ['consumer']);
  const model = c.req.param('model')!;
  const version = c.req.param('version');
  const { candidates } = await candidatesFor(c, model, allowedRegions(c, consumer));
  const path = `/v2/models/${encodeURIComponent(model)}${version ? `/versions/${encodeURIComponent(version)}` : ''}`;
  for (const { backend } of candidates.slice(0, MAX_ATTEMPTS)) {
    try {
      const res = await fetch(backend.url + path, { signal: AbortSignal.timeout(settings(c.env).backendTimeoutMs) });
      if (res.status === 200 || res.status === 404) {
        return new Response(res.body, {
          status: res.status,
          headers: { 'content-type': res.headers.get('content-type') ?? 'application/json', 'x-mesh-region': backend.region, 'x-mesh-backend': backend.id },
        });
      }
      reportFailure(backend.id);
    } catch {
      reportFailure(backend.id);
    }
  }
  throw new MeshError('backend_failed', `No backend answered the metadata of "${model}".`);
}

export const consumerRoutes = new Hono<AppEnv>()
  .post('/v2/models/:model/infer', infer)
  .post('/v2/models/:model/versions/:version/infer', infer)
  .get('/v2/models/:model', metadata)
  .get('/v2/models/:model/versions/:version', metadata);
