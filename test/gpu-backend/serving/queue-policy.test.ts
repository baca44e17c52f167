/**
 * Each model's queue policy over HTTP, on real ONNX Runtime sessions held at
 * a gate: a full model queue answers 429 `rate_limited` with `retry-after`,
 * naming the model and its `max_queue_size`; a request still queued when its
 * timeout passes (the model's default, or its own `parameters.timeout` where
 * the model allows an override) gets 504 `backend_timeout` and never runs.
 */

import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { demoRepository, errorCode, gatedSessions, harness, until, type Harness } from '../helpers.ts';

let repo: Awaited<ReturnType<typeof demoRepository>>;
let h: Harness;
let gated: ReturnType<typeof gatedSessions>;

/** A copy of the demo classifier under another name and queue policy. */
async function classifierCopy(name: string, policy: Record<string, unknown>): Promise<void> {
  await mkdir(path.join(repo.dir, name, '1'), { recursive: true });
  await copyFile(path.join(repo.dir, 'classifier', '1', 'model.onnx'), path.join(repo.dir, name, '1', 'model.onnx'));
  await writeFile(
    path.join(repo.dir, name, 'config.json'),
    JSON.stringify({
      name,
      platform: 'onnxruntime_onnx',
      max_batch_size: 1, // every request is a batch of its own: queued requests stay queued
      input: [{ name: 'features', data_type: 'TYPE_FP32', dims: [16] }],
      output: [{ name: 'probabilities', data_type: 'TYPE_FP32', dims: [4] }],
      dynamic_batching: { max_queue_delay_microseconds: 0, default_queue_policy: policy },
    }),
  );
}

beforeAll(async () => {
  repo = await demoRepository();
  await classifierCopy('tiny', { max_queue_size: 2, default_timeout_microseconds: 10_000_000, allow_timeout_override: true });
  await classifierCopy('strict', { default_timeout_microseconds: 60_000 });
  gated = gatedSessions();
  h = await harness({
    repo: repo.dir,
    env: { MODELS: 'tiny,strict', EXECUTION_PROVIDERS: 'cpu', SLOTS: '1', MAX_QUEUE: '64' },
    overrides: { createSession: gated.create },
  });
});
afterAll(async () => {
  gated?.open();
  await h?.backend.repository.close();
  await repo?.cleanup();
});

/** A request whose features are all `value`, so the runs it took part in can be found. */
const features = (value: number, parameters?: Record<string, unknown>) => ({
  inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 16], data: new Array(16).fill(value) }],
  ...(parameters ? { parameters } : {}),
});
const ran = (value: number) => gated.gate.feeds.some((f) => f.features?.includes(Math.fround(value)));

/** Holds the only slot with a running request on `tiny`; returns its response promise (wrapped: an async function would wait for it). */
async function holdTheSlot(value: number): Promise<{ running: Promise<Response> }> {
  gated.close();
  const running = h.post('/v2/models/tiny/infer', features(value));
  await until(() => h.backend.scheduler.capacity.inFlight === 1, 'the first request to run');
  return { running };
}

describe('max_queue_size', () => {
  it('answers 429 rate_limited with retry-after, naming the model and its limit, once the model queue is full', async () => {
    const { running } = await holdTheSlot(0.11);
    const queued = [0.12, 0.13].map((v) => h.post('/v2/models/tiny/infer', features(v)));
    await until(() => h.backend.scheduler.capacity.queued === 2, 'two requests queued');

    const refused = await h.post('/v2/models/tiny/infer', features(0.14));
    expect(refused.status).toBe(429);
    expect(refused.headers.get('retry-after')).toBe('1');
    const { error } = (await refused.json()) as { error: { code: string; message: string } };
    expect(error.code).toBe('rate_limited');
    expect(error.message).toMatch(/Model "tiny" .*max_queue_size of 2/);
    expect(h.backend.scheduler.capacity.queued).toBe(2); // well under MAX_QUEUE: the model's own bound refused it
    gated.open();
    for (const res of [await running, ...(await Promise.all(queued))]) expect(res.status).toBe(200);
    expect(ran(0.14)).toBe(false);
    expect(h.backend.scheduler.capacity).toEqual({ slots: 1, inFlight: 0, queued: 0 });
  });
});

describe('queue timeouts', () => {
  it("drops a request past its own parameters.timeout with 504 backend_timeout, and never runs it", async () => {
    const { running } = await holdTheSlot(0.21);
    const started = performance.now();
    const late = h.post('/v2/models/tiny/infer', features(0.22, { timeout: 40_000 }));
    const patient = h.post('/v2/models/tiny/infer', features(0.23));
    const res = await late;
    expect(performance.now() - started).toBeGreaterThanOrEqual(39);
    expect(res.status).toBe(504);
    expect(await errorCode(res)).toBe('backend_timeout');
    expect(res.headers.get('x-provider-attestation')).toBeNull();

    gated.open();
    expect((await running).status).toBe(200);
    expect((await patient).status).toBe(200);
    expect(ran(0.21) && ran(0.23)).toBe(true);
    expect(ran(0.22)).toBe(false);
    expect(h.backend.scheduler.capacity).toEqual({ slots: 1, inFlight: 0, queued: 0 });
    const metrics = await (await h.get('/metrics')).text();
    expect(metrics).toMatch(/^nv_inference_request_failure\{model="tiny",version="1",reason="backend_timeout"\} 1$/m);
  });

  it("applies the model's default timeout, and ignores a request's longer one where overrides are not allowed", async () => {
    const { running } = await holdTheSlot(0.31);
    const started = performance.now();
    const res = await h.post('/v2/models/strict/infer', features(0.32, { timeout: 5_000_000 }));
    expect(performance.now() - started).toBeGreaterThanOrEqual(59);
    expect(res.status).toBe(504);
    expect(await errorCode(res)).toBe('backend_timeout');
    gated.open();
    expect((await running).status).toBe(200);
    expect(ran(0.32)).toBe(false);
  });

  it('refuses a malformed parameters.timeout with 400 before queueing it', async () => {
    for (const timeout of [-5, 'soon', 1.5]) {
      const res = await h.post('/v2/models/tiny/infer', features(0.41, { timeout }));
      expect(res.status).toBe(400);
      expect(await errorCode(res)).toBe('invalid_request');
    }
    expect(ran(0.41)).toBe(false);
  });

  it('runs a request that gets its turn within its timeout', async () => {
    const res = await h.post('/v2/models/tiny/infer', features(0.51, { timeout: 2_000_000 }));
    expect(res.status).toBe(200);
    expect(ran(0.51)).toBe(true);
  });
});
