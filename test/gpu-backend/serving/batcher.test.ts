/**
 * Dynamic batching: concurrent requests to a model with `dynamic_batching`
 * run as one batch (token ids padded to the longest), each gets its own rows
 * back, max_batch_size is respected, and models without it run one request at
 * a time. The last test checks on the real `embed` model that a padded,
 * merged batch gives each row the embedding it gets alone.
 */

import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import fc from 'fast-check';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseInferRequest, type InferResponse } from '../../../shared/protocol.ts';
import { VOCAB_SIZE } from '../../../shared/tokenizer.ts';
import { MeshError } from '../../../shared/errors.ts';
import { Batcher, mergeFeeds, queueTimeoutUs, type BatchTarget } from '../../../gpu-backend/src/serving/batcher.ts';
import type { ModelConfig } from '../../../gpu-backend/src/serving/model-config.ts';
import { Scheduler } from '../../../gpu-backend/src/serving/scheduler.ts';
import { toOrtFeeds } from '../../../gpu-backend/src/serving/tensor-data.ts';
import { prepareInference } from '../../../gpu-backend/src/serving/tensors.ts';
import { demoRepository, harness, type Harness } from '../helpers.ts';

const tokenModel = (batching: boolean, maxBatch = 8): ModelConfig => ({
  name: 'tok',
  platform: 'onnxruntime_onnx',
  max_batch_size: maxBatch,
  input: [{ name: 'ids', data_type: 'TYPE_INT64', dims: [-1] }],
  output: [{ name: 'sum', data_type: 'TYPE_FP32', dims: [1] }],
  ...(batching ? { dynamic_batching: { max_queue_delay_microseconds: 20_000 } } : {}),
  parameters: { text_input: 'text', pad_id: 0 },
});

/** A stand-in model (what a `ModelHandle` is to its batcher) that sums each row's ids; it records the shape of every run. */
function summingModel(config: ModelConfig) {
  const runs: number[][] = [];
  const model: BatchTarget = {
    config,
    async run(feeds) {
      const ids = feeds.ids as ort.Tensor;
      runs.push([...ids.dims]);
      const [rows, seq] = ids.dims as [number, number];
      const data = ids.data as BigInt64Array;
      const sums = new Float32Array(rows);
      for (let r = 0; r < rows; r++) for (let i = 0; i < seq; i++) sums[r]! += Number(data[r * seq + i]!);
      return { outputs: { sum: new ort.Tensor('float32', sums, [rows, 1]) }, computeMs: 1 };
    },
  };
  return { runs, model };
}

const ids = (rows: number[][]) =>
  parseInferRequest({ inputs: [{ name: 'ids', datatype: 'INT64', shape: [rows.length, rows[0]!.length], data: rows.flat() }] });

async function submitAll(config: ModelConfig, requests: number[][][]) {
  const { runs, model } = summingModel(config);
  const scheduler = new Scheduler({ slots: 1, maxQueue: 100 });
  const batcher = new Batcher({ model, scheduler });
  const results = await Promise.all(requests.map((rows) => batcher.submit(prepareInference(config, ids(rows)))));
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

/** Like summingModel, but each run waits while the gate is closed; counts runs executing at once. */
function gatedModel(config: ModelConfig) {
  const state = { active: 0, maxActive: 0, runs: [] as number[][], gate: undefined as Promise<void> | undefined, open: () => {} };
  const close = () => {
    state.gate = new Promise<void>((resolve) => (state.open = () => { state.gate = undefined; resolve(); }));
  };
  const { model: summing } = summingModel(config);
  const model: BatchTarget = {
    config,
    async run(feeds, fetches) {
      state.active++;
      state.maxActive = Math.max(state.maxActive, state.active);
      state.runs.push(Array.from((feeds.ids as ort.Tensor).data as BigInt64Array, Number));
      try {
        while (state.gate) await state.gate;
        return await summing.run(feeds, fetches);
      } finally {
        state.active--;
      }
    },
  };
  return { state, close, model };
}

async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 2));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** A model whose every request is a batch of its own (max_batch_size 1, no delay), with the given policy and instances. */
const oneByOne = (extra: Partial<ModelConfig> = {}, policy?: NonNullable<ModelConfig['dynamic_batching']>['default_queue_policy']): ModelConfig => ({
  ...tokenModel(true, 1),
  dynamic_batching: { max_queue_delay_microseconds: 0, ...(policy ? { default_queue_policy: policy } : {}) },
  ...extra,
});

