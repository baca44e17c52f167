/**
 * A model's dynamic batcher and queue policy, as Triton's: requests wait up to
 * `max_queue_delay_microseconds` (or until a preferred or the max batch size
 * is reached) and run as ONE batch when one of the model's instances and a
 * scheduler slot are free; each gets its own rows back. Requests share a batch
 * only when their tensors agree beyond the batch dimension (token ids are
 * right-padded with the model's pad id). It bounds the model's queue
 * (`max_queue_size`, full: 429) and drops requests whose timeout passes
 * before they run (504). Models without `dynamic_batching` run one request at a time.
 */

import type * as ort from 'onnxruntime-node';
import { Tensor } from 'onnxruntime-node';
import { MeshError } from '../../../shared/errors.ts';
import type { InferRequest } from '../../../shared/protocol.ts';
import { instanceCount, type ModelConfig } from './model-config.ts';
import type { Scheduler } from './scheduler.ts';
import { toOrtTensor, type Feed, type TensorValues } from './tensor-data.ts';
import type { PreparedInference } from './tensors.ts';

/** One timed run of a model's session. */
export interface RunResult {
  outputs: ort.InferenceSession.OnnxValueMapType;
  computeMs: number;
}

/** What a batcher runs its batches on: one load of a model (`ModelHandle`), or a stand-in in tests. */
export interface BatchTarget {
  readonly config: ModelConfig;
  run(feeds: ort.InferenceSession.FeedsType, fetches: readonly string[]): Promise<RunResult>;
}

interface BatchResult {
  /** This request's rows of each fetched output. */
  outputs: Record<string, ort.Tensor>;
  queueMs: number;
  computeMs: number;
  /** Rows and requests of the batch this request ran in. */
  batchRows: number;
  batchRequests: number;
}

interface SubmitOptions {
  /** How long the request may wait in the queue, microseconds; 0 or absent: no limit. */
  timeoutUs?: number;
}

interface Pending {
  prepared: PreparedInference;
  key: string;
  enqueuedAt: number;
  /** When the request leaves the queue unrun (`now()` ms); Infinity: never. */
  deadline: number;
  timer: ReturnType<typeof setTimeout> | undefined;
  resolve(result: BatchResult): void;
  reject(err: unknown): void;
}

export interface BatcherOptions {
  /** The model it batches for, and runs its batches on. */
  model: BatchTarget;
  scheduler: Scheduler;
  now?: () => number;
  /** Called once per model execution (metrics). */
  onExecution?: (rows: number, requests: number) => void;
}

