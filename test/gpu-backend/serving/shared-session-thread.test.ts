/**
 * The one thread WebGPU sessions share (shared-session-thread.ts), exercised
 * with CPU sessions: no GPU here, and the thread is the same whatever the
 * provider. Several models open on one thread and answer exactly what
 * in-process sessions answer; a model that cannot open fails with ONNX
 * Runtime's reason and leaves the others serving; the thread ends with its
 * last session and a later open starts a new one. The factory sends WebGPU
 * sessions there, one instance each, and falls back to the CPU with the
 * adapter's reason when no GPU is found.
 */

import { readdirSync } from 'node:fs';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Logger } from '../../../gpu-backend/src/log.ts';
import { silentLogger } from '../../../gpu-backend/src/log.ts';
import type { CreateSession, ModelSession } from '../../../gpu-backend/src/serving/model-session.ts';
import { SessionFactory } from '../../../gpu-backend/src/serving/sessions.ts';
import { SharedSessionThread } from '../../../gpu-backend/src/serving/shared-session-thread.ts';
import { demoRepository } from '../helpers.ts';

const OPTIONS: ort.InferenceSession.SessionOptions = { executionProviders: ['cpu'], graphOptimizationLevel: 'all' };
const threads = () => readdirSync('/proc/self/task').length;

function ids(rows: number, seq: number, seed: number): ort.InferenceSession.FeedsType {
  const data = new BigInt64Array(rows * seq);
  for (let i = 0; i < data.length; i++) data[i] = BigInt(1 + ((i * 7919 + seed * 104729) % 1000));
  return { input_ids: new ort.Tensor('int64', data, [rows, seq]) };
}

function features(rows: number, seed: number): ort.InferenceSession.FeedsType {
  const data = new Float32Array(rows * 16);
  for (let i = 0; i < data.length; i++) data[i] = Math.sin(i * 0.37 + seed);
  return { features: new ort.Tensor('float32', data, [rows, 16]) };
}

describe('SharedSessionThread', () => {
  let repo: Awaited<ReturnType<typeof demoRepository>>;
  const model = (name: string) => path.join(repo.dir, name, '1', 'model.onnx');
  beforeAll(async () => {
    repo = await demoRepository();
  });
  afterAll(async () => {
    await repo?.cleanup();
  });

  it('runs several models on one thread, answering what in-process sessions answer', async () => {
    const shared = new SharedSessionThread();
    expect(shared.threadId).toBeUndefined();
    const [embed, classifier] = await Promise.all([shared.open(model('embed'), OPTIONS), shared.open(model('classifier'), OPTIONS)]);
    const thread = shared.threadId;
    expect(thread).toBeGreaterThan(0);
    expect(embed.instances).toBe(1);
    expect(classifier.instances).toBe(1);
    expect(embed.outputNames).toEqual(['embedding']);
    expect(classifier.outputNames).toEqual(['probabilities']);

    const localEmbed = await ort.InferenceSession.create(model('embed'), OPTIONS);
    const localClassifier = await ort.InferenceSession.create(model('classifier'), OPTIONS);
    try {
      // Runs of both models at once: each reply reaches its own model's caller.
      const runs = await Promise.all(
        Array.from({ length: 8 }, (_, i) => (i % 2 === 0 ? embed.run(ids(1 + i, 6 + i, i), ['embedding']) : classifier.run(features(1 + i, i), ['probabilities']))),
      );
      for (let i = 0; i < runs.length; i++) {
        const [name, want] =
          i % 2 === 0
            ? ['embedding', (await localEmbed.run(ids(1 + i, 6 + i, i), ['embedding'])).embedding!]
            : ['probabilities', (await localClassifier.run(features(1 + i, i), ['probabilities'])).probabilities!];
        const got = runs[i]![name]!;
        expect(got.dims).toEqual(want.dims);
        expect(Array.from(got.data as Float32Array)).toEqual(Array.from(want.data as Float32Array));
      }
    } finally {
      await localEmbed.release();
      await localClassifier.release();
    }

    // One released: the other keeps its thread and serves.
    await embed.release();
    expect(shared.threadId).toBe(thread);
    expect((await classifier.run(features(2, 1), ['probabilities'])).probabilities!.dims).toEqual([2, 4]);
    await expect(embed.run(ids(1, 4, 1), ['embedding'])).rejects.toThrow(/released/);
    await classifier.release();
    expect(shared.threadId).toBeUndefined();
  });

  it('fails an open with ONNX Runtime\'s reason and keeps the other models serving', async () => {
    const shared = new SharedSessionThread();
    const classifier = await shared.open(model('classifier'), OPTIONS);
    const err = await shared.open(path.join(repo.dir, 'embed', 'config.json'), OPTIONS).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toMatch(/protobuf|parsing|load model/i);
    expect((await classifier.run(features(1, 2), ['probabilities'])).probabilities!.dims).toEqual([1, 4]);
    await classifier.release();
  });

  it('leaves no listener behind on the thread for a model loaded and released again and again', async () => {
    const shared = new SharedSessionThread();
    const stays = await shared.open(model('classifier'), OPTIONS);
    const base = shared.listeners;
    for (let i = 0; i < 5; i++) {
      const reloaded = await shared.open(model('embed'), OPTIONS);
      expect(shared.listeners).toBeGreaterThan(base);
      expect((await reloaded.run(ids(1, 4, i), ['embedding'])).embedding!.dims).toEqual([1, 256]);
      await reloaded.release();
      expect(shared.listeners).toBe(base);
    }
    await stays.release();
  });

  it('ends its thread with the last session, and a later open starts a new one', async () => {
    const before = threads();
    const shared = new SharedSessionThread();
    const first = await shared.open(model('classifier'), OPTIONS);
    const firstThread = shared.threadId;
    await first.release();
    for (let i = 0; i < 100 && threads() > before; i++) await new Promise((r) => setTimeout(r, 10));
    expect(threads()).toBeLessThanOrEqual(before);
    // A failed first open leaves no thread either.
    await expect(shared.open(path.join(repo.dir, 'embed', 'config.json'), OPTIONS)).rejects.toThrow();
    expect(shared.threadId).toBeUndefined();
    const again = await shared.open(model('classifier'), OPTIONS);
    expect(shared.threadId).toBeGreaterThan(0);
    expect(shared.threadId).not.toBe(firstThread);
    expect((await again.run(features(1, 3), ['probabilities'])).probabilities!.dims).toEqual([1, 4]);
    await again.release();
  });
});

