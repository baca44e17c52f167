/**
 * Admission and execution slots, shared by every model on this backend (one
 * accelerator). A request is admitted into a bounded queue (full: 429 with
 * `retry-after`, the backpressure the edge routes around), then runs when its
 * batch (formed by batcher.ts) gets one of `slots` execution slots, or leaves
 * the queue unrun when its timeout passes. This bound is the backstop over
 * every model; each model's own `max_queue_size` is checked by its batcher
 * first. The counts are what heartbeats report as capacity
 * `{ slots, inFlight, queued }`.
 */

import { MeshError } from '../../../shared/errors.ts';
import type { Capacity } from '../../../shared/heartbeat.ts';

export class Scheduler {
  readonly slots: number;
  readonly maxQueue: number;
  #busy = 0;
  readonly #waiting: (() => void)[] = [];
  /** Requests admitted and not yet running. */
  #queued = 0;
  /** Requests whose batch is running. */
  #inFlight = 0;

  constructor(options: { slots: number; maxQueue: number }) {
    if (!Number.isInteger(options.slots) || options.slots < 1) throw new RangeError('Scheduler slots must be a positive integer.');
    this.slots = options.slots;
    this.maxQueue = Math.max(1, options.maxQueue);
  }

  get capacity(): Capacity {
    return { slots: this.slots, inFlight: this.#inFlight, queued: this.#queued };
  }

  /** Admits one request into the queue, or throws 429 `rate_limited` when the queue is full. */
  admit(): void {
    if (this.#queued >= this.maxQueue) {
      throw new MeshError('rate_limited', `This backend's queue is full (${this.maxQueue} requests waiting); retry shortly or elsewhere.`, {
        retryAfter: 1,
      });
    }
    this.#queued++;
  }

  /** Waits for a free execution slot; call the returned function to give it back. */
  async acquire(): Promise<() => void> {
    if (this.#busy >= this.slots) await new Promise<void>((resolve) => this.#waiting.push(resolve));
    else this.#busy++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.#waiting.shift();
      // Hand the slot straight to the next waiter, or free it.
      if (next) next();
      else this.#busy--;
    };
  }

  /** `requests` admitted requests start running (queued → in flight). */
  started(requests: number): void {
    this.#queued = Math.max(0, this.#queued - requests);
    this.#inFlight += requests;
  }

  /** `requests` admitted requests left the queue without running (timed out). */
  abandoned(requests: number): void {
    this.#queued = Math.max(0, this.#queued - requests);
  }

  /** `requests` running requests are done. */
  finished(requests: number): void {
    this.#inFlight = Math.max(0, this.#inFlight - requests);
  }
}