/** setTimeout's largest delay; a longer timeout is no timeout in practice. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export class Batcher {
  readonly config: ModelConfig;
  readonly #model: BatchTarget;
  readonly #scheduler: Scheduler;
  readonly #now: () => number;
  readonly #onExecution: ((rows: number, requests: number) => void) | undefined;
  readonly #batching: boolean;
  readonly #delayMs: number;
  /** Rows worth running at once without waiting longer. */
  readonly #targetRows: number;
  /** The model's max_queue_size; 0: no per-model bound. */
  readonly #maxQueue: number;
  /** Batches of this model that may execute at once (instance_group). */
  readonly instances: number;
  #pending: Pending[] = [];
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** Batches started: waiting for a slot or executing. */
  #busy = 0;
  #waitingForSlot = false;
  /** When the last execution of this model ended. */
  #lastRunEnd = -Infinity;

  constructor(options: BatcherOptions) {
    const config = options.model.config;
    this.config = config;
    this.#model = options.model;
    this.#scheduler = options.scheduler;
    this.#now = options.now ?? (() => performance.now());
    this.#onExecution = options.onExecution;
    const db = config.dynamic_batching;
    this.#batching = db !== undefined && config.max_batch_size > 0;
    this.#delayMs = (db?.max_queue_delay_microseconds ?? 0) / 1000;
    const preferred = db?.preferred_batch_size ?? [];
    this.#targetRows = preferred.length > 0 ? Math.max(...preferred) : config.max_batch_size;
    this.#maxQueue = db?.default_queue_policy?.max_queue_size ?? 0;
    this.instances = instanceCount(config);
  }

  /** Requests waiting in this batcher. */
  get pending(): number {
    return this.#pending.length;
  }

  /**
   * Admits a checked request into the model's queue and the backend's, and
   * resolves with its outputs. Rejects with 429 `rate_limited` when either
   * queue is full, and with 504 `backend_timeout` when it is still waiting
   * after `timeoutUs`.
   */
  submit(prepared: PreparedInference, options: SubmitOptions = {}): Promise<BatchResult> {
    try {
      if (this.#maxQueue > 0 && this.#pending.length >= this.#maxQueue) {
        throw new MeshError(
          'rate_limited',
          `Model "${this.config.name}" has ${this.#pending.length} requests queued, its max_queue_size of ${this.#maxQueue}; retry shortly or elsewhere.`,
          { retryAfter: 1 },
        );
      }
      this.#scheduler.admit();
    } catch (err) {
      return Promise.reject(err);
    }
    return new Promise<BatchResult>((resolve, reject) => {
      const enqueuedAt = this.#now();
      const timeoutMs = (options.timeoutUs ?? 0) / 1000;
      const limited = timeoutMs > 0 && timeoutMs <= MAX_TIMER_MS;
      const p: Pending = {
        prepared,
        key: batchKey(prepared),
        enqueuedAt,
        deadline: limited ? enqueuedAt + timeoutMs : Infinity,
        timer: undefined,
        resolve,
        reject,
      };
      if (limited) p.timer = setTimeout(() => this.#expire(p), timeoutMs);
      this.#pending.push(p);
      this.#schedule();
    });
  }

  #schedule(): void {
    if (this.#pending.length === 0 || this.#waitingForSlot || this.#busy >= this.instances) return;
    const oldest = this.#pending[0]!;
    // A run on the main thread holds it, so requests that arrived meanwhile are read only when it ends:
    // the delay counts from the later of arrival and that end, so they can still join.
    const waited = this.#now() - Math.max(oldest.enqueuedAt, this.#lastRunEnd);
    if (!this.#batching || waited >= this.#delayMs || this.#compatibleRows(oldest) >= this.#targetRows) {
      if (this.#timer) clearTimeout(this.#timer);
      this.#timer = undefined;
      void this.#flush();
    } else if (!this.#timer) {
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        this.#schedule();
      }, Math.max(0, this.#delayMs - waited));
    }
  }

  #compatibleRows(first: Pending): number {
    let rows = 0;
    for (const p of this.#pending) if (p.key === first.key) rows += p.prepared.batch;
    return rows;
  }

  /** Removes a request whose timeout passed from the queue, unrun, and rejects it. */
  #expire(p: Pending): void {
    const at = this.#pending.indexOf(p);
    if (at === -1) return;
    this.#pending.splice(at, 1);
    this.#timedOut(p);
    this.#schedule();
  }

  #timedOut(p: Pending): void {
    if (p.timer) clearTimeout(p.timer);
    this.#scheduler.abandoned(1);
    const waited = this.#now() - p.enqueuedAt;
    // 504 backend_timeout (its deadline passed; it never ran), kept apart from 503 not_ready (starting or
    // draining); no retry-after: the caller chose the deadline.
    p.reject(
      new MeshError(
        'backend_timeout',
        `The request waited ${waited.toFixed(1)} ms in model "${this.config.name}"'s queue, past its timeout of ${(p.deadline - p.enqueuedAt).toFixed(1)} ms; it was not run.`,
      ),
    );
  }

  /**
   * Takes the next batch: the oldest request and the compatible ones after it,
   * up to max_batch_size rows. Requests whose timeout has passed (their timer
   * may be late while a run holds the event loop) are rejected, not run.
   */
  #take(): Pending[] {
    const now = this.#now();
    const live: Pending[] = [];
    for (const p of this.#pending) {
      if (p.deadline <= now) this.#timedOut(p);
      else live.push(p);
    }
    this.#pending = live;
    const first = live[0];
    if (!first) return [];
    let group: Pending[];
    if (!this.#batching) {
      group = live.splice(0, 1);
    } else {
      group = [];
      const rest: Pending[] = [];
      let rows = 0;
      for (const p of live) {
        if (p.key === first.key && rows + p.prepared.batch <= this.config.max_batch_size) {
          group.push(p);
          rows += p.prepared.batch;
        } else rest.push(p);
      }
      this.#pending = rest;
    }
    for (const p of group) if (p.timer) clearTimeout(p.timer);
    return group;
  }

  async #flush(): Promise<void> {
    this.#busy++;
    this.#waitingForSlot = true;
    const release = await this.#scheduler.acquire();
    this.#waitingForSlot = false;
    // Requests that arrived while waiting for the slot join this batch.
    const group = this.#take();
    if (group.length === 0) {
      release();
      this.#busy--;
      this.#schedule();
      return;
    }
    const startedAt = this.#now();
    this.#scheduler.started(group.length);
    // Another instance of the model may take the next batch meanwhile.
    this.#schedule();
    try {
      const fetches = [...new Set(group.flatMap((p) => p.prepared.fetches))];
      const feeds = group.length === 1 ? group[0]!.prepared.feeds : mergeFeeds(group.map((p) => p.prepared));
      const ortFeeds: Record<string, ort.Tensor> = {};
      for (const [name, feed] of Object.entries(feeds)) ortFeeds[name] = toOrtTensor(feed);
      const { outputs, computeMs } = await this.#model.run(ortFeeds, fetches);
      const batchRows = group.reduce((n, p) => n + p.prepared.batch, 0);
      this.#onExecution?.(batchRows, group.length);
      let offset = 0;
      for (const p of group) {
        const mine: Record<string, ort.Tensor> = {};
        for (const name of p.prepared.fetches) {
          const out = outputs[name] as ort.Tensor;
          mine[name] = group.length === 1 ? out : sliceRows(out, offset, p.prepared.batch);
        }
        offset += p.prepared.batch;
        p.resolve({ outputs: mine, queueMs: startedAt - p.enqueuedAt, computeMs, batchRows, batchRequests: group.length });
      }
    } catch (err) {
      for (const p of group) p.reject(err);
    } finally {
      this.#lastRunEnd = this.#now();
      this.#scheduler.finished(group.length);
      release();
      this.#busy--;
      this.#schedule();
    }
  }
}

