/**
 * The main thread's half of an inference: the steps that touch state the
 * whole process shares, so they happen in one place whichever thread read the
 * request. It spends the dispatch token's `jti` (one replay cache per
 * process), refuses while draining, finds the READY model at the wanted
 * version, and runs the parsed request through the inference engine (batcher,
 * slots, session). It also keeps the per-request metrics the HTTP side reports.
 *
 * The HTTP side (`app.ts`'s inference route, on the main thread or on an HTTP
 * thread, `http-thread.ts`) does the per-request work that needs no shared
 * state: reading the body, checking the token's signature and claims, parsing
 * the JSON, and serialising, hashing and attesting the answer.
 */

import { MeshError, isMeshError, type MeshErrorCode } from '../../../shared/errors.ts';
import type { InferRequest } from '../../../shared/protocol.ts';
import type { DispatchVerifier } from '../mesh/dispatch.ts';
import type { InferenceEngine, InferenceResult } from './inference.ts';
import type { Lifecycle } from '../lifecycle.ts';
import type { Metrics, RequestTiming } from '../metrics.ts';
import type { ModelRepository } from './repository.ts';

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
  /** The parsed request; absent when `invalid` says why it could not be parsed. */
  request?: InferRequest;
  /**
   * Why the body is not a valid request. It is thrown after the token is
   * spent and the model found, so errors come in the same order on every
   * thread: a replayed token is a 401 and a missing model a 404 whatever the body.
   */
  invalid?: WireError;
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

export class Executor implements InferencePort {
  readonly #repository: ModelRepository;
  readonly #engine: InferenceEngine;
  readonly #dispatch: Pick<DispatchVerifier, 'spend'>;
  readonly #metrics: Metrics;
  readonly #lifecycle: Lifecycle;

  constructor(options: {
    repository: ModelRepository;
    engine: InferenceEngine;
    dispatch: Pick<DispatchVerifier, 'spend'>;
    metrics: Metrics;
    lifecycle: Lifecycle;
  }) {
    this.#repository = options.repository;
    this.#engine = options.engine;
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
    const { name } = job;
    if (this.#lifecycle.draining) throw new MeshError('not_ready', 'This backend is shutting down; send the request elsewhere.', { retryAfter: 1 });
    if (!(await this.#repository.has(name))) throw notFound(name);
    const model = this.#repository.ready(name);
    if (job.version !== undefined && job.version !== model.version) throw noSuchVersion(name, job.version, model.version);
    if (job.invalid) throw fromWire(job.invalid);
    if (!job.request) throw new MeshError('invalid_request', 'The inference request is missing.');
    return { version: model.version, result: await this.#engine.infer(model, job.request) };
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
