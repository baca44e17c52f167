/**
 * The main thread's half of an inference: the steps that touch state the
 * whole process shares, in one place whichever thread read the request. It
 * spends the dispatch token's `jti` (one replay cache per process), refuses
 * while draining, resolves the READY model's handle once, refuses a token
 * whose `model_version` is not the version served, runs the parsed request
 * through that model's batcher and meters the answer (the units the backend
 * attests); it keeps the per-request metrics.
 * The HTTP side (http/app.ts, on the main thread or an HTTP worker) reads, checks
 * and parses the request, and serialises, hashes and attests the answer.
 */

import { MeshError, isMeshError, type MeshErrorCode } from '../../../shared/errors.ts';
import type { Units } from '../../../shared/jwt.ts';
import type { InferRequest } from '../../../shared/protocol.ts';
import { checkModelVersion, type DispatchVerifier } from '../mesh/dispatch.ts';
import type { Lifecycle } from '../lifecycle.ts';
import type { Metrics, RequestTiming } from '../metrics.ts';
import { queueTimeoutUs } from './batcher.ts';
import type { ModelHandle } from './model-handle.ts';
import { PipelineHandle } from './pipeline-handle.ts';
import type { ModelRepository } from './repository.ts';
import { meterAnswer, prepareInference, toOutputs, type OutputTensor } from './tensors.ts';

/** An error as it crosses a thread: a `MeshError`'s code, message and retry hint. */
export interface WireError {
  code: MeshErrorCode;
  message: string;
  retryAfter?: number;
}

/** One inference, checked and parsed by the HTTP side. */
export interface InferJob {
  /** The model in the URL. */
  name: string;
  /** The version in the URL, if it names one. */
  version?: string;
  /** The checked dispatch token's claims, to spend. */
  jti: string;
  exp: number;
  /** The token's `model_version`, when it names one: the request must be served at that version. */
  modelVersion?: string;
  /** The parsed request; absent when `invalid` says why it could not be parsed. */
  request?: InferRequest;
  /**
   * Why the body is not a valid request. It is thrown after the token is
   * spent and the model found, so errors come in the same order on every
   * thread: a replayed token is a 401 and a missing model a 404 whatever the body.
   */
  invalid?: WireError;
}

interface InferenceResult {
  /** In the request's order of outputs; still typed arrays (`jsonOutputs` makes them OIP JSON). */
  outputs: OutputTensor[];
  units: Units;
  rows: number;
  queueMs: number;
  computeMs: number;
}

export interface InferAnswer {
  /** The version that answered. */
  version: string;
  result: InferenceResult;
}

/** What the HTTP side of an inference needs from the main thread. */
export interface InferencePort {
  /** Spends the token, checks the model, runs the request. Throws `MeshError`s. */
  run(job: InferJob): Promise<InferAnswer>;
  /** Counts an answered request. */
  succeeded(name: string, version: string, timing: RequestTiming): void;
  /** Counts a failed request (not a refused token: `tokenRejected` counts those). */
  failed(name: string, code: MeshErrorCode): void;
  /** Counts a refused dispatch token. */
  tokenRejected(code: MeshErrorCode): void;
}

/** What the executor uses of the repository: one lookup per inference, and names for metrics. */
type ModelLookup = Pick<ModelRepository, 'resolve' | 'knows' | 'versionOf'>;

export class Executor implements InferencePort {
  readonly #repository: ModelLookup;
  readonly #dispatch: Pick<DispatchVerifier, 'spend'>;
  readonly #metrics: Metrics;
  readonly #lifecycle: Lifecycle;

  constructor(options: { repository: ModelLookup; dispatch: Pick<DispatchVerifier, 'spend'>; metrics: Metrics; lifecycle: Lifecycle }) {
    this.#repository = options.repository;
    this.#dispatch = options.dispatch;
    this.#metrics = options.metrics;
    this.#lifecycle = options.lifecycle;
  }

