/**
 * Text detection's pure halves: the model input is the image resized so both
 * sides are multiples of 32 (at least 32, the longest at most maxSide),
 * normalised in BGR plane order, with the scales back to the image; the DB
 * post-processing finds one axis-aligned box per text region of a
 * probability map, in reading order (rows top to bottom, left to right within
 * a row), drops faint and tiny regions, grows each box by the unclip
 * distance, bounds the boxes it returns, and boxes scale back to image
 * pixels clamped to the image.
 */

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DET_MAX_SIDE, detectionInput, findTextBoxes, scaleBox, type Box } from '../../../gpu-backend/src/ocr/detect.ts';
import type { RgbImage } from '../../../gpu-backend/src/ocr/image.ts';

const white = (width: number, height: number): RgbImage => ({ width, height, data: new Uint8Array(width * height * 3).fill(255) });

/** A width x height map, 0 except the given rectangles ([x0, y0, x1, y1) at probability p). */
function map(width: number, height: number, rects: [number, number, number, number, number][]): Float32Array {
  const prob = new Float32Array(width * height);
  for (const [x0, y0, x1, y1, p] of rects) {
    for (let y = y0; y < y1; y++) prob.fill(p, y * width + x0, y * width + x1);
  }
  return prob;
}

const corners = (b: Box) => [b.x0, b.y0, b.x1, b.y1];

describe('detectionInput', () => {
  it('gives sides that are multiples of 32, at least 32 and at most maxSide, and the scales back', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 2000 }),
        fc.integer({ min: 1, max: 2000 }),
        fc.option(fc.integer({ min: 1, max: 2000 }), { nil: undefined }),
        (width, height, maxSide) => {
          const input = detectionInput(white(width, height), maxSide === undefined ? {} : { maxSide });
          const [n, c, h, w] = input.dims;
          const limit = Math.max(32, Math.floor((maxSide ?? DET_MAX_SIDE) / 32) * 32);
          expect([n, c]).toEqual([1, 3]);
          for (const side of [h, w]) {
            expect(side % 32).toBe(0);
            expect(side).toBeGreaterThanOrEqual(32);
            expect(side).toBeLessThanOrEqual(limit);
          }
          expect(input.data.length).toBe(3 * h * w);
          expect(input.scaleX).toBeCloseTo(width / w, 12);
          expect(input.scaleY).toBeCloseTo(height / h, 12);
        },
      ),
      { numRuns: 40 },
    );
  });

  it('keeps a small image near its size and shrinks a large one to maxSide', () => {
    expect(detectionInput(white(146, 52)).dims).toEqual([1, 3, 64, 160]);
    expect(detectionInput(white(4000, 1000)).dims).toEqual([1, 3, 256, 960]);
    expect(detectionInput(white(4000, 1000), { maxSide: 640 }).dims).toEqual([1, 3, 160, 640]);
  });

  it("normalises as PaddleOCR's det: (v/255 - mean) / std, planes B, G, R", () => {
    const img: RgbImage = { width: 32, height: 32, data: new Uint8Array(32 * 32 * 3) };
    for (let p = 0; p < 32 * 32; p++) img.data.set([255, 0, 51], p * 3); // R=255, G=0, B=51
    const { data } = detectionInput(img);
    const plane = 32 * 32;
    expect(data[0]).toBeCloseTo((0.2 - 0.485) / 0.229, 5); // plane 0: blue
    expect(data[plane]).toBeCloseTo((0 - 0.456) / 0.224, 5); // plane 1: green
    expect(data[2 * plane]).toBeCloseTo((1 - 0.406) / 0.225, 5); // plane 2: red
  });
});

