/**
 * Image input of the `ocr` pipeline: it owns turning untrusted PNG or JPEG
 * bytes (or a `data:image/...;base64,` URL) into 8-bit RGB pixels. The format
 * is sniffed from the magic bytes, and the header's size is checked against
 * the pixel limit BEFORE anything is decoded; a PNG's compressed stream is
 * also refused when it inflates past what its header allows (a deflate bomb),
 * and a JPEG with an absurd number of scans (a progressive "scan bomb") is
 * refused. Every failure is a `MeshError('invalid_image')` (HTTP 400).
 * It also owns the one resampler the models' inputs are made with
 * (`resampleToChw`: bilinear, normalised, planar). Pure: no Node-only API.
 */

import { decode as decodePng, type DecodedPng } from 'fast-png';
import { Unzlib } from 'fflate';
import { decode as decodeJpeg } from 'jpeg-js';
import { MeshError } from '../../../shared/errors.ts';

/** An 8-bit RGB image, rows top to bottom, pixels interleaved R, G, B (3 bytes each). */
export interface RgbImage {
  width: number;
  height: number;
  data: Uint8Array;
}

export interface DecodeLimits {
  /** The most pixels (width * height) read; default `MAX_IMAGE_PIXELS`. */
  maxPixels?: number;
}

/** A pixel-aligned rectangle of an image: left, top, width, height. */
export interface Region {
  x: number;
  y: number;
  width: number;
  height: number;
}

/** How an 8-bit channel value v becomes a model input: (v / 255 - mean[p]) / std[p] in output plane p, planes in this channel order. */
export interface Normalisation {
  mean: readonly [number, number, number];
  std: readonly [number, number, number];
  /** The order of the output planes: 'rgb', or 'bgr' (as OpenCV-trained models, PaddleOCR's, read images). */
  order: 'rgb' | 'bgr';
}

/** The default pixel limit: 16 megapixels (4096x4096). */
export const MAX_IMAGE_PIXELS = 16_777_216;
/** The most scans a JPEG may have (baseline: 1; progressive encoders write about 10). */
export const MAX_JPEG_SCANS = 100;

type ImageFormat = 'PNG' | 'JPEG';

interface ImageHeader {
  format: ImageFormat;
  width: number;
  height: number;
}

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
/** Input bytes handed to the inflater per step, so one step's output stays small (deflate expands at most ~1032x). */
const INFLATE_STEP = 16 * 1024;

const invalid = (message: string, cause?: unknown) =>
  new MeshError('invalid_image', message, cause === undefined ? {} : { cause });

const reason = (err: unknown) => {
  const message = err instanceof Error ? err.message : String(err);
  const cause = err instanceof Error && err.cause instanceof Error ? ` (${err.cause.message})` : '';
  return `${message}${cause}`;
};

/**
 * Decodes a PNG or JPEG into 8-bit RGB. PNG: palette, grey, grey+alpha, RGB,
 * RGBA, 1 to 16 bits; alpha is composited on white. JPEG: grey, YCbCr, CMYK.
 */
export function decodeImage(bytes: Uint8Array, limits: DecodeLimits = {}): RgbImage {
  const maxPixels = limits.maxPixels ?? MAX_IMAGE_PIXELS;
  if (sniff(bytes) === 'PNG') {
    const header = pngHeader(bytes);
    checkSize(header, maxPixels);
    return readPng(bytes, header);
  }
  const header = jpegHeader(bytes);
  checkSize(header, maxPixels);
  if (header.scans > MAX_JPEG_SCANS) throw invalid(`The JPEG image has more than ${MAX_JPEG_SCANS} scans; it is not read.`);
  return readJpeg(bytes, header, maxPixels);
}

/**
 * The bytes of a `data:image/png;base64,...` or `data:image/jpeg;base64,...`
 * URL (also `image/jpg`); undefined when the text is not a data URL. A data
 * URL of another type, not base64, or with invalid base64 is `invalid_image`.
 */
