/**
 * Text detection around PaddleOCR's DB (differentiable binarisation) model:
 * the model's input (the image resized so both sides are multiples of 32,
 * normalised as PaddleOCR's det preprocessing) and the post-processing of its
 * probability map into text boxes. The post-processing is DB's, simplified
 * to AXIS-ALIGNED boxes: rotated or curved text is out of scope (a tilted
 * line gets its bounding rectangle). Work is linear in the map's size and the
 * boxes kept are bounded (`maxBoxes`). Pure: no Node-only API.
 */

import { resampleToChw, type Normalisation, type RgbImage } from './image.ts';

/** A text box: [x0, x1) x [y0, y1) in pixel-edge coordinates, and its mean probability. */
export interface Box {
  x0: number;
  y0: number;
  x1: number;
  y1: number;
  score: number;
}

export interface DetectionInputOptions {
  /** The longest side of the model input, at most (rounded down to a multiple of 32); default 960. */
  maxSide?: number;
}

export interface DetectionInput {
  data: Float32Array;
  dims: [1, 3, number, number];
  /** Image pixels per model pixel, horizontally and vertically. */
  scaleX: number;
  scaleY: number;
}

export interface TextBoxOptions {
  /** Probability above which a pixel is text; default 0.3. */
  threshold?: number;
  /** Mean probability a box needs to be kept; default 0.6. */
  boxThreshold?: number;
  /** How far a box grows: d = area * unclipRatio / perimeter on every side; default 1.5. */
  unclipRatio?: number;
  /** Shorter side a box needs (before unclipping), in map pixels; default 3. */
  minSize?: number;
  /** The most boxes returned (the first found, top to bottom); default 1000. */
  maxBoxes?: number;
}

export const DET_MAX_SIDE = 960;
/**
 * PaddleOCR's det normalisation. Its images come from OpenCV, in BGR order,
 * and the ImageNet mean/std are applied in that order to B, G, R (and the
 * model was trained so). Black-on-white text reads the same either way.
 */
export const DET_NORMALISATION: Normalisation = Object.freeze({ mean: [0.485, 0.456, 0.406] as const, std: [0.229, 0.224, 0.225] as const, order: 'bgr' });

/** The post-processing's defaults (PaddleOCR's DB defaults, but see unclipRatio). */
export const TEXT_BOX_DEFAULTS: Readonly<Required<TextBoxOptions>> = Object.freeze({ threshold: 0.3, boxThreshold: 0.6, unclipRatio: 1.5, minSize: 3, maxBoxes: 1000 });

/** The detection model's input: the image resized (bilinear) so its longest side is at most maxSide and both sides are multiples of 32. */
export function detectionInput(image: RgbImage, options: DetectionInputOptions = {}): DetectionInput {
  const limit = Math.max(32, Math.floor((options.maxSide ?? DET_MAX_SIDE) / 32) * 32);
  const ratio = Math.min(1, limit / Math.max(image.width, image.height));
  const side = (n: number) => Math.min(limit, Math.max(32, Math.round((n * ratio) / 32) * 32));
  const width = side(image.width);
  const height = side(image.height);
  const data = new Float32Array(3 * width * height);
  resampleToChw(image, { x: 0, y: 0, width: image.width, height: image.height }, width, height, DET_NORMALISATION, data);
  return { data, dims: [1, 3, height, width], scaleX: image.width / width, scaleY: image.height / height };
}

/**
 * Text boxes in a width x height probability map, in reading order: top to
 * bottom, and left to right within a row (boxes whose vertical centres are
 * within half a line height are one row).
 */
