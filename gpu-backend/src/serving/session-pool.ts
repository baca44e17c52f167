/**
 * The main thread's side of a model's sessions on worker threads
 * (session-worker.ts runs each), as one `ModelSession`: onnxruntime-node's
 * `run()` holds its thread for the whole execution, so with one session per
 * model instance on a thread of its own the main thread keeps serving HTTP
 * while batches run, and instances really run at once. A run goes to an idle
 * instance or waits for one; a thread that dies leaves the pool, and once none
 * is left `failure` says why. A pool may also be one session on a thread that
 * several pools share (shared-session-thread.ts, for WebGPU).
 */

import { Worker } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';
import type { ModelSession } from './model-session.ts';

/** A tensor as it crosses the thread boundary (structured clone). */
export interface WireTensor {
  type: string;
  dims: readonly number[];
  data: ArrayBufferView | string[];
}

export interface SessionWorkerInit {
  modelPath: string;
  options: ort.InferenceSession.SessionOptions;
}

export interface RunRequest {
  id: number;
  /** Which session of the thread (0: a pool's own thread's only one). */
  key?: number;
  feeds: Record<string, WireTensor>;
  fetches: string[];
}

/** Opens one more session on a shared thread (shared-session-thread.ts). */
export interface OpenRequest {
  open: SessionWorkerInit & { key: number };
}

export type RunReply = { id: number; outputs: Record<string, WireTensor> } | { id: number; error: string };

export type Opened = { kind: 'open'; key: number; inputNames: string[]; outputNames: string[] } | { kind: 'open-failed'; key: number; message: string };

export const WORKER_URL = new URL('./session-worker.ts', import.meta.url);

/** Run ids are unique per process: pools that share a thread read each other's replies. */
let nextRunId = 1;

interface Instance {
  worker: Worker;
  /** The session's key on its thread. */
  key: number;
  /** Removes this pool's listeners from the thread (set by #watch). */
  unwatch?: () => void;
  /** The run this instance executes now. */
  current: { id: number; resolve(outputs: ort.InferenceSession.ReturnType): void; reject(err: Error): void } | undefined;
  dead: boolean;
}

export class SessionPool implements ModelSession {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  readonly #instances: Instance[];
  readonly #waiting: (() => void)[] = [];
  /** Ends a thread once its session is released; a shared thread ends when its last session goes. */
  readonly #end: (worker: Worker) => Promise<unknown>;
  #released = false;
  #lastDeath: string | undefined;

  private constructor(instances: Instance[], opened: { inputNames: string[]; outputNames: string[] }, end: (worker: Worker) => Promise<unknown> = (w) => w.terminate()) {
    this.#instances = instances;
    this.#end = end;
    this.inputNames = opened.inputNames;
    this.outputNames = opened.outputNames;
    for (const instance of instances) this.#watch(instance);
  }

  /**
   * Opens `instances` sessions of `modelPath` with `options`, each on its own
   * thread. Rejects with ONNX Runtime's message when any fails to open (the
   * others are ended).
   */
  static async open(modelPath: string, options: ort.InferenceSession.SessionOptions, instances = 1): Promise<SessionPool> {
    const workerData: SessionWorkerInit = { modelPath, options };
    const workers = Array.from({ length: Math.max(1, instances) }, () => new Worker(WORKER_URL, { workerData }));
    const opened = await Promise.allSettled(workers.map((w) => firstMessage(w)));
    const failure = opened.find((o) => o.status === 'rejected' || o.value.kind === 'open-failed');
    if (failure) {
      await Promise.all(workers.map((w) => w.terminate()));
      if (failure.status === 'rejected') throw failure.reason;
      throw new Error((failure.value as { message: string }).message);
    }
    const first = (opened[0] as PromiseFulfilledResult<Opened & { kind: 'open' }>).value;
    return new SessionPool(
      workers.map((worker) => ({ worker, key: 0, current: undefined, dead: false })),
      first,
    );
  }

  /**
   * A pool of the one session `key` already opened on a shared thread;
   * `end` runs once it is released (the thread decides whether to stop).
   */
  static onSharedThread(worker: Worker, key: number, opened: { inputNames: string[]; outputNames: string[] }, end: () => Promise<unknown>): SessionPool {
    return new SessionPool([{ worker, key, current: undefined, dead: false }], opened, end);
  }

  /** Live instances (threads). */
  get instances(): number {
    return this.#instances.filter((i) => !i.dead).length;
  }

  /** Why no run can succeed any more: every thread died (not released). */
  get failure(): string | undefined {
    return !this.#released && this.instances === 0 ? `every inference thread died (the last one ${this.#lastDeath ?? 'ended'})` : undefined;
  }

