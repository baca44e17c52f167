/**
 * The answer cache's key (workers/inference/cache-key.ts, docs/api.md section
 * 2.13): one canonical input for the same tensors however they are written
 * (JSON keys in any order, nested or flat data, numbers however spelt, JSON
 * or the binary tensor extension), another for anything that changes the
 * answer, and none for requests too large or too deep to cache.
 */

import { describe, expect, it } from 'vitest';
import { encodeBinaryBody, encodeBytesElements, parseInferBody } from '../../../shared/binary.ts';
import { toFp16Bits } from '../../../shared/float16.ts';
import { parseInferRequest, parseJson, type InferRequest } from '../../../shared/protocol.ts';
import { ANY_VERSION, cacheKey, canonicalInput, canonicalJson, MAX_CANONICAL_BYTES } from '../../../workers/inference/cache-key.ts';

const utf8 = new TextEncoder();

/** A JSON request as the edge parses it. */
const json = (text: string): InferRequest => parseInferRequest(parseJson(text));

/** The same inputs in the binary tensor extension, as the edge parses it. */
function binary(inputs: { name: string; datatype: string; shape: number[]; bytes: Uint8Array }[], extra: Record<string, unknown> = {}): InferRequest {
  const header = { ...extra, inputs: inputs.map((i) => ({ name: i.name, datatype: i.datatype, shape: i.shape, parameters: { binary_data_size: i.bytes.byteLength } })) };
  const { body, headerLength } = encodeBinaryBody(header, inputs.map((i) => i.bytes));
  return parseInferBody(body, headerLength);
}

function le(size: number, put: (v: DataView, at: number, x: number) => void, values: number[]): Uint8Array {
  const out = new Uint8Array(values.length * size);
  const view = new DataView(out.buffer);
  values.forEach((x, i) => put(view, i * size, x));
  return out;
}

const same = (a: InferRequest, b: InferRequest) => expect(canonicalInput(a)).toEqual(canonicalInput(b));
const differ = (a: InferRequest, b: InferRequest) => expect(canonicalInput(a)).not.toEqual(canonicalInput(b));

