/**
 * The binary tensor extension's request side (shared/binary.ts): a JSON
 * header of Inference-Header-Content-Length bytes, then each declaring
 * input's bytes in order. Lengths are checked against shapes and the body,
 * data is sliced in place, and every mismatch is a 400 naming the input.
 */

import { describe, expect, it } from 'vitest';
import {
  bytesElements,
  encodeBinaryBody,
  encodeBytesElements,
  headerLength,
  parseInferBody,
  textsOf,
} from '../../shared/binary.ts';
import { MeshError } from '../../shared/errors.ts';
import { inputUnits } from '../../shared/metering.ts';

const utf8 = (s: string) => new TextEncoder().encode(s);

function expectError(fn: () => unknown, code: string, text: string): void {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(MeshError);
    expect((err as MeshError).code).toBe(code);
    expect((err as MeshError).message).toContain(text);
    return;
  }
  throw new Error('expected a MeshError');
}

describe('parseInferBody', () => {
  it('parses a plain JSON body when there is no header length', () => {
    const body = utf8(JSON.stringify({ inputs: [{ name: 'x', shape: [2], datatype: 'FP32', data: [1, 2] }] }));
    const request = parseInferBody(body, undefined);
    expect(request.inputs[0]).toEqual({ name: 'x', shape: [2], datatype: 'FP32', data: [1, 2] });
  });

  it('slices each binary input in order, mixed with JSON inputs, without copying', () => {
    const floats = new Float32Array([1.5, -2, 3.25]);
    const texts = encodeBytesElements([utf8('héllo'), utf8('')]);
    const header = {
      inputs: [
        { name: 'a', shape: [3], datatype: 'FP32', parameters: { binary_data_size: 12 } },
        { name: 'b', shape: [1], datatype: 'INT32', data: [7] },
        { name: 'c', shape: [2], datatype: 'BYTES', parameters: { binary_data_size: texts.byteLength } },
      ],
    };
    const { body, headerLength: n } = encodeBinaryBody(header, [new Uint8Array(floats.buffer), texts]);
    const request = parseInferBody(body, n);
    const [a, b, c] = request.inputs;
    expect(a!.binary!.buffer).toBe(body.buffer);
    expect([...new Float32Array(a!.binary!.slice().buffer)]).toEqual([1.5, -2, 3.25]);
    expect(b!.data).toEqual([7]);
    expect(b!.binary).toBeUndefined();
    expect(textsOf(c!)).toEqual(['héllo', '']);
    expect(bytesElements(c!.binary!).map((e) => e.byteLength)).toEqual([6, 0]);
  });

  it('refuses sizes that do not fit the shape, the body, or leave bytes over', () => {
    const header = (size: number, shape = [3]) => ({ inputs: [{ name: 'feat', shape, datatype: 'FP32', parameters: { binary_data_size: size } }] });
    const twelve = new Uint8Array(12);
    let r = encodeBinaryBody(header(8), [twelve.subarray(0, 8)]);
    expectError(() => parseInferBody(r.body, r.headerLength), 'shape_mismatch', 'Input "feat"');
    r = encodeBinaryBody(header(12), [twelve.subarray(0, 11)]);
    expectError(() => parseInferBody(r.body, r.headerLength), 'invalid_tensor', 'past the end');
    r = encodeBinaryBody(header(12), [new Uint8Array(13)]);
    expectError(() => parseInferBody(r.body, r.headerLength), 'invalid_tensor', '1 bytes after');
  });

  it('refuses BYTES elements whose lengths do not fill the declared size exactly', () => {
    const data = encodeBytesElements([utf8('abc')]);
    const header = (count: number, size: number) => ({ inputs: [{ name: 't', shape: [count], datatype: 'BYTES', parameters: { binary_data_size: size } }] });
    let r = encodeBinaryBody(header(2, data.byteLength), [data]);
    expectError(() => parseInferBody(r.body, r.headerLength), 'invalid_tensor', 'element 1');
    const longer = new Uint8Array(data.byteLength + 2);
    longer.set(data);
    r = encodeBinaryBody(header(1, longer.byteLength), [longer]);
    expectError(() => parseInferBody(r.body, r.headerLength), 'invalid_tensor', 'binary_data_size says 9');
    const lying = data.slice();
    new DataView(lying.buffer).setUint32(0, 1000, true);
    r = encodeBinaryBody(header(1, lying.byteLength), [lying]);
    expectError(() => parseInferBody(r.body, r.headerLength), 'invalid_tensor', 'declares 1000 bytes');
  });

  it('refuses binary_data_size without the header, and data together with it', () => {
    const header = { inputs: [{ name: 'x', shape: [1], datatype: 'UINT8', parameters: { binary_data_size: 1 } }] };
    expectError(() => parseInferBody(utf8(JSON.stringify(header)), undefined), 'invalid_tensor', 'Inference-Header-Content-Length');
    const both = { inputs: [{ ...header.inputs[0], data: [1] }] };
    const r = encodeBinaryBody(both, [new Uint8Array(1)]);
    expectError(() => parseInferBody(r.body, r.headerLength), 'invalid_tensor', 'alternatives');
  });
});

describe('headerLength', () => {
  it('is undefined without the header and the number within the body', () => {
    expect(headerLength(undefined, 10)).toBeUndefined();
    expect(headerLength(null, 10)).toBeUndefined();
    expect(headerLength(' 7 ', 10)).toBe(7);
  });

  it.each(['0', '11', '-1', '3.5', 'abc', ''])('refuses %j for a 10-byte body', (value) => {
    expectError(() => headerLength(value, 10), 'invalid_request', 'Inference-Header-Content-Length');
  });
});

describe('metering binary inputs', () => {
  it('counts tokens of binary texts and non-pad ids of binary INT64 exactly as of JSON ones', () => {
    const texts = ['one two three', 'four'];
    const json = inputUnits({ meter: 'tokens' }, [{ datatype: 'BYTES', shape: [2], data: texts }]);
    const binary = inputUnits({ meter: 'tokens' }, [{ datatype: 'BYTES', shape: [2], binary: encodeBytesElements(texts.map(utf8)) }]);
    expect(binary).toBe(json);
    const ids = new BigInt64Array([5n, 9n, 0n, 0n, 3n, 0n]);
    expect(inputUnits({ meter: 'tokens', padId: 0 }, [{ datatype: 'INT64', shape: [2, 3], binary: new Uint8Array(ids.buffer) }])).toBe(3);
    const int32 = new Int32Array([-1, 4, -1]);
    expect(inputUnits({ meter: 'tokens', padId: -1 }, [{ datatype: 'INT32', shape: [1, 3], binary: new Uint8Array(int32.buffer) }])).toBe(1);
  });
});
