/**
 * Text recognition around PaddleOCR's CRNN/SVTR model with a CTC head: the
 * model's input for one detected line (the crop resized to height 48 keeping
 * its aspect ratio, normalised as PaddleOCR's rec preprocessing, right-padded
 * to a fixed width bucket so lines of similar width share a batch), batching,
 * greedy CTC decoding of the model's [N, T, C] probabilities, and the
 * character list. Pure: no Node-only API.
 */

import type { Box } from './detect.ts';
import { resampleToChw, type Normalisation, type Region, type RgbImage } from './image.ts';

export interface RecognitionInput {
  /** The input width (a `WIDTH_BUCKETS` entry). */
  bucket: number;
  /** 3 * REC_HEIGHT * bucket floats, CHW. */
  data: Float32Array;
}

export interface RecognitionBatch {
  data: Float32Array;
  dims: [number, 3, number, number];
}

export interface DecodedLine {
  text: string;
  /** Mean of the kept steps' top probabilities; 0 for an empty line. */
  score: number;
}

export const REC_HEIGHT = 48;
/** Input widths, ascending; a line wider than the last is squeezed to it. */
export const WIDTH_BUCKETS: readonly number[] = Object.freeze([64, 128, 256, 512, 1024, 2048]);
/** (v / 255 - 0.5) / 0.5; channel order as PaddleOCR's (BGR from OpenCV). */
export const REC_NORMALISATION: Normalisation = Object.freeze({ mean: [0.5, 0.5, 0.5] as const, std: [0.5, 0.5, 0.5] as const, order: 'bgr' });

/** The smallest bucket at least `width` wide; the last bucket for anything wider. */
export function bucketOf(width: number): number {
  return WIDTH_BUCKETS.find((b) => b >= width) ?? WIDTH_BUCKETS[WIDTH_BUCKETS.length - 1]!;
}

/** The pixels a box covers: its edges rounded to whole pixels, clamped to the image, at least 1x1. */
export function cropRegion(image: RgbImage, box: Box): Region {
  const x0 = clamp(Math.round(box.x0), 0, image.width - 1);
  const y0 = clamp(Math.round(box.y0), 0, image.height - 1);
  const x1 = clamp(Math.round(box.x1), x0 + 1, image.width);
  const y1 = clamp(Math.round(box.y1), y0 + 1, image.height);
  return { x: x0, y: y0, width: x1 - x0, height: y1 - y0 };
}

/** One line's model input: the box's pixels (`cropRegion`) at height 48 keeping the aspect ratio, right-padded with 0 to its bucket. */
export function recognitionInput(image: RgbImage, box: Box): RecognitionInput {
  const region = cropRegion(image, box);
  const resized = Math.max(1, Math.ceil((REC_HEIGHT * region.width) / region.height));
  const bucket = bucketOf(resized);
  const data = new Float32Array(3 * REC_HEIGHT * bucket);
  resampleToChw(image, region, Math.min(resized, bucket), REC_HEIGHT, REC_NORMALISATION, data, bucket);
  return { bucket, data };
}

/** Inputs of one bucket as one [N, 3, 48, bucket] batch. */
export function batchInput(items: Float32Array[], bucket: number): RecognitionBatch {
  const each = 3 * REC_HEIGHT * bucket;
  const data = new Float32Array(items.length * each);
  items.forEach((item, i) => {
    if (item.length !== each) throw new RangeError(`batchInput: item ${i} has ${item.length} values, not 3x${REC_HEIGHT}x${bucket}`);
    data.set(item, i * each);
  });
  return { data, dims: [items.length, 3, REC_HEIGHT, bucket] };
}

/**
 * Greedy CTC decoding of [N, T, C] probabilities: the top class of each step,
 * repeats collapsed, the blank (class 0) dropped. Class i in 1..keys.length
 * is keys[i - 1]; class keys.length + 1 is a space.
 */
export function ctcDecode(probs: Float32Array, dims: readonly number[], keys: readonly string[]): DecodedLine[] {
  if (dims.length !== 3) throw new Error(`ctcDecode: the probabilities have dims [${dims.join(', ')}], not [N, T, C]`);
  const [n, steps, classes] = dims as [number, number, number];
  if (classes !== keys.length + 2) {
    throw new Error(`ctcDecode: the model has ${classes} classes, but ${keys.length} keys need ${keys.length + 2} (blank + keys + space)`);
  }
  if (probs.length !== n * steps * classes) throw new Error(`ctcDecode: ${probs.length} values do not fill [${dims.join(', ')}]`);
  const lines: DecodedLine[] = [];
  for (let i = 0; i < n; i++) {
    let text = '';
    let sum = 0;
    let kept = 0;
    let previous = -1;
    for (let t = 0; t < steps; t++) {
      const base = (i * steps + t) * classes;
      let best = 0;
      let bestP = probs[base]!;
      for (let c = 1; c < classes; c++) {
        const p = probs[base + c]!;
        if (p > bestP) {
          bestP = p;
          best = c;
        }
      }
      if (best !== 0 && best !== previous) {
        text += best === classes - 1 ? ' ' : keys[best - 1]!;
        sum += bestP;
        kept++;
      }
      previous = best;
    }
    lines.push({ text, score: kept === 0 ? 0 : sum / kept });
  }
  return lines;
}

/** The character list: one per line; a trailing newline and \r line ends are tolerated. */
export function parseKeys(text: string): string[] {
  const lines = text.split('\n').map((line) => (line.endsWith('\r') ? line.slice(0, -1) : line));
  if (lines.at(-1) === '') lines.pop();
  return lines;
}

const clamp = (v: number, min: number, max: number) => Math.min(Math.max(v, min), max);
