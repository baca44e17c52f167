/**
 * Model lifecycle on real ONNX Runtime sessions: the CUDA → CPU fallback (and
 * `KIND_CPU` models kept on the CPU), a failed load (a config that does not
 * match its graph, or one that names an unknown meter), unload waiting for every
 * request it admitted (queued or running) while new ones get 503, load of a
 * loaded model as a no-op, a steady stream of requests through unload and
 * load, the bounded queue answering 429 when full, and a fresh model's
 * reported service time (its session's slow first run left out).
 *
 * This machine has no GPU, and the CUDA build of onnxruntime-node is not
 * installed, so a real CUDA session cannot be exercised here: these tests show
 * that listing `cuda` first falls back to `cpu` and reports the provider in use.
 */

import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CreateSession } from '../../../gpu-backend/src/serving/model-session.ts';
import { demoRepository, errorCode, gatedSessions, harness, until, type Harness } from '../helpers.ts';

let repo: Awaited<ReturnType<typeof demoRepository>>;

/** A model `name` in the repository: the classifier's graph under `config`. */
async function classifierCopy(name: string, config: object): Promise<void> {
  await mkdir(path.join(repo.dir, name, '1'), { recursive: true });
  await copyFile(path.join(repo.dir, 'classifier', '1', 'model.onnx'), path.join(repo.dir, name, '1', 'model.onnx'));
  await writeFile(path.join(repo.dir, name, 'config.json'), JSON.stringify(config));
}

beforeAll(async () => {
  repo = await demoRepository();
  // A model whose config names an output the graph does not have: it must fail to load, cleanly.
  await classifierCopy('broken', {
    name: 'broken',
    platform: 'onnxruntime_onnx',
    max_batch_size: 8,
    input: [{ name: 'features', data_type: 'TYPE_FP32', dims: [16] }],
    output: [{ name: 'logits', data_type: 'TYPE_FP32', dims: [4] }],
  });
  // The classifier again, billed by a meter the mesh does not have: it must fail to load, saying so.
  await classifierCopy('unmetered', {
    name: 'unmetered',
    platform: 'onnxruntime_onnx',
    max_batch_size: 8,
    input: [{ name: 'features', data_type: 'TYPE_FP32', dims: [16] }],
    output: [{ name: 'probabilities', data_type: 'TYPE_FP32', dims: [4] }],
    parameters: { metering: 'bytes' },
  });
  // The classifier again, with instances that must stay on the CPU.
  await classifierCopy('cpu-only', {
    name: 'cpu-only',
    platform: 'onnxruntime_onnx',
    max_batch_size: 8,
    input: [{ name: 'features', data_type: 'TYPE_FP32', dims: [16] }],
    output: [{ name: 'probabilities', data_type: 'TYPE_FP32', dims: [4] }],
    instance_group: [{ count: 2, kind: 'KIND_CPU' }],
  });
});
afterAll(() => repo?.cleanup());

const FEATURES = { inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 16], data: new Array(16).fill(0.1) }] };

