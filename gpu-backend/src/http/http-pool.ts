/**
 * The main thread's side of the HTTP workers (HTTP_THREADS, Triton's
 * `--http-thread-count`): n worker threads (http-worker.ts) share the
 * backend's port (SO_REUSEPORT) and do in parallel the per-request work that
 * needs no shared state (HTTP, the token's signature, JSON, SHA-256, the
 * attestation), which on one thread caps a backend however fast its GPU; the
 * main thread keeps what must be in one place (serving/executor.ts). The pool
 * starts the workers, answers their messages, restarts one that dies, and
 * drains them on shutdown.
 */

import type { AddressInfo } from 'node:net';
import { Worker } from 'node:worker_threads';
import { MeshError, errorBody, type MeshErrorCode } from '../../../shared/errors.ts';
import type { BackendConfig } from '../config.ts';
import { toWire, type Admission, type InferJob, type InferencePort, type WireError, type WorkerAnswer } from '../serving/executor.ts';
import type { StepResult, StepTensor } from '../serving/pipeline-steps.ts';
import type { Logger } from '../log.ts';
import type { RequestTiming } from '../metrics.ts';

/** Below this many cores, `auto` serves HTTP on the main thread alone: workers would take CPU from the model. */
const HTTP_THREADS_MIN_CORES = 4;
/** The most HTTP workers `auto` starts (Triton's default `--http-thread-count`). */
const HTTP_THREADS_AUTO_MAX = 8;

/** HTTP_THREADS resolved for a host of `cores` cores: 0 below 4 cores, else half the cores, at most 8. */
export function httpThreadsFor(setting: number | 'auto', cores: number): number {
  if (setting !== 'auto') return setting;
  if (cores < HTTP_THREADS_MIN_CORES) return 0;
  return Math.min(HTTP_THREADS_AUTO_MAX, Math.floor(cores / 2));
}

/** workerData of an HTTP worker. */
export interface HttpWorkerInit {
  config: BackendConfig;
  /** The port to share; 0 for the first worker when PORT is 0. */
  port: number;
}

export interface WireRequest {
  method: string;
  url: string;
  headers: [string, string][];
  body: ArrayBuffer | null;
}

export interface WireResponse {
  status: number;
  headers: [string, string][];
  body: ArrayBuffer;
}

/** Worker → pool (posted in arrays: `Outbox`). */
export type WorkerMessage =
  | { t: 'listening'; address: AddressInfo }
  | { t: 'listen-failed'; message: string }
  | { t: 'run'; id: number; job: InferJob }
  | { t: 'fetch'; id: number; request: WireRequest }
  /** A step of a pipeline request the worker runs (its input transferred). */
  | { t: 'step'; id: number; name: string; input: StepTensor }
  /** The worker is done with the pipeline request admitted as run `id` (`serviceMs` when it succeeded). */
  | { t: 'release'; id: number; serviceMs?: number }
  | { t: 'succeeded'; name: string; version: string; timing: RequestTiming }
  | { t: 'failed'; name: string; code: MeshErrorCode }
  | { t: 'rejected'; code: MeshErrorCode }
  | { t: 'drained'; idle: boolean };

/** Pool → worker (posted in arrays: `Outbox`). */
export type PoolMessage =
  | { t: 'ran'; id: number; answer: WorkerAnswer }
  | { t: 'ran'; id: number; error: WireError }
  | { t: 'fetched'; id: number; response: WireResponse }
  | { t: 'stepped'; id: number; output: StepResult }
  | { t: 'stepped'; id: number; error: WireError }
  | { t: 'drain'; timeoutMs: number };

/**
 * An answer ready to post: each typed array is copied to a buffer of its own
 * and transferred, a memcpy instead of a structured clone of numbers. (A
 * request's rows are a view on the whole batch's buffer, which a clone would
 * copy whole.)
 */
function wireAnswer(answer: WorkerAnswer): { wire: WorkerAnswer; transfer: ArrayBuffer[] } {
  if (!('result' in answer)) return { wire: answer, transfer: [] };
  const transfer: ArrayBuffer[] = [];
  const outputs = answer.result.outputs.map((output) => {
    if (!ArrayBuffer.isView(output.data)) return output;
    const data = output.data.slice();
    transfer.push(data.buffer as ArrayBuffer);
    return { ...output, data };
  });
  return { wire: { ...answer, result: { ...answer.result, outputs } }, transfer };
}

/**
 * Messages to one thread (a worker, or the pool), posted together: everything pushed in one turn of
 * the event loop leaves as one array (one structured clone, one wake-up of
 * the other thread) at `setImmediate`. A batch's answers all resolve in the
 * same turn, so a worker gets them in one message instead of one each.
 */
