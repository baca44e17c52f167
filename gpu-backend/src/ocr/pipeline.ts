/**
 * The `ocr` pipeline: one request reads the text of one encoded image (PNG or
 * JPEG). Detection (`parameters.detector`, default `ocr-det`) finds the text
 * lines, each line is cropped and recognised (`parameters.recognizer`,
 * default `ocr-rec`, whose `parameters.character_dictionary` file in its
 * folder names its classes) in batches of one width bucket, and CTC decoding
 * turns the classes into text (ocr/read.ts). Both steps run through their
 * models' own batchers (serving/pipeline-steps.ts `runStep`); this code runs
 * where the request was read (an HTTP worker, or the main thread).
 *
 * Input `image` (BYTES, shape [1]): the image's bytes in the binary tensor
 * extension, or a `data:image/...;base64,` URL in JSON. Outputs: `text`
 * (BYTES [lines]), `score` (FP32 [lines], the mean probability of each line's
 * characters) and `box` (FP32 [lines, 4]: x0, y0, x1, y1 in image pixels).
 */

import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { bytesElements } from '../../../shared/binary.ts';
import { MeshError } from '../../../shared/errors.ts';
import type { InferRequest } from '../../../shared/protocol.ts';
import type { ModelConfig } from '../serving/model-config.ts';
import type { PipelineResult, PipelineRun } from '../serving/pipeline-handle.ts';
import type { PipelineContext, StepTensor } from '../serving/pipeline-steps.ts';
import type { OutputTensor } from '../serving/tensors.ts';
import { decodeDataUrl, decodeImage } from './image.ts';
import { readText } from './read.ts';
import { parseKeys } from './recognize.ts';

const INPUT = 'image';
const OUTPUTS = ['text', 'score', 'box'] as const;

/** The image bytes of a checked request: its one `image` element. */
function imageBytes(config: ModelConfig, request: InferRequest): Uint8Array {
  const input = request.inputs.find((i) => i.name === INPUT);
  const other = request.inputs.find((i) => i.name !== INPUT);
  if (other) throw new MeshError('unknown_input', `Input "${other.name}" is not an input of model "${config.name}"; it takes ${INPUT} (BYTES [1]).`);
  if (!input) throw new MeshError('missing_input', `Input "${INPUT}" is missing: model "${config.name}" needs one encoded image (BYTES [1]).`);
  if (input.datatype !== 'BYTES') throw new MeshError('datatype_mismatch', `Input "${INPUT}": expected datatype BYTES, got ${input.datatype}.`);
  if (input.shape.length !== 1 || input.shape[0] !== 1) {
    throw new MeshError('shape_mismatch', `Input "${INPUT}": expected shape [1] (one image a request), got [${input.shape.join(',')}].`);
  }
  if (input.binary) return bytesElements(input.binary)[0]!;
  const text = String(input.data[0]);
  const bytes = decodeDataUrl(text);
  if (!bytes) {
    throw new MeshError(
      'invalid_image',
      `Input "${INPUT}": send the image's bytes with the binary tensor extension (binary_data_size), or in JSON as a "data:image/png;base64,..." URL.`,
    );
  }
  return bytes;
}

/** The outputs the request asks for, in its order (all three by default). */
function fetchesOf(config: ModelConfig, request: InferRequest): string[] {
  if (!request.outputs || request.outputs.length === 0) return [...OUTPUTS];
  const out: string[] = [];
  for (const o of request.outputs) {
    if (!(OUTPUTS as readonly string[]).includes(o.name)) {
      throw new MeshError('invalid_request', `Requested output "${o.name}" is not an output of model "${config.name}"; its outputs are ${OUTPUTS.join(', ')}.`);
    }
    if (!out.includes(o.name)) out.push(o.name);
  }
  return out;
}

/** Splits a batch into runs of at most `max` rows (the step model's max_batch_size) and joins the outputs. */
async function runInChunks(run: (input: StepTensor) => Promise<StepTensor>, input: StepTensor, max: number): Promise<StepTensor> {
  const [n, ...rest] = input.dims as [number, ...number[]];
  if (max <= 0 || n <= max) return run(input);
  const rowIn = rest.reduce((a, b) => a * b, 1);
  const parts: StepTensor[] = [];
  for (let at = 0; at < n; at += max) {
    const rows = Math.min(max, n - at);
    parts.push(await run({ data: input.data.slice(at * rowIn, (at + rows) * rowIn), dims: [rows, ...rest] }));
  }
  const [, ...outRest] = parts[0]!.dims;
  const data = new Float32Array(parts.reduce((k, p) => k + p.data.length, 0));
  let at = 0;
  for (const p of parts) {
    data.set(p.data, at);
    at += p.data.length;
  }
  return { data, dims: [n, ...outRest] };
}

/** Opens the OCR pipeline of `config`: loads its detector and recognizer and reads the recognizer's dictionary. */
export async function openOcrPipeline(config: ModelConfig, context: PipelineContext): Promise<PipelineRun> {
  const detector = String(config.parameters?.detector ?? 'ocr-det');
  const recognizer = String(config.parameters?.recognizer ?? 'ocr-rec');
  await context.load(detector);
  const recConfig = await context.load(recognizer);
  const recBatch = recConfig.max_batch_size;
  const dictionary = recConfig.parameters?.character_dictionary;
  if (typeof dictionary !== 'string' || dictionary.includes('/') || dictionary.includes('\\')) {
    throw new Error(`Model "${recognizer}": parameters.character_dictionary must name a file in its folder (one character per line), got ${JSON.stringify(dictionary)}.`);
  }
  const keys = parseKeys(await readFile(path.join(context.modelDir(recognizer), dictionary), 'utf8'));
  const maxSide = Number(config.parameters?.max_side ?? 960);

  return async (request: InferRequest): Promise<PipelineResult> => {
    const fetches = fetchesOf(config, request);
    const image = decodeImage(imageBytes(config, request));
    let computeMs = 0;
    const step = (name: string) => async (input: StepTensor): Promise<StepTensor> => {
      const out = await context.run(name, input);
      computeMs += out.computeMs;
      return out;
    };
    const recognize = step(recognizer);
    const { lines } = await readText(
      image,
      {
        detect: step(detector),
        recognize: (input) => runInChunks(recognize, input, recBatch),
      },
      keys,
      { maxSide },
    );
    const n = lines.length;
    const all: Record<(typeof OUTPUTS)[number], OutputTensor> = {
      text: { name: 'text', datatype: 'BYTES', shape: [n], data: lines.map((l) => l.text) },
      score: { name: 'score', datatype: 'FP32', shape: [n], data: Float32Array.from(lines, (l) => l.score) },
      box: { name: 'box', datatype: 'FP32', shape: [n, 4], data: Float32Array.from(lines.flatMap((l) => l.box)) },
    };
    return { outputs: fetches.map((f) => all[f as (typeof OUTPUTS)[number]]), computeMs };
  };
}
