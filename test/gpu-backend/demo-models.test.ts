import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateDemoModels } from '../../gpu-backend/src/demo-models/generate.ts';
import {
  DATATYPE_TO_TRITON,
  TRITON_TO_DATATYPE,
  modelShape,
  parseModelConfig,
  type ModelConfig,
} from '../../gpu-backend/src/serving/model-config.ts';
import { DATATYPES } from '../../shared/protocol.ts';
import { PAD_ID, VOCAB_SIZE, padBatch, tokenize } from '../../shared/tokenizer.ts';

type Generated = Awaited<ReturnType<typeof generateDemoModels>>;

let dirA = '';
let dirB = '';
let genA: Generated = [];
let genB: Generated = [];
let embed: ort.InferenceSession;
let classifier: ort.InferenceSession;

const modelPath = (name: string) => {
  const m = genA.find((g) => g.name === name);
  if (!m) throw new Error(`model ${name} was not generated`);
  return m.path;
};

async function readConfig(dir: string, name: string): Promise<ModelConfig> {
  const file = path.join(dir, name, 'config.json');
  return parseModelConfig(JSON.parse(await readFile(file, 'utf8')), file);
}

/** Embeds rows of token ids (right-padded by padBatch) and returns one Float32Array per row. */
async function embedIds(rows: number[][]): Promise<Float32Array[]> {
  const { ids, seq } = padBatch(rows);
  const out = await embed.run({ input_ids: new ort.Tensor('int64', BigInt64Array.from(ids, BigInt), [rows.length, seq]) });
  const t = out.embedding!;
  expect(t.dims).toEqual([rows.length, 256]);
  const data = t.data as Float32Array;
  return rows.map((_, i) => data.slice(i * 256, (i + 1) * 256));
}

const norm = (v: Float32Array) => Math.hypot(...v);
const maxAbsDiff = (a: Float32Array, b: Float32Array) => a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i]!)), 0);

beforeAll(async () => {
  dirA = await mkdtemp(path.join(os.tmpdir(), 'demo-models-a-'));
  dirB = await mkdtemp(path.join(os.tmpdir(), 'demo-models-b-'));
  const lines: string[] = [];
  genA = await generateDemoModels(dirA, (l) => lines.push(l));
  genB = await generateDemoModels(dirB);
  expect(lines).toHaveLength(2);
  embed = await ort.InferenceSession.create(modelPath('embed'));
  classifier = await ort.InferenceSession.create(modelPath('classifier'));
});

afterAll(async () => {
  await embed?.release();
  await classifier?.release();
  for (const dir of [dirA, dirB]) if (dir) await rm(dir, { recursive: true, force: true });
});

describe('generateDemoModels', () => {
  it('writes embed and classifier in Triton layout, with the sha256 of the written file', async () => {
    expect(genA.map((g) => g.name)).toEqual(['embed', 'classifier']);
    for (const g of genA) {
      expect(g.path).toBe(path.join(dirA, g.name, '1', 'model.onnx'));
      const bytes = await readFile(g.path);
      expect(createHash('sha256').update(bytes).digest('hex')).toBe(g.sha256);
    }
  });

  it('is deterministic: two generations are byte-identical', async () => {
    expect(genB.map((g) => g.sha256)).toEqual(genA.map((g) => g.sha256));
    for (const g of genA) {
      const cfgA = await readFile(path.join(dirA, g.name, 'config.json'));
      const cfgB = await readFile(path.join(dirB, g.name, 'config.json'));
      expect(cfgA.equals(cfgB)).toBe(true);
    }
  });

  it('leaves files that already hold the right bytes untouched', async () => {
    const before = (await stat(modelPath('embed'))).mtimeMs;
    const lines: string[] = [];
    const again = await generateDemoModels(dirA, (l) => lines.push(l));
    expect(again.map((g) => g.sha256)).toEqual(genA.map((g) => g.sha256));
    expect((await stat(modelPath('embed'))).mtimeMs).toBe(before);
    expect(lines.every((l) => l.includes('unchanged'))).toBe(true);
  });
});

