/**
 * The datatypes of issue 14 (part 3), in the wire contract: UINT16, UINT32,
 * UINT64, FP16 and BF16 parse in JSON with their ranges (each edge value
 * accepted, one past it a 400 `invalid_tensor`: UINT64 up to 2⁵³−1, FP16
 * within ±65504, BF16 within ±3.3895313892515355e38); the binary extension
 * measures them at 2, 4, 8, 2 and 2 bytes an element (else 400
 * `shape_mismatch`) and decodes them to numbers: FP16 and BF16 bit patterns
 * exactly, 64-bit integers from their two 32-bit words (above 2³² and
 * negative included). shared/float16.ts turns numbers into the nearest FP16
 * and BF16 patterns, ties to even, subnormals included: every finite pattern
 * round-trips and every midpoint between neighbours goes to the even one.
 */

import { describe, expect, it } from 'vitest';
import { binaryValues, ELEMENT_BYTES, encodeBinaryBody, parseInferBody } from '../../shared/binary.ts';
import { bf16Finite, bf16Value, fp16Finite, fp16Value, toBf16Bits, toFp16Bits } from '../../shared/float16.ts';
import { parseInferRequest } from '../../shared/protocol.ts';
import { codeOf } from '../helpers/errors.ts';

const json = (datatype: string, data: unknown[]) => () => parseInferRequest({ inputs: [{ name: 'x', shape: [data.length], datatype, data }] });

const bytesOf = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

describe('JSON ranges of the new datatypes', () => {
  const cases: [string, unknown[], unknown[][]][] = [
    ['UINT16', [0, 65535], [[-1], [65536], [1.5], ['1']]],
    ['UINT32', [0, 4294967295], [[-1], [4294967296], [0.5]]],
    ['UINT64', [0, 2 ** 32, Number.MAX_SAFE_INTEGER], [[-1], [2 ** 53], [1.5]]],
    ['FP16', [0, -0, 65504, -65504, 0.1, 2 ** -24], [[65504.00001], [-65505], [1e300], ['1'], [null], [true]]],
    ['BF16', [0, 3.3895313892515355e38, -3.3895313892515355e38, 1e-40], [[3.3895313892515358e38 * 1.0000001], [-3.4e38], [1e300], [null]]],
  ];
  for (const [datatype, ok, bad] of cases) {
    it(`${datatype}: accepts ${JSON.stringify(ok)}, refuses one past each edge`, () => {
      expect(parseInferRequest({ inputs: [{ name: 'x', shape: [ok.length], datatype, data: ok }] }).inputs[0]!.data).toEqual(ok);
      for (const data of bad) expect(codeOf(json(datatype, data)), `${datatype} ${JSON.stringify(data)}`).toBe('400:invalid_tensor');
    });
  }

  it('names the element and the datatype it is not', () => {
    expect(() => json('UINT32', [1, -2])()).toThrow(/Input "x": element 1 is -2, not a valid UINT32 value/);
    expect(() => json('FP16', [70000])()).toThrow(/element 0 is 70000, not a valid FP16 value/);
  });
});

describe('binary sizes of the new datatypes', () => {
  it('has their element sizes', () => {
    expect(ELEMENT_BYTES).toMatchObject({ UINT16: 2, UINT32: 4, UINT64: 8, FP16: 2, BF16: 2 });
  });

  for (const [datatype, size] of Object.entries({ UINT16: 2, UINT32: 4, UINT64: 8, FP16: 2, BF16: 2 })) {
    it(`${datatype}: takes 3 elements in ${3 * size} bytes, refuses ${3 * size - 1} and ${3 * size + size}`, () => {
      const body = (bytes: number) => {
        const header = { inputs: [{ name: 'x', shape: [3], datatype, parameters: { binary_data_size: bytes } }] };
        const { body, headerLength } = encodeBinaryBody(header, [new Uint8Array(bytes)]);
        return () => parseInferBody(body, headerLength);
      };
      expect(body(3 * size)().inputs[0]!.binary!.byteLength).toBe(3 * size);
      expect(codeOf(body(3 * size - 1))).toBe('400:shape_mismatch');
      expect(codeOf(body(4 * size))).toBe('400:shape_mismatch');
    });
  }
});