describe('execution providers', () => {
  it('falls back from cuda to cpu on this GPU-less machine and reports cpu in /v2/health/ready', async () => {
    const h = await harness({ repo: repo.dir, env: { EXECUTION_PROVIDERS: 'cuda,cpu', MODELS: 'embed,classifier' } });
    try {
      const res = await h.get('/v2/health/ready');
      expect(res.status).toBe(200);
      const body = (await res.json()) as { executionProvider: string; cudaUnavailable?: string };
      const cudaLines = h.log.lines.filter((l) => l.includes('CUDA execution provider could not initialise'));
      if (h.backend.sessions.cudaFailure === undefined) {
        // Only on a machine with a GPU and the CUDA add-on: then CUDA must be what is reported.
        expect(body.executionProvider).toBe('cuda');
      } else {
        expect(body.executionProvider).toBe('cpu');
        expect(body.cudaUnavailable).toBe(h.backend.sessions.cudaFailure);
        expect(cudaLines).toHaveLength(1); // one line, however many models
        expect(h.backend.snapshot().executionProvider).toBe('cpu');
      }
    } finally {
      await h.backend.repository.close();
    }
  });

  it('falls back from webgpu to cpu when no GPU adapter is found, saying why in /v2/health/ready', async () => {
    const h = await harness({ repo: repo.dir, env: { EXECUTION_PROVIDERS: 'webgpu,cpu', MODELS: 'embed,classifier' } });
    try {
      const res = await h.get('/v2/health/ready');
      expect(res.status).toBe(200);
      const body = (await res.json()) as { executionProvider: string; webgpuUnavailable?: string };
      if (h.backend.sessions.webgpuFailure === undefined) {
        // Only on a machine with a GPU and a Vulkan driver.
        expect(body.executionProvider).toBe('webgpu');
      } else {
        expect(body.executionProvider).toBe('cpu');
        expect(body.webgpuUnavailable).toBe(h.backend.sessions.webgpuFailure);
        expect(body.webgpuUnavailable).toMatch(/^no WebGPU adapter/);
        expect(h.log.lines.filter((l) => l.includes('WebGPU execution provider could not initialise'))).toHaveLength(1);
      }
    } finally {
      await h.backend.repository.close();
    }
  });

  it('tries cuda (with CUDA_DEVICE_ID) once, then opens every model on cpu', async () => {
    const calls: unknown[] = [];
    const create: CreateSession = async (p, o) => {
      calls.push(o.executionProviders?.[0]);
      if ((o.executionProviders?.[0] as { name?: string } | undefined)?.name === 'cuda') throw new Error('CUDA driver not found (test)');
      return ort.InferenceSession.create(p, o);
    };
    const h = await harness({
      repo: repo.dir,
      env: { EXECUTION_PROVIDERS: 'cuda,cpu', CUDA_DEVICE_ID: '3', MODELS: 'embed,classifier' },
      overrides: { createSession: create },
    });
    try {
      expect(calls).toEqual([{ name: 'cuda', deviceId: 3 }, 'cpu', 'cpu']);
      const lines = h.log.lines.filter((l) => l.includes('CUDA'));
      expect(lines).toEqual([expect.stringMatching(/CUDA execution provider could not initialise on device 3: CUDA driver not found \(test\); serving on cpu/)]);
      const ready = (await (await h.get('/v2/health/ready')).json()) as { executionProvider: string };
      expect(ready.executionProvider).toBe('cpu');
    } finally {
      await h.backend.repository.close();
    }
  });
});

describe('instance kinds', () => {
  it('opens a KIND_CPU model on cpu without trying cuda, and the others cuda first', async () => {
    const calls: [string, unknown][] = [];
    const create: CreateSession = async (p, o) => {
      calls.push([path.basename(path.dirname(path.dirname(p))), o.executionProviders?.[0]]);
      if ((o.executionProviders?.[0] as { name?: string } | undefined)?.name === 'cuda') throw new Error('no CUDA here (test)');
      return ort.InferenceSession.create(p, o);
    };
    const h = await harness({ repo: repo.dir, env: { EXECUTION_PROVIDERS: 'cuda,cpu', MODELS: 'cpu-only,classifier' }, overrides: { createSession: create } });
    try {
      expect(calls).toEqual([
        ['cpu-only', 'cpu'],
        ['classifier', { name: 'cuda', deviceId: 0 }],
        ['classifier', 'cpu'],
      ]);
      expect((await h.post('/v2/models/cpu-only/infer', FEATURES)).status).toBe(200);
    } finally {
      await h.backend.repository.close();
    }
  });
});

describe('a session that can run no more', () => {
  it('takes the model out of service (503, not warm), says why once, and a load opens it afresh', async () => {
    // A stand-in for a SessionPool whose every inference thread died (a real one cannot be killed from
    // here): a real session that, once `dead`, refuses runs and reports its failure as SessionPool does.
    const opened: { dead: boolean }[] = [];
    const create: CreateSession = async (p, o) => {
      const real = await ort.InferenceSession.create(p, o);
      const state = { dead: false };
      opened.push(state);
      return {
        inputNames: real.inputNames,
        outputNames: real.outputNames,
        get failure() {
          return state.dead ? 'every inference thread died (the last one exited (code 1))' : undefined;
        },
        run: async (feeds, fetches) => {
          if (state.dead) throw new Error('The inference thread exited (code 1).');
          return real.run(feeds, [...fetches]);
        },
        release: () => real.release(),
      };
    };
    const h = await harness({ repo: repo.dir, env: { EXECUTION_PROVIDERS: 'cpu', MODELS: 'classifier' }, overrides: { createSession: create } });
    try {
      expect((await h.post('/v2/models/classifier/infer', FEATURES)).status).toBe(200);
      opened[0]!.dead = true;
      const res = await h.post('/v2/models/classifier/infer', FEATURES);
      expect(res.status).toBe(503);
      expect(await errorCode(res)).toBe('model_not_ready');
      expect(h.backend.repository.state('classifier')).toBe('UNAVAILABLE');
      expect(h.backend.snapshot().models.find((m) => m.name === 'classifier')?.warm ?? false).toBe(false);
      // Later requests are refused before they reach the session; the failure is logged once.
      expect((await h.post('/v2/models/classifier/infer', FEATURES)).status).toBe(503);
      expect(h.log.lines.filter((l) => l.includes('every inference thread died'))).toHaveLength(1);

      expect((await h.post('/v2/repository/models/classifier/load', {})).status).toBe(200);
      expect(opened).toHaveLength(2);
      expect((await h.post('/v2/models/classifier/infer', FEATURES)).status).toBe(200);
    } finally {
      await h.backend.repository.close();
    }
  });
});

