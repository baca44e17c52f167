/**
 * Image input of the `ocr` pipeline: PNG (RGB, RGBA and grey+alpha
 * composited on white, grey at 1, 8 and 16 bits, palette with and without
 * alpha) and JPEG decode to the 8-bit RGB they encode (JPEG approximately);
 * anything else, a truncated or malformed file, a zero side, a header over
 * the pixel limit (refused from the header alone, before decoding), a
 * deflate bomb and a JPEG scan bomb are a 400 `invalid_image` with a
 * sentence saying why; `data:image/...;base64,` URLs give their bytes.
 */

import { deflateSync } from 'node:zlib';
import { encode as encodePngRaw } from 'fast-png';
import { describe, expect, it } from 'vitest';
import { MeshError } from '../../../shared/errors.ts';
import { MAX_IMAGE_PIXELS, MAX_JPEG_SCANS, decodeDataUrl, decodeImage, type RgbImage } from '../../../gpu-backend/src/ocr/image.ts';
import { encodeJpeg, encodePng, renderText } from '../../helpers/text-image.ts';

const page = renderText(['HELLO WORLD', '12345']);

/** The MeshError a call throws (fails the test when it throws something else or nothing). */
function refusal(fn: () => unknown): MeshError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(MeshError);
    const e = err as MeshError;
    expect(e.code).toBe('invalid_image');
    expect(e.status).toBe(400);
    return e;
  }
  throw new Error('expected the call to throw');
}

const rgbAt = (img: RgbImage, p: number) => [...img.data.subarray(p * 3, p * 3 + 3)];