export class Outbox<T> {
  readonly #post: (messages: T[], transfer: ArrayBuffer[]) => void;
  #messages: T[] = [];
  #transfer: ArrayBuffer[] = [];
  #scheduled = false;

  constructor(post: (messages: T[], transfer: ArrayBuffer[]) => void) {
    this.#post = post;
  }

  push(message: T, transfer: readonly ArrayBuffer[] = []): void {
    this.#messages.push(message);
    this.#transfer.push(...transfer);
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(() => this.flush());
  }

  /** Posts what is waiting now. */
  flush(): void {
    this.#scheduled = false;
    if (this.#messages.length === 0) return;
    const messages = this.#messages;
    const transfer = this.#transfer;
    this.#messages = [];
    this.#transfer = [];
    this.#post(messages, transfer);
  }
}

const WORKER_URL = new URL('./http-worker.ts', import.meta.url);
const RESTART_DELAY_MS = 1000;

export interface HttpPoolOptions {
  count: number;
  config: BackendConfig;
  /** The main thread's half of every inference. */
  executor: Omit<InferencePort, 'run'> & {
    runForWorker(job: InferJob): Promise<WorkerAnswer | Admission>;
    step(name: string, input: StepTensor): Promise<StepResult>;
  };
  /** The main thread's app: every route but inference is forwarded to it. */
  app: { fetch: (request: Request) => Response | Promise<Response> };
  log: Logger;
}

export class HttpPool {
  readonly #options: HttpPoolOptions;
  /** Each live worker, with the outbox of messages to it. */
  readonly #workers = new Map<Worker, Outbox<PoolMessage>>();
  /** Pipeline requests each worker runs, admitted here until it releases them (or dies). */
  readonly #admissions = new Map<Worker, Map<number, (serviceMs?: number) => void>>();
  #address: AddressInfo | undefined;
  #stopping = false;

  private constructor(options: HttpPoolOptions) {
    this.#options = options;
  }

  /** Starts `count` workers on the config's host and port, one after the other (the first picks the port when PORT is 0); resolves once all listen. */
  static async start(options: HttpPoolOptions): Promise<HttpPool> {
    if (!Number.isInteger(options.count) || options.count < 1) throw new RangeError('HttpPool needs at least one worker.');
    const pool = new HttpPool(options);
    try {
      for (let i = 0; i < options.count; i++) await pool.#spawn();
    } catch (err) {
      await pool.terminate();
      throw err;
    }
    return pool;
  }

  /** Where the workers listen. */
  get address(): AddressInfo {
    return this.#address!;
  }