describe('the service time a freshly loaded model reports', () => {
  /** How long the FAKE session's first run takes: a stand-in for a session's one-time costs. */
  const FIRST_RUN_MS = 400;
  let h: Harness;
  let runs = 0;
  beforeAll(async () => {
    const create: CreateSession = async (p, o) => {
      const session = await ort.InferenceSession.create(p, o);
      const run = session.run.bind(session);
      (session as { run: unknown }).run = async (...args: Parameters<typeof run>) => {
        if (runs++ === 0) await new Promise((r) => setTimeout(r, FIRST_RUN_MS));
        return run(...args);
      };
      return session;
    };
    h = await harness({ repo: repo.dir, env: { MODELS: 'classifier', EXECUTION_PROVIDERS: 'cpu' }, overrides: { createSession: create } });
  });
  afterAll(async () => {
    await h?.backend.repository.close();
  });

  it('is a warm run: the slow first run of its session counts in the load time, not in the p50 heartbeats report', async () => {
    expect(runs).toBe(2);
    const [model] = h.backend.snapshot().models;
    expect(model).toMatchObject({ name: 'classifier', warm: true });
    expect(model!.p50Ms).toBeLessThan(FIRST_RUN_MS / 2);
    expect(h.backend.repository.modelStats().find((m) => m.name === 'classifier')!.loadMs).toBeGreaterThanOrEqual(FIRST_RUN_MS);
  });
});

