/**
 * One simulated GPU backend: slots serving a FIFO queue, models warm or
 * loading (a request for a cold model waits for its load: a cold start),
 * service times drawn per request (lognormal, some stalled), request
 * failures, and crashes on the world's fault schedule, either refusing
 * connections or hanging (accepting and never answering). Requests of one
 * model queued together run as one batch in one slot. It heartbeats the
 * directory what the real backend would: ready, models, load.
 */

import type { BackendEntry } from '../workers/directory/backend.ts';
import type { HeartbeatModel } from '../shared/heartbeat.ts';
import type { SimConfig } from './config.ts';
import type { EventQueue } from './events.ts';
import type { Random } from './random.ts';
import type { BackendSpec } from './world.ts';

export type BackendState = 'up' | 'refusing' | 'hanging';

/** Most requests one execution batches (the demo models' max_batch_size). */
export const MAX_BATCH = 8;
/** Each request after the first adds this share of one request's service time to a batch's. */
export const BATCH_COST = 0.15;

export type JobOutcome =
  | { kind: 'ok'; /** Queue + load + compute, as the backend reports it (`server-timing: backend;dur`). */ backendMs: number; cold: boolean }
  | { kind: 'failed' }
  /** It will never answer (hung): the caller's timeout decides. */
  | { kind: 'hung' };

export interface Job {
  model: number;
  /** Set by the caller when it no longer wants the answer: a queued job is then dropped unserved. */
  cancelled: boolean;
  arrivedAt: number;
  cold: boolean;
  done: (outcome: JobOutcome) => void;
}

/** What a backend ran of one model: requests, batches, and the requests' summed wait in its queue, ms. */
export interface Execution {
  jobs: number;
  batches: number;
  waitMs: number;
}

/** A fresh job for `model`, reporting to `done`. */
export function newJob(model: number, done: Job['done']): Job {
  return { model, cancelled: false, arrivedAt: 0, cold: false, done };
}

export class SimBackend {
  readonly spec: BackendSpec;
  state: BackendState = 'up';
  /** Whether each model is warm, and when a load in progress ends (NaN: none). */
  readonly warm: boolean[];
  readonly loadingUntil: Float64Array;
  busy = 0;
  /** Slot time spent computing, ms (what the provider is paid for). */
  busyMs = 0;
  /** Per model: requests started, the batches they ran in, and their summed wait in the queue, ms (arrival or load to start). */
  readonly executed: Execution[];
  /** Per model: its queued jobs, oldest first, from `heads[model]` on. */
  private queues: Job[][];
  private heads: number[];
  private readonly waiting: Job[][];
  private readonly inService = new Set<Job[]>();
  private readonly config: SimConfig;
  private readonly events: EventQueue;
  private readonly random: Random;
  private readonly failure: number;

  constructor(spec: BackendSpec, config: SimConfig, events: EventQueue, random: Random) {
    this.spec = spec;
    this.config = config;
    this.events = events;
    this.random = random;
    this.warm = [...spec.warm];
    this.loadingUntil = new Float64Array(config.models.length).fill(Number.NaN);
    this.waiting = config.models.map(() => []);
    this.queues = config.models.map(() => []);
    this.heads = config.models.map(() => 0);
    this.executed = config.models.map(() => ({ jobs: 0, batches: 0, waitMs: 0 }));
    this.failure = config.faults.requestFailure * (spec.kind === 'cloud' ? 0.1 : 1);
  }

  get queued(): number {
    let n = 0;
    for (let m = 0; m < this.queues.length; m++) n += this.queues[m]!.length - this.heads[m]!;
    return n;
  }

  /** A request arrives: queued, or waiting for its model's load; refused (`failed` at once) or hung when crashed. */
  arrive(job: Job): void {
    if (this.state !== 'up') {
      job.done({ kind: this.state === 'refusing' ? 'failed' : 'hung' });
      return;
    }
    job.arrivedAt = this.events.now;
    if (this.warm[job.model]) {
      this.queues[job.model]!.push(job);
      this.pump();
    } else {
      job.cold = true;
      this.waiting[job.model]!.push(job);
      this.load(job.model);
    }
  }

  /** Starts loading a model (warm placement's `load`, or a cold request). */
  load(model: number): void {
    if (this.warm[model] || !Number.isNaN(this.loadingUntil[model]!) || this.state !== 'up') return;
    const spec = this.config.models[model]!;
    const until = this.events.now + this.random.lognormal(spec.loadMs, 0.3);
    this.loadingUntil[model] = until;
    this.events.at(until, () => {
      if (this.loadingUntil[model] !== until) return; // crashed meanwhile
      this.loadingUntil[model] = Number.NaN;
      this.warm[model] = true;
      for (const job of this.waiting[model]!.splice(0)) this.queues[model]!.push(job);
      this.pump();
    });
  }

