/**
 * The backend's HTTP API (Open Inference Protocol v2, docs/api.md section 3)
 * as Hono apps built from their dependencies: `createApp` is the whole API,
 * `createWorkerApp` what an HTTP worker serves (http-worker.ts): the inference
 * routes and location probes, with every other route forwarded to the main
 * thread's app. Inference needs a dispatch token of purpose `infer`, the
 * repository routes one of purpose `control`, each bound to the model and the
 * body; every inference answer is serialised once, hashed and attested; a
 * probe (unauthenticated, body at most 1 KiB) is answered with its nonce
 * signed by the provider key; errors become `{ error: { code, message } }` in
 * `onError` only; every request gets one JSON log line (`request`: the edge's
 * request id, the route, the model, status and time; never the token or the
 * input), written by the thread that answers it.
 */

import { Hono, type Context, type MiddlewareHandler } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { routePath } from 'hono/route';
import { MeshError, errorBody, isMeshError } from '../../../shared/errors.ts';
import { encodeBinaryBody, HEADER_LENGTH_HEADER, headerLength, parseInferBody, wantsBinaryOutput } from '../../../shared/binary.ts';
import { parseJson, type InferOutput, type InferRequest, type InferResponse } from '../../../shared/protocol.ts';
import type { DispatchClaims, DispatchPurpose } from '../../../shared/jwt.ts';
import type { Attestor } from '../mesh/attestation.ts';
import { PROBE_MAX_BODY_BYTES, type ProbeSigner } from '../mesh/probe.ts';
import { sha256HexSync } from '../mesh/hash.ts';
import { ANY_MODEL, type DispatchVerifier } from '../mesh/dispatch.ts';
import { noSuchVersion, notFound, type InferencePort, type WireError } from '../serving/executor.ts';
import type { Lifecycle } from '../lifecycle.ts';
import type { Logger } from '../log.ts';
import { modelMetadata, serverMetadata } from './metadata.ts';
import type { Metrics } from '../metrics.ts';
import type { ModelRepository, Servable } from '../serving/repository.ts';
import type { SessionFactory } from '../serving/sessions.ts';
import { outputBytes } from '../serving/tensor-data.ts';
import { jsonOutputs, type OutputTensor } from '../serving/tensors.ts';

/** What the inference and probe routes need, on whichever thread they run. */
interface InferRouteDeps {
  maxBodyBytes: number;
  /** Signs location probes (`POST /v2/mesh/probe`). */
  probe: ProbeSigner;
  /** Checks tokens; `executor.run` spends them. */
  dispatch: Pick<DispatchVerifier, 'check'>;
  attestor: Attestor;
  executor: InferencePort;
  lifecycle: Lifecycle;
  log: Logger;
  /** Monotonic milliseconds, for timings. */
  now?: () => number;
}

export interface AppDeps extends InferRouteDeps {
  backendId: string;
  repository: ModelRepository;
  dispatch: DispatchVerifier;
  metrics: Metrics;
  /** Only to report why CUDA is not in use, in /v2/health/ready. */
  sessions?: SessionFactory;
}

export interface WorkerAppDeps extends InferRouteDeps {
  /** Answers any other route: the main thread's app, across the thread. */
  forward: (request: Request, body: ArrayBuffer | null) => Promise<Response>;
}

