/**
 * Sessions on worker threads (session-pool.ts) and where the factory puts
 * them (sessions.ts): a threaded session answers exactly what an in-process
 * session answers, several instances serve concurrent runs, the main thread
 * stays free while a run executes (the reason for the threads), a model that
 * cannot open fails with ONNX Runtime's reason, and a released session
 * finishes its run in flight and refuses new ones. `auto` keeps CPU sessions
 * on the main thread below 4 cores and puts CUDA and larger CPU hosts on
 * workers, where CPU instances share cores - 1 intra-op threads.
 */

import { readdirSync } from 'node:fs';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../../gpu-backend/src/log.ts';
import type { CreateSession, ModelSession } from '../../../gpu-backend/src/serving/model-session.ts';
import { SessionPool } from '../../../gpu-backend/src/serving/session-pool.ts';
import { SessionFactory } from '../../../gpu-backend/src/serving/sessions.ts';
import { demoRepository } from '../helpers.ts';

const OPTIONS: ort.InferenceSession.SessionOptions = { executionProviders: ['cpu'], graphOptimizationLevel: 'all' };

function idsFeed(rows: number, seq: number, seed: number): ort.InferenceSession.FeedsType {
  const data = new BigInt64Array(rows * seq);
  for (let i = 0; i < data.length; i++) data[i] = BigInt(1 + ((i * 7919 + seed * 104729) % 1000));
  return { input_ids: new ort.Tensor('int64', data, [rows, seq]) };
}

describe('SessionPool', () => {
  let repo: Awaited<ReturnType<typeof demoRepository>>;
  let modelPath: string;
  let local: ort.InferenceSession;
  let threaded: SessionPool;
  beforeAll(async () => {
    repo = await demoRepository();
    modelPath = path.join(repo.dir, 'embed', '1', 'model.onnx');
    local = await ort.InferenceSession.create(modelPath, OPTIONS);
    threaded = await SessionPool.open(modelPath, OPTIONS, 2);
  });
  afterAll(async () => {
    await threaded?.release();
    await local?.release();
    await repo?.cleanup();
  });

  it('answers exactly what the session answers in-process, for concurrent runs on two instances', async () => {
    expect(threaded.instances).toBe(2);
    expect(threaded.failure).toBeUndefined();
    expect(threaded.inputNames).toEqual(['input_ids']);
    expect(threaded.outputNames).toEqual(['embedding']);
    const feeds = Array.from({ length: 6 }, (_, i) => idsFeed(1 + i, 8 + 3 * i, i));
    // A run consumes its inputs (their buffers are transferred to the thread): the threads get equal copies.
    const together = await Promise.all(Array.from({ length: 6 }, (_, i) => threaded.run(idsFeed(1 + i, 8 + 3 * i, i), ['embedding'])));
    for (let i = 0; i < feeds.length; i++) {
      const want = (await local.run(feeds[i]!, ['embedding'])).embedding!;
      const got = together[i]!.embedding!;
      expect(got).toBeInstanceOf(ort.Tensor);
      expect(got.type).toBe('float32');
      expect(got.dims).toEqual(want.dims);
      expect(Array.from(got.data as Float32Array)).toEqual(Array.from(want.data as Float32Array));
    }
  });

  it('transfers inputs that own their buffer to the thread, and copies views into a larger one', async () => {
    const owned = idsFeed(2, 8, 1);
    const ownedData = (owned.input_ids as ort.Tensor).data as BigInt64Array;
    await threaded.run(owned, ['embedding']);
    expect(ownedData.byteLength).toBe(0); // detached: moved, not cloned
    const whole = (idsFeed(4, 8, 1).input_ids as ort.Tensor).data as BigInt64Array;
    const view = whole.subarray(0, 16);
    await threaded.run({ input_ids: new ort.Tensor('int64', view, [2, 8]) }, ['embedding']);
    expect(whole.byteLength).toBe(4 * 8 * 8); // still there: a view is copied
  });

  it('leaves the main thread free while a run executes (in-process, the run holds it)', async () => {
    const big = idsFeed(64, 128, 3);
    /** The longest the event loop went without running a 1 ms interval while `work` ran, and how long `work` took. */
    const longestStall = async (work: () => Promise<unknown>) => {
      let last = performance.now();
      let worst = 0;
      const timer = setInterval(() => {
        const now = performance.now();
        worst = Math.max(worst, now - last);
        last = now;
      }, 1);
      const t0 = performance.now();
      await work();
      const took = performance.now() - t0;
      clearInterval(timer);
      worst = Math.max(worst, performance.now() - last);
      return { worst, took };
    };
    const inProcess = await longestStall(() => local.run(big, ['embedding']));
    const onThread = await longestStall(() => threaded.run(big, ['embedding']));
    // In-process the loop stalls for about the whole run; on a thread it keeps ticking.
    expect(inProcess.worst).toBeGreaterThan(inProcess.took * 0.6);
    expect(onThread.worst).toBeLessThan(onThread.took * 0.5);
  });

  it('fails to open with ONNX Runtime\'s reason, and leaves no thread behind', async () => {
    // This process's OS threads (Linux): the two worker threads must be gone again.
    const threads = () => readdirSync('/proc/self/task').length;
    const before = threads();
    const err = await SessionPool.open(path.join(repo.dir, 'embed', 'config.json'), OPTIONS, 2).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toMatch(/protobuf|parsing|load model/i);
    for (let i = 0; i < 100 && threads() > before; i++) await new Promise((r) => setTimeout(r, 10));
    expect(threads()).toBeLessThanOrEqual(before);
  });

  it('finishes the run in flight on release and refuses runs after it', async () => {
    const session = await SessionPool.open(modelPath, OPTIONS, 1);
    const running = session.run(idsFeed(32, 64, 1), ['embedding']);
    const released = session.release();
    const result = await running;
    expect(result.embedding!.dims).toEqual([32, 256]);
    await released;
    expect(session.instances).toBe(0);
    // Released on purpose is not a failure (that is for threads that died).
    expect(session.failure).toBeUndefined();
    await expect(session.run(idsFeed(1, 4, 1), ['embedding'])).rejects.toThrow(/released/);
  });

  it('reports a bad feed as a rejected run, and keeps serving', async () => {
    const bad = { input_ids: new ort.Tensor('float32', new Float32Array(4), [1, 4]) };
    await expect(threaded.run(bad, ['embedding'])).rejects.toThrow(/input_ids|type/i);
    const ok = await threaded.run(idsFeed(1, 4, 9), ['embedding']);
    expect(ok.embedding!.dims).toEqual([1, 256]);
  });
});

