/**
 * The main thread's half of an inference (executor.ts) and the model handle
 * it runs on (model-handle.ts): an inference resolves its model by name once,
 * and the handle's batcher runs it on that handle; errors keep their order
 * (replayed token 401, missing model 404, wrong version 404, bad body 400);
 * a handle refuses new requests once it drains but still runs the admitted
 * ones, and a session that fails for good closes it once. On a real backend:
 * one repository lookup per request over HTTP, and a reload gets a new
 * handle with a new batcher.
 */

import * as ort from 'onnxruntime-node';
import { describe, expect, it, vi } from 'vitest';
import { MeshError } from '../../../shared/errors.ts';
import type { InferRequest } from '../../../shared/protocol.ts';
import { Lifecycle } from '../../../gpu-backend/src/lifecycle.ts';
import { Metrics } from '../../../gpu-backend/src/metrics.ts';
import { DispatchVerifier } from '../../../gpu-backend/src/mesh/dispatch.ts';
import { Executor, type InferJob } from '../../../gpu-backend/src/serving/executor.ts';
import type { ModelConfig } from '../../../gpu-backend/src/serving/model-config.ts';
import { ModelHandle } from '../../../gpu-backend/src/serving/model-handle.ts';
import type { ModelSession } from '../../../gpu-backend/src/serving/model-session.ts';
import { Scheduler } from '../../../gpu-backend/src/serving/scheduler.ts';
import { RollingMedian } from '../../../gpu-backend/src/serving/stats.ts';
import { prepareInference } from '../../../gpu-backend/src/serving/tensors.ts';
import { useDemoHarness, type Harness } from '../helpers.ts';

/** Doubles its two features; batches up to 4 rows, waiting up to 20 ms for them. */
const CONFIG: ModelConfig = {
  name: 'double',
  platform: 'onnxruntime_onnx',
  max_batch_size: 4,
  input: [{ name: 'x', data_type: 'TYPE_FP32', dims: [2] }],
  output: [{ name: 'y', data_type: 'TYPE_FP32', dims: [2] }],
  dynamic_batching: { max_queue_delay_microseconds: 20_000 },
};

/** A stand-in session that doubles `x`; `dead` makes it fail as a pool whose threads all died. */
function doublingSession() {
  const state = { runs: 0, dead: false, released: 0, gate: undefined as Promise<void> | undefined };
  const session: ModelSession = {
    inputNames: ['x'],
    outputNames: ['y'],
    get failure() {
      return state.dead ? 'every inference thread died (test)' : undefined;
    },
    async run(feeds) {
      state.runs++;
      while (state.gate) await state.gate;
      if (state.dead) throw new Error('The inference thread exited (code 1).');
      const x = feeds.x as ort.Tensor;
      return { y: new ort.Tensor('float32', Float32Array.from(x.data as Float32Array, (v) => v * 2), x.dims) };
    },
    async release() {
      state.released++;
    },
  };
  return { state, session };
}

function handleFor(session: ModelSession, onFailure: (failure: string) => void = () => {}) {
  return new ModelHandle({
    name: CONFIG.name,
    version: '3',
    config: CONFIG,
    session,
    provider: 'cpu',
    thread: 'main',
    loadMs: 1,
    serviceMs: new RollingMedian(8),
    scheduler: new Scheduler({ slots: 1, maxQueue: 16 }),
    now: () => performance.now(),
    onFailure,
  });
}

const request = (...values: number[]): InferRequest => ({ inputs: [{ name: 'x', datatype: 'FP32', shape: [1, values.length], data: values }] });

