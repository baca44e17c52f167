/**
 * One inference, from a parsed OIP request to OIP outputs: checks it against
 * the READY model's config, takes a lease on the model (so an unload waits for
 * it), hands it to the model's dynamic batcher (which admits it into the
 * model's and the backend's queues: 429 when full, 504 when its queue timeout
 * passes), and converts the results. Timings and billing units come back with
 * the outputs.
 */

import { MeshError } from '../../../shared/errors.ts';
import type { InferRequest } from '../../../shared/protocol.ts';
import type { Units } from '../../../shared/jwt.ts';
import { Batcher } from './batcher.ts';
import type { ModelConfig } from './model-config.ts';
import type { Metrics } from '../metrics.ts';
import type { LoadedModel, ModelRepository } from './repository.ts';
import type { Scheduler } from './scheduler.ts';
import { prepareInference, toOutputs, type OutputTensor } from './tensors.ts';

export interface InferenceResult {
  /** In the request's order of outputs; still typed arrays (`jsonOutputs` makes them OIP JSON). */
  outputs: OutputTensor[];
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

  /**
   * Runs `request` on the READY `model`. Throws 400s for bad tensors or a bad
   * `parameters.timeout`, 503 `model_not_ready` when the model is no longer
   * READY, 429 when a queue is full, 504 `backend_timeout` when it waited
   * past its timeout.
   */
  async infer(model: LoadedModel, request: InferRequest): Promise<InferenceResult> {
    const prepared = prepareInference(model.config, request);
    const timeoutUs = queueTimeoutUs(model.config, request);
    const done = this.#repository.lease(model.name);
    try {
      const result = await this.#batcher(model).submit(prepared, { timeoutUs });
      return {
        outputs: toOutputs(model.config, result.outputs, prepared.fetches),
        units: prepared.units,
        rows: prepared.batch,
        queueMs: result.queueMs,
        computeMs: result.computeMs,
      };
    } finally {
      done();
    }
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
        onExecution: (rows) => this.#metrics?.execution(model.name, model.version, rows),
      });
      this.#batchers.set(model.name, batcher);
    }
    return batcher;
  }
}

/**
 * How long a request may wait in the model's queue, microseconds (0: no
 * limit), as Triton decides it: the queue policy's
 * `default_timeout_microseconds`, or the request's own `parameters.timeout`
 * when the policy has `allow_timeout_override` and it is shorter (or the
 * default is 0). Throws 400 when `parameters.timeout` is not a non-negative
 * integer, whether or not the model honours it.
 *
 * @example
 * // policy { default_timeout_microseconds: 10_000_000, allow_timeout_override: true }
 * queueTimeoutUs(config, { inputs, parameters: { timeout: 50_000 } }); // 50_000
 */
export function queueTimeoutUs(config: ModelConfig, request: InferRequest): number {
  const asked = request.parameters?.timeout;
  if (asked !== undefined && !(Number.isSafeInteger(asked) && (asked as number) >= 0)) {
    throw new MeshError(
      'invalid_request',
      `"parameters.timeout" must be a non-negative integer of microseconds, got ${JSON.stringify(asked) ?? String(asked)}.`,
    );
  }
  const policy = config.dynamic_batching?.default_queue_policy;
  const fallback = policy?.default_timeout_microseconds ?? 0;
  const override = (asked as number | undefined) ?? 0;
  if (policy?.allow_timeout_override && override > 0 && (fallback === 0 || override < fallback)) return override;
  return fallback;
}