const JSON_TYPE = 'application/json; charset=utf-8';
const encoder = new TextEncoder();
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Builds the backend's Hono app. It does not listen: see `main.ts`. */
export function createApp(deps: AppDeps): Hono {
  const { repository, dispatch, metrics, lifecycle, log } = deps;
  const app = base(deps, false);

  app.get('/v2', (c) => c.json(serverMetadata()));
  app.get('/v2/health/live', (c) => c.json({ live: true }));
  app.get('/v2/health/ready', (c) => {
    const ready = repository.allReady && !lifecycle.draining;
    const body: Record<string, unknown> = {
      ready,
      backendId: deps.backendId,
      executionProvider: repository.executionProvider,
      draining: lifecycle.draining,
      models: repository.desired.map((name) => ({ name, state: repository.state(name) })),
    };
    if (deps.sessions?.cudaFailure) body.cudaUnavailable = deps.sessions.cudaFailure;
    if (deps.sessions?.webgpuFailure) body.webgpuUnavailable = deps.sessions.webgpuFailure;
    return c.json(body, ready ? 200 : 503);
  });

  const metadata = async (c: Context) => {
    const name = c.req.param('model')!;
    const { config, version } = await repository.config(name);
    const wanted = c.req.param('version');
    if (wanted !== undefined && wanted !== version) throw noSuchVersion(name, wanted, version);
    return c.json(modelMetadata(config, version));
  };
  app.get('/v2/models/:model', metadata);
  app.get('/v2/models/:model/versions/:version', metadata);

  const modelReady = async (c: Context) => {
    const name = c.req.param('model')!;
    if (!(await repository.has(name))) throw notFound(name);
    const state = repository.state(name);
    const wanted = c.req.param('version');
    let ready = state === 'READY' && !lifecycle.draining;
    if (ready && wanted !== undefined) ready = repository.ready(name).version === wanted;
    return c.json({ name, ready, state }, ready ? 200 : 503);
  };
  app.get('/v2/models/:model/ready', modelReady);
  app.get('/v2/models/:model/versions/:version/ready', modelReady);

  const infer = inferRoute(deps);
  app.post('/v2/models/:model/infer', infer);
  app.post('/v2/models/:model/versions/:version/infer', infer);
  probeRoute(app, deps.probe);

  app.post('/v2/repository/index', async (c) => {
    const body = await readBody(c, deps.maxBodyBytes);
    await verified(c, body, ANY_MODEL, 'control');
    let onlyReady = false;
    if (body.length > 0) {
      const parsed = parseJson(decode(body));
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
        throw new MeshError('invalid_request', 'The repository index request must be a JSON object, e.g. {"ready": true}.');
      }
      const ready = (parsed as Record<string, unknown>).ready;
      if (ready !== undefined && typeof ready !== 'boolean') throw new MeshError('invalid_request', '"ready" must be a boolean.');
      onlyReady = ready === true;
    }
    const index = await repository.index();
    return c.json(onlyReady ? index.filter((m) => m.state === 'READY') : index);
  });

  app.post('/v2/repository/models/:model/load', async (c) => {
    const name = c.req.param('model');
    await verified(c, await readBody(c, deps.maxBodyBytes), name, 'control');
    let loaded: Servable;
    try {
      loaded = await repository.load(name);
    } catch (err) {
      if (isMeshError(err)) throw err;
      log.error(`loading model ${name} on request failed`, err);
      throw new MeshError('internal', `Model "${name}" failed to load; the backend's log says why.`, { cause: err });
    }
    return c.json({
      name,
      version: loaded.version,
      state: repository.state(name),
      executionProvider: loaded.provider,
      inferenceThread: loaded.thread,
      instances: loaded.instances,
      loadMs: Math.round(loaded.loadMs),
    });
  });

  app.post('/v2/repository/models/:model/unload', async (c) => {
    const name = c.req.param('model');
    await verified(c, await readBody(c, deps.maxBodyBytes), name, 'control');
    await repository.unload(name);
    return c.json({ name, state: repository.state(name) });
  });

  app.get('/metrics', async (c) => {
    const { body, contentType } = await metrics.render();
    return c.body(body, 200, { 'content-type': contentType });
  });

  app.notFound((c) => c.json(errorBody(new MeshError('not_found', `No route ${c.req.method} ${c.req.path} on this backend.`)), 404));

  /** Verifies the dispatch token, counting refusals. */
  async function verified(c: Context, body: Uint8Array, model: string, purpose: DispatchPurpose) {
    try {
      return await dispatch.verify(c.req.header('authorization'), body, model, purpose);
    } catch (err) {
      if (isMeshError(err)) metrics.tokenRejected(err.code);
      throw err;
    }
  }

  return app;
}

/**
 * What an HTTP worker serves: the inference routes, run here up to the
 * main thread's half (`executor.run`, across the thread), and every other
 * route forwarded whole to the main thread's app.
 */
export function createWorkerApp(deps: WorkerAppDeps): Hono {
  const app = base(deps, true);
  const infer = inferRoute(deps);
  app.post('/v2/models/:model/infer', infer);
  app.post('/v2/models/:model/versions/:version/infer', infer);
  // Answered here, not across the thread: the edge times the round trip.
  probeRoute(app, deps.probe);
  app.all('*', async (c) => {
    const { raw } = c.req;
    const body = raw.method === 'GET' || raw.method === 'HEAD' ? null : await c.req.arrayBuffer();
    return deps.forward(raw, body);
  });
  return app;
}