describe('the canonical input', () => {
  it('is the same for the same tensors, however the JSON is written', () => {
    const a = json('{"id":"x","parameters":{"b":1,"a":[2,{"d":1,"c":2}]},"inputs":[{"name":"t","datatype":"BYTES","shape":[2],"data":["hi","ho"]},{"name":"ids","datatype":"INT64","shape":[2,2],"data":[1,-2,3,4]}]}');
    const b = json(' { "inputs" : [ { "data":[ "hi" , "ho" ], "shape":[2.0], "datatype":"BYTES", "name":"t" }, { "shape":[2,2], "name":"ids", "data":[[1.0,-2e0],[3,4]], "datatype":"INT64" } ], "parameters":{ "a":[2,{"c":2,"d":1}], "b":1 }, "id":"x" }');
    same(a, b);
    expect(new TextDecoder().decode(canonicalInput(a)!.subarray(0, 20))).toBe('{"id":"x","inputs":[');
  });

  it('is the same in JSON and in the binary tensor extension, for every kind of element', () => {
    const cases: [string, number[] | string[] | boolean[], Uint8Array][] = [
      ['BYTES', ['hello', 'wörld'], encodeBytesElements([utf8.encode('hello'), utf8.encode('wörld')])],
      ['INT64', [-1, 2 ** 40 + 3, -(2 ** 53 - 1)], le(8, (v, at, x) => v.setBigInt64(at, BigInt(x), true), [-1, 2 ** 40 + 3, -(2 ** 53 - 1)])],
      ['UINT64', [0, 2 ** 53 - 1], le(8, (v, at, x) => v.setBigUint64(at, BigInt(x), true), [0, 2 ** 53 - 1])],
      ['INT32', [-7, 9], le(4, (v, at, x) => v.setInt32(at, x, true), [-7, 9])],
      ['UINT16', [65535, 1], le(2, (v, at, x) => v.setUint16(at, x, true), [65535, 1])],
      ['INT8', [-128, 127], le(1, (v, at, x) => v.setInt8(at, x), [-128, 127])],
      ['FP32', [0.1, -2.5], le(4, (v, at, x) => v.setFloat32(at, x, true), [0.1, -2.5])],
      ['FP64', [0.1, -2.5], le(8, (v, at, x) => v.setFloat64(at, x, true), [0.1, -2.5])],
      ['FP16', [0.1, 65504], le(2, (v, at, x) => v.setUint16(at, toFp16Bits(x), true), [0.1, 65504])],
      ['BOOL', [true, false], new Uint8Array([1, 0])],
    ];
    for (const [datatype, data, bytes] of cases) {
      const fromJson = json(JSON.stringify({ inputs: [{ name: 'x', datatype, shape: [data.length], data }] }));
      const fromBinary = binary([{ name: 'x', datatype, shape: [data.length], bytes }]);
      expect(canonicalInput(fromJson), datatype).toEqual(canonicalInput(fromBinary));
    }
  });

  it('differs for anything that changes the answer', () => {
    const base = '{"inputs":[{"name":"t","datatype":"BYTES","shape":[1],"data":["hi"]}]}';
    const a = json(base);
    differ(a, json('{"inputs":[{"name":"t","datatype":"BYTES","shape":[1],"data":["ho"]}]}'));
    differ(a, json('{"inputs":[{"name":"u","datatype":"BYTES","shape":[1],"data":["hi"]}]}'));
    differ(a, json('{"id":"1","inputs":[{"name":"t","datatype":"BYTES","shape":[1],"data":["hi"]}]}'));
    differ(a, json('{"parameters":{"binary_data_output":true},"inputs":[{"name":"t","datatype":"BYTES","shape":[1],"data":["hi"]}]}'));
    differ(a, json('{"outputs":[{"name":"embedding"}],"inputs":[{"name":"t","datatype":"BYTES","shape":[1],"data":["hi"]}]}'));
    differ(a, json('{"inputs":[{"name":"t","datatype":"BYTES","shape":[1,1],"data":["hi"]}]}'));
    // Same bytes, another type or shape: [1, 2] of INT32 is not [2] of INT32, nor [1] of INT64.
    const ints = json('{"inputs":[{"name":"x","datatype":"INT32","shape":[2],"data":[1,0]}]}');
    differ(ints, json('{"inputs":[{"name":"x","datatype":"INT32","shape":[1,2],"data":[1,0]}]}'));
    differ(ints, json('{"inputs":[{"name":"x","datatype":"INT64","shape":[1],"data":[1]}]}'));
    // Two inputs in another order are another request (metering reads the first).
    const first = '{"name":"a","datatype":"INT32","shape":[1],"data":[1]}';
    const second = '{"name":"b","datatype":"INT32","shape":[1],"data":[2]}';
    differ(json(`{"inputs":[${first},${second}]}`), json(`{"inputs":[${second},${first}]}`));
    // An input's other parameters count; how its bytes travelled (binary_data_size) does not.
    differ(a, json('{"inputs":[{"name":"t","datatype":"BYTES","shape":[1],"data":["hi"],"parameters":{"x":1}}]}'));
  });

  it('is none for a request too large or too deep to cache', () => {
    const big = MAX_CANONICAL_BYTES / 8 + 1;
    expect(canonicalInput({ inputs: [{ name: 'x', datatype: 'FP64', shape: [big], data: new Array<number>(big).fill(0) }] })).toBeUndefined();
    expect(canonicalInput({ inputs: [{ name: 'x', datatype: 'FP64', shape: [big - 1], data: new Array<number>(big - 1).fill(0) }] })).toBeDefined();
    let deep: unknown = 1;
    for (let i = 0; i < 40; i++) deep = { d: deep };
    expect(canonicalJson(deep)).toBeUndefined();
    expect(canonicalInput({ parameters: deep as Record<string, unknown>, inputs: [{ name: 'x', datatype: 'INT8', shape: [1], data: [1] }] })).toBeUndefined();
  });
});

describe('the cache key', () => {
  it('names the form, the model, the version asked for (or any) and the hash of the canonical input', async () => {
    const request = json('{"inputs":[{"name":"t","datatype":"BYTES","shape":[1],"data":["hi"]}]}');
    const any = await cacheKey('embed', undefined, request);
    expect(any).toMatch(new RegExp(`^https://answers\\.mesh\\.invalid/mesh-cache-v1/embed/\\${ANY_VERSION}/[0-9a-f]{64}$`));
    const v1 = await cacheKey('embed', '1', request);
    expect(v1).not.toBe(any);
    expect(v1!.split('/').at(-1)).toBe(any!.split('/').at(-1));
    expect(await cacheKey('classifier', undefined, request)).not.toBe(any);
  });
});