/** An executor over one model, with a lookup that counts calls and answers like the repository. */
function executorOver(handle: ModelHandle) {
  const resolve = vi.fn(async (name: string) => {
    if (name !== handle.name) throw new MeshError('model_not_found', `Model "${name}" is not in this backend's repository.`);
    return handle;
  });
  const repository = {
    resolve,
    knows: (name: string) => name === handle.name,
    versionOf: () => handle.version,
    current: (name: string) => (name === handle.name ? handle : undefined),
    readyModel: () => handle,
  };
  const metrics = new Metrics({
    backendId: 'b',
    providerId: 'p',
    region: 'eu-west',
    executionProvider: () => 'cpu',
    capacity: () => ({ slots: 1, inFlight: 0, queued: 0 }),
    models: () => [],
  });
  const dispatch = new DispatchVerifier({ backendId: 'b', issuer: 'i', getKey: async () => Promise.reject(new Error('unused')) });
  const executor = new Executor({ repository, dispatch, metrics, lifecycle: new Lifecycle() });
  let jti = 0;
  const job = (o: Partial<InferJob> = {}): InferJob => ({ name: CONFIG.name, jti: `jti-${jti++}`, exp: Math.floor(Date.now() / 1000) + 60, request: request(1, 2), ...o });
  return { executor, resolve, job };
}

const codeOf = (p: Promise<unknown>) => p.then(() => 'ok', (err: unknown) => (err as MeshError).code);

describe('Executor', () => {
  it('resolves the model once per inference, and the batcher runs on that handle', async () => {
    const { state, session } = doublingSession();
    const handle = handleFor(session);
    const { executor, resolve, job } = executorOver(handle);
    const submit = vi.spyOn(handle.batcher, 'submit');
    const answers = await Promise.all([job({ request: request(1, 2) }), job({ request: request(3, 4) })].map((j) => executor.run(j)));
    expect(resolve).toHaveBeenCalledTimes(2);
    expect(resolve).toHaveBeenCalledWith('double');
    expect(submit).toHaveBeenCalledTimes(2);
    expect(state.runs).toBe(1); // one batch: both requests ran together on the handle's session
    expect(answers.map((a) => a.version)).toEqual(['3', '3']);
    expect(answers.map((a) => Array.from(a.result.outputs[0]!.data as Float32Array))).toEqual([
      [2, 4],
      [6, 8],
    ]);
    expect(answers[0]!.result).toMatchObject({ rows: 1, units: { input: 1, output: 1 } });
  });

  it('keeps the error order: replayed token 401, missing model 404, wrong version 404, bad body 400', async () => {
    const { session } = doublingSession();
    const { executor, resolve, job } = executorOver(handleFor(session));
    const invalid = { code: 'invalid_json' as const, message: 'not JSON' };
    const first = job({ name: 'nope', invalid });
    expect(await codeOf(executor.run(first))).toBe('model_not_found');
    expect(await codeOf(executor.run({ ...first }))).toBe('invalid_token');
    expect(await codeOf(executor.run(job({ version: '7', invalid })))).toBe('model_not_found');
    expect(await codeOf(executor.run(job({ invalid })))).toBe('invalid_json');
    expect(await codeOf(executor.run(job({ request: request(1) })))).toBe('shape_mismatch');
    // The replayed token never reached the lookup.
    expect(resolve).toHaveBeenCalledTimes(4);
  });
});

describe('Executor.runForWorker (jobs from HTTP workers)', () => {
  it('answers an unprepared job with the load\'s config, then runs a job prepared against it without units (the worker meters)', async () => {
    const { session } = doublingSession();
    const handle = handleFor(session);
    const { executor, job } = executorOver(handle);
    const first = await executor.runForWorker(job({ request: request(1, 2) }));
    if (!('result' in first)) throw new Error('no result');
    expect(first.model).toEqual({ loadId: handle.loadId, config: CONFIG });
    expect(first.result.units).toEqual({ input: 1, output: 1 });
    const inference = prepareInference(first.model!.config, request(5, 6));
    const second = await executor.runForWorker(job({ request: undefined, prepared: { loadId: handle.loadId, inference, timeoutUs: undefined } }));
    if (!('result' in second)) throw new Error('no result');
    expect(second.model).toBeUndefined();
    expect(second.result.units).toBeUndefined();
    expect(Array.from(second.result.outputs[0]!.data as Float32Array)).toEqual([10, 12]);
  });

  it('answers stale to a job prepared against another load, spending nothing, so the same token runs it unprepared', async () => {
    const { session } = doublingSession();
    const handle = handleFor(session);
    const { executor, resolve, job } = executorOver(handle);
    const prepared = { loadId: handle.loadId + 1000, inference: prepareInference(CONFIG, request(1, 2)), timeoutUs: undefined };
    const stale = job({ request: undefined, prepared });
    expect(await executor.runForWorker(stale)).toEqual({ stale: true });
    expect(resolve).not.toHaveBeenCalled();
    const again = await executor.runForWorker({ ...stale, prepared: undefined, request: request(1, 2) });
    expect('stale' in again).toBe(false);
  });
});