describe('loading and unloading', () => {
  let h: Harness;
  let gated: ReturnType<typeof gatedSessions>;
  beforeAll(async () => {
    gated = gatedSessions();
    h = await harness({
      repo: repo.dir,
      env: { MODELS: 'classifier', EXECUTION_PROVIDERS: 'cpu', SLOTS: '1', MAX_QUEUE: '1' },
      overrides: { createSession: gated.create },
    });
  });
  afterAll(async () => {
    gated?.open();
    await h?.backend.repository.close();
  });

  it('reports a model that fails to load, with the reason, and keeps serving the others', async () => {
    const res = await h.post('/v2/repository/models/broken/load', {});
    expect(res.status).toBe(500);
    expect(await errorCode(res)).toBe('internal');
    const index = (await (await h.post('/v2/repository/index', {})).json()) as { name: string; state: string; reason?: string }[];
    const broken = index.find((m) => m.name === 'broken');
    expect(broken?.state).toBe('UNAVAILABLE');
    expect(broken?.reason).toMatch(/config output "logits" is not an output of the ONNX graph/);
    expect((await h.post('/v2/models/classifier/infer', FEATURES)).status).toBe(200);
  });

  it('refuses to load a model whose parameters.metering is not a meter, and says which meters there are', async () => {
    const res = await h.post('/v2/repository/models/unmetered/load', {});
    expect(res.status).toBe(500);
    expect(await errorCode(res)).toBe('internal');
    const index = (await (await h.post('/v2/repository/index', {})).json()) as { name: string; state: string; reason?: string }[];
    const unmetered = index.find((m) => m.name === 'unmetered');
    expect(unmetered?.state).toBe('UNAVAILABLE');
    expect(unmetered?.reason).toMatch(/unmetered[/\\]config\.json: parameters\.metering must be one of tokens, rows, elements, requests .*got "bytes"/);
    expect((await h.post('/v2/models/unmetered/infer', FEATURES)).status).toBe(503);
  });

  it('answers 429 with retry-after when the queue is full', async () => {
    gated.close();
    const running = h.post('/v2/models/classifier/infer', FEATURES);
    await until(() => h.backend.scheduler.capacity.inFlight === 1, 'the first request to run');
    const queued = h.post('/v2/models/classifier/infer', FEATURES);
    await until(() => h.backend.scheduler.capacity.queued === 1, 'the second request to queue');
    expect(h.backend.snapshot().capacity).toEqual({ slots: 1, inFlight: 1, queued: 1 });
    const refused = await h.post('/v2/models/classifier/infer', FEATURES);
    expect(refused.status).toBe(429);
    expect(refused.headers.get('retry-after')).toBe('1');
    expect(await errorCode(refused)).toBe('rate_limited');
    gated.open();
    expect((await running).status).toBe(200);
    expect((await queued).status).toBe(200);
    expect(h.backend.scheduler.capacity).toEqual({ slots: 1, inFlight: 0, queued: 0 });
  });

  it('unload waits for the run in flight, which completes, while new requests get 503', async () => {
    gated.close();
    const inFlight = h.post('/v2/models/classifier/infer', FEATURES);
    await until(() => h.backend.scheduler.capacity.inFlight === 1, 'the request to run');
    let unloaded = false;
    const unload = h.post('/v2/repository/models/classifier/unload', {}).then((r) => {
      unloaded = true;
      return r;
    });
    await until(() => h.backend.repository.state('classifier') === 'UNLOADING', 'UNLOADING');
    const late = await h.post('/v2/models/classifier/infer', FEATURES);
    expect(late.status).toBe(503);
    expect(await errorCode(late)).toBe('model_not_ready');
    await new Promise((r) => setTimeout(r, 20));
    expect(unloaded).toBe(false);
    gated.open();
    expect((await inFlight).status).toBe(200);
    expect((await unload).status).toBe(200);
    expect(h.backend.repository.state('classifier')).toBe('UNAVAILABLE');

    const reload = await h.post('/v2/repository/models/classifier/load', {});
    expect(reload.status).toBe(200);
    expect((await h.post('/v2/models/classifier/infer', FEATURES)).status).toBe(200);
  });
});