  /** Unloads a model (warm placement's `unload`); the backend keeps at least one. */
  unload(model: number): void {
    if (this.warm.filter(Boolean).length > 1) this.warm[model] = false;
  }

  /** Crashes now: refusing connections or hanging, for `ms`; work in hand is lost, loaded models too. */
  crash(mode: 'refusing' | 'hanging', ms: number): void {
    if (this.state !== 'up') return;
    this.state = mode;
    const lost = [...[...this.inService].flat(), ...this.queues.flatMap((q, m) => q.slice(this.heads[m])), ...this.waiting.flat()];
    this.inService.clear();
    this.queues = this.queues.map(() => []);
    this.heads.fill(0);
    for (const w of this.waiting) w.length = 0;
    this.busy = 0;
    this.loadingUntil.fill(Number.NaN);
    // A refused connection is reset at once; a hung one is never answered (the caller's timeout).
    for (const job of lost) job.done({ kind: mode === 'refusing' ? 'failed' : 'hung' });
    this.events.after(ms, () => {
      this.state = 'up';
      this.warm.splice(0, this.warm.length, ...this.spec.warm);
    });
  }

  /** Its heartbeat, as the directory stores it. */
  entry(now: number, ttlMs: number): BackendEntry {
    const models: HeartbeatModel[] = [];
    const available: string[] = [];
    this.config.models.forEach((m, i) => {
      const loading = !Number.isNaN(this.loadingUntil[i]!);
      if (this.warm[i] || loading) {
        models.push({ name: m.name, version: '1', warm: this.warm[i]!, maxBatchSize: 8, p50Ms: m.serviceMs * this.spec.speed });
      } else available.push(m.name);
    });
    return {
      id: this.spec.id,
      provider: this.spec.provider,
      region: this.spec.region,
      url: `sim://${this.spec.id}`,
      lat: this.spec.lat,
      lon: this.spec.lon,
      executionProvider: 'cuda',
      ready: this.state !== 'refusing',
      models,
      available,
      capacity: { slots: this.spec.slots, inFlight: this.busy, queued: this.queued },
      // Honest providers, in the steady state: proof of location has verified every claim.
      location: { state: 'verified' },
      lastSeen: now,
      expiresAt: now + ttlMs,
    };
  }

  /**
   * Fills free slots with batches, as the real backend's batcher and
   * scheduler do: the model whose queued request is oldest goes next, with up
   * to MAX_BATCH of its queued requests in one execution.
   */
  private pump(): void {
    while (this.busy < this.spec.slots) {
      let model = -1;
      let oldest = Infinity;
      for (let m = 0; m < this.queues.length; m++) {
        const q = this.queues[m]!;
        while (this.heads[m]! < q.length && q[this.heads[m]!]!.cancelled) this.heads[m]!++;
        const head = q[this.heads[m]!];
        if (head && head.arrivedAt < oldest) {
          oldest = head.arrivedAt;
          model = m;
        }
      }
      if (model < 0) return;
      const q = this.queues[model]!;
      const batch: Job[] = [];
      while (batch.length < MAX_BATCH && this.heads[model]! < q.length) {
        const job = q[this.heads[model]!++]!;
        if (!job.cancelled) batch.push(job);
      }
      // Drop taken jobs (each holds its request's whole context): at once when none is left, else once they are half the array.
      if (this.heads[model] === q.length) {
        q.length = 0;
        this.heads[model] = 0;
      } else if (this.heads[model]! > 16 && this.heads[model]! * 2 > q.length) {
        this.queues[model] = q.slice(this.heads[model]);
        this.heads[model] = 0;
      }
      this.start(model, batch);
    }
  }

  private start(model: number, batch: Job[]): void {
    const spec = this.config.models[model]!;
    let ms = this.random.lognormal(spec.serviceMs * this.spec.speed, spec.serviceSigma) * (1 + BATCH_COST * (batch.length - 1));
    if (this.random.unit() < this.config.faults.stallShare) ms *= this.config.faults.stallFactor;
    const executed = this.executed[model]!;
    executed.jobs += batch.length;
    executed.batches++;
    for (const job of batch) executed.waitMs += this.events.now - job.arrivedAt;
    this.busy++;
    this.busyMs += ms;
    this.inService.add(batch);
    this.events.after(ms, () => {
      if (!this.inService.delete(batch)) return; // lost in a crash
      this.busy--;
      const now = this.events.now;
      for (const job of batch) {
        job.done(this.random.unit() < this.failure ? { kind: 'failed' } : { kind: 'ok', backendMs: now - job.arrivedAt, cold: job.cold });
      }
      this.pump();
    });
  }
}
