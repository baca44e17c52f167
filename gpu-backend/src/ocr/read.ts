/**
 * The `ocr` pipeline's orchestration: detection, text boxes, one crop per
 * box, recognition batched by width bucket (one call per bucket, the buckets
 * in parallel), CTC decoding, and the lines in reading order. The models run
 * behind injected runners, so this module holds no ONNX Runtime and no I/O.
 */

import { detectionInput, findTextBoxes, scaleBox } from './detect.ts';
import type { RgbImage } from './image.ts';
import { batchInput, cropRegion, ctcDecode, recognitionInput } from './recognize.ts';

/** A tensor as the runners take and give it. */
export interface OcrTensor {
  data: Float32Array;
  dims: number[];
}

/** The two models: detection ([1, 3, H, W] → [1, 1, H, W] probabilities) and recognition ([N, 3, 48, W] → [N, W/8, C]). */
export interface OcrRunners {
  detect(input: OcrTensor): Promise<OcrTensor>;
  recognize(input: OcrTensor): Promise<OcrTensor>;
}

export interface ReadOptions {
  /** The detection input's longest side, at most; default 960. */
  maxSide?: number;
  /** The most lines read (the first in reading order); default 100. */
  maxLines?: number;
}

export interface TextLine {
  text: string;
  score: number;
  /** x0, y0, x1, y1 in image pixels: the crop that was read. */
  box: [number, number, number, number];
}

export interface ReadResult {
  lines: TextLine[];
}

export const MAX_LINES = 100;

/** Reads the image's text lines, in reading order; lines that decode to no text are dropped. */
export async function readText(
  image: RgbImage,
  runners: OcrRunners,
  keys: readonly string[],
  options: ReadOptions = {},
): Promise<ReadResult> {
  const maxLines = options.maxLines ?? MAX_LINES;
  const input = detectionInput(image, options.maxSide === undefined ? {} : { maxSide: options.maxSide });
  const [, , height, width] = input.dims;
  const map = await runners.detect({ data: input.data, dims: [...input.dims] });
  if (map.data.length !== width * height) {
    throw new Error(`The detection model returned [${map.dims.join(', ')}] for a ${width}x${height} input; a ${width}x${height} map was expected.`);
  }
  const boxes = findTextBoxes(map.data, width, height)
    .slice(0, Math.max(0, maxLines))
    .map((box) => scaleBox(box, input.scaleX, input.scaleY, image.width, image.height));
  if (boxes.length === 0) return { lines: [] };

  // Crops grouped by width bucket, remembering each crop's place in reading order.
  const groups = new Map<number, { index: number; data: Float32Array }[]>();
  boxes.forEach((box, index) => {
    const { bucket, data } = recognitionInput(image, box);
    const group = groups.get(bucket) ?? [];
    group.push({ index, data });
    groups.set(bucket, group);
  });
  const decoded = new Array<{ text: string; score: number }>(boxes.length);
  await Promise.all(
    [...groups].map(async ([bucket, group]) => {
      const batch = batchInput(
        group.map((g) => g.data),
        bucket,
      );
      const out = await runners.recognize({ data: batch.data, dims: [...batch.dims] });
      if (out.dims[0] !== group.length) {
        throw new Error(`The recognition model returned [${out.dims.join(', ')}] for a batch of ${group.length} lines.`);
      }
      ctcDecode(out.data, out.dims, keys).forEach((line, i) => {
        decoded[group[i]!.index] = line;
      });
    }),
  );

  const lines: TextLine[] = [];
  boxes.forEach((box, i) => {
    const line = decoded[i]!;
    if (line.text === '') return;
    const { x, y, width, height } = cropRegion(image, box);
    lines.push({ text: line.text, score: line.score, box: [x, y, x + width, y + height] });
  });
  return { lines };
}
