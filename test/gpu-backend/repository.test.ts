/**
 * Model lifecycle on real ONNX Runtime sessions: the CUDA → CPU fallback, a
 * failed load, unload waiting for the run in flight, and the bounded queue
 * answering 429 when full.
 *
 * This machine has no GPU, and the CUDA build of onnxruntime-node is not
 * installed, so a real CUDA session cannot be exercised here: these tests show
 * that listing `cuda` first falls back to `cpu` and reports the provider in use.
 */

import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CreateSession } from '../../gpu-backend/src/sessions.ts';
import { demoRepository, errorCode, harness, type Harness } from './helpers.ts';

let repo: Awaited<ReturnType<typeof demoRepository>>;

beforeAll(async () => {
  repo = await demoRepository();
  // A model whose config names an output the graph does not have: it must fail to load, cleanly.
  await mkdir(path.join(repo.dir, 'broken', '1'), { recursive: true });
  await copyFile(path.join(repo.dir, 'classifier', '1', 'model.onnx'), path.join(repo.dir, 'broken', '1', 'model.onnx'));
  await writeFile(
    path.join(repo.dir, 'broken', 'config.json'),
    JSON.stringify({
      name: 'broken',
      platform: 'onnxruntime_onnx',
      max_batch_size: 8,
      input: [{ name: 'features', data_type: 'TYPE_FP32', dims: [16] }],
      output: [{ name: 'logits', data_type: 'TYPE_FP32', dims: [4] }],
    }),
  );
});
afterAll(() => repo?.cleanup());

const FEATURES = { inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 16], data: new Array(16).fill(0.1) }] };

/** Real sessions whose `run` waits while `gate.closed` is a pending promise. */
function gatedSessions() {
  const gate: { closed: Promise<void> | undefined; open: () => void; runs: number } = { closed: undefined, open: () => {}, runs: 0 };
  const close = () => {
    gate.closed = new Promise<void>((resolve) => (gate.open = () => { gate.closed = undefined; resolve(); }));
  };
  const create: CreateSession = async (p, o) => {
    const session = await ort.InferenceSession.create(p, o);
    const run = session.run.bind(session);
    (session as { run: unknown }).run = async (...args: Parameters<typeof run>) => {
      gate.runs++;
      if (gate.closed) await gate.closed;
      return run(...args);
    };
    return session;
  };
  return { gate, close, open: () => gate.open(), create };
}

async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 2));
  }
  throw new Error(`timed out waiting for ${what}`);
}

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