describe('SessionFactory thread choice (INFERENCE_THREAD)', () => {
  /** A factory whose sessions are stand-ins that record the options and instance count they were opened with. */
  function recording(thread: 'auto' | 'worker' | 'main', cores: number, intraOpThreads?: number) {
    const opened: { options: ort.InferenceSession.SessionOptions; instances: number }[] = [];
    const create: CreateSession = async (_path, options, instances) => {
      opened.push({ options, instances });
      return { inputNames: [], outputNames: [], run: async () => ({}), release: async () => {} } satisfies ModelSession;
    };
    const factory = new SessionFactory({ providers: ['cuda', 'cpu'], thread, cores, log: silentLogger, create, ...(intraOpThreads ? { intraOpThreads } : {}) });
    return { factory, opened };
  }

  it('auto: CUDA on workers; CPU on the main thread below 4 cores, on workers from 4', () => {
    expect(recording('auto', 2).factory.threadFor('cuda')).toBe('worker');
    expect(recording('auto', 2).factory.threadFor('cpu')).toBe('main');
    expect(recording('auto', 3).factory.threadFor('cpu')).toBe('main');
    expect(recording('auto', 4).factory.threadFor('cpu')).toBe('worker');
    expect(recording('main', 64).factory.threadFor('cuda')).toBe('main');
    expect(recording('worker', 1).factory.threadFor('cpu')).toBe('worker');
  });

  it('opens one session per instance on workers, one on the main thread', async () => {
    const onWorkers = recording('worker', 8);
    const a = await onWorkers.factory.open('m.onnx', { instances: 3 });
    expect(a.thread).toBe('worker');
    expect(onWorkers.opened[0]!.instances).toBe(3);
    const onMain = recording('main', 8);
    await onMain.factory.open('m.onnx', { instances: 3 });
    expect(onMain.opened[0]!.instances).toBe(1);
  });

  it('gives CPU instances on workers cores - 1 intra-op threads between them, unless INTRA_OP_THREADS says', async () => {
    const eight = recording('worker', 8);
    await eight.factory.open('m.onnx', { cpuOnly: true, instances: 2 });
    expect(eight.opened[0]!.options.intraOpNumThreads).toBe(3);
    const two = recording('worker', 2);
    await two.factory.open('m.onnx', { cpuOnly: true, instances: 4 });
    expect(two.opened[0]!.options.intraOpNumThreads).toBe(1);
    const fixed = recording('worker', 8, 6);
    await fixed.factory.open('m.onnx', { cpuOnly: true, instances: 2 });
    expect(fixed.opened[0]!.options.intraOpNumThreads).toBe(6);
    const main = recording('main', 8);
    await main.factory.open('m.onnx', { cpuOnly: true });
    expect(main.opened[0]!.options.intraOpNumThreads).toBeUndefined();
    // CUDA sessions keep ORT's default: the model runs on the device.
    const cuda = recording('worker', 8);
    await cuda.factory.open('m.onnx');
    expect(cuda.opened[0]!.options.intraOpNumThreads).toBeUndefined();
  });
});