describe('configs match the ONNX graphs', () => {
  const ortType: Record<string, string> = { TYPE_FP32: 'float32', TYPE_INT64: 'int64' };

  it.each(['embed', 'classifier'])('%s', async (name) => {
    const config = await readConfig(dirA, name);
    expect(config.name).toBe(name);
    const session = name === 'embed' ? embed : classifier;
    expect(session.inputNames).toEqual(config.input.map((t) => t.name));
    expect(session.outputNames).toEqual(config.output.map((t) => t.name));
    const pairs = [
      ...config.input.map((t, i) => [t, session.inputMetadata[i]] as const),
      ...config.output.map((t, i) => [t, session.outputMetadata[i]] as const),
    ];
    for (const [t, meta] of pairs) {
      if (!meta?.isTensor) throw new Error(`${t.name}: not a tensor in the graph`);
      expect(meta.type).toBe(ortType[t.data_type]);
      // Config dims exclude the batch dimension; the graph's symbolic dims are variable (-1).
      expect(meta.shape.map((d) => (typeof d === 'string' ? -1 : d))).toEqual(modelShape(config, t));
    }
  });

  it('embed declares the tokenizer it was built for', async () => {
    const config = await readConfig(dirA, 'embed');
    expect(config.parameters).toMatchObject({ tokenizer: 'mesh-hash-v1', text_input: 'text', pad_id: PAD_ID });
    expect(config.dynamic_batching?.preferred_batch_size).toEqual([16, 32]);
    expect(config.dynamic_batching?.default_queue_policy).toEqual({
      max_queue_size: 48,
      default_timeout_microseconds: 10_000_000,
      allow_timeout_override: true,
    });
    expect(config.instance_group).toEqual([{ count: 1, kind: 'KIND_GPU' }]);
  });

  it('each declares how it is metered: embed by tokens, classifier by rows', async () => {
    expect((await readConfig(dirA, 'embed')).parameters).toMatchObject({ metering: 'tokens', max_sequence_length: 128, pad_id: PAD_ID });
    expect((await readConfig(dirA, 'classifier')).parameters).toEqual({ metering: 'rows' });
  });
});

describe('embed', () => {
  const texts = [
    'The quick brown fox jumps over the lazy dog.',
    'Edge inference meshes route requests to warm GPUs.',
    'hello',
    'Grüße aus München — 東京からこんにちは',
  ];

  it('returns unit-norm [B, 256] embeddings', async () => {
    const rows = await embedIds(texts.map((t) => tokenize(t)));
    expect(rows).toHaveLength(texts.length);
    for (const r of rows) {
      expect(r.every(Number.isFinite)).toBe(true);
      expect(norm(r)).toBeCloseTo(1, 5);
    }
  });

  it('ignores padding: extra zeros, or batching with longer rows, give the same embedding', async () => {
    const ids = tokenize(texts[0]!);
    const [alone] = await embedIds([ids]);
    const [padded] = await embedIds([[...ids, 0, 0, 0, 0, 0, 0, 0]]);
    const [, inBatch] = await embedIds([tokenize(texts[1]! + ' ' + texts[1]! + ' ' + texts[1]!), ids]);
    expect(maxAbsDiff(alone!, padded!)).toBeLessThan(1e-5);
    expect(maxAbsDiff(alone!, inBatch!)).toBeLessThan(1e-5);
  });

  it('is deterministic and gives different texts different embeddings', async () => {
    const first = await embedIds(texts.map((t) => tokenize(t)));
    const second = await embedIds(texts.map((t) => tokenize(t)));
    for (let i = 0; i < texts.length; i++) {
      expect(maxAbsDiff(first[i]!, second[i]!)).toBe(0);
      for (let j = i + 1; j < texts.length; j++) {
        const cosine = first[i]!.reduce((s, x, k) => s + x * first[j]![k]!, 0);
        expect(cosine).toBeLessThan(0.99);
      }
    }
  });

  it('takes every id of the vocabulary', async () => {
    const rows = await embedIds([[1, VOCAB_SIZE - 1, 2]]);
    expect(norm(rows[0]!)).toBeCloseTo(1, 5);
  });
});

describe('classifier', () => {
  it('returns probability rows in [0, 1] that sum to 1', async () => {
    const batch = 5;
    let seed = 12345;
    const features = Float32Array.from({ length: batch * 16 }, () => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return (seed / 2 ** 32) * 8 - 4;
    });
    const out = await classifier.run({ features: new ort.Tensor('float32', features, [batch, 16]) });
    const p = out.probabilities!;
    expect(p.dims).toEqual([batch, 4]);
    const data = p.data as Float32Array;
    const rows = Array.from({ length: batch }, (_, i) => Array.from(data.subarray(i * 4, i * 4 + 4)));
    for (const row of rows) {
      for (const v of row) {
        expect(v).toBeGreaterThanOrEqual(0);
        expect(v).toBeLessThanOrEqual(1);
      }
      expect(row.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 5);
    }
    // Different inputs, different outputs: the weights are not degenerate.
    expect(new Set(rows.map((r) => r.map((v) => v.toFixed(4)).join())).size).toBe(batch);
  });
});

