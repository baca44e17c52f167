/**
 * One load of a READY model, as inferences use it. The repository makes a
 * handle per load and hands it out by name; an inference resolves it once, is
 * admitted on it (`lease`), and the handle's batcher runs batches on it
 * (`run`) with no further lookup. It counts the requests it admitted and the
 * runs in flight so an unload can wait for them (`drain`). A reload makes a
 * new handle, and with it a new batcher for the new config.
 */

import type * as ort from 'onnxruntime-node';
import { MeshError } from '../../../shared/errors.ts';
import type { ExecutionProvider } from '../../../shared/heartbeat.ts';
import { Batcher, type BatchTarget, type RunResult } from './batcher.ts';
import { instanceCount, type ModelConfig } from './model-config.ts';
import type { ModelSession } from './model-session.ts';
import type { Scheduler } from './scheduler.ts';
import type { RollingMedian } from './stats.ts';

export interface ModelHandleOptions {
  name: string;
  version: string;
  config: ModelConfig;
  session: ModelSession;
  provider: ExecutionProvider;
  thread: 'worker' | 'main';
  loadMs: number;
  /** The model's service times (kept across loads); each run adds its own. */
  serviceMs: RollingMedian;
  /** The backend's slots and queue, which the batcher shares with every model. */
  scheduler: Scheduler;
  /** Monotonic milliseconds. */
  now: () => number;
  /** Called once per model execution (metrics). */
  onExecution?: (rows: number, requests: number) => void;
  /** Called once when the session fails for good (its threads died). */
  onFailure: (failure: string) => void;
}

/** serving: READY; draining: UNLOADING (admitted requests still run); closed: unloaded or failed. */
type Phase = 'serving' | 'draining' | 'closed';

/** Numbers every load of every model in this process (model and pipeline handles alike). */
let loads = 0;
/** A new load's id: what an HTTP worker's copy of a config is checked against (serving/executor.ts). */
export function nextLoadId(): number {
  return ++loads;
}

export class ModelHandle implements BatchTarget {
  /** This load, among all loads in the process: a reload gets another. */
  readonly loadId = nextLoadId();
  readonly name: string;
  readonly version: string;
  readonly config: ModelConfig;
  readonly provider: ExecutionProvider;
  /** Where its runs execute, and how many at once (instances on worker threads; 1 on the main thread). */
  readonly thread: 'worker' | 'main';
  readonly instances: number;
  /** Time to create the session and run the warm-up, ms. */
  readonly loadMs: number;
  /** This load's dynamic batcher; it runs its batches on this handle. */
  readonly batcher: Batcher;
  readonly #session: ModelSession;
  readonly #serviceMs: RollingMedian;
  readonly #now: () => number;
  readonly #onFailure: (failure: string) => void;
  #phase: Phase = 'serving';
  /** Requests admitted and not yet answered (queued or running). */
  #leases = 0;
  /** Session runs in flight. */
  #inFlight = 0;
  /** Woken when `#leases` and `#inFlight` are both 0. */
  readonly #idle: (() => void)[] = [];
  #released: Promise<void> | undefined;

  constructor(options: ModelHandleOptions) {
    this.name = options.name;
    this.version = options.version;
    this.config = options.config;
    this.provider = options.provider;
    this.thread = options.thread;
    this.instances = options.thread === 'worker' ? instanceCount(options.config) : 1;
    this.loadMs = options.loadMs;
    this.#session = options.session;
    this.#serviceMs = options.serviceMs;
    this.#now = options.now;
    this.#onFailure = options.onFailure;
    this.batcher = new Batcher({ model: this, scheduler: options.scheduler, ...(options.onExecution ? { onExecution: options.onExecution } : {}) });
  }

  /**
   * Admits one request until the returned function is called (once it is
   * answered): `drain` waits for every admitted request. Throws 503
   * `model_not_ready` once the model is unloading or out of service.
   */
  lease(): () => void {
    if (this.#phase !== 'serving') throw this.#notReady();
    this.#leases++;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.#leases--;
      this.#wakeIfIdle();
    };
  }

  /**
   * Runs the session once, counting the run as in flight meanwhile. Runs
   * while serving and while draining (for the requests admitted before);
   * once closed, throws 503 `model_not_ready`. A session that fails for good
   * closes the handle and takes the model out of service (`onFailure`).
   */
  async run(feeds: ort.InferenceSession.FeedsType, fetches: readonly string[]): Promise<RunResult> {
    if (this.#phase === 'closed') throw this.#notReady();
    this.#inFlight++;
    const started = this.#now();
    try {
      const outputs = await this.#session.run(feeds, [...fetches]);
      const computeMs = this.#now() - started;
      this.#serviceMs.add(computeMs);
      return { outputs, computeMs };
    } catch (err) {
      const failure = this.#session.failure;
      if (failure === undefined) throw err;
      this.#fail(failure);
      throw new MeshError('model_not_ready', `Model "${this.name}" stopped here (${failure}); it is no longer loaded.`, { retryAfter: 1, cause: err });
    } finally {
      this.#inFlight--;
      this.#wakeIfIdle();
    }
  }

  /** Stops admitting requests (503) and resolves once every admitted one is answered. */
  async drain(): Promise<void> {
    if (this.#phase === 'serving') this.#phase = 'draining';
    // Checked again after each wake-up: a request admitted before may still be queued.
    while (this.#leases > 0 || this.#inFlight > 0) await new Promise<void>((resolve) => this.#idle.push(resolve));
  }

  /** Closes the handle and releases its session, once. */
  release(): Promise<void> {
    this.#phase = 'closed';
    this.#released ??= this.#session.release();
    return this.#released;
  }

  /** Closes the handle when its session failed for good, telling the repository once. */
  #fail(failure: string): void {
    if (this.#phase === 'closed') return;
    this.#phase = 'closed';
    this.#onFailure(failure);
  }

  #wakeIfIdle(): void {
    if (this.#leases === 0 && this.#inFlight === 0) for (const wake of this.#idle.splice(0)) wake();
  }

  #notReady(): MeshError {
    const state = this.#phase === 'draining' ? 'UNLOADING' : 'UNAVAILABLE';
    return new MeshError('model_not_ready', `Model "${this.name}" is not loaded here (state ${state}).`, { retryAfter: 1 });
  }
}
