/**
 * The pipelines a backend can serve (`platform: "pipeline"`), by the name in
 * `parameters.pipeline`; what their code may use of the repository is in
 * pipeline-steps.ts.
 */

import type { ModelConfig } from './model-config.ts';
import type { PipelineRun } from './pipeline-handle.ts';
import type { PipelineContext } from './pipeline-steps.ts';
import { openOcrPipeline } from '../ocr/pipeline.ts';

type Opener = (config: ModelConfig, context: PipelineContext) => Promise<PipelineRun>;

const OPENERS: Record<string, Opener> = {
  ocr: openOcrPipeline,
};

/** Opens the pipeline `config` names; throws when it names none this backend has. */
export function openPipeline(config: ModelConfig, context: PipelineContext): Promise<PipelineRun> {
  const kind = String(config.parameters?.pipeline ?? '');
  const open = OPENERS[kind];
  if (!open) throw new Error(`Model "${config.name}": parameters.pipeline ${JSON.stringify(kind)} is not a pipeline this backend has (${Object.keys(OPENERS).join(', ')}).`);
  return open(config, context);
}