describe('unload and load under traffic', () => {
  let h: Harness;
  let gated: ReturnType<typeof gatedSessions>;
  let opens = 0;
  beforeAll(async () => {
    gated = gatedSessions();
    h = await harness({
      repo: repo.dir,
      env: { MODELS: 'classifier,embed', EXECUTION_PROVIDERS: 'cpu', SLOTS: '1', MAX_QUEUE: '64' },
      overrides: {
        createSession: (p, o, n) => {
          opens++;
          return gated.create(p, o, n);
        },
      },
    });
  });
  afterAll(async () => {
    gated?.open();
    await h?.backend.repository.close();
  });

  const features = (value: number) => ({ inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 16], data: new Array(16).fill(value) }] });
  const ran = (value: number) => gated.gate.feeds.some((f) => f.features?.includes(Math.fround(value)));

  it('unload waits for the queued AND the running requests, which all complete; requests meanwhile get 503 model_not_ready', async () => {
    gated.close();
    const running = h.post('/v2/models/classifier/infer', features(0.61));
    await until(() => h.backend.scheduler.capacity.inFlight === 1, 'the first request to run');
    // An embed request waits for the only slot first, so the queued classifier
    // requests still wait after the running one is done: unload must wait for them too.
    const embed = h.post('/v2/models/embed/infer', { inputs: [{ name: 'text', datatype: 'BYTES', shape: [1], data: ['ahead in line'] }] });
    await until(() => h.backend.scheduler.capacity.queued === 1, 'the embed request queued');
    const queued = [0.62, 0.63, 0.64].map((v) => h.post('/v2/models/classifier/infer', features(v)));
    await until(() => h.backend.scheduler.capacity.queued === 4, 'three classifier requests queued');

    let unloaded = false;
    const unload = h.post('/v2/repository/models/classifier/unload', {}).then((r) => {
      unloaded = true;
      return r;
    });
    await until(() => h.backend.repository.state('classifier') === 'UNLOADING', 'UNLOADING');
    const late = await h.post('/v2/models/classifier/infer', features(0.65));
    expect(late.status).toBe(503);
    expect(late.headers.get('retry-after')).toBe('1');
    expect(await errorCode(late)).toBe('model_not_ready');
    await new Promise((r) => setTimeout(r, 20));
    expect(unloaded).toBe(false);

    gated.open();
    for (const res of [await running, await embed, ...(await Promise.all(queued))]) expect(res.status).toBe(200);
    expect((await unload).status).toBe(200);
    expect(h.backend.repository.state('classifier')).toBe('UNAVAILABLE');
    expect([0.61, 0.62, 0.63, 0.64].every(ran)).toBe(true);
    expect(ran(0.65)).toBe(false);
    expect(h.backend.scheduler.capacity).toEqual({ slots: 1, inFlight: 0, queued: 0 });

    expect((await h.post('/v2/repository/models/classifier/load', {})).status).toBe(200);
  });

  it('loads a model that is already loaded as a no-op success', async () => {
    const before = opens;
    const { loadMs } = h.backend.repository.ready('embed');
    const res = await h.post('/v2/repository/models/embed/load', {});
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ name: 'embed', state: 'READY', version: '1', executionProvider: 'cpu', inferenceThread: 'main', instances: 1, loadMs: Math.round(loadMs) });
    expect(opens).toBe(before); // no new session
  });

  it('answers a steady stream through unload and load with 200 or 503 model_not_ready only: never a 500, never a hang', async () => {
    const outcomes: { model: string; status: number; code?: string; at: number }[] = [];
    let stop = false;
    const t0 = performance.now();
    const withDeadline = (p: Promise<Response>) =>
      Promise.race([p, new Promise<never>((_, reject) => setTimeout(() => reject(new Error('a request hung for 5 s')), 5000))]);
    const client = async (model: 'classifier' | 'embed', n: number) => {
      for (let i = 0; !stop; i++) {
        const body =
          model === 'classifier' ? features((n * 1000 + i) / 1e5) : { inputs: [{ name: 'text', datatype: 'BYTES', shape: [1], data: [`client ${n} request ${i}`] }] };
        const res = await withDeadline(h.post(`/v2/models/${model}/infer`, body));
        const outcome: (typeof outcomes)[number] = { model, status: res.status, at: performance.now() - t0 };
        if (res.status !== 200) outcome.code = await errorCode(res);
        outcomes.push(outcome);
      }
    };
    const clients = [client('classifier', 1), client('classifier', 2), client('classifier', 3), client('embed', 4)];
    const pause = () => new Promise((r) => setTimeout(r, 60));
    await pause();
    const unloadAt = performance.now() - t0;
    expect((await h.post('/v2/repository/models/classifier/unload', {})).status).toBe(200);
    await pause();
    expect((await h.post('/v2/repository/models/classifier/load', {})).status).toBe(200);
    const loadedAt = performance.now() - t0;
    await pause();
    stop = true;
    await Promise.all(clients);

    for (const o of outcomes) {
      if (o.status !== 200) expect(o).toMatchObject({ model: 'classifier', status: 503, code: 'model_not_ready' });
    }
    const classifier = outcomes.filter((o) => o.model === 'classifier');
    expect(classifier.some((o) => o.status === 200 && o.at < unloadAt)).toBe(true);
    expect(classifier.some((o) => o.status === 503)).toBe(true);
    expect(classifier.some((o) => o.status === 200 && o.at > loadedAt)).toBe(true);
    expect(outcomes.filter((o) => o.model === 'embed').every((o) => o.status === 200)).toBe(true);
    const metrics = await (await h.get('/metrics')).text();
    expect(metrics).not.toMatch(/reason="internal"/);
    expect(h.backend.scheduler.capacity).toEqual({ slots: 1, inFlight: 0, queued: 0 });
  });
});

