/**
 * Every datatype onnxruntime-node can carry, end to end through a real ONNX
 * model (one Identity per type, written with the repo's ONNX writer): FP16,
 * UINT16, UINT32, UINT64, INT8, INT16, UINT8, BOOL and INT64. JSON in → JSON
 * out gives back the values sent (FP16 values exactly representable; 64-bit
 * integers negative and beyond 2³² included), binary in → binary out the
 * same bytes, binary in → JSON out the same values, and two requests batched
 * together each get their own rows. Bad data is a 400 `invalid_tensor`
 * either way: a UINT16 above 65535, a negative UINT32, an FP16 above 65504
 * (JSON), a BOOL byte 2 or an FP16 NaN or infinity pattern (binary). BF16,
 * which ORT's JavaScript API cannot carry, is BF16 on the wire and FP32 at
 * the session: a config declaring BF16 over an FP32 graph tensor gives back
 * the BF16 values sent (JSON and binary), and a graph with real bfloat16
 * inputs fails to load. The warm-up at load feeds the new
 * types random data (`model_warmup`). The model runs on a worker thread, so
 * every new typed array also crosses threads both ways.
 *
 * The conversions, without a BigInt per element, give what the BigInt ones
 * gave, bit for bit: JSON INT64/UINT64 inputs the same 64-bit words as
 * `BigInt64Array.from(values, BigInt)`, 64-bit outputs the same numbers as
 * `Number(bigint)` (beyond ±2⁵³ too: the nearest double). FP32 outputs are
 * printed as the shortest decimal that reads back as the same float32.
 */

import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeBinaryBody } from '../../../shared/binary.ts';
import { parseInferRequest } from '../../../shared/protocol.ts';
import { toBf16Bits, toFp16Bits } from '../../../shared/float16.ts';
import { DataType, encodeModel, node, valueInfo, type DataTypeCode } from '../../../gpu-backend/src/demo-models/onnx.ts';
import type { ModelConfig } from '../../../gpu-backend/src/serving/model-config.ts';
import { shortestFloat32 } from '../../../gpu-backend/src/serving/tensor-data.ts';
import { jsonOutputs, prepareInference } from '../../../gpu-backend/src/serving/tensors.ts';
import { errorCode, harness, type Harness } from '../helpers.ts';

interface TypeCase {
  input: string;
  datatype: string;
  onnx: DataTypeCode;
  values: (number | boolean)[];
  /** The values' little-endian bytes, as the binary extension carries them. */
  bytes: () => Uint8Array;
}

const view = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

const FP16 = [1, -2, 65504, -65504, 0.5, 2 ** -24, 1023 * 2 ** -24, 0.0999755859375, 0, 3.140625];
const INT64 = [-1, -(2 ** 32) - 5, 2 ** 32 + 3, -Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER, 0, -(2 ** 31), 2 ** 31];
const UINT64 = [0, 1, 2 ** 32, 2 ** 32 + 1, Number.MAX_SAFE_INTEGER, 123456789012];

const CASES: TypeCase[] = [
  { input: 'x_fp16', datatype: 'FP16', onnx: DataType.FLOAT16, values: FP16, bytes: () => view(Uint16Array.from(FP16, toFp16Bits)) },
  { input: 'x_uint16', datatype: 'UINT16', onnx: DataType.UINT16, values: [0, 1, 65535, 40000], bytes: () => view(new Uint16Array([0, 1, 65535, 40000])) },
  {
    input: 'x_uint32',
    datatype: 'UINT32',
    onnx: DataType.UINT32,
    values: [0, 1, 4294967295, 3000000000],
    bytes: () => view(new Uint32Array([0, 1, 4294967295, 3000000000])),
  },
  { input: 'x_uint64', datatype: 'UINT64', onnx: DataType.UINT64, values: UINT64, bytes: () => view(BigUint64Array.from(UINT64, BigInt)) },
  { input: 'x_int8', datatype: 'INT8', onnx: DataType.INT8, values: [-128, 127, 0, -1, 5], bytes: () => view(new Int8Array([-128, 127, 0, -1, 5])) },
  { input: 'x_int16', datatype: 'INT16', onnx: DataType.INT16, values: [-32768, 32767, 0, -1], bytes: () => view(new Int16Array([-32768, 32767, 0, -1])) },
  { input: 'x_uint8', datatype: 'UINT8', onnx: DataType.UINT8, values: [0, 255, 7, 128], bytes: () => view(new Uint8Array([0, 255, 7, 128])) },
  { input: 'x_bool', datatype: 'BOOL', onnx: DataType.BOOL, values: [true, false, true, true, false], bytes: () => new Uint8Array([1, 0, 1, 1, 0]) },
  { input: 'x_int64', datatype: 'INT64', onnx: DataType.INT64, values: INT64, bytes: () => view(BigInt64Array.from(INT64, BigInt)) },
];