describe('Batcher instances and queue policy', () => {
  it.each([
    [undefined, 1],
    [[{ count: 2, kind: 'KIND_GPU' as const }], 2],
    [[{ count: 1 }, { count: 2 }], 3],
  ])('with instance_group %j runs at most %i batches of the model at once', async (groups, expected) => {
    const scheduler = new Scheduler({ slots: 8, maxQueue: 100 });
    const config = oneByOne(groups ? { instance_group: groups } : {});
    const { state, close, model } = gatedModel(config);
    const batcher = new Batcher({ model, scheduler });
    expect(batcher.instances).toBe(expected);
    close();
    const all = Promise.all([1, 2, 3, 4, 5].map((n) => batcher.submit(prepareInference(config, ids([[n]])))));
    await until(() => state.active === expected, `${expected} runs at once`);
    await new Promise((r) => setTimeout(r, 20));
    expect(state.active).toBe(expected);
    expect(scheduler.capacity).toEqual({ slots: 8, inFlight: expected, queued: 5 - expected });
    state.open();
    const results = await all;
    expect(results.map((r) => Array.from(r.outputs.sum!.data as Float32Array))).toEqual([[1], [2], [3], [4], [5]]);
    expect(state.maxActive).toBe(expected);
  });

  it('still holds a model to the global slots', async () => {
    const scheduler = new Scheduler({ slots: 1, maxQueue: 100 });
    const config = oneByOne({ instance_group: [{ count: 4 }] });
    const { state, close, model } = gatedModel(config);
    const batcher = new Batcher({ model, scheduler });
    close();
    const all = Promise.all([1, 2, 3].map((n) => batcher.submit(prepareInference(config, ids([[n]])))));
    await until(() => state.active === 1, 'the first run');
    await new Promise((r) => setTimeout(r, 20));
    expect(state.maxActive).toBe(1);
    state.open();
    await all;
    expect(state.maxActive).toBe(1);
  });

  it('answers 429 rate_limited naming the model and its max_queue_size when its queue is full', async () => {
    const scheduler = new Scheduler({ slots: 1, maxQueue: 100 });
    const config = oneByOne({}, { max_queue_size: 2 });
    const { state, close, model } = gatedModel(config);
    const batcher = new Batcher({ model, scheduler });
    close();
    const running = batcher.submit(prepareInference(config, ids([[1]])));
    await until(() => state.active === 1, 'the first run');
    const queued = [2, 3].map((n) => batcher.submit(prepareInference(config, ids([[n]]))));
    expect(batcher.pending).toBe(2);
    const err = await batcher.submit(prepareInference(config, ids([[4]]))).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MeshError);
    expect(err).toMatchObject({ code: 'rate_limited', status: 429, retryAfter: 1 });
    expect((err as MeshError).message).toMatch(/Model "tok" .*max_queue_size of 2/);
    expect(scheduler.capacity.queued).toBe(2); // the refused one was never admitted
    state.open();
    await Promise.all([running, ...queued]);
    expect(state.runs).toEqual([[1], [2], [3]]);
  });

  it('takes a request whose timeout passed out of the queue, unrun, with 504 backend_timeout', async () => {
    const scheduler = new Scheduler({ slots: 1, maxQueue: 100 });
    const config = oneByOne();
    const { state, close, model } = gatedModel(config);
    const batcher = new Batcher({ model, scheduler });
    close();
    const running = batcher.submit(prepareInference(config, ids([[1]])));
    await until(() => state.active === 1, 'the first run');
    const started = performance.now();
    const late = batcher.submit(prepareInference(config, ids([[2]])), { timeoutUs: 30_000 });
    const patient = batcher.submit(prepareInference(config, ids([[3]])));
    const err = await late.catch((e: unknown) => e);
    expect(performance.now() - started).toBeGreaterThanOrEqual(29);
    expect(err).toMatchObject({ code: 'backend_timeout', status: 504 });
    expect((err as MeshError).message).toMatch(/model "tok"'s queue, past its timeout of 30\.0 ms; it was not run/);
    expect(batcher.pending).toBe(1);
    expect(scheduler.capacity).toEqual({ slots: 1, inFlight: 1, queued: 1 });
    state.open();
    await running;
    expect(Array.from((await patient).outputs.sum!.data as Float32Array)).toEqual([3]);
    expect(state.runs).toEqual([[1], [3]]); // [2] never ran
    expect(scheduler.capacity).toEqual({ slots: 1, inFlight: 0, queued: 0 });
  });

  it('also drops an expired request when the batch forms before its (late) timer fires', async () => {
    let clock = 0;
    const scheduler = new Scheduler({ slots: 1, maxQueue: 100 });
    const config = tokenModel(true);
    const { state, model } = gatedModel(config);
    const batcher = new Batcher({ model, scheduler, now: () => clock });
    const expired = batcher.submit(prepareInference(config, ids([[7]])), { timeoutUs: 1_000_000 });
    const fresh = batcher.submit(prepareInference(config, ids([[8]])));
    clock = 5_000; // the run that held the event loop ends: 5 s "passed", past the delay and the first request's 1 s timeout
    await expect(expired).rejects.toMatchObject({ code: 'backend_timeout' });
    expect(Array.from((await fresh).outputs.sum!.data as Float32Array)).toEqual([8]);
    expect(state.runs).toEqual([[8]]);
  });
});

