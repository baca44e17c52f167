/**
 * The tensor benchmarks' payload helpers: a fixed-seed FP32 tensor as a JSON
 * or binary-extension request that the mesh's own parser accepts with the
 * same values, answers read back in either format, sizes from the
 * environment, and the least-squares line of CPU against payload size.
 */

import { describe, expect, it } from 'vitest';
import { encodeBinaryBody, HEADER_LENGTH_HEADER, parseInferBody } from '../../shared/binary.ts';
import { answerOutputs, formatBytes, linearFit, littleEndianFloats, parseByteSize, seededFloats, tensorRequest } from '../../bench/lib/payload.ts';

describe('seededFloats', () => {
  it('is the same for a seed, different for another, and within [-1, 1)', () => {
    const a = seededFloats(1000, 7);
    expect(seededFloats(1000, 7)).toEqual(a);
    expect(seededFloats(1000, 8)).not.toEqual(a);
    expect(a.every((v) => v >= -1 && v < 1)).toBe(true);
  });
});

describe('tensorRequest', () => {
  const data = seededFloats(2 * 3 * 4, 1);
  const shape = [1, 2, 3, 4];

  it('builds a JSON request the mesh parses back to the same values', () => {
    const { body, headers } = tensorRequest({ name: 'x', shape, data, format: 'json' });
    expect(headers['content-type']).toBe('application/json');
    expect(headers[HEADER_LENGTH_HEADER]).toBeUndefined();
    const request = parseInferBody(body, undefined);
    expect(request.inputs[0]).toMatchObject({ name: 'x', datatype: 'FP32', shape });
    expect(request.inputs[0]!.data).toEqual(Array.from(data));
    expect(request.parameters?.binary_data_output).toBeUndefined();
  });

  it('builds a binary-extension request, asking for a binary answer, whose bytes are the values little-endian', () => {
    const { body, headers } = tensorRequest({ name: 'x', shape, data, format: 'binary' });
    expect(headers['content-type']).toBe('application/octet-stream');
    const request = parseInferBody(body, Number(headers[HEADER_LENGTH_HEADER]));
    expect(request.inputs[0]).toMatchObject({ name: 'x', datatype: 'FP32', shape });
    expect(request.parameters?.binary_data_output).toBe(true);
    const bytes = request.inputs[0]!.binary!;
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    expect(Array.from({ length: data.length }, (_, i) => view.getFloat32(i * 4, true))).toEqual(Array.from(data));
  });

  it('refuses data that does not fill the shape', () => {
    expect(() => tensorRequest({ name: 'x', shape: [1, 5], data, format: 'binary' })).toThrow(/needs 5 elements/);
  });
});

describe('answerOutputs', () => {
  it('reads a JSON answer', () => {
    const body = new TextEncoder().encode(JSON.stringify({ model_name: 'm', outputs: [{ name: 'y', datatype: 'FP32', shape: [1, 3], data: [1, 2, 3] }] }));
    expect(answerOutputs(body)).toEqual([{ name: 'y', datatype: 'FP32', shape: [1, 3], format: 'json', size: 3 }]);
  });

  it('reads a binary answer, with or without its header length, and refuses bytes no output declares', () => {
    const bytes = littleEndianFloats(new Float32Array([1, 2, 3]));
    const { body, headerLength } = encodeBinaryBody({ model_name: 'm', outputs: [{ name: 'y', datatype: 'FP32', shape: [1, 3], parameters: { binary_data_size: 12 } }] }, [bytes]);
    const expected = [{ name: 'y', datatype: 'FP32', shape: [1, 3], format: 'binary', size: 12 }];
    expect(answerOutputs(body, String(headerLength))).toEqual(expected);
    expect(answerOutputs(body)).toEqual(expected);
    const longer = new Uint8Array(body.byteLength + 4);
    longer.set(body);
    expect(() => answerOutputs(longer, String(headerLength))).toThrow(/declare 12 bytes, 16 follow/);
  });
});

describe('parseByteSize and formatBytes', () => {
  it('reads binary units and writes them back', () => {
    expect(['1KB', '16 KB', '256KiB', '1MB', '4mb', '1024', '0.5MB'].map(parseByteSize)).toEqual([1024, 16384, 262144, 1048576, 4194304, 1024, 524288]);
    expect([1024, 262144, 4194304, 1536, 100].map(formatBytes)).toEqual(['1 KB', '256 KB', '4 MB', '1.5 KB', '100 B']);
  });

  it('refuses what is not a size', () => {
    for (const bad of ['', 'MB', '1GB', '-1KB', '0']) expect(() => parseByteSize(bad)).toThrow(/size/);
  });
});

describe('linearFit', () => {
  it('finds the fixed cost and the cost per unit of an exact line', () => {
    const fit = linearFit([0.001, 0.25, 1, 4].map((x) => ({ x, y: 0.3 + 12 * x })));
    expect(fit.slope).toBeCloseTo(12, 10);
    expect(fit.intercept).toBeCloseTo(0.3, 10);
  });

  it('is NaN without two distinct x', () => {
    expect(linearFit([{ x: 1, y: 2 }]).slope).toBeNaN();
    expect(linearFit([{ x: 1, y: 2 }, { x: 1, y: 3 }]).slope).toBeNaN();
  });
});
