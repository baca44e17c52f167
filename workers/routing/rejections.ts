/**
 * Rejection baseline, per isolate: how often each backend answers a request
 * the edge accepted with its own 4xx verdict, against how often the other
 * backends do. The edge checks every request before dispatch, so an honest
 * backend refuses about as often as its peers; one that refuses far more is
 * turning work away (or lying about the requests), and its 4xx then counts as
 * a failure (next candidate, ejection) instead of reaching the consumer.
 * Windows are the last `window` answers per backend (bounded memory, no clock).
 */

export interface RejectionOptions {
  /** Answers remembered per backend (default 20). */
  window?: number;
  /** Answers a backend must have given before it can be suspected, and the others together before there is a baseline (default 10). */
  minSamples?: number;
  /** How far above the others' share a backend's share may be (default 0.3). */
  margin?: number;
  /** Backends remembered at most; the oldest is forgotten beyond (default 10 000). */
  maxBackends?: number;
}

export const REJECTION_DEFAULTS = { window: 20, minSamples: 10, margin: 0.3, maxBackends: 10_000 } as const;

interface Window {
  /** 1 = rejected, 0 = answered; a ring of `window` slots. */
  ring: Uint8Array;
  next: number;
  size: number;
  rejected: number;
}

export class RejectionBaseline {
  readonly #window: number;
  readonly #minSamples: number;
  readonly #margin: number;
  readonly #maxBackends: number;
  readonly #backends = new Map<string, Window>();
  /** Sums over every backend's window. */
  #samples = 0;
  #rejected = 0;

  constructor(options: RejectionOptions = {}) {
    this.#window = Math.max(1, options.window ?? REJECTION_DEFAULTS.window);
    this.#minSamples = options.minSamples ?? REJECTION_DEFAULTS.minSamples;
    this.#margin = options.margin ?? REJECTION_DEFAULTS.margin;
    this.#maxBackends = options.maxBackends ?? REJECTION_DEFAULTS.maxBackends;
  }

  /** Records one answer of `backendId`: its 4xx verdict (`rejected`) or a result. */
  record(backendId: string, rejected: boolean): void {
    let w = this.#backends.get(backendId);
    if (!w) {
      if (this.#backends.size >= this.#maxBackends) this.#forget(this.#backends.keys().next().value!);
      w = { ring: new Uint8Array(this.#window), next: 0, size: 0, rejected: 0 };
      this.#backends.set(backendId, w);
    }
    if (w.size === this.#window) {
      const old = w.ring[w.next]!;
      w.rejected -= old;
      this.#rejected -= old;
      this.#samples--;
    } else {
      w.size++;
    }
    const bit = rejected ? 1 : 0;
    w.ring[w.next] = bit;
    w.next = (w.next + 1) % this.#window;
    w.rejected += bit;
    this.#rejected += bit;
    this.#samples++;
  }

  /** True when `backendId` refuses far more than the other backends do (and both have enough answers to tell). */
  suspect(backendId: string): boolean {
    const w = this.#backends.get(backendId);
    if (!w || w.size < this.#minSamples) return false;
    const otherSamples = this.#samples - w.size;
    if (otherSamples < this.#minSamples) return false;
    const baseline = (this.#rejected - w.rejected) / otherSamples;
    return w.rejected / w.size > baseline + this.#margin;
  }

  #forget(backendId: string): void {
    const w = this.#backends.get(backendId);
    if (!w) return;
    this.#samples -= w.size;
    this.#rejected -= w.rejected;
    this.#backends.delete(backendId);
  }
}
