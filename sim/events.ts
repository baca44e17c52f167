/**
 * The virtual clock and its event queue: a binary min-heap of (time, order)
 * so that events at the same time run in the order they were scheduled, which
 * keeps a run deterministic. Time is in ms from the start of the run.
 */

export type Action = () => void;

export class EventQueue {
  /** The current simulated time, ms. */
  now = 0;
  private times: number[] = [];
  private seqs: number[] = [];
  private actions: Action[] = [];
  private seq = 0;

  get size(): number {
    return this.times.length;
  }

  /** Runs `action` at `time` (not before now). */
  at(time: number, action: Action): void {
    const t = time < this.now ? this.now : time;
    const seq = this.seq++;
    let i = this.times.length;
    this.times.push(t);
    this.seqs.push(seq);
    this.actions.push(action);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (this.times[parent]! < t || (this.times[parent] === t && this.seqs[parent]! < seq)) break;
      this.times[i] = this.times[parent]!;
      this.seqs[i] = this.seqs[parent]!;
      this.actions[i] = this.actions[parent]!;
      i = parent;
    }
    this.times[i] = t;
    this.seqs[i] = seq;
    this.actions[i] = action;
  }

  /** Runs `action` `delay` ms from now. */
  after(delay: number, action: Action): void {
    this.at(this.now + delay, action);
  }

  /** Runs the next event; false when there is none. */
  step(): boolean {
    const n = this.times.length;
    if (n === 0) return false;
    const t = this.times[0]!;
    const action = this.actions[0]!;
    const lastT = this.times.pop()!;
    const lastS = this.seqs.pop()!;
    const lastA = this.actions.pop()!;
    if (n > 1) {
      let i = 0;
      const m = n - 1;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= m) break;
        const r = l + 1;
        let c = l;
        if (r < m && (this.times[r]! < this.times[l]! || (this.times[r] === this.times[l] && this.seqs[r]! < this.seqs[l]!))) c = r;
        if (lastT < this.times[c]! || (lastT === this.times[c] && lastS < this.seqs[c]!)) break;
        this.times[i] = this.times[c]!;
        this.seqs[i] = this.seqs[c]!;
        this.actions[i] = this.actions[c]!;
        i = c;
      }
      this.times[i] = lastT;
      this.seqs[i] = lastS;
      this.actions[i] = lastA;
    }
    this.now = t;
    action();
    return true;
  }

  /** Runs events until none is left or the next is after `until`. */
  runUntil(until: number): void {
    while (this.times.length > 0 && this.times[0]! <= until) this.step();
    if (this.now < until) this.now = until;
  }
}
