/**
 * One load of a READY pipeline model (`platform: "pipeline"`, like a Triton
 * ensemble or BLS model): the backend computes its answer by running other
 * models of the repository, each through its own batcher, so a pipeline's
 * steps batch with every other request for those models. The handle admits
 * requests (`lease`) and lets an unload wait for them (`drain`) exactly as a
 * model's handle does; what the pipeline computes is its `PipelineRun`
 * (serving/pipelines.ts picks it by `parameters.pipeline`).
 */

import { MeshError } from '../../../shared/errors.ts';
import type { ExecutionProvider } from '../../../shared/heartbeat.ts';
import type { InferRequest } from '../../../shared/protocol.ts';
import type { ModelConfig } from './model-config.ts';
import { nextLoadId } from './model-handle.ts';
import type { RollingMedian } from './stats.ts';
import type { OutputTensor } from './tensors.ts';

/** What one request to a pipeline produced. */
export interface PipelineResult {
  /** In the request's order of outputs. */
  outputs: OutputTensor[];
  /** Time its steps' models spent computing, ms (the rest of its time was queueing and the pipeline's own work). */
  computeMs: number;
}

/** Computes one request: checks it (400s), runs the steps, returns the outputs. */
export type PipelineRun = (request: InferRequest) => Promise<PipelineResult>;

export interface PipelineHandleOptions {
  name: string;
  version: string;
  config: ModelConfig;
  run: PipelineRun;
  /** The configs of the step models it was opened with (an HTTP worker opens the same pipeline from them). */
  steps: ReadonlyMap<string, ModelConfig>;
  /** The execution provider its steps run on. */
  provider: ExecutionProvider;
  loadMs: number;
  /** The model's service times (kept across loads); each request adds its own. */
  serviceMs: RollingMedian;
  now: () => number;
}

export class PipelineHandle {
  readonly kind = 'pipeline';
  readonly loadId = nextLoadId();
  readonly name: string;
  readonly version: string;
  readonly config: ModelConfig;
  readonly provider: ExecutionProvider;
  /** The pipeline's own work runs on the main thread; its steps where their models run. */
  readonly thread = 'main';
  readonly instances = 1;
  readonly loadMs: number;
  readonly steps: ReadonlyMap<string, ModelConfig>;
  readonly #run: PipelineRun;
  readonly #serviceMs: RollingMedian;
  readonly #now: () => number;
  #closed = false;
  #draining = false;
  #leases = 0;
  readonly #idle: (() => void)[] = [];

  constructor(options: PipelineHandleOptions) {
    this.name = options.name;
    this.version = options.version;
    this.config = options.config;
    this.provider = options.provider;
    this.loadMs = options.loadMs;
    this.steps = options.steps;
    this.#run = options.run;
    this.#serviceMs = options.serviceMs;
    this.#now = options.now;
  }

  /** Runs one request here, admitted until it is answered; 503 `model_not_ready` once unloading. */
  async infer(request: InferRequest): Promise<PipelineResult & { queueMs: number }> {
    const done = this.lease();
    const started = this.#now();
    let totalMs: number | undefined;
    try {
      const result = await this.#run(request);
      totalMs = this.#now() - started;
      return { ...result, queueMs: Math.max(0, totalMs - result.computeMs) };
    } finally {
      done(totalMs);
    }
  }

  /**
   * Admits one request until the returned function is called (with the
   * request's time, ms, when it succeeded): for a request an HTTP worker runs
   * (http/worker-executor.ts). 503 `model_not_ready` once unloading.
   */
  lease(): (serviceMs?: number) => void {
    if (this.#closed || this.#draining) {
      throw new MeshError('model_not_ready', `Model "${this.name}" is being unloaded here; send the request elsewhere.`, { retryAfter: 1 });
    }
    this.#leases++;
    let done = false;
    return (serviceMs) => {
      if (done) return;
      done = true;
      if (serviceMs !== undefined) this.#serviceMs.add(serviceMs);
      this.#leases--;
      if (this.#leases === 0) for (const wake of this.#idle.splice(0)) wake();
    };
  }

  /** Stops admitting requests and resolves once every admitted one is answered. */
  async drain(): Promise<void> {
    this.#draining = true;
    while (this.#leases > 0) await new Promise<void>((resolve) => this.#idle.push(resolve));
  }

  /** Closes the handle: nothing of its own to release (its steps are models of their own). */
  release(): Promise<void> {
    this.#closed = true;
    return Promise.resolve();
  }
}