const outputOf = (input: string) => input.replace(/^x_/, 'y_');
const TRITON: Record<string, string> = { FP16: 'TYPE_FP16', UINT16: 'TYPE_UINT16', UINT32: 'TYPE_UINT32', UINT64: 'TYPE_UINT64', INT8: 'TYPE_INT8', INT16: 'TYPE_INT16', UINT8: 'TYPE_UINT8', BOOL: 'TYPE_BOOL', INT64: 'TYPE_INT64', BF16: 'TYPE_BF16' };

/** Writes `<dir>/<name>/config.json` and `1/model.onnx`: an Identity from each case's input to its output, batched ([-1, -1]). */
async function writeIdentityModel(dir: string, name: string, cases: Pick<TypeCase, 'input' | 'datatype' | 'onnx'>[], extra: Partial<ModelConfig> = {}): Promise<void> {
  const model = encodeModel({
    graph: {
      name,
      nodes: cases.map((c) => node('Identity', [c.input], [outputOf(c.input)])),
      initializers: [],
      inputs: cases.map((c) => valueInfo(c.input, c.onnx, ['batch', `n_${c.input}`])),
      outputs: cases.map((c) => valueInfo(outputOf(c.input), c.onnx, ['batch', `n_${c.input}`])),
    },
  });
  const tensors = (f: (input: string) => string) => cases.map((c) => ({ name: f(c.input), data_type: TRITON[c.datatype], dims: [-1] }));
  const config = {
    name,
    platform: 'onnxruntime_onnx',
    max_batch_size: 4,
    input: tensors((i) => i),
    output: tensors(outputOf),
    ...extra,
  };
  await mkdir(path.join(dir, name, '1'), { recursive: true });
  await writeFile(path.join(dir, name, 'config.json'), JSON.stringify(config));
  await writeFile(path.join(dir, name, '1', 'model.onnx'), model);
}

let dir: string;
let h: Harness;

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'mesh-types-'));
  await writeIdentityModel(dir, 'types', CASES, {
    dynamic_batching: { max_queue_delay_microseconds: 20_000, preferred_batch_size: [2] },
    model_warmup: [
      {
        name: 'random',
        batch_size: 2,
        inputs: Object.fromEntries(
          CASES.map((c) => [c.input, { data_type: TRITON[c.datatype] as ModelConfig['input'][number]['data_type'], dims: [16], random_data: true as const }]),
        ),
      },
    ],
  });
  // BF16 declared in the config over an FP32 graph tensor; and a graph whose tensor really is bfloat16.
  await writeIdentityModel(dir, 'bf16', [{ input: 'x_bf16', datatype: 'BF16', onnx: DataType.FLOAT }]);
  await writeIdentityModel(dir, 'bf16-graph', [{ input: 'x_bf16', datatype: 'BF16', onnx: DataType.BFLOAT16 }]);
  h = await harness({ repo: dir, env: { MODELS: 'types', EXECUTION_PROVIDERS: 'cpu', INFERENCE_THREAD: 'worker' } });
});

afterAll(async () => {
  await h?.backend.repository.close();
  await rm(dir, { recursive: true, force: true });
});

interface Answer {
  outputs: { name: string; datatype: string; shape: number[]; data?: unknown[]; parameters?: { binary_data_size?: number } }[];
}

const jsonInputs = (override: Record<string, unknown[]> = {}) =>
  CASES.map((c) => {
    const data = override[c.input] ?? c.values;
    return { name: c.input, datatype: c.datatype, shape: [1, data.length], data };
  });

function binaryRequest(bytesOf: (c: TypeCase) => Uint8Array, parameters: Record<string, unknown> = {}) {
  const data = CASES.map(bytesOf);
  const header = {
    parameters,
    inputs: CASES.map((c, i) => ({
      name: c.input,
      datatype: c.datatype,
      shape: [1, c.values.length],
      parameters: { binary_data_size: data[i]!.byteLength },
    })),
  };
  const { body, headerLength } = encodeBinaryBody(header, data);
  return { raw: body, headers: { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(headerLength) } };
}