describe('binaryValues of the new datatypes', () => {
  it('decodes FP16 bit patterns exactly: 1, -2, 65504, a subnormal, 0.1 rounded to nearest', () => {
    const bits = new Uint16Array([0x3c00, 0xc000, 0x7bff, 0x0001, 0x03ff, toFp16Bits(0.1), 0x8000]);
    expect(binaryValues('FP16', bytesOf(bits))).toEqual([1, -2, 65504, 2 ** -24, 1023 * 2 ** -24, 0.0999755859375, -0]);
    // 0.1 is 0x2e66: 1638.4 steps of 2^-14 above 2^-4's 1024 → fraction 614.4 rounds to 614 (0x266).
    expect(toFp16Bits(0.1)).toBe(0x2e66);
    expect(binaryValues('FP16', bytesOf(new Uint16Array([0x7c00, 0xfc00])))).toEqual([Infinity, -Infinity]);
    expect(binaryValues('FP16', bytesOf(new Uint16Array([0x7e00])))[0]).toBeNaN();
  });

  it('decodes BF16 bit patterns exactly (the top half of a float32)', () => {
    const bits = new Uint16Array([0x3f80, 0xc000, 0x7f7f, 0x0001, toBf16Bits(0.1), toBf16Bits(1 / 3)]);
    const f32 = (top: number) => new Float32Array(new Uint32Array([top << 16]).buffer)[0];
    expect(binaryValues('BF16', bytesOf(bits))).toEqual([1, -2, 3.3895313892515355e38, 2 ** -133, f32(0x3dcd), f32(0x3eab)]);
  });

  it('decodes UINT16, UINT32 and UINT64 (above 2^32, up to 2^53 exact, beyond as the nearest double) from little-endian bytes', () => {
    expect(binaryValues('UINT16', bytesOf(new Uint16Array([0, 65535])))).toEqual([0, 65535]);
    expect(binaryValues('UINT32', bytesOf(new Uint32Array([0, 4294967295])))).toEqual([0, 4294967295]);
    const big = new BigUint64Array([2n ** 32n, 2n ** 32n + 7n, 2n ** 53n - 1n, 2n ** 64n - 1n, 0n]);
    expect(binaryValues('UINT64', bytesOf(big))).toEqual([2 ** 32, 2 ** 32 + 7, Number.MAX_SAFE_INTEGER, 2 ** 64, 0]);
    const signed = new BigInt64Array([-1n, -(2n ** 32n) - 5n, 2n ** 40n + 3n, -(2n ** 53n) + 1n, 2n ** 63n - 1n, -(2n ** 63n)]);
    expect(binaryValues('INT64', bytesOf(signed))).toEqual(Array.from(signed, Number));
  });
});

describe('FP16 and BF16 conversions (shared/float16.ts)', () => {
  it('round-trips every finite FP16 and BF16 pattern', () => {
    for (let b = 0; b < 0x10000; b++) {
      if (fp16Finite(b) && toFp16Bits(fp16Value(b)) !== b) throw new Error(`FP16 0x${b.toString(16)}`);
      if (bf16Finite(b) && toBf16Bits(bf16Value(b)) !== b) throw new Error(`BF16 0x${b.toString(16)}`);
    }
  });

  it('rounds midpoints to even and anything nearer to the nearer, subnormals included', () => {
    for (let b = 0; b < 0x7bff; b++) {
      const lo = fp16Value(b);
      const hi = fp16Value(b + 1);
      const mid = (lo + hi) / 2;
      if (toFp16Bits(mid) !== (b % 2 === 0 ? b : b + 1)) throw new Error(`FP16 midpoint above 0x${b.toString(16)}`);
      if (toFp16Bits(mid - (hi - lo) / 8) !== b || toFp16Bits(mid + (hi - lo) / 8) !== b + 1) throw new Error(`FP16 near 0x${b.toString(16)}`);
      if (toFp16Bits(-mid) !== (0x8000 | (b % 2 === 0 ? b : b + 1))) throw new Error(`FP16 -midpoint above 0x${b.toString(16)}`);
    }
    for (let b = 0; b < 0x7f7f; b++) {
      const mid = (bf16Value(b) + bf16Value(b + 1)) / 2;
      if (toBf16Bits(mid) !== (b % 2 === 0 ? b : b + 1)) throw new Error(`BF16 midpoint above 0x${b.toString(16)}`);
    }
  });

  it('rounds past the largest finite value to infinity, and below half the smallest subnormal to zero', () => {
    expect(toFp16Bits(65519.99)).toBe(0x7bff);
    expect(toFp16Bits(65520)).toBe(0x7c00);
    expect(toFp16Bits(2 ** -25)).toBe(0);
    expect(toFp16Bits(2 ** -25 * 1.0001)).toBe(1);
    expect(toFp16Bits(-(2 ** -26))).toBe(0x8000);
    expect(toBf16Bits(3.4e38)).toBe(0x7f80);
    expect(fp16Finite(0x7c00) || fp16Finite(0xfe00) || bf16Finite(0x7f80) || bf16Finite(0xffc1)).toBe(false);
    expect(fp16Finite(0x7bff) && bf16Finite(0x7f7f)).toBe(true);
  });
});