  /**
   * Inputs go to the thread transferred when their typed array owns its whole
   * buffer (a batch's merged feeds, a request's own): a run consumes them, and
   * an image batch is megabytes a clone would copy. Others (views into a
   * shared buffer, strings) are copied. Outputs come back transferred.
   */
  async run(feeds: ort.InferenceSession.FeedsType, fetches: readonly string[]): Promise<ort.InferenceSession.ReturnType> {
    const wire: Record<string, WireTensor> = {};
    const transfer: ArrayBuffer[] = [];
    for (const [name, t] of Object.entries(feeds)) {
      const tensor = t as ort.Tensor;
      const data = tensor.data;
      wire[name] = { type: tensor.type, dims: tensor.dims, data: data as WireTensor['data'] };
      if (ArrayBuffer.isView(data) && data.buffer instanceof ArrayBuffer && data.byteOffset === 0 && data.byteLength === data.buffer.byteLength && !transfer.includes(data.buffer)) {
        transfer.push(data.buffer);
      }
    }
    for (;;) {
      if (this.#released) throw new Error('The model session was released.');
      const live = this.#instances.filter((i) => !i.dead);
      if (live.length === 0) throw new Error(`The model cannot run: ${this.failure ?? 'no inference thread'}.`);
      const idle = live.find((i) => !i.current);
      if (idle) return this.#runOn(idle, wire, [...fetches], transfer);
      await new Promise<void>((resolve) => this.#waiting.push(resolve));
    }
  }

  /** Releases every session (after the runs in flight) and ends the threads. */
  async release(): Promise<void> {
    if (this.#released) return;
    this.#released = true;
    for (const wake of this.#waiting.splice(0)) wake();
    await Promise.all(
      this.#instances.map(async (instance) => {
        if (instance.dead) return;
        while (instance.current) await new Promise<void>((resolve) => this.#waiting.push(resolve));
        const released = new Promise<void>((resolve) => {
          const done = () => {
            instance.worker.off('message', onMessage);
            instance.worker.off('exit', done);
            resolve();
          };
          const onMessage = (m: { kind?: string; key?: number }) => {
            if (m.kind === 'released' && m.key === instance.key) done();
          };
          instance.worker.on('message', onMessage);
          instance.worker.on('exit', done);
        });
        instance.worker.postMessage({ release: true, key: instance.key });
        await released;
        instance.dead = true;
        instance.unwatch?.();
        await this.#end(instance.worker);
      }),
    );
  }

  #runOn(instance: Instance, feeds: Record<string, WireTensor>, fetches: string[], transfer: ArrayBuffer[]): Promise<ort.InferenceSession.ReturnType> {
    const id = nextRunId++;
    return new Promise((resolve, reject) => {
      instance.current = { id, resolve, reject };
      instance.worker.postMessage({ id, key: instance.key, feeds, fetches } satisfies RunRequest, transfer);
    });
  }

  #watch(instance: Instance): void {
    const onMessage = (reply: RunReply | { kind: string }) => {
      if (!('id' in reply)) return;
      const current = instance.current;
      if (!current || current.id !== reply.id) return;
      this.#settled(instance);
      if ('error' in reply) {
        current.reject(new Error(reply.error));
        return;
      }
      const outputs: Record<string, ort.Tensor> = {};
      for (const [name, t] of Object.entries(reply.outputs)) {
        outputs[name] = new ort.Tensor(t.type as 'float32', t.data as Float32Array, t.dims);
      }
      current.resolve(outputs);
    };
    const fail = (why: string) => {
      if (instance.dead) return;
      instance.dead = true;
      this.#lastDeath = why;
      const current = instance.current;
      this.#settled(instance);
      current?.reject(new Error(`The inference thread ${why}.`));
      for (const wake of this.#waiting.splice(0)) wake();
    };
    const onError = (err: Error) => fail(`failed: ${err.message}`);
    const onExit = (code: number) => fail(`exited (code ${code})`);
    instance.worker.on('message', onMessage);
    instance.worker.on('error', onError);
    instance.worker.on('exit', onExit);
    // A shared thread outlives this pool: its listeners go with the session.
    instance.unwatch = () => {
      instance.worker.off('message', onMessage);
      instance.worker.off('error', onError);
      instance.worker.off('exit', onExit);
    };
  }

  #settled(instance: Instance): void {
    instance.current = undefined;
    // Every waiter checks again (a run takes any idle instance, a release waits for its own).
    for (const wake of this.#waiting.splice(0)) wake();
  }
}

function firstMessage(worker: Worker): Promise<Opened> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => {
      worker.off('message', onMessage);
      reject(err);
    };
    const onMessage = (m: Opened) => {
      worker.off('error', onError);
      resolve(m);
    };
    worker.once('message', onMessage);
    worker.once('error', onError);
  });
}