  /** The live workers (diagnostics and tests: ending one shows the restart). */
  get workers(): Worker[] {
    return [...this.#workers.keys()];
  }

  /**
   * Stops every worker listening, then waits (at most `timeoutMs`) for the
   * requests each is handling. Resolves true when all finished in time.
   */
  async drain(timeoutMs: number): Promise<boolean> {
    this.#stopping = true;
    const results = await Promise.all(
      [...this.#workers].map(
        ([worker, outbox]) =>
          new Promise<boolean>((resolve) => {
            const onMessage = (messages: WorkerMessage[]) => {
              const drained = messages.find((m) => m.t === 'drained');
              if (!drained) return;
              worker.off('message', onMessage);
              worker.off('exit', onExit);
              resolve(drained.idle);
            };
            const onExit = () => resolve(true);
            worker.on('message', onMessage);
            worker.once('exit', onExit);
            outbox.push({ t: 'drain', timeoutMs });
          }),
      ),
    );
    return results.every(Boolean);
  }

  /** Ends every worker now. */
  async terminate(): Promise<void> {
    this.#stopping = true;
    await Promise.all([...this.#workers.keys()].map((worker) => worker.terminate()));
    this.#workers.clear();
  }

  /** Starts one worker; resolves once it listens. */
  async #spawn(): Promise<void> {
    const { config } = this.#options;
    const workerData: HttpWorkerInit = { config, port: this.#address?.port ?? config.port };
    const worker = new Worker(WORKER_URL, { workerData });
    const outbox = new Outbox<PoolMessage>((messages, transfer) => worker.postMessage(messages, transfer));
    this.#workers.set(worker, outbox);
    worker.on('error', (err) => this.#options.log.error('an HTTP worker failed', err));
    worker.on('message', (messages: WorkerMessage[]) => {
      for (const message of messages) this.#handle(worker, outbox, message);
    });
    const listening = new Promise<void>((resolve, reject) => {
      const onMessage = (messages: WorkerMessage[]) => {
        for (const message of messages) {
          if (message.t === 'listening') {
            this.#address ??= message.address;
            done();
            resolve();
          } else if (message.t === 'listen-failed') {
            done();
            reject(new Error(`An HTTP worker could not listen on ${config.host}:${workerData.port}: ${message.message}`));
          }
        }
      };
      const onExit = (code: number) => {
        done();
        reject(new Error(`An HTTP worker exited (code ${code}) before it listened.`));
      };
      const done = () => {
        worker.off('message', onMessage);
        worker.off('exit', onExit);
      };
      worker.on('message', onMessage);
      worker.on('exit', onExit);
    });
    try {
      await listening;
    } catch (err) {
      // Never listened: not one of the workers (a drain would wait for it forever).
      this.#workers.delete(worker);
      await worker.terminate();
      throw err;
    }
    worker.on('exit', (code) => {
      this.#workers.delete(worker);
      // Its pipeline requests will never be released by it: an unload must not wait for them.
      for (const release of this.#admissions.get(worker)?.values() ?? []) release();
      this.#admissions.delete(worker);
      if (this.#stopping) return;
      this.#options.log.warn(`an HTTP worker exited (code ${code}); starting another in ${RESTART_DELAY_MS / 1000} s`);
      this.#restartLater();
    });
  }

  /** Starts a worker in place of one that died, trying again every RESTART_DELAY_MS until one listens. */
  #restartLater(): void {
    setTimeout(() => {
      if (this.#stopping) return;
      this.#spawn().catch((err: unknown) => {
        this.#options.log.error(`restarting an HTTP worker failed; trying again in ${RESTART_DELAY_MS / 1000} s`, err);
        this.#restartLater();
      });
    }, RESTART_DELAY_MS).unref();
  }

  #handle(worker: Worker, outbox: Outbox<PoolMessage>, message: WorkerMessage): void {
    const { executor } = this.#options;
    switch (message.t) {
      case 'run':
        executor.runForWorker(message.job).then(
          (answer) => {
            if ('release' in answer) {
              let admitted = this.#admissions.get(worker);
              if (!admitted) this.#admissions.set(worker, (admitted = new Map()));
              admitted.set(message.id, answer.release);
              outbox.push({ t: 'ran', id: message.id, answer: { version: answer.version, admitted: true } });
              return;
            }
            const { wire, transfer } = wireAnswer(answer);
            outbox.push({ t: 'ran', id: message.id, answer: wire }, transfer);
          },
          (err: unknown) => {
            const error = toWire(err);
            if (error.code === 'internal') this.#options.log.error(`inference of ${message.job.name} failed`, err);
            outbox.push({ t: 'ran', id: message.id, error });
          },
        );
        return;
      case 'fetch':
        void this.#forward(outbox, message.id, message.request);
        return;
      case 'step':
        executor.step(message.name, message.input).then(
          (output) => outbox.push({ t: 'stepped', id: message.id, output }, [output.data.buffer as ArrayBuffer]),
          (err: unknown) => {
            const error = toWire(err);
            if (error.code === 'internal') this.#options.log.error(`step ${message.name} of a pipeline failed`, err);
            outbox.push({ t: 'stepped', id: message.id, error });
          },
        );
        return;
      case 'release': {
        const admitted = this.#admissions.get(worker);
        admitted?.get(message.id)?.(message.serviceMs);
        admitted?.delete(message.id);
        return;
      }
      case 'succeeded':
        executor.succeeded(message.name, message.version, message.timing);
        return;
      case 'failed':
        executor.failed(message.name, message.code);
        return;
      case 'rejected':
        executor.tokenRejected(message.code);
        return;
      default:
        return;
    }
  }

  /** Answers a forwarded request with the main thread's app; its body is transferred back. */
  async #forward(outbox: Outbox<PoolMessage>, id: number, wire: WireRequest): Promise<void> {
    let response: WireResponse;
    try {
      const request = new Request(wire.url, { method: wire.method, headers: wire.headers, ...(wire.body ? { body: wire.body } : {}) });
      const answer = await this.#options.app.fetch(request);
      response = { status: answer.status, headers: [...answer.headers], body: await answer.arrayBuffer() };
    } catch (err) {
      this.#options.log.error(`forwarding ${wire.method} ${wire.url} to the main thread failed`, err);
      const body = await new Response(JSON.stringify(errorBody(new MeshError('internal', 'The backend failed to handle this request.')))).arrayBuffer();
      response = { status: 500, headers: [['content-type', 'application/json; charset=utf-8']], body };
    }
    outbox.push({ t: 'fetched', id, response }, [response.body]);
  }
}
