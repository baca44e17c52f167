/**
 * One worker thread for every session of an execution provider whose device
 * may be used from one thread only: WebGPU. onnxruntime-node keeps one Dawn
 * device per process, and on an H200 two threads that opened or ran WebGPU
 * sessions at once crashed the process (SIGSEGV; docs/benchmarks.md,
 * "bench:gpu"). Sessions opened here open one after another and run one at a
 * time on this thread, still off the main thread; each is a `SessionPool` of
 * one instance. The thread starts with the first session and ends with the
 * last one released.
 */

import { Worker } from 'node:worker_threads';
import type * as ort from 'onnxruntime-node';
import { SessionPool, WORKER_URL, type Opened, type OpenRequest } from './session-pool.ts';

export class SharedSessionThread {
  #worker: Worker | undefined;
  /** Sessions open on the thread (its end waits for none to be left). */
  #sessions = 0;
  #nextKey = 1;
  /** Opens and ends, in order: two opens never overlap, and a thread never ends under a new open. */
  #queue: Promise<unknown> = Promise.resolve();
  #exit: string | undefined;

  /** Opens `modelPath` on the thread (starting it if needed) once every earlier open finished. */
  open(modelPath: string, options: ort.InferenceSession.SessionOptions): Promise<SessionPool> {
    const opening = this.#queue.then(() => this.#open(modelPath, options));
    this.#queue = opening.catch(() => undefined);
    return opening;
  }

  /** The thread, while a session is open on it (tests). */
  get threadId(): number | undefined {
    return this.#worker?.threadId;
  }

  /** Listeners on the thread: each open session's pool holds three (tests: a released one leaves none behind). */
  get listeners(): number {
    const w = this.#worker;
    return w ? w.listenerCount('message') + w.listenerCount('error') + w.listenerCount('exit') : 0;
  }

  async #open(modelPath: string, options: ort.InferenceSession.SessionOptions): Promise<SessionPool> {
    const worker = this.#thread();
    const key = this.#nextKey++;
    const opened = await new Promise<Opened>((resolve, reject) => {
      const onMessage = (m: Opened) => {
        if ((m.kind !== 'open' && m.kind !== 'open-failed') || m.key !== key) return;
        done();
        resolve(m);
      };
      const onExit = () => {
        done();
        reject(new Error(`The shared inference thread ${this.#exit ?? 'exited'} while opening ${modelPath}.`));
      };
      const done = () => {
        worker.off('message', onMessage);
        worker.off('exit', onExit);
      };
      worker.on('message', onMessage);
      worker.on('exit', onExit);
      worker.postMessage({ open: { key, modelPath, options } } satisfies OpenRequest);
    });
    if (opened.kind === 'open-failed') {
      if (this.#sessions === 0) await this.#stop(worker);
      throw new Error(opened.message);
    }
    this.#sessions++;
    return SessionPool.onSharedThread(worker, key, opened, () => this.#released(worker));
  }

  #thread(): Worker {
    if (this.#worker) return this.#worker;
    const worker = new Worker(WORKER_URL);
    // Every model's pool listens to the one thread.
    worker.setMaxListeners(0);
    worker.on('error', (err) => (this.#exit = `failed: ${err.message}`));
    worker.once('exit', (code) => {
      this.#exit ??= `exited (code ${code})`;
      if (this.#worker === worker) {
        this.#worker = undefined;
        this.#sessions = 0;
      }
    });
    this.#exit = undefined;
    this.#worker = worker;
    return worker;
  }

  /** A session was released: the thread ends when none is left. */
  #released(worker: Worker): Promise<unknown> {
    const ending = this.#queue.then(async () => {
      if (this.#worker !== worker) return;
      this.#sessions = Math.max(0, this.#sessions - 1);
      if (this.#sessions === 0) await this.#stop(worker);
    });
    this.#queue = ending.catch(() => undefined);
    return ending;
  }

  async #stop(worker: Worker): Promise<void> {
    if (this.#worker === worker) this.#worker = undefined;
    await worker.terminate();
  }
}