export function decodeDataUrl(text: string): Uint8Array | undefined {
  if (!/^data:/i.test(text)) return undefined;
  const comma = text.indexOf(',');
  if (comma < 0) throw invalid('The data URL has no comma before its data.');
  const meta = text.slice(5, comma).trim().toLowerCase();
  const [mime, ...params] = meta.split(';').map((p) => p.trim());
  if (mime !== 'image/png' && mime !== 'image/jpeg' && mime !== 'image/jpg') {
    throw invalid(`The data URL's type is "${mime ?? ''}"; only image/png and image/jpeg are read.`);
  }
  if (!params.includes('base64')) throw invalid('The data URL is not base64-encoded (";base64," is missing).');
  const body = text.slice(comma + 1).replace(/\s+/g, '');
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(body) || body.length % 4 === 1) {
    throw invalid("The data URL's base64 data is not valid base64.");
  }
  return base64Bytes(body);
}

/**
 * Resamples `region` of the image (bilinear, pixel centres aligned as
 * OpenCV's INTER_LINEAR) to outWidth x outHeight, normalised, into the 3
 * planes of `out` (CHW; each plane `outHeight` rows of `stride` floats, so a
 * narrower result leaves the rest of each row as it was: padding).
 */
export function resampleToChw(
  image: RgbImage,
  region: Region,
  outWidth: number,
  outHeight: number,
  norm: Normalisation,
  out: Float32Array,
  stride = outWidth,
): void {
  const { width, data } = image;
  const plane = outHeight * stride;
  if (out.length < 3 * plane || outWidth > stride) throw new RangeError('resampleToChw: the output is smaller than the result');
  const fx = region.width / outWidth;
  const fy = region.height / outHeight;
  // Per output column: the two source columns (as byte offsets) and the weight of the right one.
  const col0 = new Int32Array(outWidth);
  const col1 = new Int32Array(outWidth);
  const wx = new Float32Array(outWidth);
  for (let dx = 0; dx < outWidth; dx++) {
    const sx = Math.min(Math.max((dx + 0.5) * fx - 0.5, 0), region.width - 1);
    const x0 = Math.floor(sx);
    col0[dx] = (region.x + x0) * 3;
    col1[dx] = (region.x + Math.min(x0 + 1, region.width - 1)) * 3;
    wx[dx] = sx - x0;
  }
  const scale = [0, 1, 2].map((c) => 1 / (255 * norm.std[c]!));
  const shift = [0, 1, 2].map((c) => norm.mean[c]! / norm.std[c]!);
  const planeOf = norm.order === 'rgb' ? [0, 1, 2] : [2, 1, 0];
  for (let dy = 0; dy < outHeight; dy++) {
    const sy = Math.min(Math.max((dy + 0.5) * fy - 0.5, 0), region.height - 1);
    const y0 = Math.floor(sy);
    const wy = sy - y0;
    const row0 = (region.y + y0) * width * 3;
    const row1 = (region.y + Math.min(y0 + 1, region.height - 1)) * width * 3;
    for (let c = 0; c < 3; c++) {
      const p = planeOf[c]!;
      const base = p * plane + dy * stride;
      const k = scale[p]!;
      const m = shift[p]!;
      for (let dx = 0; dx < outWidth; dx++) {
        const a = col0[dx]! + c;
        const b = col1[dx]! + c;
        const w = wx[dx]!;
        const top = data[row0 + a]! + (data[row0 + b]! - data[row0 + a]!) * w;
        const bottom = data[row1 + a]! + (data[row1 + b]! - data[row1 + a]!) * w;
        out[base + dx] = (top + (bottom - top) * wy) * k - m;
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Sniffing and headers
// ---------------------------------------------------------------------------

function sniff(bytes: Uint8Array): ImageFormat {
  if (bytes.length >= 8 && PNG_SIGNATURE.every((b, i) => bytes[i] === b)) return 'PNG';
  if (bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) return 'JPEG';
  const first = [...bytes.subarray(0, 8)].map((b) => b.toString(16).padStart(2, '0')).join(' ');
  throw invalid(
    bytes.length === 0
      ? 'The image is empty (0 bytes); it is neither PNG nor JPEG.'
      : `The image is neither PNG nor JPEG (its first bytes are ${first}).`,
  );
}

function checkSize({ format, width, height }: ImageHeader, maxPixels: number): void {
  if (width === 0 || height === 0) throw invalid(`The ${format} image is ${width}x${height} pixels; a side of 0 has nothing to read.`);
  if (width * height > maxPixels) {
    throw invalid(`The image is ${width}x${height} pixels; at most ${maxPixels} pixels are read.`);
  }
}

const u32 = (b: Uint8Array, at: number) => ((b[at]! << 24) | (b[at + 1]! << 16) | (b[at + 2]! << 8) | b[at + 3]!) >>> 0;
const u16 = (b: Uint8Array, at: number) => (b[at]! << 8) | b[at + 1]!;
const chunkType = (b: Uint8Array, at: number) => String.fromCharCode(b[at]!, b[at + 1]!, b[at + 2]!, b[at + 3]!);

interface PngHeader extends ImageHeader {
  depth: number;
  colorType: number;
  interlaced: boolean;
}

const PNG_CHANNELS: Record<number, number> = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 };
const PNG_DEPTHS: Record<number, number[]> = { 0: [1, 2, 4, 8, 16], 2: [8, 16], 3: [1, 2, 4, 8], 4: [8, 16], 6: [8, 16] };

function pngHeader(bytes: Uint8Array): PngHeader {
  if (bytes.length < 33 || chunkType(bytes, 12) !== 'IHDR' || u32(bytes, 8) !== 13) {
    throw invalid('The PNG image has no IHDR header where it must be (right after the signature).');
  }
  const colorType = bytes[25]!;
  const depth = bytes[24]!;
  if (!PNG_DEPTHS[colorType]?.includes(depth)) {
    throw invalid(`The PNG image has an invalid colour type ${colorType} with bit depth ${depth}.`);
  }
  return { format: 'PNG', width: u32(bytes, 16), height: u32(bytes, 20), depth, colorType, interlaced: bytes[28] === 1 };
}

interface JpegHeader extends ImageHeader {
  /** Scans (SOS markers) counted, up to MAX_JPEG_SCANS + 1. */
  scans: number;
}

/**
 * Width and height from the first SOFn frame header, and the number of scans:
 * a walk over the markers, through each scan's entropy-coded data. A file
 * malformed before its frame header is refused; after it, the walk stops and
 * the decoder has the last word.
 */
function jpegHeader(bytes: Uint8Array): JpegHeader {
  let frame: { width: number; height: number } | undefined;
  let scans = 0;
  let at = 2;
  while (at < bytes.length && scans <= MAX_JPEG_SCANS) {
    if (bytes[at] !== 0xff) {
      if (frame === undefined) throw invalid(`The JPEG image is malformed: a marker was expected at byte ${at}.`);
      break;
    }
    while (at < bytes.length && bytes[at] === 0xff) at++; // Fill bytes.
    const marker = bytes[at++];
    if (marker === undefined || marker === 0xd9) break; // End of data, EOI.
    if ((marker >= 0xd0 && marker <= 0xd8) || marker === 0x01) continue; // RSTn, a stray SOI, TEM: no segment.
    if (at + 2 > bytes.length) break;
    const length = u16(bytes, at);
    if (length < 2) {
      if (frame === undefined) throw invalid(`The JPEG image is malformed: marker 0x${marker.toString(16)} has length ${length}.`);
      break;
    }
    const isSof = marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc;
    if (isSof && frame === undefined && at + 7 <= bytes.length) frame = { height: u16(bytes, at + 3), width: u16(bytes, at + 5) };
    at += length;
    if (marker === 0xda) {
      scans++;
      // The scan's entropy-coded data runs to the next marker that is not RSTn (0xff00 is a stuffed 0xff, 0xffff fill).
      while (at < bytes.length) {
        if (bytes[at] === 0xff) {
          const next = bytes[at + 1];
          if (next !== undefined && next !== 0x00 && next !== 0xff && !(next >= 0xd0 && next <= 0xd7)) break;
        }
        at++;
      }
    }
  }
  if (frame === undefined) throw invalid('The JPEG image has no frame header (SOF marker); its size is unknown.');
  return { format: 'JPEG', ...frame, scans };
}

// ---------------------------------------------------------------------------
// PNG
// ---------------------------------------------------------------------------

/** Bytes of the filtered (pre-unfilter) image data a header allows: scanlines plus a filter byte each, all 7 Adam7 passes counted. */
function pngRawBytes({ width, height, depth, colorType, interlaced }: PngHeader): number {
  const bitsPerPixel = depth * PNG_CHANNELS[colorType]!;
  const line = (w: number) => (w === 0 ? 0 : 1 + Math.ceil((w * bitsPerPixel) / 8));
  if (!interlaced) return height * line(width);
  const passes = [
    [0, 0, 8, 8],
    [4, 0, 8, 8],
    [0, 4, 4, 8],
    [2, 0, 4, 4],
    [0, 2, 2, 4],
    [1, 0, 2, 2],
    [0, 1, 1, 2],
  ] as const;
  let total = 0;
  for (const [x0, y0, dx, dy] of passes) {
    const w = Math.ceil((width - x0) / dx);
    const h = Math.ceil((height - y0) / dy);
    if (w > 0 && h > 0) total += h * line(w);
  }
  return total;
}

/**
 * Walks the chunks (one IHDR, first; the image data is the IDAT chunks) and
 * inflates the image data in small steps, refusing a stream that inflates
 * past what the header allows before fast-png inflates (and keeps) it.
 */
function checkPngStream(bytes: Uint8Array, header: PngHeader): void {
  const limit = pngRawBytes(header);
  let inflated = 0;
  let failed: unknown;
  const unzlib = new Unzlib((chunk) => {
    inflated += chunk.length;
  });
  let at = 8;
  let sawData = false;
  while (at + 8 <= bytes.length) {
    const length = u32(bytes, at);
    const type = chunkType(bytes, at + 4);
    const start = at + 8;
    if (length > bytes.length - start) throw invalid(`The PNG image is truncated: its ${type} chunk runs past the end of the file.`);
    if (type === 'IHDR' && at !== 8) throw invalid('The PNG image has more than one IHDR header.');
    if (type === 'IDAT') {
      sawData = true;
      for (let step = start; step < start + length; step += INFLATE_STEP) {
        try {
          unzlib.push(bytes.subarray(step, Math.min(step + INFLATE_STEP, start + length)));
        } catch (err) {
          failed = err;
          break;
        }
        if (inflated > limit) {
          throw invalid(`The PNG image's data inflates to more than the ${limit} bytes its ${header.width}x${header.height} header allows.`);
        }
      }
      if (failed !== undefined) throw invalid(`The PNG image could not be decoded: its data is not a valid zlib stream (${reason(failed)}).`, failed);
    }
    at = start + length + 4;
    if (type === 'IEND') break;
  }
  if (!sawData) throw invalid('The PNG image could not be decoded: it has no image data (IDAT chunk).');
}

function readPng(bytes: Uint8Array, header: PngHeader): RgbImage {
  checkPngStream(bytes, header);
  let png: DecodedPng;
  try {
    png = decodePng(bytes);
  } catch (err) {
    throw invalid(`The PNG image could not be decoded: ${reason(err)}`, err);
  }
  const { width, height } = header;
  if (png.width !== width || png.height !== height) throw invalid('The PNG image could not be decoded: its header changed while decoding.');
  try {
    return { width, height, data: pngToRgb(png, header.colorType === 3) };
  } catch (err) {
    throw invalid(`The PNG image could not be decoded: ${reason(err)}`, err);
  }
}

/** Any decoded PNG to 8-bit RGB, alpha (a channel, palette alpha or a tRNS colour key) composited on white. */
function pngToRgb(png: DecodedPng, indexed: boolean): Uint8Array {
  const { width, height, depth, channels } = png;
  const pixels = width * height;
  const out = new Uint8Array(pixels * 3);
  const expected = depth < 8 ? Math.ceil((width * depth) / 8) * height : pixels * channels;
  if (png.data.length < expected) throw new Error(`the image data is ${png.data.length} samples; ${expected} were expected`);

  if (indexed) {
    const palette = png.palette;
    if (!palette) throw new Error('the indexed-colour image has no palette (PLTE chunk)');
    const samples = unpackSamples(png.data, width, height, depth);
    for (let p = 0; p < pixels; p++) {
      const color = palette[samples[p]!];
      if (!color) throw new Error(`pixel ${p} uses palette entry ${samples[p]}, which the palette (${palette.length} colours) lacks`);
      const alpha = color[3] ?? 255;
      for (let c = 0; c < 3; c++) out[p * 3 + c] = over(color[c]!, alpha, 255);
    }
    return out;
  }

  // Greys below 8 bits are packed; scale their samples to 0..255.
  const samples = depth < 8 ? unpackSamples(png.data, width, height, depth) : png.data;
  const max = (1 << depth) - 1;
  const to8 = depth === 8 ? (v: number) => v : (v: number) => Math.round((v * 255) / max);
  const key = png.transparency; // tRNS colour key of grey (1 value) or RGB (3 values), in sample units.
  for (let p = 0; p < pixels; p++) {
    const s = p * channels;
    if (channels === 1 || channels === 2) {
      const g = samples[s]!;
      const alpha = channels === 2 ? samples[s + 1]! : key?.length === 1 && key[0] === g ? 0 : max;
      const v = over(to8(g), alpha, max);
      out[p * 3] = v;
      out[p * 3 + 1] = v;
      out[p * 3 + 2] = v;
    } else {
      const r = samples[s]!;
      const g = samples[s + 1]!;
      const b = samples[s + 2]!;
      const alpha = channels === 4 ? samples[s + 3]! : key?.length === 3 && key[0] === r && key[1] === g && key[2] === b ? 0 : max;
      out[p * 3] = over(to8(r), alpha, max);
      out[p * 3 + 1] = over(to8(g), alpha, max);
      out[p * 3 + 2] = over(to8(b), alpha, max);
    }
  }
  return out;
}

/** One 8-bit value composited over white with alpha in 0..max. */
const over = (v: number, alpha: number, max: number) => (alpha >= max ? v : Math.round((v * alpha + 255 * (max - alpha)) / max));

/** Packed 1/2/4/8-bit samples (each row starts on a byte) to one number per pixel. */
function unpackSamples(data: ArrayLike<number>, width: number, height: number, depth: number): ArrayLike<number> {
  if (depth === 8) return data;
  const out = new Uint8Array(width * height);
  const rowBytes = Math.ceil((width * depth) / 8);
  const mask = (1 << depth) - 1;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const bit = x * depth;
      const byte = data[y * rowBytes + (bit >> 3)]!;
      out[y * width + x] = (byte >> (8 - depth - (bit & 7))) & mask;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// JPEG
// ---------------------------------------------------------------------------

function readJpeg(bytes: Uint8Array, header: ImageHeader, maxPixels: number): RgbImage {
  // jpeg-js's own bounds, in step with ours: the pixel limit, and memory for
  // its per-component coefficient blocks and planes (about 5 bytes a pixel for
  // each of at most 4 components) plus the 3-byte output.
  const maxResolutionInMP = maxPixels / 1e6;
  const maxMemoryUsageInMB = Math.ceil((header.width * header.height * 24) / 2 ** 20) + 16;
  let decoded: { width: number; height: number; data: Uint8Array };
  try {
    decoded = decodeJpeg(bytes, { useTArray: true, formatAsRGBA: false, tolerantDecoding: true, maxResolutionInMP, maxMemoryUsageInMB });
  } catch (err) {
    throw invalid(`The JPEG image could not be decoded: ${reason(err)}`, err);
  }
  const { width, height, data } = decoded;
  if (width !== header.width || height !== header.height || data.length !== width * height * 3) {
    throw invalid(`The JPEG image could not be decoded: it decoded to ${width}x${height} pixels, not the ${header.width}x${header.height} of its header.`);
  }
  return { width, height, data };
}

// ---------------------------------------------------------------------------
// Base64
// ---------------------------------------------------------------------------

const BASE64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const BASE64_VALUE = new Int16Array(128).fill(-1);
for (let i = 0; i < BASE64.length; i++) BASE64_VALUE[BASE64.charCodeAt(i)] = i;

/** Checked base64 (the caller has matched its alphabet and padding) to bytes, without Node's Buffer. */
function base64Bytes(text: string): Uint8Array {
  const body = text.replace(/=+$/, '');
  const out = new Uint8Array(Math.floor((body.length * 3) / 4));
  let bits = 0;
  let acc = 0;
  let o = 0;
  for (let i = 0; i < body.length; i++) {
    acc = (acc << 6) | BASE64_VALUE[body.charCodeAt(i)]!;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (acc >> bits) & 0xff;
    }
  }
  return out;
}