/**
 * How long a request may wait in the model's queue, microseconds (0: no
 * limit), as Triton decides it: the queue policy's
 * `default_timeout_microseconds`, or the request's own `parameters.timeout`
 * when the policy has `allow_timeout_override` and it is shorter (or the
 * default is 0). Throws 400 when `parameters.timeout` is not a non-negative
 * integer, whether or not the model honours it.
 *
 * @example
 * // policy { default_timeout_microseconds: 10_000_000, allow_timeout_override: true }
 * queueTimeoutUs(config, { inputs, parameters: { timeout: 50_000 } }); // 50_000
 */
export function queueTimeoutUs(config: ModelConfig, request: InferRequest): number {
  const asked = request.parameters?.timeout;
  if (asked !== undefined && !(Number.isSafeInteger(asked) && (asked as number) >= 0)) {
    throw new MeshError(
      'invalid_request',
      `"parameters.timeout" must be a non-negative integer of microseconds, got ${JSON.stringify(asked) ?? String(asked)}.`,
    );
  }
  const policy = config.dynamic_batching?.default_queue_policy;
  const fallback = policy?.default_timeout_microseconds ?? 0;
  const override = (asked as number | undefined) ?? 0;
  if (policy?.allow_timeout_override && override > 0 && (fallback === 0 || override < fallback)) return override;
  return fallback;
}

/** Requests with equal keys can share a batch: same inputs, datatypes and non-batch dims (token length aside). */
function batchKey(prepared: PreparedInference): string {
  return Object.entries(prepared.feeds)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([name, feed]) => {
      const dims = name === prepared.tokenInput ? feed.shape.slice(1, -1) : feed.shape.slice(1);
      return `${name}:${feed.datatype}:${dims.join('x')}`;
    })
    .join('|');
}

/** Concatenates the requests' feeds along the batch dimension, padding token ids to the longest. */
export function mergeFeeds(requests: readonly PreparedInference[]): Record<string, Feed> {
  const first = requests[0]!;
  const merged: Record<string, Feed> = {};
  for (const [name, feed] of Object.entries(first.feeds)) {
    const parts = requests.map((r) => r.feeds[name]!);
    const rows = parts.reduce((n, f) => n + f.shape[0]!, 0);
    if (name === first.tokenInput && feed.shape.length >= 2) {
      const seq = Math.max(...parts.map((f) => f.shape[f.shape.length - 1]!));
      const shape = [rows, ...feed.shape.slice(1, -1), seq];
      const out = new BigInt64Array(shape.reduce((a, b) => a * b, 1)).fill(BigInt(first.padId));
      let at = 0;
      for (const part of parts) {
        const src = part.values as BigInt64Array;
        const srcSeq = part.shape[part.shape.length - 1]!;
        for (let i = 0; i < src.length; i += srcSeq) {
          out.set(src.subarray(i, i + srcSeq), at);
          at += seq;
        }
      }
      merged[name] = { datatype: feed.datatype, shape, values: out };
    } else {
      merged[name] = { datatype: feed.datatype, shape: [rows, ...feed.shape.slice(1)], values: concat(parts.map((p) => p.values)) };
    }
  }
  return merged;
}

function concat(parts: TensorValues[]): TensorValues {
  const first = parts[0]!;
  if (Array.isArray(first)) return (parts as string[][]).flat();
  const total = parts.reduce((n, p) => n + p.length, 0);
  const Ctor = first.constructor as new (n: number) => Exclude<TensorValues, string[]>;
  const out = new Ctor(total);
  let at = 0;
  for (const p of parts as Exclude<TensorValues, string[]>[]) {
    (out as { set(a: ArrayLike<number | bigint>, o: number): void }).set(p, at);
    at += p.length;
  }
  return out;
}

/** Rows [start, start + count) of a batched output tensor. */
function sliceRows(tensor: ort.Tensor, start: number, count: number): ort.Tensor {
  const rowSize = tensor.dims.slice(1).reduce((a, b) => a * b, 1);
  const data = tensor.data as TensorValues;
  const part = Array.isArray(data)
    ? data.slice(start * rowSize, (start + count) * rowSize)
    : data.subarray(start * rowSize, (start + count) * rowSize);
  return new Tensor(tensor.type as 'float32', part as Float32Array, [count, ...tensor.dims.slice(1)]);
}
