/**
 * The PoP's service book: the service times that all the isolates of one PoP
 * measured, per (backend, model), shared through a store they all reach (the
 * Cache API, one per data centre: inference/service-exchange.ts; a map per
 * PoP in the simulator). A busy PoP runs many isolates, each seeing a sliver
 * of its traffic: alone, an isolate knows a backend the PoP calls fifty
 * times a second by its own few answers, and its estimate drifts back to
 * the heartbeat's p50 between them (docs/benchmarks.md, "One service book
 * per PoP").
 *
 * Each isolate keeps what it measured since its last exchange (a
 * `ServiceOutbox`); at most every POP_BOOK_EXCHANGE_MS it reads the PoP's
 * book, adds its samples (`PopBook.add`), writes the book back and takes
 * the PoP's mean of every entry that changed since its last exchange as its
 * own estimate (`PopBook.applyTo`); its own samples after that weigh in as
 * before. An entry is a
 * forward-decayed sum and count (time constant POP_BOOK_DECAY_MS, the
 * scoring EWMA's), so adding is order-free: two isolates' seconds add up
 * whatever order they arrive in. Two exchanges that overlap lose one's
 * samples from the PoP's book (the store has no compare-and-swap), never
 * from the isolate's own. Pure: every method takes `now`.
 */

import { SERVICE_DECAY_MS } from './isolate.ts';
import type { LatencyBook } from './latency.ts';

/** An isolate exchanges with its PoP's book at most this often, ms. */
export const POP_BOOK_EXCHANGE_MS = 1_000;
/** Time constant of an entry's decay, ms: the scoring EWMA's. */
export const POP_BOOK_DECAY_MS = SERVICE_DECAY_MS;
/** The most entries a PoP's book (and an isolate's outbox) holds; the least recently measured go first. */
export const MAX_POP_BOOK_ENTRIES = 1_024;
/** An entry whose decayed count falls below this is dropped (about nine time constants after its last sample). */
const MIN_WEIGHT = 1e-4;
/** The longest backend id or model name an entry may hold. */
const MAX_NAME = 128;
/** The largest serialized book read back, characters. */
export const MAX_POP_BOOK_CHARS = 256 * 1024;

/** What one isolate measured of one (backend, model) since its last exchange. */
export interface OutboxEntry {
  backend: string;
  model: string;
  /** Sum of the service times, ms. */
  sumMs: number;
  count: number;
  /** The newest sample's time, ms. */
  lastAt: number;
}

/** The samples an isolate has not shared yet, per (model, backend), bounded. */
export class ServiceOutbox {
  readonly #rows = new Map<string, Map<string, OutboxEntry>>();
  readonly #max: number;
  #size = 0;

  constructor(options: { maxEntries?: number } = {}) {
    this.#max = options.maxEntries ?? MAX_POP_BOOK_ENTRIES;
  }