  async run(job: InferJob): Promise<InferAnswer> {
    try {
      this.#dispatch.spend(job);
    } catch (err) {
      if (isMeshError(err)) this.tokenRejected(err.code);
      throw err;
    }
    if (this.#lifecycle.draining) throw new MeshError('not_ready', 'This backend is shutting down; send the request elsewhere.', { retryAfter: 1 });
    const model = await this.#repository.resolve(job.name);
    if (job.version !== undefined && job.version !== model.version) throw noSuchVersion(job.name, job.version, model.version);
    try {
      checkModelVersion(job.name, job.modelVersion, model.version);
    } catch (err) {
      if (isMeshError(err)) this.tokenRejected(err.code);
      throw err;
    }
    if (job.invalid) throw fromWire(job.invalid);
    if (!job.request) throw new MeshError('invalid_request', 'The inference request is missing.');
    const result = model instanceof PipelineHandle ? await inferPipeline(model, job.request) : await infer(model, job.request);
    return { version: model.version, result };
  }

  succeeded(name: string, version: string, timing: RequestTiming): void {
    this.#metrics.success(name, version, timing);
  }

  failed(name: string, code: MeshErrorCode): void {
    // Only models this backend has are labelled: a label per unknown name would let callers grow the metrics.
    if (this.#repository.knows(name)) this.#metrics.failure(name, this.#repository.versionOf(name) ?? '', code);
  }

  tokenRejected(code: MeshErrorCode): void {
    this.#metrics.tokenRejected(code);
  }
}

/**
 * Runs `request` on the READY `model`: checks it against the config (400s,
 * a bad `parameters.timeout` included), takes a lease (so an unload waits for
 * it; 503 once the model is unloading), and submits it to the model's batcher
 * (429 when a queue is full, 504 `backend_timeout` when it waited past its
 * queue timeout). The units are metered from the request as sent and the
 * outputs' shapes.
 */
async function infer(model: ModelHandle, request: InferRequest): Promise<InferenceResult> {
  const prepared = prepareInference(model.config, request);
  const timeoutUs = queueTimeoutUs(model.config, request);
  const done = model.lease();
  try {
    const result = await model.batcher.submit(prepared, { timeoutUs });
    const outputs = toOutputs(model.config, result.outputs, prepared.fetches);
    return {
      outputs,
      units: meterAnswer(model.config, request, outputs),
      rows: prepared.batch,
      queueMs: result.queueMs,
      computeMs: result.computeMs,
    };
  } finally {
    done();
  }
}

/** Runs `request` on a READY pipeline (pipeline-handle.ts); its steps batch in their own models' batchers. */
async function inferPipeline(pipeline: PipelineHandle, request: InferRequest): Promise<InferenceResult> {
  const { outputs, queueMs, computeMs } = await pipeline.infer(request);
  return { outputs, units: meterAnswer(pipeline.config, request, outputs), rows: 1, queueMs, computeMs };
}

/** A thrown value as it crosses a thread; anything but a `MeshError` becomes an opaque `internal`. */
export function toWire(err: unknown): WireError {
  if (!isMeshError(err)) return { code: 'internal', message: 'The backend failed to handle this request.' };
  return err.retryAfter === undefined ? { code: err.code, message: err.message } : { code: err.code, message: err.message, retryAfter: err.retryAfter };
}

export function fromWire(wire: WireError): MeshError {
  return new MeshError(wire.code, wire.message, wire.retryAfter === undefined ? {} : { retryAfter: wire.retryAfter });
}

export function notFound(name: string): MeshError {
  return new MeshError('model_not_found', `Model "${name}" is not in this backend's repository.`);
}

export function noSuchVersion(name: string, wanted: string, version: string | undefined): MeshError {
  return new MeshError('model_not_found', `Model "${name}" has no version "${wanted}" here (it serves ${version ?? 'none'}).`);
}