/** The outputs of a binary answer: its JSON header and each binary output's bytes by name. */
async function binaryAnswer(res: Response): Promise<{ header: Answer; bytes: Map<string, Uint8Array> }> {
  const n = Number(res.headers.get('inference-header-content-length'));
  const body = new Uint8Array(await res.arrayBuffer());
  const header = JSON.parse(new TextDecoder().decode(body.subarray(0, n))) as Answer;
  const bytes = new Map<string, Uint8Array>();
  let at = n;
  for (const o of header.outputs) {
    const size = o.parameters?.binary_data_size;
    if (size === undefined) continue;
    bytes.set(o.name, body.subarray(at, at + size));
    at += size;
  }
  expect(at).toBe(body.byteLength);
  return { header, bytes };
}

describe('datatypes end to end', () => {
  it('loaded the model, its warm-up feeding every type random data', () => {
    expect(h.backend.repository.state('types')).toBe('READY');
  });

  it('JSON in → JSON out: the values sent, with their datatypes and shapes', async () => {
    const res = await h.post('/v2/models/types/infer', { inputs: jsonInputs() });
    expect(res.status).toBe(200);
    const answer = (await res.json()) as Answer;
    for (const c of CASES) {
      const out = answer.outputs.find((o) => o.name === outputOf(c.input));
      expect(out, c.input).toEqual({ name: outputOf(c.input), datatype: c.datatype, shape: [1, c.values.length], data: c.values });
    }
  });

  it('INT64 through JSON: negative, beyond 2^32 and up to ±(2^53 - 1), exactly', async () => {
    const values = [-(2 ** 40) - 1, 2 ** 33 + 12345, -7, Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER];
    const res = await h.post('/v2/models/types/infer', { inputs: jsonInputs({ x_int64: values }), outputs: [{ name: 'y_int64' }] });
    expect(res.status).toBe(200);
    const answer = (await res.json()) as Answer;
    expect(answer.outputs).toEqual([{ name: 'y_int64', datatype: 'INT64', shape: [1, values.length], data: values }]);
  });

  it('binary in → binary out: the same bytes', async () => {
    const res = await h.post('/v2/models/types/infer', undefined, binaryRequest((c) => c.bytes(), { binary_data_output: true }));
    expect(res.status).toBe(200);
    const { header, bytes } = await binaryAnswer(res);
    for (const c of CASES) {
      const out = header.outputs.find((o) => o.name === outputOf(c.input))!;
      expect(out.datatype).toBe(c.datatype);
      expect(out.data).toBeUndefined();
      expect(Array.from(bytes.get(out.name)!), c.input).toEqual(Array.from(c.bytes()));
    }
  });

  it('binary in → JSON out: the same values as JSON in', async () => {
    const res = await h.post('/v2/models/types/infer', undefined, binaryRequest((c) => c.bytes()));
    expect(res.status).toBe(200);
    const answer = (await res.json()) as Answer;
    for (const c of CASES) expect(answer.outputs.find((o) => o.name === outputOf(c.input))?.data, c.input).toEqual(c.values);
  });

  it('batches two requests together and answers each its own rows', async () => {
    const other: Record<string, unknown[]> = {
      x_fp16: FP16.map((v) => (v === 0 ? 2 : -v)),
      x_uint16: [9, 8, 7, 6],
      x_uint32: [4000000000, 3, 2, 1],
      x_uint64: UINT64.map((v) => Number.MAX_SAFE_INTEGER - v),
      x_int8: [1, 2, 3, 4, -5],
      x_int16: [-1, -2, -3, 300],
      x_uint8: [200, 100, 50, 25],
      x_bool: [false, true, false, false, true],
      x_int64: INT64.map((v) => 0 - v),
    };
    const executions = async () => {
      const metric = h.backend.metrics.registry.getSingleMetric('nv_inference_exec_count');
      return ((await metric?.get())?.values ?? []).reduce((n, v) => n + v.value, 0);
    };
    const before = await executions();
    const [a, b] = await Promise.all([
      h.post('/v2/models/types/infer', { inputs: jsonInputs() }),
      h.post('/v2/models/types/infer', { inputs: jsonInputs(other) }),
    ]);
    expect([a.status, b.status]).toEqual([200, 200]);
    const [ja, jb] = (await Promise.all([a.json(), b.json()])) as [Answer, Answer];
    for (const c of CASES) {
      expect(ja.outputs.find((o) => o.name === outputOf(c.input))?.data, c.input).toEqual(c.values);
      expect(jb.outputs.find((o) => o.name === outputOf(c.input))?.data, c.input).toEqual(other[c.input]);
    }
    // One execution for both (preferred_batch_size 2): their feeds were concatenated and the outputs split by rows.
    expect(await executions()).toBe(before + 1);
  });

  describe('400 invalid_tensor for bad data', () => {
    const bad: [string, Record<string, unknown[]>, RegExp][] = [
      ['a UINT16 above 65535 (JSON)', { x_uint16: [0, 1, 65536, 2] }, /Input "x_uint16": element 2 is 65536, not a valid UINT16 value/],
      ['a negative UINT32 (JSON)', { x_uint32: [0, -1, 2, 3] }, /Input "x_uint32": element 1 is -1, not a valid UINT32 value/],
      ['an FP16 above 65504 (JSON)', { x_fp16: [1, 65505] }, /Input "x_fp16": element 1 is 65505, not a valid FP16 value/],
      ['a UINT64 beyond 2^53 - 1 (JSON)', { x_uint64: [2 ** 53] }, /Input "x_uint64": element 0 is 9007199254740992, not a valid UINT64 value/],
    ];
    for (const [what, override, message] of bad) {
      it(what, async () => {
        const res = await h.post('/v2/models/types/infer', { inputs: jsonInputs(override) });
        expect(res.status).toBe(400);
        const body = (await res.json()) as { error: { code: string; message: string } };
        expect(body.error.code).toBe('invalid_tensor');
        expect(body.error.message).toMatch(message);
      });
    }

    const badBinary: [string, string, (c: TypeCase) => Uint8Array, RegExp][] = [
      ['a BOOL byte 2 (binary)', 'x_bool', () => new Uint8Array([1, 0, 2, 1, 0]), /Input "x_bool": element 2 is byte 2, not a valid BOOL value/],
      [
        'an FP16 NaN bit pattern (binary)',
        'x_fp16',
        () => view(Uint16Array.from(FP16, (v, i) => (i === 3 ? 0x7e00 : toFp16Bits(v)))),
        /Input "x_fp16": element 3 is NaN \(bits 0x7e00\), not a valid FP16 value/,
      ],
      [
        'an FP16 infinity bit pattern (binary)',
        'x_fp16',
        () => view(Uint16Array.from(FP16, (v, i) => (i === 0 ? 0xfc00 : toFp16Bits(v)))),
        /Input "x_fp16": element 0 is -Infinity \(bits 0xfc00\), not a valid FP16 value/,
      ],
    ];
    for (const [what, input, bytes, message] of badBinary) {
      it(what, async () => {
        const res = await h.post('/v2/models/types/infer', undefined, binaryRequest((c) => (c.input === input ? bytes(c) : c.bytes())));
        expect(res.status).toBe(400);
        const body = (await res.json()) as { error: { code: string; message: string } };
        expect(body.error.code).toBe('invalid_tensor');
        expect(body.error.message).toMatch(message);
      });
    }

    it('keeps serving afterwards', async () => {
      expect((await h.post('/v2/models/types/infer', { inputs: jsonInputs() })).status).toBe(200);
    });
  });

  it('carries BF16 on the wire and FP32 at the session: the values sent come back, in JSON and in binary', async () => {
    await h.backend.repository.load('bf16');
    const values = [1, -2.5, 3.3895313892515355e38, 0, 2 ** -133, 1.5 * 2 ** 100];
    const json = await h.post('/v2/models/bf16/infer', { inputs: [{ name: 'x_bf16', datatype: 'BF16', shape: [1, values.length], data: values }] });
    expect(json.status).toBe(200);
    const answer = (await json.json()) as Answer;
    expect(answer.outputs[0]).toMatchObject({ name: 'y_bf16', datatype: 'BF16', shape: [1, values.length], data: values });
    // 0.1 is not a bfloat16: it is rounded to the nearest one on the way in (0x3dcd).
    const rounded = (await (await h.post('/v2/models/bf16/infer', { inputs: [{ name: 'x_bf16', datatype: 'BF16', shape: [1, 1], data: [0.1] }] })).json()) as Answer;
    expect(rounded.outputs[0]!.data).toEqual([0.10009765625]);
    const bits = Uint16Array.from(values, toBf16Bits);
    const header = { inputs: [{ name: 'x_bf16', datatype: 'BF16', shape: [1, values.length], parameters: { binary_data_size: bits.byteLength } }], parameters: { binary_data_output: true } };
    const { body, headerLength } = encodeBinaryBody(header, [view(bits)]);
    const bin = await h.post('/v2/models/bf16/infer', undefined, { raw: body, headers: { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(headerLength) } });
    expect(bin.status).toBe(200);
    const n = Number(bin.headers.get('inference-header-content-length'));
    expect(new Uint8Array(await bin.arrayBuffer()).slice(n)).toEqual(view(bits));
  });

  it('fails to load a graph whose inputs really are bfloat16 (onnxruntime-node cannot open it), and answers 503 for it', async () => {
    await expect(h.backend.repository.load('bf16-graph')).rejects.toThrow(/Model "bf16-graph" failed to load/);
    expect(h.backend.repository.state('bf16-graph')).toBe('UNAVAILABLE');
    const res = await h.post('/v2/models/bf16-graph/infer', { inputs: [{ name: 'x_bf16', datatype: 'BF16', shape: [1, 1], data: [1] }] });
    expect(res.status).toBe(503);
    expect(await errorCode(res)).toBe('model_not_ready');
  });
});