describe('findTextBoxes', () => {
  it('finds two separated rectangles as two boxes, top one first', () => {
    const prob = map(100, 60, [
      [10, 40, 60, 50, 0.9],
      [10, 10, 70, 20, 0.9],
    ]);
    const boxes = findTextBoxes(prob, 100, 60, { unclipRatio: 0 });
    expect(boxes.map(corners)).toEqual([
      [10, 10, 70, 20],
      [10, 40, 60, 50],
    ]);
    expect(boxes[0]!.score).toBeCloseTo(0.9, 6);
  });

  it('reads a row left to right even when the right box starts higher', () => {
    const prob = map(200, 60, [
      [120, 8, 190, 22, 0.9], // right, found first by a top-down scan
      [10, 10, 100, 24, 0.9], // left, same row
      [10, 40, 60, 52, 0.9], // next row
    ]);
    const boxes = findTextBoxes(prob, 200, 60, { unclipRatio: 0 });
    expect(boxes.map((b) => b.x0 + ',' + b.y0)).toEqual(['10,10', '120,8', '10,40']);
  });

  it('drops a faint blob (above threshold, mean under boxThreshold) and one under minSize', () => {
    expect(findTextBoxes(map(50, 50, [[10, 10, 40, 30, 0.45]]), 50, 50)).toEqual([]);
    expect(findTextBoxes(map(50, 50, [[10, 10, 40, 12, 0.95]]), 50, 50)).toEqual([]);
    expect(findTextBoxes(map(50, 50, [[10, 10, 40, 30, 0.45]]), 50, 50, { boxThreshold: 0.4 })).toHaveLength(1);
  });

  it('scores a box by the mean probability over its rectangle', () => {
    const prob = map(40, 20, [
      [0, 0, 10, 10, 0.5],
      [10, 0, 20, 10, 1],
    ]);
    const [box] = findTextBoxes(prob, 40, 20, { unclipRatio: 0 });
    expect(box!.score).toBeCloseTo(0.75, 6);
  });

  it('grows each box by d = area * unclipRatio / perimeter on every side, clamped to the map', () => {
    const prob = map(100, 100, [[40, 40, 60, 50, 0.9]]); // 20 x 10: d = 200 * 1.5 / 60 = 5
    expect(corners(findTextBoxes(prob, 100, 100)[0]!)).toEqual([35, 35, 65, 55]);
    expect(corners(findTextBoxes(prob, 100, 100, { unclipRatio: 3 })[0]!)).toEqual([30, 30, 70, 60]);
    const edge = map(100, 100, [[0, 0, 20, 10, 0.9]]);
    expect(corners(findTextBoxes(edge, 100, 100)[0]!)).toEqual([0, 0, 25, 15]);
  });

  it('returns at most maxBoxes boxes', () => {
    const rects: [number, number, number, number, number][] = [];
    for (let i = 0; i < 30; i++) rects.push([(i % 10) * 10, Math.floor(i / 10) * 10, (i % 10) * 10 + 5, Math.floor(i / 10) * 10 + 5, 0.9]);
    const prob = map(100, 30, rects);
    expect(findTextBoxes(prob, 100, 30)).toHaveLength(30);
    expect(findTextBoxes(prob, 100, 30, { maxBoxes: 7 })).toHaveLength(7);
  });

  it('handles a map that is all text without recursion (one box, the whole map)', () => {
    const prob = new Float32Array(1000 * 1000).fill(0.99);
    expect(findTextBoxes(prob, 1000, 1000, { unclipRatio: 0 }).map(corners)).toEqual([[0, 0, 1000, 1000]]);
  });

  it('finds nothing in an empty map', () => {
    expect(findTextBoxes(new Float32Array(64 * 64), 64, 64)).toEqual([]);
  });
});

describe('scaleBox', () => {
  it('scales a model box to image pixels and clamps it to the image', () => {
    const box = { x0: 10, y0: 5, x1: 150, y1: 70, score: 0.8 };
    expect(scaleBox(box, 2, 0.5, 1000, 1000)).toEqual({ x0: 20, y0: 2.5, x1: 300, y1: 35, score: 0.8 });
    expect(scaleBox(box, 2, 2, 250, 100)).toEqual({ x0: 20, y0: 10, x1: 250, y1: 100, score: 0.8 });
  });
});
