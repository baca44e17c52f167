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
import { ModelHandle } from './model-handle.ts';
import type { ModelConfig } from './model-config.ts';
import { PipelineHandle } from './pipeline-handle.ts';
import { runStep, type StepResult, type StepTensor } from './pipeline-steps.ts';
import type { ModelRepository } from './repository.ts';
import { meterAnswer, prepareInference, toOutputs, type OutputTensor, type PreparedInference } from './tensors.ts';

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
  /** The parsed request; absent when `invalid` says why it could not be parsed, or when it comes `prepared`. */
  request?: InferRequest;
  /** The request already checked and converted by an HTTP worker, against its copy of the model's config. */
  prepared?: PreparedJob;
  /** A pipeline request the HTTP worker runs itself (load `loadId`): here it is only admitted, and its steps run. */
  admit?: { loadId: number };
  /**
   * Why the body is not a valid request. It is thrown after the token is
   * spent and the model found, so errors come in the same order on every
   * thread: a replayed token is a 401 and a missing model a 404 whatever the body.
   */
  invalid?: WireError;
}

/**
 * A request an HTTP worker checked and converted itself (tokenized, typed
 * arrays filled) with the config of the load `loadId`; its feeds travel
 * transferred, and the main thread only batches and runs them.
 */
export interface PreparedJob {
  loadId: number;
  inference: PreparedInference;
  /** The request's queue timeout, µs (`queueTimeoutUs`). */
  timeoutUs: number | undefined;
}

/** One load of a model as an HTTP worker keeps it, to prepare the model's next requests (or run the pipeline's) itself. */
export interface ModelInfo {
  loadId: number;
  config: ModelConfig;
  /** A pipeline's step models' configs, by name. */
  steps?: Record<string, ModelConfig>;
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

/**
 * What the main thread answers an HTTP worker: the result (without units
 * when the job came prepared: the worker meters with its config), the
 * model's config when the worker may prepare its next requests itself, or
 * `stale` when the worker prepared against a load that is no longer served
 * (nothing was spent; it sends the request again, unprepared).
 */
export type WorkerAnswer =
  | { version: string; result: Omit<InferenceResult, 'units'> & { units?: Units }; model?: ModelInfo }
  | { version: string; admitted: true }
  | { stale: true };

/** An admitted pipeline request, before it crosses to the worker: `release` stays with the pool until the worker is done. */
export interface Admission {
  version: string;
  admitted: true;
  release: (serviceMs?: number) => void;
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
type ModelLookup = Pick<ModelRepository, 'resolve' | 'knows' | 'versionOf' | 'current' | 'readyModel'>;

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
    const model = await this.#admit(job);
    const request = this.#requestOf(job);
    const result = model instanceof PipelineHandle ? await inferPipeline(model, request) : await infer(model, request);
    return { version: model.version, result };
  }

  /**
   * An HTTP worker's job (http/http-pool.ts): a prepared one is checked to
   * be for the load now served before anything is spent (else `stale`) and
   * only batched and run here; an unprepared one runs as `run` does and the
   * answer carries the model's config, so the worker prepares the next.
   */
  async runForWorker(job: InferJob): Promise<WorkerAnswer | Admission> {
    const prepared = job.prepared;
    if (prepared) {
      const current = this.#repository.current(job.name);
      if (!(current instanceof ModelHandle) || current.loadId !== prepared.loadId) return { stale: true };
    }
    if (job.admit) {
      const current = this.#repository.current(job.name);
      if (!(current instanceof PipelineHandle) || current.loadId !== job.admit.loadId) return { stale: true };
    }
    const model = await this.#admit(job);
    if (job.admit && model instanceof PipelineHandle && model.loadId === job.admit.loadId) {
      return { version: model.version, admitted: true, release: model.lease() };
    }
    if (prepared && model instanceof ModelHandle && model.loadId === prepared.loadId) {
      return { version: model.version, result: await inferPrepared(model, prepared) };
    }
    const request = this.#requestOf(job);
    if (model instanceof PipelineHandle) {
      const steps = Object.fromEntries(model.steps);
      return { version: model.version, result: await inferPipeline(model, request), model: { loadId: model.loadId, config: model.config, steps } };
    }
    return { version: model.version, result: await infer(model, request), model: { loadId: model.loadId, config: model.config } };
  }

  /** Runs one step of a pipeline an HTTP worker runs: the step model's batcher, here. */
  step(name: string, input: StepTensor): Promise<StepResult> {
    return runStep(this.#repository.readyModel(name), input);
  }

  /** Spends the token, then checks draining, the model and its version: the order every thread answers in. */
  async #admit(job: InferJob): Promise<ModelHandle | PipelineHandle> {
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
    return model;
  }

  #requestOf(job: InferJob): InferRequest {
    if (job.invalid) throw fromWire(job.invalid);
    if (!job.request) throw new MeshError('invalid_request', 'The inference request is missing.');
    return job.request;
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

/** Runs a request an HTTP worker prepared: a lease, the model's batcher, the outputs (the worker meters them). */
async function inferPrepared(model: ModelHandle, prepared: PreparedJob): Promise<Omit<InferenceResult, 'units'>> {
  const done = model.lease();
  try {
    const result = await model.batcher.submit(prepared.inference, prepared.timeoutUs === undefined ? {} : { timeoutUs: prepared.timeoutUs });
    return {
      outputs: toOutputs(model.config, result.outputs, prepared.inference.fetches),
      rows: prepared.inference.batch,
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
