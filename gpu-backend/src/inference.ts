/**
 * One inference, from a parsed OIP request to OIP outputs: checks it against
 * the READY model's config, admits it into the backend's queue (429 when
 * full), runs it through the model's dynamic batcher, and converts the
 * results. Timings and billing units come back with the outputs.
 */

import type { InferOutput, InferRequest } from '../../shared/protocol.ts';
import type { Units } from '../../shared/tokens.ts';
import { Batcher } from './batcher.ts';
import type { Metrics } from './metrics.ts';
import type { LoadedModel, ModelRepository } from './repository.ts';
import type { Scheduler } from './scheduler.ts';
import { prepareInference, toOutputs } from './tensors.ts';

export interface InferenceResult {
  outputs: InferOutput[];
  units: Units;
  rows: number;
  queueMs: number;
  computeMs: number;
}

export class InferenceEngine {
  readonly #repository: ModelRepository;
  readonly #scheduler: Scheduler;
  readonly #metrics: Metrics | undefined;
  readonly #now: (() => number) | undefined;
  readonly #batchers = new Map<string, Batcher>();

  constructor(options: { repository: ModelRepository; scheduler: Scheduler; metrics?: Metrics; now?: () => number }) {
    this.#repository = options.repository;
    this.#scheduler = options.scheduler;
    this.#metrics = options.metrics;
    this.#now = options.now;
  }

  /** Runs `request` on the READY `model`; throws 400s for bad tensors, 429 when the queue is full. */
  async infer(model: LoadedModel, request: InferRequest): Promise<InferenceResult> {
    const prepared = prepareInference(model.config, request);
    // Admitted requests leave the queue when their batch starts, whether it then succeeds or not.
    this.#scheduler.admit();
    const result = await this.#batcher(model).submit(prepared);
    return {
      outputs: toOutputs(model.config, result.outputs, prepared.fetches),
      units: prepared.units,
      rows: prepared.batch,
      queueMs: result.queueMs,
      computeMs: result.computeMs,
    };
  }

  /** The model's batcher; a reloaded model (new config object) gets a new one. */
  #batcher(model: LoadedModel): Batcher {
    let batcher = this.#batchers.get(model.name);
    if (!batcher || batcher.config !== model.config) {
      batcher = new Batcher({
        config: model.config,
        repository: this.#repository,
        scheduler: this.#scheduler,
        ...(this.#now ? { now: this.#now } : {}),
        onExecution: () => this.#metrics?.execution(model.name, model.version),
      });
      this.#batchers.set(model.name, batcher);
    }
    return batcher;
  }
}