describe('ModelHandle', () => {
  it('refuses new requests once draining, still runs the admitted ones, and drains when they are answered', async () => {
    const { state, session } = doublingSession();
    const handle = handleFor(session);
    const { executor, job } = executorOver(handle);
    let open = () => {};
    state.gate = new Promise<void>((resolve) => (open = resolve));
    const running = executor.run(job());
    await vi.waitFor(() => expect(state.runs).toBe(1));
    let drained = false;
    const draining = handle.drain().then(() => (drained = true));
    expect(() => handle.lease()).toThrow(expect.objectContaining({ code: 'model_not_ready', message: expect.stringMatching(/state UNLOADING/) }));
    await new Promise((r) => setTimeout(r, 10));
    expect(drained).toBe(false);
    state.gate = undefined;
    open();
    expect((await running).version).toBe('3');
    await draining;
    expect(drained).toBe(true);
    await handle.release();
    await handle.release();
    expect(state.released).toBe(1);
    await expect(handle.run({}, ['y'])).rejects.toMatchObject({ code: 'model_not_ready' });
  });

  it('closes once when its session fails for good, and answers 503 from then on', async () => {
    const { state, session } = doublingSession();
    const failures: string[] = [];
    const handle = handleFor(session, (failure) => failures.push(failure));
    const feeds = { x: new ort.Tensor('float32', new Float32Array(2), [1, 2]) };
    state.dead = true;
    const results = await Promise.allSettled([handle.run(feeds, ['y']), handle.run(feeds, ['y'])]);
    for (const r of results) expect(r).toMatchObject({ status: 'rejected', reason: { code: 'model_not_ready', retryAfter: 1 } });
    expect(failures).toEqual(['every inference thread died (test)']);
    expect(() => handle.lease()).toThrow(expect.objectContaining({ code: 'model_not_ready' }));
    await expect(handle.run(feeds, ['y'])).rejects.toMatchObject({ code: 'model_not_ready' });
    expect(state.runs).toBe(2);
  });
});

describe('on a real backend', () => {
  let h: Harness;
  useDemoHarness((built) => (h = built), { env: { MODELS: 'classifier', EXECUTION_PROVIDERS: 'cpu' } });
  const FEATURES = { inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 16], data: new Array(16).fill(0.25) }] };

  it('looks the model up once per request', async () => {
    const { repository } = h.backend;
    const resolve = vi.spyOn(repository, 'resolve');
    const ready = vi.spyOn(repository, 'ready');
    const has = vi.spyOn(repository, 'has');
    try {
      const statuses = await Promise.all([1, 2, 3].map(async () => (await h.post('/v2/models/classifier/infer', FEATURES)).status));
      expect(statuses).toEqual([200, 200, 200]);
      expect(resolve).toHaveBeenCalledTimes(3);
      expect(ready).not.toHaveBeenCalled();
      expect(has).not.toHaveBeenCalled();
    } finally {
      resolve.mockRestore();
      ready.mockRestore();
      has.mockRestore();
    }
  });

  it('gives a reloaded model a new handle and a new batcher for its new config', async () => {
    const before = h.backend.repository.readyModel('classifier');
    expect(before.batcher.config).toBe(before.config);
    expect((await h.post('/v2/repository/models/classifier/unload', {})).status).toBe(200);
    expect((await h.post('/v2/models/classifier/infer', FEATURES)).status).toBe(503);
    expect((await h.post('/v2/repository/models/classifier/load', {})).status).toBe(200);
    const after = h.backend.repository.readyModel('classifier');
    expect(after).not.toBe(before);
    expect(after.batcher).not.toBe(before.batcher);
    expect(after.config).not.toBe(before.config);
    expect(after.batcher.config).toBe(after.config);
    expect((await h.post('/v2/models/classifier/infer', FEATURES)).status).toBe(200);
  });
});