describe('parseModelConfig', () => {
  const valid = {
    name: 'm',
    platform: 'onnxruntime_onnx',
    max_batch_size: 8,
    input: [{ name: 'x', data_type: 'TYPE_FP32', dims: [-1, 3] }],
    output: [{ name: 'y', data_type: 'TYPE_INT64', dims: [2] }],
    dynamic_batching: {
      max_queue_delay_microseconds: 100,
      preferred_batch_size: [4],
      default_queue_policy: { max_queue_size: 16, default_timeout_microseconds: 500_000, allow_timeout_override: true },
    },
    instance_group: [{ count: 2, kind: 'KIND_GPU' }, { count: 1 }],
    version_policy: { latest: { num_versions: 1 } },
    parameters: { a: 'b', n: 1, f: false },
  };
  const policy = (p: Record<string, unknown>) => ({ ...valid, dynamic_batching: { default_queue_policy: p } });

  it('accepts a valid config unchanged', () => {
    expect(parseModelConfig(structuredClone(valid), 'cfg.json')).toEqual(valid);
  });

  it.each([
    [{ ...valid, max_batch_size: -1 }, 'max_batch_size'],
    [{ ...valid, platform: 'tensorflow_savedmodel' }, 'platform'],
    [{ ...valid, input: [{ name: 'x', data_type: 'FP32', dims: [3] }] }, 'input[0].data_type'],
    [{ ...valid, output: [{ name: 'y', data_type: 'TYPE_FP32', dims: [0] }] }, 'output[0].dims[0]'],
    [{ ...valid, dynamic_batching: { preferred_batch_size: [16] } }, 'dynamic_batching.preferred_batch_size[0]'],
    [{ ...valid, max_batch_size: 0 }, 'dynamic_batching'],
    [{ ...valid, instance_groups: [] }, '"instance_groups"'],
    [policy({ max_queue_size: -1 }), 'dynamic_batching.default_queue_policy.max_queue_size'],
    [policy({ default_timeout_microseconds: 1.5 }), 'dynamic_batching.default_queue_policy.default_timeout_microseconds'],
    [policy({ allow_timeout_override: 'yes' }), 'dynamic_batching.default_queue_policy.allow_timeout_override'],
    [policy({ timeout_action: 'DELAY' }), 'dynamic_batching.default_queue_policy.timeout_action'],
    [{ ...valid, dynamic_batching: { default_queue_policy: [] } }, 'dynamic_batching.default_queue_policy'],
    [{ ...valid, instance_group: [] }, 'instance_group'],
    [{ ...valid, instance_group: [{ count: 0 }] }, 'instance_group[0].count'],
    [{ ...valid, instance_group: [{ kind: 'KIND_TPU' }] }, 'instance_group[0].kind'],
    [{ ...valid, instance_group: [{ count: 1, gpus: [0] }] }, 'instance_group[0].gpus'],
    [{ ...valid, instance_group: [{ kind: 'KIND_GPU' }, { kind: 'KIND_CPU' }] }, 'instance_group'],
    [{ ...valid, parameters: { x: { int64_value: 1 } } }, 'parameters.x'],
    [{ ...valid, parameters: { metering: 'bytes' } }, 'parameters.metering'],
    [{ ...valid, parameters: { metering: 'Tokens' } }, 'parameters.metering'],
    [{ ...valid, parameters: { metering: 1 } }, 'parameters.metering'],
    [{ ...valid, parameters: { max_sequence_length: 0 } }, 'parameters.max_sequence_length'],
    [{ ...valid, parameters: { max_sequence_length: '128' } }, 'parameters.max_sequence_length'],
    [{ ...valid, parameters: { pad_id: 0.5 } }, 'parameters.pad_id'],
    [{ ...valid, input: [] }, 'input'],
    [{ ...valid, name: undefined }, 'name'],
  ])('rejects %j naming %s', (json, field) => {
    expect(() => parseModelConfig(json, 'models/m/config.json')).toThrow(`models/m/config.json: ${field} `);
  });

  it('accepts every meter of shared/metering.ts as parameters.metering', () => {
    for (const metering of ['tokens', 'rows', 'elements', 'requests']) {
      expect(parseModelConfig({ ...structuredClone(valid), parameters: { metering } }, 'cfg.json').parameters).toEqual({ metering });
    }
  });

  it('maps Triton types to OIP datatypes and back', () => {
    for (const d of DATATYPES) expect(TRITON_TO_DATATYPE[DATATYPE_TO_TRITON[d]]).toBe(d);
    expect(TRITON_TO_DATATYPE.TYPE_STRING).toBe('BYTES');
    expect(DATATYPE_TO_TRITON.FP32).toBe('TYPE_FP32');
  });
});
