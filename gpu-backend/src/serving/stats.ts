/**
 * A rolling median over the last N samples: the per-model service time the
 * backend reports in heartbeats (`p50Ms`), which the edge's routing adds to
 * its estimate of the time to an answer.
 */

export class RollingMedian {
  readonly #samples: Float64Array;
  #next = 0;
  #count = 0;

  constructor(window = 128) {
    if (!Number.isInteger(window) || window < 1) throw new RangeError('RollingMedian window must be a positive integer.');
    this.#samples = new Float64Array(window);
  }

  add(value: number): void {
    if (!Number.isFinite(value) || value < 0) return;
    this.#samples[this.#next] = value;
    this.#next = (this.#next + 1) % this.#samples.length;
    this.#count = Math.min(this.#count + 1, this.#samples.length);
  }

  get count(): number {
    return this.#count;
  }

  /** Median of the window (mean of the two middle samples when even); 0 when empty. */
  get median(): number {
    if (this.#count === 0) return 0;
    const sorted = this.#samples.slice(0, this.#count).sort();
    const mid = this.#count >> 1;
    return this.#count % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  }
}
