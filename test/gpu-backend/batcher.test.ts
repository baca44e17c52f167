/**
 * Dynamic batching: concurrent requests to a model with `dynamic_batching`
 * run as one batch (token ids padded to the longest), each gets its own rows
 * back, max_batch_size is respected, and models without it run one request at
 * a time. The last test checks on the real `embed` model that a padded,
 * merged batch gives each row the embedding it gets alone.
 */

import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseInferRequest } from '../../shared/protocol.ts';
import { Batcher, mergeFeeds } from '../../gpu-backend/src/batcher.ts';
import type { ModelConfig } from '../../gpu-backend/src/model-config.ts';
import type { ModelRepository } from '../../gpu-backend/src/repository.ts';
import { Scheduler } from '../../gpu-backend/src/scheduler.ts';
import { prepareInference, toOrtFeeds } from '../../gpu-backend/src/tensors.ts';
import { demoRepository, harness, type Harness } from './helpers.ts';

const tokenModel = (batching: boolean, maxBatch = 8): ModelConfig => ({
  name: 'tok',
  platform: 'onnxruntime_onnx',
  max_batch_size: maxBatch,
  input: [{ name: 'ids', data_type: 'TYPE_INT64', dims: [-1] }],
  output: [{ name: 'sum', data_type: 'TYPE_FP32', dims: [1] }],
  ...(batching ? { dynamic_batching: { max_queue_delay_microseconds: 20_000 } } : {}),
  parameters: { text_input: 'text', pad_id: 0 },
});

/** A stand-in repository whose model sums each row's ids; it records the shape of every run. */
function summingRepository() {
  const runs: number[][] = [];
  const repo = {
    async run(_name: string, feeds: Record<string, ort.Tensor>) {
      const ids = feeds.ids!;
      runs.push([...ids.dims]);
      const [rows, seq] = ids.dims as [number, number];
      const data = ids.data as BigInt64Array;
      const sums = new Float32Array(rows);
      for (let r = 0; r < rows; r++) for (let i = 0; i < seq; i++) sums[r]! += Number(data[r * seq + i]!);
      return { outputs: { sum: new ort.Tensor('float32', sums, [rows, 1]) }, computeMs: 1 };
    },
  };
  return { runs, repository: repo as unknown as ModelRepository };
}

const ids = (rows: number[][]) =>
  parseInferRequest({ inputs: [{ name: 'ids', datatype: 'INT64', shape: [rows.length, rows[0]!.length], data: rows.flat() }] });

async function submitAll(config: ModelConfig, requests: number[][][]) {
  const { runs, repository } = summingRepository();
  const scheduler = new Scheduler({ slots: 1, maxQueue: 100 });
  const batcher = new Batcher({ config, repository, scheduler });
  const results = await Promise.all(
    requests.map((rows) => {
      scheduler.admit();
      return batcher.submit(prepareInference(config, ids(rows)));
    }),
  );
  expect(scheduler.capacity).toEqual({ slots: 1, inFlight: 0, queued: 0 });
  return { runs, sums: results.map((r) => Array.from(r.outputs.sum!.data as Float32Array)), results };
}

describe('Batcher', () => {
  it('runs concurrent requests as one padded batch and hands each its rows', async () => {
    const { runs, sums, results } = await submitAll(tokenModel(true), [[[1, 2, 3]], [[4, 5], [6, 7]], [[8, 9, 10, 11, 12]]]);
    expect(runs).toEqual([[4, 5]]);
    expect(sums).toEqual([[6], [9, 13], [50]]);
    expect(results.every((r) => r.batchRows === 4 && r.batchRequests === 3)).toBe(true);
  });

  it('never exceeds max_batch_size rows', async () => {
    const { runs, sums } = await submitAll(tokenModel(true, 3), [[[1], [1]], [[2], [2]], [[3]]]);
    expect(runs).toEqual([[3, 1], [2, 1]]);
    expect(sums).toEqual([[1, 1], [2, 2], [3]]);
  });

  it('runs one request at a time for a model without dynamic_batching', async () => {
    const { runs, sums } = await submitAll(tokenModel(false), [[[1, 2]], [[3]]]);
    expect(runs).toEqual([[1, 2], [1, 1]]);
    expect(sums).toEqual([[3], [3]]);
  });
});

describe('merged batches on the real embed model', () => {
  let repo: Awaited<ReturnType<typeof demoRepository>>;
  let h: Harness;
  beforeAll(async () => {
    repo = await demoRepository();
    h = await harness({ repo: repo.dir, env: { MODELS: 'embed', EXECUTION_PROVIDERS: 'cpu' } });
  });
  afterAll(async () => {
    await h?.backend.repository.close();
    await repo?.cleanup();
  });

  it('gives each padded row the embedding it gets alone', async () => {
    const { config } = h.backend.repository.ready('embed');
    const texts = ['short', 'a somewhat longer sentence about edge inference', 'mid length text'];
    const prepared = texts.map((t) => prepareInference(config, parseInferRequest({ inputs: [{ name: 'text', datatype: 'BYTES', shape: [1], data: [t] }] })));
    const merged = mergeFeeds(prepared);
    expect(merged.input_ids!.shape).toEqual([3, Math.max(...prepared.map((p) => p.feeds.input_ids!.shape[1]!))]);
    const together = await h.backend.repository.run('embed', toOrtFeeds(merged), ['embedding']);
    const all = together.outputs.embedding!.data as Float32Array;
    for (let i = 0; i < texts.length; i++) {
      const alone = await h.backend.repository.run('embed', toOrtFeeds(prepared[i]!.feeds), ['embedding']);
      const solo = alone.outputs.embedding!.data as Float32Array;
      const row = all.subarray(i * 256, (i + 1) * 256);
      for (let j = 0; j < 256; j++) expect(row[j]).toBeCloseTo(solo[j]!, 5);
    }
  });

  it('serves concurrent HTTP requests correctly whatever batches they fall into', async () => {
    const texts = Array.from({ length: 6 }, (_, i) => `request number ${i} ${'word '.repeat(i)}`);
    const post = (t: string) => h.post('/v2/models/embed/infer', { inputs: [{ name: 'text', datatype: 'BYTES', shape: [1], data: [t] }] });
    const concurrent = await Promise.all(texts.map(post));
    for (let i = 0; i < texts.length; i++) {
      expect(concurrent[i]!.status).toBe(200);
      const got = ((await concurrent[i]!.json()) as { outputs: { data: number[] }[] }).outputs[0]!.data;
      const alone = ((await (await post(texts[i]!)).json()) as { outputs: { data: number[] }[] }).outputs[0]!.data;
      got.forEach((x, j) => expect(x).toBeCloseTo(alone[j]!, 5));
    }
  });
});