/** A PNG's bytes with chunks: signature, then [type, data] each (CRCs are not checked by the decoder, written as 0). */
function pngOf(chunks: [string, Uint8Array][]): Uint8Array {
  const parts: number[] = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
  for (const [type, data] of chunks) {
    const n = data.length;
    parts.push((n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255, ...[...type].map((c) => c.charCodeAt(0)), ...data, 0, 0, 0, 0);
  }
  return new Uint8Array(parts);
}

function ihdr(width: number, height: number, depth = 8, colorType = 0): Uint8Array {
  const b = new Uint8Array(13);
  const v = new DataView(b.buffer);
  v.setUint32(0, width);
  v.setUint32(4, height);
  b[8] = depth;
  b[9] = colorType;
  return b;
}

describe('decodeImage: PNG', () => {
  it('reads an RGB PNG back exactly', () => {
    const img = decodeImage(encodePng(page));
    expect([img.width, img.height]).toEqual([page.width, page.height]);
    expect(img.data).toEqual(page.data);
  });

  it('composites RGBA on white: transparent is white, opaque is the colour, half is between', () => {
    const data = new Uint8Array([255, 0, 0, 255, 0, 0, 255, 0, 0, 0, 0, 128, 10, 20, 30, 255]);
    const img = decodeImage(encodePngRaw({ width: 2, height: 2, data, channels: 4, depth: 8 }));
    expect(rgbAt(img, 0)).toEqual([255, 0, 0]);
    expect(rgbAt(img, 1)).toEqual([255, 255, 255]);
    expect(rgbAt(img, 2)).toEqual([127, 127, 127]);
    expect(rgbAt(img, 3)).toEqual([10, 20, 30]);
  });

  it('reads grey (8-bit, 16-bit, 1-bit) and grey+alpha as RGB', () => {
    const grey8 = decodeImage(encodePngRaw({ width: 3, height: 1, data: new Uint8Array([0, 100, 255]), channels: 1, depth: 8 }));
    expect([...grey8.data]).toEqual([0, 0, 0, 100, 100, 100, 255, 255, 255]);
    const grey16 = decodeImage(encodePngRaw({ width: 2, height: 1, data: new Uint16Array([0, 65535]), channels: 1, depth: 16 }));
    expect([...grey16.data]).toEqual([0, 0, 0, 255, 255, 255]);
    // 1 bit: 8 pixels 10110000 in one byte per row, 2 rows.
    const grey1 = decodeImage(encodePngRaw({ width: 8, height: 2, data: new Uint8Array([0b10110000, 0b00000001]), channels: 1, depth: 1 }));
    expect([...grey1.data].filter((_, i) => i % 3 === 0)).toEqual([255, 0, 255, 255, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255]);
    const greyAlpha = decodeImage(encodePngRaw({ width: 2, height: 1, data: new Uint8Array([0, 0, 0, 255]), channels: 2, depth: 8 }));
    expect([...greyAlpha.data]).toEqual([255, 255, 255, 0, 0, 0]);
  });

  it('reads a 16-bit RGB PNG as 8-bit', () => {
    const img = decodeImage(encodePngRaw({ width: 1, height: 1, data: new Uint16Array([65535, 32896, 0]), channels: 3, depth: 16 }));
    expect([...img.data]).toEqual([255, 128, 0]);
  });

  it('reads palette PNGs, with palette alpha composited on white', () => {
    const palette = [
      [255, 255, 255],
      [0, 0, 0],
      [200, 10, 10],
    ];
    const img = decodeImage(encodePngRaw({ width: 3, height: 1, data: new Uint8Array([0, 1, 2]), channels: 1, depth: 8, palette }));
    expect([...img.data]).toEqual([255, 255, 255, 0, 0, 0, 200, 10, 10]);
    const withAlpha = decodeImage(
      encodePngRaw({
        width: 2,
        height: 1,
        data: new Uint8Array([0, 1]),
        channels: 1,
        depth: 8,
        palette: [
          [0, 0, 0, 0],
          [0, 0, 0, 255],
        ],
      }),
    );
    expect([...withAlpha.data]).toEqual([255, 255, 255, 0, 0, 0]);
  });

  it('reads the rendered page as a palette PNG the same as the RGB one', () => {
    const indices = new Uint8Array(page.width * page.height).map((_, p) => (page.data[p * 3] === 0 ? 1 : 0));
    const bytes = encodePngRaw({ width: page.width, height: page.height, data: indices, channels: 1, depth: 8, palette: [[255, 255, 255], [0, 0, 0]] });
    expect(decodeImage(bytes).data).toEqual(page.data);
  });
});

describe('decodeImage: JPEG', () => {
  it('reads a JPEG back approximately (mean error under 3 levels, text still black on white)', () => {
    const img = decodeImage(encodeJpeg(page, 90));
    expect([img.width, img.height]).toEqual([page.width, page.height]);
    let error = 0;
    for (let i = 0; i < page.data.length; i++) error += Math.abs(img.data[i]! - page.data[i]!);
    expect(error / page.data.length).toBeLessThan(3);
  });
});

describe('decodeImage: refusals', () => {
  it('refuses bytes that are neither PNG nor JPEG, naming their first bytes', () => {
    const e = refusal(() => decodeImage(new TextEncoder().encode('GIF89a, not a PNG')));
    expect(e.message).toBe('The image is neither PNG nor JPEG (its first bytes are 47 49 46 38 39 61 2c 20).');
    expect(refusal(() => decodeImage(new Uint8Array(0))).message).toMatch(/empty/);
  });

  it('refuses a PNG header over the pixel limit before decoding (the data after it is garbage)', () => {
    const garbage = new Uint8Array(64).fill(0xab);
    const bytes = new Uint8Array([...pngOf([['IHDR', ihdr(100_000, 100_000, 8, 2)]]), ...garbage]);
    expect(refusal(() => decodeImage(bytes)).message).toBe(`The image is 100000x100000 pixels; at most ${MAX_IMAGE_PIXELS} pixels are read.`);
  });

  it('honours a smaller maxPixels, for PNG and JPEG alike', () => {
    const limit = page.width * page.height - 1;
    expect(refusal(() => decodeImage(encodePng(page), { maxPixels: limit })).message).toBe(
      `The image is ${page.width}x${page.height} pixels; at most ${limit} pixels are read.`,
    );
    expect(refusal(() => decodeImage(encodeJpeg(page), { maxPixels: limit })).message).toMatch(/at most \d+ pixels are read/);
    expect(decodeImage(encodePng(page), { maxPixels: limit + 1 }).width).toBe(page.width);
  });

  it('refuses a JPEG whose frame header claims 20000x20000, before decoding', () => {
    // SOI, SOF0 (8-bit, 20000x20000, 1 component), then garbage.
    const bytes = new Uint8Array([0xff, 0xd8, 0xff, 0xc0, 0, 11, 8, 0x4e, 0x20, 0x4e, 0x20, 1, 1, 0x11, 0, 0xab, 0xab, 0xab]);
    expect(refusal(() => decodeImage(bytes)).message).toBe(`The image is 20000x20000 pixels; at most ${MAX_IMAGE_PIXELS} pixels are read.`);
  });

  it('refuses a zero side', () => {
    expect(refusal(() => decodeImage(pngOf([['IHDR', ihdr(0, 10)]]))).message).toMatch(/0x10 pixels/);
  });

  it('refuses a truncated or corrupt PNG with the decoder reason', () => {
    const bytes = encodePng(page);
    expect(refusal(() => decodeImage(bytes.subarray(0, 40))).message).toMatch(/^The PNG image (could not be decoded|is truncated)/);
    const corrupt = pngOf([['IHDR', ihdr(4, 4)], ['IDAT', new Uint8Array([1, 2, 3, 4, 5, 6])], ['IEND', new Uint8Array(0)]]);
    expect(refusal(() => decodeImage(corrupt)).message).toMatch(/^The PNG image could not be decoded: /);
  });

  it('refuses a deflate bomb: data that inflates past what the header allows', () => {
    // A 100x100 grey header allows 100 * 101 bytes; the stream inflates to 8 MB.
    const bomb = deflateSync(new Uint8Array(8 * 2 ** 20));
    const bytes = pngOf([['IHDR', ihdr(100, 100)], ['IDAT', bomb], ['IEND', new Uint8Array(0)]]);
    expect(refusal(() => decodeImage(bytes)).message).toBe("The PNG image's data inflates to more than the 10100 bytes its 100x100 header allows.");
  });

  it('refuses a second IHDR (a header that would change after the size check)', () => {
    const bytes = pngOf([['IHDR', ihdr(10, 10)], ['IHDR', ihdr(100_000, 100_000)], ['IEND', new Uint8Array(0)]]);
    expect(refusal(() => decodeImage(bytes)).message).toMatch(/more than one IHDR/);
  });

  it(`refuses a JPEG with more than ${MAX_JPEG_SCANS} scans before decoding`, () => {
    const sof = [0xff, 0xc2, 0, 11, 8, 0, 8, 0, 8, 1, 1, 0x11, 0];
    const sos = [0xff, 0xda, 0, 8, 1, 1, 0, 0, 0, 0, 0x55];
    const bytes = new Uint8Array([0xff, 0xd8, ...sof, ...Array.from({ length: MAX_JPEG_SCANS + 1 }, () => sos).flat(), 0xff, 0xd9]);
    expect(refusal(() => decodeImage(bytes)).message).toBe(`The JPEG image has more than ${MAX_JPEG_SCANS} scans; it is not read.`);
  });

  it('refuses a JPEG without a frame header, and one that does not decode', () => {
    expect(refusal(() => decodeImage(new Uint8Array([0xff, 0xd8, 0xff, 0xd9]))).message).toMatch(/no frame header/);
    const jpeg = encodeJpeg(page);
    expect(refusal(() => decodeImage(jpeg.subarray(0, Math.floor(jpeg.length / 2)))).message).toMatch(/^The JPEG image could not be decoded: /);
  });
});

describe('decodeDataUrl', () => {
  const png = encodePng(page);
  const base64 = Buffer.from(png).toString('base64');

  it('gives the bytes of a PNG or JPEG data URL (whitespace in the data tolerated)', () => {
    expect(decodeDataUrl(`data:image/png;base64,${base64}`)).toEqual(png);
    const jpeg = encodeJpeg(page);
    expect(decodeDataUrl(`data:image/jpeg;base64,${Buffer.from(jpeg).toString('base64')}`)).toEqual(jpeg);
    expect(decodeDataUrl(`data:image/png;base64,${base64.slice(0, 10)}\n${base64.slice(10)}`)).toEqual(png);
    expect(decodeImage(decodeDataUrl(`data:image/png;base64,${base64}`)!).data).toEqual(page.data);
  });

  it('decodes every padding length like Buffer does', () => {
    for (const n of [0, 1, 2, 3, 4, 5]) {
      const bytes = new Uint8Array(n).map((_, i) => (i * 97 + 13) & 255);
      expect(decodeDataUrl(`data:image/png;base64,${Buffer.from(bytes).toString('base64')}`)).toEqual(bytes);
    }
  });

  it('is undefined for text that is not a data URL', () => {
    expect(decodeDataUrl('https://example.com/a.png')).toBeUndefined();
    expect(decodeDataUrl(base64)).toBeUndefined();
  });

  it('refuses invalid base64, another type, and data that is not base64', () => {
    expect(refusal(() => decodeDataUrl('data:image/png;base64,@@@@')).message).toBe("The data URL's base64 data is not valid base64.");
    expect(refusal(() => decodeDataUrl('data:image/png;base64,AAAAA')).message).toMatch(/not valid base64/);
    expect(refusal(() => decodeDataUrl('data:image/gif;base64,AAAA')).message).toMatch(/only image\/png and image\/jpeg/);
    expect(refusal(() => decodeDataUrl('data:image/png,AAAA')).message).toMatch(/not base64-encoded/);
  });
});