describe('SessionFactory and WebGPU', () => {
  it('opens WebGPU sessions on workers, one instance each, with the webgpu provider', async () => {
    const opened: { options: ort.InferenceSession.SessionOptions; instances: number }[] = [];
    const create: CreateSession = async (_path, options, instances) => {
      opened.push({ options, instances });
      return { inputNames: [], outputNames: [], run: async () => ({}), release: async () => {} } satisfies ModelSession;
    };
    const infos: string[] = [];
    const log: Logger = { ...silentLogger, info: (msg) => infos.push(msg) };
    const factory = new SessionFactory({ providers: ['webgpu', 'cpu'], thread: 'auto', cores: 2, log, create });
    expect(factory.threadFor('webgpu')).toBe('worker');
    const session = await factory.open('m.onnx', { instances: 3 });
    expect(session.provider).toBe('webgpu');
    expect(opened[0]!.instances).toBe(1);
    expect(opened[0]!.options.executionProviders).toEqual([{ name: 'webgpu' }]);
    expect(infos.join('\n')).toMatch(/3 instances asked for, 1 serves: WebGPU sessions share one thread/);
  });

  it('serves on the CPU, saying why, when WebGPU finds no GPU adapter (or on WebGPU where one exists)', async () => {
    const repo = await demoRepository();
    const warnings: string[] = [];
    const log: Logger = { ...silentLogger, warn: (msg) => warnings.push(msg) };
    const factory = new SessionFactory({ providers: ['webgpu', 'cpu'], thread: 'worker', log });
    try {
      const opened = await factory.open(path.join(repo.dir, 'classifier', '1', 'model.onnx'));
      const out = await opened.session.run(features(1, 4), ['probabilities']);
      expect(out.probabilities!.dims).toEqual([1, 4]);
      await opened.session.release();
      if (opened.provider === 'webgpu') {
        // A machine with a GPU and a Vulkan driver: nothing failed.
        expect(factory.webgpuFailure).toBeUndefined();
        expect(warnings).toEqual([]);
      } else {
        expect(opened.provider).toBe('cpu');
        expect(factory.webgpuFailure).toMatch(/^no WebGPU adapter \(/);
        expect(factory.preferred).toBe('cpu');
        expect(warnings.join('\n')).toMatch(/WebGPU execution provider could not initialise: no WebGPU adapter .*; serving on cpu/);
      }
    } finally {
      await repo.cleanup();
    }
  });
});