describe('conversions', () => {
  const config = (datatype: 'TYPE_INT64' | 'TYPE_UINT64'): ModelConfig => ({
    name: 'm',
    platform: 'onnxruntime_onnx',
    max_batch_size: 0,
    input: [{ name: 'x', data_type: datatype, dims: [-1] }],
    output: [{ name: 'y', data_type: datatype, dims: [-1] }],
  });

  it('builds JSON INT64 and UINT64 inputs word by word, bit-identical to BigInt64Array.from(values, BigInt)', () => {
    const safe = fc.oneof(fc.integer(), fc.maxSafeInteger(), fc.constantFrom(0, -1, 2 ** 32, -(2 ** 32), 2 ** 32 - 1, Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER));
    fc.assert(
      fc.property(fc.array(safe, { minLength: 1, maxLength: 50 }), (values) => {
        const feed = prepareInference(config('TYPE_INT64'), parseInferRequest({ inputs: [{ name: 'x', datatype: 'INT64', shape: [values.length], data: values }] })).feeds.x!;
        expect(feed.values).toBeInstanceOf(BigInt64Array);
        expect(Array.from(feed.values as BigInt64Array)).toEqual(Array.from(BigInt64Array.from(values, BigInt)));
        const unsigned = values.map(Math.abs);
        const ufeed = prepareInference(config('TYPE_UINT64'), parseInferRequest({ inputs: [{ name: 'x', datatype: 'UINT64', shape: [values.length], data: unsigned }] })).feeds.x!;
        expect(ufeed.values).toBeInstanceOf(BigUint64Array);
        expect(Array.from(ufeed.values as BigUint64Array)).toEqual(Array.from(BigUint64Array.from(unsigned, BigInt)));
      }),
    );
  });

  it('reads 64-bit outputs as Number(bigint) does, every 64-bit value included', () => {
    fc.assert(
      fc.property(fc.array(fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }), { minLength: 1, maxLength: 50 }), (values) => {
        const signed = BigInt64Array.from(values);
        const unsigned = BigUint64Array.from(values, (v) => BigInt.asUintN(64, v));
        const [s, u] = jsonOutputs([
          { name: 's', datatype: 'INT64', shape: [values.length], data: signed },
          { name: 'u', datatype: 'UINT64', shape: [values.length], data: unsigned },
        ]);
        expect(s!.data).toEqual(Array.from(signed, Number));
        expect(u!.data).toEqual(Array.from(unsigned, Number));
      }),
    );
  });

  it('prints FP32 outputs as the shortest decimal that reads back as the same float32', () => {
    expect(jsonOutputs([{ name: 'y', datatype: 'FP32', shape: [6], data: Float32Array.from([0.3, -0.1, 1 / 3, 16777216, 1e-30, 3.4028234663852886e38]) }])[0]!.data).toEqual([
      0.3, -0.1, 0.33333334, 16777216, 1e-30, 3.4028235e38,
    ]);
    fc.assert(
      fc.property(fc.float({ noNaN: true, noDefaultInfinity: true }), (f) => {
        const s = shortestFloat32(f);
        expect(Math.fround(s)).toBe(Math.fround(f));
        // As short as toPrecision's shortest round-tripping form (6 to 9 digits).
        let p = 6;
        while (p < 9 && Math.fround(Number(f.toPrecision(p))) !== Math.fround(f)) p++;
        const digits = String(s).replace(/^-|e.*$|\./g, '').replace(/^0+|0+$/g, '');
        expect(digits.length).toBeLessThanOrEqual(p);
      }),
      { numRuns: 5000 },
    );
  });
});