describe('queueTimeoutUs', () => {
  const withPolicy = (policy?: NonNullable<ModelConfig['dynamic_batching']>['default_queue_policy']) => oneByOne({}, policy);
  const request = (timeout?: unknown) => ({ inputs: [], ...(timeout === undefined ? {} : { parameters: { timeout } }) });
  it.each([
    ['no policy, no override', undefined, undefined, 0],
    ['no policy ignores the request', undefined, 5, 0],
    ['the default', { default_timeout_microseconds: 100 }, undefined, 100],
    ['override not allowed', { default_timeout_microseconds: 100 }, 50, 100],
    ['a shorter override', { default_timeout_microseconds: 100, allow_timeout_override: true }, 50, 50],
    ['never a longer one', { default_timeout_microseconds: 100, allow_timeout_override: true }, 500, 100],
    ['0 keeps the default', { default_timeout_microseconds: 100, allow_timeout_override: true }, 0, 100],
    ['any override without a default', { allow_timeout_override: true }, 500, 500],
  ])('%s', (_name, policy, timeout, expected) => {
    expect(queueTimeoutUs(withPolicy(policy), request(timeout))).toBe(expected);
  });

  it.each([-1, 1.5, '100', null, true, 2 ** 60])('refuses parameters.timeout = %j with 400 invalid_request', (timeout) => {
    expect(() => queueTimeoutUs(withPolicy(), request(timeout))).toThrow(expect.objectContaining({ code: 'invalid_request' }));
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
    const { config } = h.backend.repository.readyModel('embed');
    const texts = ['short', 'a somewhat longer sentence about edge inference', 'mid length text'];
    const prepared = texts.map((t) => prepareInference(config, parseInferRequest({ inputs: [{ name: 'text', datatype: 'BYTES', shape: [1], data: [t] }] })));
    const merged = mergeFeeds(prepared);
    expect(merged.input_ids!.shape).toEqual([3, Math.max(...prepared.map((p) => p.feeds.input_ids!.shape[1]!))]);
    const together = await h.backend.repository.readyModel('embed').run(toOrtFeeds(merged), ['embedding']);
    const all = together.outputs.embedding!.data as Float32Array;
    for (let i = 0; i < texts.length; i++) {
      const alone = await h.backend.repository.readyModel('embed').run(toOrtFeeds(prepared[i]!.feeds), ['embedding']);
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

// On the main thread (this 2-core host's default), and on worker threads with two
// instances of each model running side by side (SLOTS 2).
describe.each([
  { thread: 'main', instances: 1 },
  { thread: 'worker', instances: 2 },
])('batching correctness under random concurrent load (real models, runs on the $thread thread, $instances instance(s))', ({ thread, instances }) => {
  let repo: Awaited<ReturnType<typeof demoRepository>>;
  let h: Harness;
  beforeAll(async () => {
    repo = await demoRepository();
    for (const model of ['embed', 'classifier']) {
      const file = path.join(repo.dir, model, 'config.json');
      const config = JSON.parse(await readFile(file, 'utf8')) as ModelConfig;
      await writeFile(file, JSON.stringify({ ...config, instance_group: [{ count: instances, kind: 'KIND_GPU' }] }));
    }
    h = await harness({ repo: repo.dir, env: { EXECUTION_PROVIDERS: 'cpu', INFERENCE_THREAD: thread, SLOTS: String(instances) } });
    expect(h.log.lines.some((l) => l.includes(thread === 'main' ? 'main thread' : `${instances} worker thread(s)`))).toBe(true);
  });
  afterAll(async () => {
    await h?.backend.repository.close();
    await repo?.cleanup();
  });

  type Call = { model: 'embed' | 'classifier'; body: { inputs: { name: string; datatype: string; shape: number[]; data: unknown[] }[] } };
  const words = fc.constantFrom('edge', 'mesh', 'gpu', 'batch', 'row', 'token', 'Jakarta', 'inference', 'receipt', 'ünïcode', '🙂');
  const text = fc.oneof(fc.array(words, { minLength: 0, maxLength: 60 }).map((w) => w.join(' ')), fc.string({ maxLength: 80 }));
  const rows = fc.integer({ min: 1, max: 4 });
  const embedTexts: fc.Arbitrary<Call> = fc.array(text, { minLength: 1, maxLength: 4 }).map((texts) => ({
    model: 'embed',
    body: { inputs: [{ name: 'text', datatype: 'BYTES', shape: [texts.length], data: texts }] },
  }));
  const embedIds: fc.Arbitrary<Call> = fc
    .tuple(rows, fc.integer({ min: 1, max: 48 }))
    .chain(([n, seq]) =>
      fc.array(fc.integer({ min: 1, max: VOCAB_SIZE - 1 }), { minLength: n * seq, maxLength: n * seq }).map((data) => ({
        model: 'embed' as const,
        body: { inputs: [{ name: 'input_ids', datatype: 'INT64', shape: [n, seq], data }] },
      })),
    );
  const classify: fc.Arbitrary<Call> = rows.chain((n) =>
    fc.array(fc.double({ min: -4, max: 4, noNaN: true }), { minLength: n * 16, maxLength: n * 16 }).map((data) => ({
      model: 'classifier' as const,
      body: { inputs: [{ name: 'features', datatype: 'FP32', shape: [n, 16], data }] },
    })),
  );

  /** Sum over models of a counter in the backend's registry. */
  const counter = async (name: string) => {
    const metric = h.backend.metrics.registry.getSingleMetric(name);
    return ((await metric?.get())?.values ?? []).reduce((n, v) => n + v.value, 0);
  };

  it('gives every caller exactly the rows it gets alone, and really forms batches', async () => {
    let requests = 0;
    const execsBefore = await counter('nv_inference_exec_count');
    await fc.assert(
      fc.asyncProperty(fc.array(fc.oneof(embedTexts, embedIds, classify), { minLength: 10, maxLength: 40 }), async (calls) => {
        const responses = await Promise.all(calls.map((c) => h.post(`/v2/models/${c.model}/infer`, c.body)));
        requests += calls.length;
        for (let i = 0; i < calls.length; i++) {
          const call = calls[i]!;
          const res = responses[i]!;
          expect(res.status).toBe(200);
          const got = ((await res.json()) as InferResponse).outputs[0]!;
          // The same request run alone, straight on the session: no batcher, no other rows.
          const { config } = h.backend.repository.readyModel(call.model);
          const prepared = prepareInference(config, parseInferRequest(call.body));
          const alone = await h.backend.repository.readyModel(call.model).run(toOrtFeeds(prepared.feeds), prepared.fetches);
          const want = alone.outputs[prepared.fetches[0]!]!;
          expect(got.shape).toEqual([...want.dims]);
          const wantData = want.data as Float32Array;
          const gotData = got.data as number[];
          expect(gotData).toHaveLength(wantData.length);
          let worst = 0;
          for (let j = 0; j < wantData.length; j++) worst = Math.max(worst, Math.abs(gotData[j]! - wantData[j]!));
          expect(worst).toBeLessThanOrEqual(1e-5);
        }
      }),
      { numRuns: 10 },
    );
    const executions = (await counter('nv_inference_exec_count')) - execsBefore;
    // Batches formed: on average more than one request per model execution.
    expect(executions).toBeGreaterThan(0);
    expect(requests / executions).toBeGreaterThan(1.5);
    // Every execution observed its batch size once.
    const histogram = await h.backend.metrics.registry.getSingleMetric('nv_inference_batch_size')!.get();
    const observed = (histogram.values as { metricName?: string; value: number }[])
      .filter((v) => v.metricName === 'nv_inference_batch_size_count')
      .reduce((n, v) => n + v.value, 0);
    expect(observed).toBe(await counter('nv_inference_exec_count'));
  }, 20_000);
});