export function findTextBoxes(prob: Float32Array, width: number, height: number, options: TextBoxOptions = {}): Box[] {
  const { threshold, boxThreshold, unclipRatio, minSize, maxBoxes } = { ...TEXT_BOX_DEFAULTS, ...options };
  const size = width * height;
  if (prob.length < size) throw new RangeError(`findTextBoxes: the map has ${prob.length} values, not ${width}x${height}`);
  const sums = summedArea(prob, width, height);
  const meanIn = (x0: number, y0: number, x1: number, y1: number) => {
    const w1 = width + 1;
    const total = sums[y1 * w1 + x1]! - sums[y0 * w1 + x1]! - sums[y1 * w1 + x0]! + sums[y0 * w1 + x0]!;
    return total / ((x1 - x0) * (y1 - y0));
  };

  // Connected components (8-connected) of the binarised map, by an explicit stack.
  const seen = new Uint8Array(size);
  const stack = new Int32Array(size);
  const boxes: Box[] = [];
  for (let start = 0; start < size && boxes.length < maxBoxes; start++) {
    if (seen[start] || !(prob[start]! > threshold)) continue;
    let minX = width;
    let minY = height;
    let maxX = -1;
    let maxY = -1;
    let top = 0;
    stack[top++] = start;
    seen[start] = 1;
    while (top > 0) {
      const p = stack[--top]!;
      const x = p % width;
      const y = (p - x) / width;
      if (x < minX) minX = x;
      if (x > maxX) maxX = x;
      if (y < minY) minY = y;
      if (y > maxY) maxY = y;
      for (let ny = Math.max(0, y - 1); ny <= Math.min(height - 1, y + 1); ny++) {
        for (let nx = Math.max(0, x - 1); nx <= Math.min(width - 1, x + 1); nx++) {
          const q = ny * width + nx;
          if (!seen[q] && prob[q]! > threshold) {
            seen[q] = 1;
            stack[top++] = q;
          }
        }
      }
    }
    const x0 = minX;
    const y0 = minY;
    const x1 = maxX + 1;
    const y1 = maxY + 1;
    const w = x1 - x0;
    const h = y1 - y0;
    if (Math.min(w, h) < minSize) continue;
    const score = meanIn(x0, y0, x1, y1);
    if (score < boxThreshold) continue;
    const d = (w * h * unclipRatio) / (2 * (w + h));
    boxes.push({
      x0: Math.max(0, x0 - d),
      y0: Math.max(0, y0 - d),
      x1: Math.min(width, x1 + d),
      y1: Math.min(height, y1 + d),
      score,
    });
  }
  return readingOrder(boxes);
}

/** A box in model coordinates to image pixels, clamped to the image. */
export function scaleBox(box: Box, scaleX: number, scaleY: number, imageWidth: number, imageHeight: number): Box {
  const clamp = (v: number, max: number) => Math.min(Math.max(v, 0), max);
  return {
    x0: clamp(box.x0 * scaleX, imageWidth),
    y0: clamp(box.y0 * scaleY, imageHeight),
    x1: clamp(box.x1 * scaleX, imageWidth),
    y1: clamp(box.y1 * scaleY, imageHeight),
    score: box.score,
  };
}

/** Top to bottom by vertical centre; a box within half a line height of a row's first box joins that row; rows left to right. */
function readingOrder(boxes: Box[]): Box[] {
  const centre = (b: Box) => (b.y0 + b.y1) / 2;
  const sorted = [...boxes].sort((a, b) => centre(a) - centre(b) || a.x0 - b.x0);
  const rows: Box[][] = [];
  for (const box of sorted) {
    const row = rows.at(-1);
    const first = row?.[0];
    const half = first ? Math.min(first.y1 - first.y0, box.y1 - box.y0) / 2 : 0;
    if (row && first && centre(box) - centre(first) <= half) row.push(box);
    else rows.push([box]);
  }
  return rows.flatMap((row) => row.sort((a, b) => a.x0 - b.x0));
}

/** (width+1) x (height+1) summed-area table of the map, so a rectangle's sum is 4 lookups. */
function summedArea(prob: Float32Array, width: number, height: number): Float64Array {
  const w1 = width + 1;
  const sums = new Float64Array(w1 * (height + 1));
  for (let y = 0; y < height; y++) {
    let row = 0;
    for (let x = 0; x < width; x++) {
      row += prob[y * width + x]!;
      sums[(y + 1) * w1 + x + 1] = sums[y * w1 + x + 1]! + row;
    }
  }
  return sums;
}
