/**
 * What a pipeline's code may use (serving/pipelines.ts opens pipelines): its
 * step models' configs, and one way to run a step (`runStep`): through the
 * step model's own batcher and the backend's scheduler, under a lease,
 * exactly like a consumer's request for that model.
 */

import type { ModelHandle } from './model-handle.ts';
import type { ModelConfig } from './model-config.ts';
import type { PreparedInference } from './tensors.ts';

/**
 * What a pipeline's code gets when it is opened: on the main thread from the
 * repository (steps run on their handles), on an HTTP worker from the main
 * thread's description of the load (steps sent to the main thread).
 */
export interface PipelineContext {
  /** The pipeline's own folder in the repository. */
  dir: string;
  /** The folder of a model of the repository. */
  modelDir(name: string): string;
  /** A step model's config, loading it first where that is needed (it stays loaded while the pipeline is). */
  load(name: string): Promise<ModelConfig>;
  /**
   * Runs one FP32 input through the step model's batcher (`runStep`) and
   * returns its first output: looked up per run, so a reload is picked up;
   * 404/503 `MeshError` when the step is gone.
   */
  run(name: string, input: StepTensor): Promise<StepResult>;
}

/** One FP32 tensor in or out of a step. */
export interface StepTensor {
  data: Float32Array;
  dims: number[];
}

/** A step's output, with the compute time of the batch it ran in. */
export interface StepResult extends StepTensor {
  computeMs: number;
}

/**
 * Runs one FP32 input through a step model's batcher and returns its first
 * output with the compute time of the batch it ran in.
 */
export async function runStep(model: ModelHandle, input: StepTensor): Promise<StepResult> {
  const inputName = model.config.input[0]!.name;
  const outputName = model.config.output[0]!.name;
  const prepared: PreparedInference = {
    feeds: { [inputName]: { datatype: 'FP32', shape: input.dims, values: input.data } },
    fetches: [outputName],
    batch: model.config.max_batch_size > 0 ? input.dims[0]! : 1,
    tokenInput: undefined,
    padId: 0,
  };
  const done = model.lease();
  try {
    const result = await model.batcher.submit(prepared, {});
    const out = result.outputs[outputName]!;
    return { data: out.data as Float32Array, dims: [...out.dims], computeMs: result.computeMs };
  } finally {
    done();
  }
}