  /** Keeps one service time; a bad number, or a new pair beyond the bound, is dropped. */
  note(backend: string, model: string, serviceMs: number, now: number): void {
    if (!Number.isFinite(serviceMs) || serviceMs < 0) return;
    let row = this.#rows.get(model);
    const entry = row?.get(backend);
    if (entry) {
      entry.sumMs += serviceMs;
      entry.count++;
      entry.lastAt = Math.max(entry.lastAt, now);
      return;
    }
    if (this.#size >= this.#max) return;
    if (!row) this.#rows.set(model, (row = new Map()));
    row.set(backend, { backend, model, sumMs: serviceMs, count: 1, lastAt: now });
    this.#size++;
  }

  /** Pairs waiting for an exchange. */
  get size(): number {
    return this.#size;
  }

  /** Everything kept, and the outbox emptied. */
  drain(): OutboxEntry[] {
    const out: OutboxEntry[] = [];
    for (const row of this.#rows.values()) for (const e of row.values()) out.push(e);
    this.#rows.clear();
    this.#size = 0;
    return out;
  }
}

/** One (backend, model) of the PoP's book: a decayed sum and count as of `at`. */
interface PopEntry {
  backend: string;
  model: string;
  /** Sum of the service times, each weighed by exp(-(at - its time) / decay), ms. */
  sum: number;
  /** The same weights' sum: the decayed number of samples. */
  count: number;
  /** The newest sample's time, ms. */
  at: number;
  /** When an exchange last added to it, ms: readers apply what changed since their last exchange. */
  changed: number;
}

/** A serialized entry: [backend, model, sum, count, at, changed]. */
type EntryTuple = [string, string, number, number, number, number];

/** The PoP's book, as the store keeps it. */
export class PopBook {
  readonly #rows = new Map<string, Map<string, PopEntry>>();
  readonly #max: number;
  readonly #decayMs: number;
  #size = 0;

  constructor(options: { maxEntries?: number; decayMs?: number } = {}) {
    this.#max = options.maxEntries ?? MAX_POP_BOOK_ENTRIES;
    this.#decayMs = options.decayMs ?? POP_BOOK_DECAY_MS;
  }

  /** Entries held. */
  get size(): number {
    return this.#size;
  }

  /** The PoP's mean service time of `backend` for `model`, ms; undefined when none is held. */
  mean(backend: string, model: string): number | undefined {
    const e = this.#rows.get(model)?.get(backend);
    return e ? e.sum / e.count : undefined;
  }

  /** The decayed number of samples behind `mean` at `now`. */
  weight(backend: string, model: string, now: number): number {
    const e = this.#rows.get(model)?.get(backend);
    return e ? e.count * Math.exp(-Math.max(0, now - e.at) / this.#decayMs) : 0;
  }

  /**
   * Adds one isolate's samples at `now`, then drops what has decayed away and,
   * beyond the bound, the least recently measured entries.
   */
  add(samples: readonly OutboxEntry[], now: number): void {
    for (const s of samples) {
      if (!(s.count > 0) || !Number.isFinite(s.sumMs) || !Number.isFinite(s.lastAt)) continue;
      let row = this.#rows.get(s.model);
      const e = row?.get(s.backend);
      if (!e) {
        if (!row) this.#rows.set(s.model, (row = new Map()));
        row.set(s.backend, { backend: s.backend, model: s.model, sum: s.sumMs, count: s.count, at: s.lastAt, changed: now });
        this.#size++;
        continue;
      }
      if (s.lastAt >= e.at) {
        const f = Math.exp(-(s.lastAt - e.at) / this.#decayMs);
        e.sum = e.sum * f + s.sumMs;
        e.count = e.count * f + s.count;
        e.at = s.lastAt;
      } else {
        // Samples older than the entry's newest: weighed down to its landmark.
        const g = Math.exp(-(e.at - s.lastAt) / this.#decayMs);
        e.sum += s.sumMs * g;
        e.count += s.count * g;
      }
      e.changed = now;
    }
    this.#prune(now);
  }

  /**
   * Gives `book` the PoP's mean of every entry changed after `since`, as its
   * estimate as of the entry's newest sample (`LatencyBook.adopt`): the mean
   * holds the isolate's own samples up to its exchange and the others'
   * besides. An isolate's sample newer than the entry's stands. Returns how
   * many entries it gave.
   */
  applyTo(book: LatencyBook, since: number): number {
    let fed = 0;
    for (const row of this.#rows.values()) {
      for (const e of row.values()) {
        if (e.changed <= since) continue;
        if (book.adopt(e.backend, e.model, e.sum / e.count, e.at)) fed++;
      }
    }
    return fed;
  }

  #prune(now: number): void {
    const all: PopEntry[] = [];
    for (const [model, row] of this.#rows) {
      for (const [backend, e] of row) {
        if (e.count * Math.exp(-Math.max(0, now - e.at) / this.#decayMs) < MIN_WEIGHT) row.delete(backend);
        else all.push(e);
      }
      if (row.size === 0) this.#rows.delete(model);
    }
    this.#size = all.length;
    if (all.length <= this.#max) return;
    all.sort((a, b) => a.at - b.at);
    for (const e of all.slice(0, all.length - this.#max)) {
      const row = this.#rows.get(e.model)!;
      row.delete(e.backend);
      if (row.size === 0) this.#rows.delete(e.model);
    }
    this.#size = this.#max;
  }

  /** The book as the store keeps it: `{"v":1,"entries":[[backend, model, sum, count, at, changed], ...]}`. */
  serialize(): string {
    const entries: EntryTuple[] = [];
    for (const row of this.#rows.values()) for (const e of row.values()) entries.push([e.backend, e.model, e.sum, e.count, e.at, e.changed]);
    return JSON.stringify({ v: 1, entries });
  }

  /**
   * A book read back from the store, or undefined when the text is not one
   * (too long, not JSON, another version). An entry that does not hold up
   * (a name too long, a number not finite, a negative sum, no count) is
   * dropped; entries beyond the bound are not read.
   */
  static parse(text: string, options: { maxEntries?: number; decayMs?: number } = {}): PopBook | undefined {
    if (text.length > MAX_POP_BOOK_CHARS) return undefined;
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch {
      return undefined;
    }
    if (typeof doc !== 'object' || doc === null || (doc as { v?: unknown }).v !== 1) return undefined;
    const entries = (doc as { entries?: unknown }).entries;
    if (!Array.isArray(entries)) return undefined;
    const book = new PopBook(options);
    for (const t of entries.slice(0, book.#max)) {
      if (!Array.isArray(t) || t.length !== 6) continue;
      const [backend, model, sum, count, at, changed] = t as unknown[];
      if (typeof backend !== 'string' || typeof model !== 'string' || backend.length > MAX_NAME || model.length > MAX_NAME) continue;
      if (!isFiniteAtLeast(sum, 0) || !isFiniteAtLeast(count, 0) || count === 0 || !isFiniteAtLeast(at, 0) || !isFiniteAtLeast(changed, 0)) continue;
      let row = book.#rows.get(model);
      if (!row) book.#rows.set(model, (row = new Map()));
      if (row.has(backend)) continue;
      row.set(backend, { backend, model, sum, count, at, changed });
      book.#size++;
    }
    return book;
  }
}

function isFiniteAtLeast(x: unknown, min: number): x is number {
  return typeof x === 'number' && Number.isFinite(x) && x >= min;
}
