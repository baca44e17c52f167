/**
 * Synthetic text images for the OCR tests and benches: black text on white,
 * drawn with a monospaced 5x7 bitmap font (A-Z, 0-9, space and `.,:-!?'`;
 * anything else throws), each font dot `scale` pixels square, and the PNG /
 * JPEG encodings of such an image.
 */

import { encode as encodePngRaw } from 'fast-png';
import { encode as encodeJpegRaw } from 'jpeg-js';
import type { RgbImage } from '../../gpu-backend/src/ocr/image.ts';

export interface RenderOptions {
  /**
   * Pixel size of one font dot; default 2 (a capital is 14 pixels high, as on
   * a screen). The PP-OCRv4 models read this font best at 2: from 3 up,
   * detection splits lines at the font's wide (one-cell) spaces and its
   * tight boxes cost recognition characters.
   */
  scale?: number;
  /** White border around the text, in pixels; default 4 dots (4 * scale). */
  margin?: number;
  /** White space between two lines, in pixels; default 4 dots (4 * scale). */
  lineGap?: number;
}

/** Each glyph: 7 rows of 5 dots, '#' inked. */
const GLYPHS: Record<string, string> = {
  A: '.###. #...# #...# #...# ##### #...# #...#',
  B: '####. #...# #...# ####. #...# #...# ####.',
  C: '.###. #...# #.... #.... #.... #...# .###.',
  D: '####. #...# #...# #...# #...# #...# ####.',
  E: '##### #.... #.... ####. #.... #.... #####',
  F: '##### #.... #.... ####. #.... #.... #....',
  G: '.###. #...# #.... #.### #...# #...# .####',
  H: '#...# #...# #...# ##### #...# #...# #...#',
  I: '.###. ..#.. ..#.. ..#.. ..#.. ..#.. .###.',
  J: '..### ...#. ...#. ...#. ...#. #..#. .##..',
  K: '#...# #..#. #.#.. ##... #.#.. #..#. #...#',
  L: '#.... #.... #.... #.... #.... #.... #####',
  M: '#...# ##.## #.#.# #.#.# #...# #...# #...#',
  N: '#...# #...# ##..# #.#.# #..## #...# #...#',
  O: '.###. #...# #...# #...# #...# #...# .###.',
  P: '####. #...# #...# ####. #.... #.... #....',
  Q: '.###. #...# #...# #...# #.#.# #..#. .##.#',
  R: '####. #...# #...# ####. #.#.. #..#. #...#',
  S: '.#### #.... #.... .###. ....# ....# ####.',
  T: '##### ..#.. ..#.. ..#.. ..#.. ..#.. ..#..',
  U: '#...# #...# #...# #...# #...# #...# .###.',
  V: '#...# #...# #...# .#.#. .#.#. ..#.. ..#..',
  W: '#...# #...# #...# #.#.# #.#.# #.#.# .#.#.',
  X: '#...# #...# .#.#. ..#.. .#.#. #...# #...#',
  Y: '#...# #...# #...# .#.#. ..#.. ..#.. ..#..',
  Z: '##### ....# ...#. ..#.. .#... #.... #####',
  '0': '.###. #...# #..## #.#.# ##..# #...# .###.',
  '1': '..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###.',
  '2': '.###. #...# ....# ...#. ..#.. .#... #####',
  '3': '##### ...#. ..#.. ...#. ....# #...# .###.',
  '4': '...#. ..##. .#.#. #..#. ##### ...#. ...#.',
  '5': '##### #.... ####. ....# ....# #...# .###.',
  '6': '..##. .#... #.... ####. #...# #...# .###.',
  '7': '##### ....# ...#. ..#.. .#... .#... .#...',
  '8': '.###. #...# #...# .###. #...# #...# .###.',
  '9': '.###. #...# #...# .#### ....# ...#. .##..',
  ' ': '..... ..... ..... ..... ..... ..... .....',
  '.': '..... ..... ..... ..... ..... .##.. .##..',
  ',': '..... ..... ..... ..... .##.. ..#.. .#...',
  ':': '..... .##.. .##.. ..... .##.. .##.. .....',
  '-': '..... ..... ..... ##### ..... ..... .....',
  '!': '..#.. ..#.. ..#.. ..#.. ..#.. ..... ..#..',
  '?': '.###. #...# ....# ...#. ..#.. ..... ..#..',
  "'": '.##.. ..#.. .#... ..... ..... ..... .....',
};

const GLYPH_W = 5;
const GLYPH_H = 7;
/** Dots from one character cell to the next (one blank column between glyphs). */
const ADVANCE = GLYPH_W + 1;

/** Draws the lines (left-aligned, top to bottom) in black on white. */
export function renderText(lines: string[], options: RenderOptions = {}): RgbImage {
  const scale = options.scale ?? 2;
  const margin = options.margin ?? 4 * scale;
  const lineGap = options.lineGap ?? 4 * scale;
  if (!Number.isInteger(scale) || scale < 1) throw new Error(`scale must be a positive integer, not ${scale}`);
  if (!Number.isInteger(margin) || margin < 0 || !Number.isInteger(lineGap) || lineGap < 0) {
    throw new Error(`margin and lineGap must be whole pixels, not ${margin} and ${lineGap}`);
  }
  for (const line of lines) {
    for (const ch of line) if (GLYPHS[ch] === undefined) throw new Error(`renderText has no glyph for ${JSON.stringify(ch)}`);
  }
  const lineDots = (line: string) => Math.max(0, [...line].length * ADVANCE - 1);
  const width = Math.max(1, 2 * margin + Math.max(0, ...lines.map(lineDots)) * scale);
  const height = Math.max(1, 2 * margin + lines.length * GLYPH_H * scale + Math.max(0, lines.length - 1) * lineGap);
  const data = new Uint8Array(width * height * 3).fill(255);
  lines.forEach((line, row) => {
    const top = margin + row * (GLYPH_H * scale + lineGap);
    let left = margin;
    for (const ch of line) {
      const rows = GLYPHS[ch]!.split(' ');
      for (let gy = 0; gy < GLYPH_H; gy++) {
        for (let gx = 0; gx < GLYPH_W; gx++) {
          if (rows[gy]![gx] !== '#') continue;
          for (let y = top + gy * scale; y < top + (gy + 1) * scale; y++) {
            data.fill(0, (y * width + left + gx * scale) * 3, (y * width + left + (gx + 1) * scale) * 3);
          }
        }
      }
      left += ADVANCE * scale;
    }
  });
  return { width, height, data };
}

/** The image as an 8-bit RGB PNG. */
export function encodePng(image: RgbImage): Uint8Array {
  return encodePngRaw({ width: image.width, height: image.height, data: image.data, channels: 3, depth: 8 });
}

/** The image as a baseline JPEG. */
export function encodeJpeg(image: RgbImage, quality = 90): Uint8Array {
  const rgba = new Uint8Array(image.width * image.height * 4);
  for (let p = 0; p < image.width * image.height; p++) {
    rgba[p * 4] = image.data[p * 3]!;
    rgba[p * 4 + 1] = image.data[p * 3 + 1]!;
    rgba[p * 4 + 2] = image.data[p * 3 + 2]!;
    rgba[p * 4 + 3] = 255;
  }
  const { data } = encodeJpegRaw({ width: image.width, height: image.height, data: rgba }, quality);
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}