/** The edge's id of the request it dispatched (`x-request-id`), when it is one. */
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * One log line per request, once answered. `forwards`: this app hands its
 * unmatched routes (`*`) to the main thread's app, which logs those itself.
 */
function logRequests(deps: Pick<InferRouteDeps, 'log' | 'now'>, forwards: boolean): MiddlewareHandler {
  const now = deps.now ?? (() => performance.now());
  return async (c, next) => {
    const started = now();
    await next();
    // The route that answered (not the last one matched: the worker's forward-all `*` comes after its own routes).
    const pattern = routePath(c);
    const matched = pattern !== '*' && pattern !== '/*';
    if (forwards && !matched) return;
    const id = c.req.header('x-request-id');
    const err = c.error;
    try {
      deps.log.info('request', {
        request_id: id !== undefined && REQUEST_ID.test(id) ? id : undefined,
        method: c.req.method,
        route: matched ? pattern : undefined,
        model: matched ? c.req.param('model') : undefined,
        status: c.res.status,
        ms: Math.round((now() - started) * 100) / 100,
        error: isMeshError(err) ? err.code : err ? 'internal' : undefined,
      });
    } catch {
      // A log that fails never costs the request its answer.
    }
  };
}

/** The middleware and the one error-to-HTTP place both apps share. */
function base(deps: Pick<InferRouteDeps, 'lifecycle' | 'maxBodyBytes' | 'log' | 'now'>, forwards: boolean): Hono {
  const app = new Hono();
  app.use('*', logRequests(deps, forwards));
  app.use('*', async (_c, next) => {
    const done = deps.lifecycle.enter();
    try {
      await next();
    } finally {
      done();
    }
  });
  app.use(
    '*',
    bodyLimit({
      maxSize: deps.maxBodyBytes,
      onError: () => {
        throw tooLarge(deps.maxBodyBytes);
      },
    }),
  );
  app.onError((err, c) => {
    if (isMeshError(err)) {
      if (err.retryAfter !== undefined) c.header('retry-after', String(err.retryAfter));
      if (err.code === 'invalid_token') c.header('www-authenticate', 'Bearer error="invalid_token"');
      else if (err.code === 'unauthorized') c.header('www-authenticate', 'Bearer realm="mesh-backend"');
      return c.json(errorBody(err), err.status as 400);
    }
    deps.log.error(`unhandled error on ${c.req.method} ${c.req.path}`, err);
    return c.json(errorBody(new MeshError('internal', 'The backend failed to handle this request.')), 500);
  });
  return app;
}

/**
 * `POST /v2/models/{m}[/versions/{v}]/infer`: reads the body, checks the
 * dispatch token (purpose `infer`), parses the request, has the executor
 * spend the token, check its `model_version` and run it, then serialises the
 * answer once: those exact bytes are hashed, attested and sent.
 */