describe('config.pbtxt', () => {
  /** The classifier's graph in `name`, with `files` (config.pbtxt and/or config.json) beside it. */
  async function classifierWith(name: string, files: Record<string, string>): Promise<void> {
    await mkdir(path.join(repo.dir, name, '1'), { recursive: true });
    await copyFile(path.join(repo.dir, 'classifier', '1', 'model.onnx'), path.join(repo.dir, name, '1', 'model.onnx'));
    for (const [file, text] of Object.entries(files)) await writeFile(path.join(repo.dir, name, file), text);
  }
  const pbtxt = (name: string) => `# The demo classifier, as Triton would serve it.
name: "${name}"
backend: "onnxruntime"
max_batch_size: 8
input [
  {
    name: "features"
    data_type: TYPE_FP32
    dims: [ 16 ]
  }
]
output [
  {
    name: "probabilities"
    data_type: TYPE_FP32
    dims: [ 4 ]
  }
]
instance_group [ { count: 1, kind: KIND_CPU } ]
dynamic_batching { max_queue_delay_microseconds: 100 }
parameters { key: "metering" value: { string_value: "rows" } }
model_warmup [
  {
    name: "three rows"
    batch_size: 3
    inputs { key: "features" value: { data_type: TYPE_FP32 dims: [ 16 ] random_data: true } }
  }
]
`;

  let h: Harness;
  let gated: ReturnType<typeof gatedSessions>;
  beforeAll(async () => {
    await classifierWith('pbtxt-classifier', { 'config.pbtxt': pbtxt('pbtxt-classifier') });
    await classifierWith('pbtxt-both', {
      'config.pbtxt': pbtxt('pbtxt-both'),
      'config.json': JSON.stringify({ name: 'pbtxt-both', platform: 'onnxruntime_onnx', max_batch_size: 8, input: [{ name: 'features', data_type: 'TYPE_FP32', dims: [16] }], output: [{ name: 'probabilities', data_type: 'TYPE_FP32', dims: [4] }] }),
    });
    await classifierWith('pbtxt-typo', { 'config.pbtxt': pbtxt('pbtxt-typo').replace('dims: [ 4 ]', 'dims: [ 4 }') });
    gated = gatedSessions();
    h = await harness({ repo: repo.dir, env: { MODELS: 'pbtxt-classifier', EXECUTION_PROVIDERS: 'cpu' }, overrides: { createSession: gated.create } });
  });
  afterAll(async () => {
    await h?.backend.repository.close();
  });

  it('loads a model from its config.pbtxt, warms it up on model_warmup, and serves it', async () => {
    expect(h.backend.repository.state('pbtxt-classifier')).toBe('READY');
    const { config } = await h.backend.repository.config('pbtxt-classifier');
    expect(config).toMatchObject({
      name: 'pbtxt-classifier',
      platform: 'onnxruntime_onnx',
      max_batch_size: 8,
      instance_group: [{ count: 1, kind: 'KIND_CPU' }],
      parameters: { metering: 'rows' },
      model_warmup: [{ name: 'three rows', batch_size: 3, inputs: { features: { data_type: 'TYPE_FP32', dims: [16], random_data: true } } }],
    });
    // The warm-up run: the sample's batch of 3 rows, pseudo-random data.
    const warm = gated.gate.feeds[0]!.features!;
    expect(warm).toHaveLength(3 * 16);
    expect(new Set(warm).size).toBeGreaterThan(1);
    expect((await h.post('/v2/models/pbtxt-classifier/infer', FEATURES)).status).toBe(200);
    const meta = (await (await h.get('/v2/models/pbtxt-classifier')).json()) as { platform: string };
    expect(meta.platform).toBe('onnxruntime_onnx');
  });

  it('lists folders with only a config.pbtxt in the index', async () => {
    const index = (await (await h.post('/v2/repository/index', {})).json()) as { name: string }[];
    expect(index.map((m) => m.name)).toEqual(expect.arrayContaining(['pbtxt-classifier', 'pbtxt-both', 'pbtxt-typo']));
  });

  it('refuses a model folder with both config.json and config.pbtxt, saying to keep one', async () => {
    expect((await h.post('/v2/repository/models/pbtxt-both/load', {})).status).toBe(500);
    const index = (await (await h.post('/v2/repository/index', {})).json()) as { name: string; state: string; reason?: string }[];
    expect(index.find((m) => m.name === 'pbtxt-both')).toMatchObject({
      state: 'UNAVAILABLE',
      reason: expect.stringMatching(/pbtxt-both: has both config\.json and config\.pbtxt; keep one of them/),
    });
  });

  it('fails the load of a config.pbtxt with a syntax error, naming the file, line and column', async () => {
    expect((await h.post('/v2/repository/models/pbtxt-typo/load', {})).status).toBe(500);
    const index = (await (await h.post('/v2/repository/index', {})).json()) as { name: string; state: string; reason?: string }[];
    expect(index.find((m) => m.name === 'pbtxt-typo')?.reason).toMatch(/pbtxt-typo[/\\]config\.pbtxt:16:15: expected "," or "]" in the list of "dims" \(opened at 16:11\), got "}"/);
    expect((await h.post('/v2/models/pbtxt-classifier/infer', FEATURES)).status).toBe(200);
  });
});
