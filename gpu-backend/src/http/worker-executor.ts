/**
 * An HTTP worker's half of an inference (http-worker.ts): the main thread's
 * executor across the thread, with everything but batching and the run done
 * here. The worker keeps the config of each model's current load, learned
 * from the main thread's first answer for it:
 * - an ONNX model's request is then checked, tokenized and converted into
 *   typed arrays here; its feeds travel to the main thread transferred (no
 *   structured clone of numbers), which only batches and runs them, and the
 *   answer is metered here;
 * - a pipeline's request is only admitted by the main thread (the token
 *   spent, the pipeline leased so that an unload waits for it) and the
 *   pipeline runs here (image decoding, detection boxes, crops, CTC for
 *   `ocr`), each step sent to the main thread to be batched and run.
 * A request for a model it has no config for yet, or whose conversion fails
 * (its 400 must come after the token is spent and the model found, as on
 * every thread), goes parsed and runs on the main thread. A load the main
 * thread no longer serves answers `stale` before anything is spent: the
 * worker drops that config and sends the request again, parsed.
 */

import path from 'node:path';
import { isMeshError } from '../../../shared/errors.ts';
import type { InferRequest } from '../../../shared/protocol.ts';
import { queueTimeoutUs } from '../serving/batcher.ts';
import type { InferAnswer, InferJob, InferencePort, ModelInfo, PreparedJob, WorkerAnswer } from '../serving/executor.ts';
import type { PipelineRun } from '../serving/pipeline-handle.ts';
import type { StepResult, StepTensor } from '../serving/pipeline-steps.ts';
import { openPipeline } from '../serving/pipelines.ts';
import { meterAnswer, prepareInference, type PreparedInference } from '../serving/tensors.ts';

/** What the worker sends the main thread. */
export interface MainThread {
  /** A job (with the buffers to transfer); resolves with the main thread's answer. */
  run(job: InferJob, transfer: ArrayBuffer[]): Promise<WorkerAnswer>;
  /** One step of a pipeline request (its input transferred). */
  step(name: string, input: StepTensor): Promise<StepResult>;
  /** Ends the admission of the pipeline request the main thread admitted as `job` (the object `run` was given). */
  release(job: InferJob, serviceMs: number | undefined): void;
}

/** The buffers a prepared request's feeds own whole: transferred to the main thread, which consumes them. */
function ownedBuffers(inference: PreparedInference): ArrayBuffer[] {
  const out: ArrayBuffer[] = [];
  for (const feed of Object.values(inference.feeds)) {
    const v = feed.values;
    if (ArrayBuffer.isView(v) && v.buffer instanceof ArrayBuffer && v.byteOffset === 0 && v.byteLength === v.buffer.byteLength && !out.includes(v.buffer)) {
      out.push(v.buffer);
    }
  }
  return out;
}

/** A load as this worker holds it; a pipeline's code is opened once per load. */
interface Known extends ModelInfo {
  pipeline?: Promise<PipelineRun>;
}

export class WorkerExecutor implements Pick<InferencePort, 'run'> {
  readonly #main: MainThread;
  readonly #repository: string;
  readonly #now: () => number;
  /** Each model's current load as the main thread last described it. */
  readonly #models = new Map<string, Known>();

  /** `repository`: the model repository's folder (a pipeline reads its files, e.g. a dictionary). */
  constructor(main: MainThread, repository: string, now: () => number = () => performance.now()) {
    this.#main = main;
    this.#repository = repository;
    this.#now = now;
  }

  /** Loads whose configs this worker holds (tests). */
  get known(): ReadonlyMap<string, ModelInfo> {
    return this.#models;
  }

  async run(job: InferJob): Promise<InferAnswer> {
    const known = this.#models.get(job.name);
    if (known && job.request && !job.invalid) {
      if (known.config.platform === 'pipeline') {
        const answer = await this.#runPipeline(known, job, job.request);
        if (answer) return answer;
      } else {
        const prepared = this.#prepare(known, job.request);
        if (prepared) {
          const answer = await this.#main.run({ ...job, request: undefined, prepared }, ownedBuffers(prepared.inference));
          if (!('stale' in answer)) return this.#finish(job, answer, known);
        }
      }
      // Stale (or not preparable here): the main thread runs it and describes the load now served.
      this.#models.delete(job.name);
    }
    return this.#finish(job, await this.#main.run(job, []), undefined);
  }

  /** Runs a pipeline request here once the main thread admits it; undefined when the load is stale (nothing spent). */
  async #runPipeline(known: Known, job: InferJob, request: InferRequest): Promise<InferAnswer | undefined> {
    const admission: InferJob = { ...job, request: undefined, admit: { loadId: known.loadId } };
    const admitted = await this.#main.run(admission, []);
    if ('stale' in admitted) return undefined;
    if (!('admitted' in admitted)) throw new Error('the main thread ran a pipeline request it was asked to admit');
    const started = this.#now();
    let serviceMs: number | undefined;
    try {
      known.pipeline ??= this.#open(known);
      const result = await (await known.pipeline)(request);
      serviceMs = this.#now() - started;
      return {
        version: admitted.version,
        result: {
          outputs: result.outputs,
          units: meterAnswer(known.config, request, result.outputs),
          rows: 1,
          queueMs: Math.max(0, serviceMs - result.computeMs),
          computeMs: result.computeMs,
        },
      };
    } finally {
      this.#main.release(admission, serviceMs);
    }
  }

  /** Opens the pipeline of a load: its step configs from the main thread, its steps run there. */
  #open(known: Known): Promise<PipelineRun> {
    const steps = known.steps ?? {};
    return openPipeline(known.config, {
      dir: path.join(this.#repository, known.config.name),
      modelDir: (name) => path.join(this.#repository, name),
      load: (name) => {
        const config = steps[name];
        return config ? Promise.resolve(config) : Promise.reject(new Error(`Model "${known.config.name}": step "${name}" is not one it was loaded with`));
      },
      run: (name, input) => this.#main.step(name, input),
    });
  }

  /** An answer from the main thread as the HTTP side wants it: the load it describes kept, units counted here when it left them out. */
  #finish(job: InferJob, answer: WorkerAnswer, preparedWith: ModelInfo | undefined): InferAnswer {
    if (!('result' in answer)) throw new Error('the main thread answered an unprepared job without a result');
    if (answer.model) this.#models.set(job.name, answer.model);
    const { units, ...rest } = answer.result;
    if (units) return { version: answer.version, result: { ...rest, units } };
    // A prepared job comes back unmetered: the units are counted here, with the config it was prepared with.
    return { version: answer.version, result: { ...rest, units: meterAnswer(preparedWith!.config, job.request!, rest.outputs) } };
  }

  /** The request checked and converted with the load's config; undefined when that fails (the main thread then says why, in order). */
  #prepare(info: ModelInfo, request: InferRequest): PreparedJob | undefined {
    try {
      const inference = prepareInference(info.config, request);
      return { loadId: info.loadId, inference, timeoutUs: queueTimeoutUs(info.config, request) };
    } catch (err) {
      if (isMeshError(err)) return undefined;
      throw err;
    }
  }
}