function inferRoute(deps: InferRouteDeps): (c: Context) => Promise<Response> {
  const { executor } = deps;
  const now = deps.now ?? (() => performance.now());
  return async (c) => {
    const started = now();
    const name = c.req.param('model')!;
    const body = await readBody(c, deps.maxBodyBytes);
    let claims: DispatchClaims;
    try {
      claims = await deps.dispatch.check(c.req.header('authorization'), body, name, 'infer');
    } catch (err) {
      if (isMeshError(err)) executor.tokenRejected(err.code);
      throw err;
    }
    let request: InferRequest | undefined;
    let invalid: WireError | undefined;
    try {
      request = parseInferBody(body, headerLength(c.req.header(HEADER_LENGTH_HEADER), body.byteLength));
    } catch (err) {
      if (!isMeshError(err)) throw err;
      invalid = { code: err.code, message: err.message };
    }
    try {
      const wanted = c.req.param('version');
      const { version, result } = await executor.run({
        name,
        jti: claims.jti,
        exp: claims.exp,
        ...(wanted !== undefined ? { version: wanted } : {}),
        ...(claims.model_version !== undefined ? { modelVersion: claims.model_version } : {}),
        ...(request ? { request } : {}),
        ...(invalid ? { invalid } : {}),
      });
      const { bytes, headerLength } = encodeAnswer(name, version, request!, result.outputs);
      const outputSha256 = sha256HexSync(bytes);
      const attestation = deps.attestor.sign({ jti: claims.jti, model: name, outputSha256, units: result.units });
      const totalMs = now() - started;
      executor.succeeded(name, version, { totalMs, queueMs: result.queueMs, computeMs: result.computeMs, rows: result.rows });
      return new Response(bytes, {
        status: 200,
        headers: {
          'content-type': headerLength === undefined ? JSON_TYPE : 'application/octet-stream',
          ...(headerLength === undefined ? {} : { [HEADER_LENGTH_HEADER]: String(headerLength) }),
          'x-provider-attestation': attestation,
          'server-timing': `queue;dur=${result.queueMs.toFixed(2)}, compute;dur=${result.computeMs.toFixed(2)}, backend;dur=${totalMs.toFixed(2)}`,
        },
      });
    } catch (err) {
      // A replayed token was counted as a refused token when it was spent.
      if (!(isMeshError(err) && err.code === 'invalid_token')) executor.failed(name, isMeshError(err) ? err.code : 'internal');
      throw err;
    }
  };
}

/**
 * The answer's bytes: OIP JSON, or, when the request asks for any output in
 * the binary extension (`binary_data_output`, an output's `binary_data`), a
 * JSON header followed by those outputs' bytes, as they came from the model
 * (typed arrays' bytes: no per-element conversion), and the header's length.
 */
function encodeAnswer(
  name: string,
  version: string,
  request: InferRequest,
  outputs: readonly OutputTensor[],
): { bytes: Uint8Array; headerLength: number | undefined } {
  const head = (out: InferOutput[]): InferResponse =>
    request.id === undefined ? { model_name: name, model_version: version, outputs: out } : { model_name: name, model_version: version, id: request.id, outputs: out };
  if (!outputs.some((o) => wantsBinaryOutput(request, o.name))) return { bytes: encoder.encode(JSON.stringify(head(jsonOutputs(outputs)))), headerLength: undefined };
  const data: Uint8Array[] = [];
  // A binary output's header entry carries `binary_data_size` and no `data` (the extension's form).
  const described = outputs.map((o) => {
    if (!wantsBinaryOutput(request, o.name)) return jsonOutputs([o])[0]!;
    const bytes = outputBytes(o);
    data.push(bytes);
    return { name: o.name, datatype: o.datatype, shape: o.shape, parameters: { binary_data_size: bytes.byteLength } };
  });
  const { body, headerLength } = encodeBinaryBody(head(described as InferOutput[]), data);
  return { bytes: body, headerLength };
}

/**
 * `POST /v2/mesh/probe`: no token (anyone may time this backend); the body,
 * at most PROBE_MAX_BODY_BYTES (413 past it), is `{ "nonce" }`, answered
 * `{ nonce, signature }` (mesh/probe.ts), never cached.
 */
function probeRoute(app: Hono, probe: ProbeSigner): void {
  const limit = bodyLimit({
    maxSize: PROBE_MAX_BODY_BYTES,
    onError: () => {
      throw tooLarge(PROBE_MAX_BODY_BYTES);
    },
  });
  app.post('/v2/mesh/probe', limit, async (c) => {
    const body = await readBody(c, PROBE_MAX_BODY_BYTES);
    const answer = probe.answer(parseJson(decode(body)));
    return c.json(answer, 200, { 'cache-control': 'no-store' });
  });
}

/** The raw body bytes (the dispatch token is bound to exactly these). */
async function readBody(c: Context, max: number): Promise<Uint8Array> {
  const bytes = new Uint8Array(await c.req.arrayBuffer());
  if (bytes.length > max) throw tooLarge(max);
  return bytes;
}

function decode(body: Uint8Array): string {
  try {
    return utf8.decode(body);
  } catch {
    throw new MeshError('invalid_json', 'The request body is not valid UTF-8 JSON.');
  }
}

function tooLarge(max: number): MeshError {
  return new MeshError('body_too_large', `The request body is larger than this backend's limit of ${max} bytes.`);
}
