/**
 * The isolate's side of its PoP's service book (routing/pop-book.ts): the
 * service times this isolate measured are kept in its outbox, and at most
 * every POP_BOOK_EXCHANGE_MS, after a response (in `waitUntil`), it reads the
 * PoP's book from the Cache API (one per data centre, shared by the
 * isolates there), adds its outbox, writes the book back and takes the
 * PoP's mean of what changed since as its own estimate (`PopBook.applyTo`),
 * what the other isolates measured included. No request waits on it;
 * a failed read or write costs the PoP's book one isolate's second of
 * samples, never the isolate's own book, which has them already.
 */

import { isolateRouting } from '../routing/isolate.ts';
import type { LatencyBook } from '../routing/latency.ts';
import { POP_BOOK_EXCHANGE_MS, PopBook, ServiceOutbox } from '../routing/pop-book.ts';

/** The named cache that holds the PoP's book. */
const CACHE_NAME = 'mesh-routing';
/** The book's key, per data centre (the runtime's colo). */
const KEY_ORIGIN = 'https://service-book.mesh.invalid/';
/** How long the store keeps a book no isolate writes, s: longer than its entries last (about nine decay constants). */
const BOOK_MAX_AGE_S = 60;

/** One isolate's exchanges: its outbox, and when it last exchanged. */
export class ServiceExchange {
  readonly outbox = new ServiceOutbox();
  readonly #open: () => Promise<Cache>;
  readonly #everyMs: number;
  /** When the last exchange began. */
  #last = Number.NEGATIVE_INFINITY;
  /** When the last exchange that read the book began: the next takes what changed since. */
  #readAt = Number.NEGATIVE_INFINITY;
  #running = false;

  constructor(options: { open?: () => Promise<Cache>; everyMs?: number } = {}) {
    this.#open = options.open ?? (() => caches.open(CACHE_NAME));
    this.#everyMs = options.everyMs ?? POP_BOOK_EXCHANGE_MS;
  }

  /** Keeps one service time for the next exchange. */
  note(backend: string, model: string, serviceMs: number, now: number = Date.now()): void {
    this.outbox.note(backend, model, serviceMs, now);
  }

  /** Whether an exchange would run at `now`: none is running, and the last began at least the interval ago. */
  due(now: number = Date.now()): boolean {
    return !this.#running && now - this.#last >= this.#everyMs;
  }

  /**
   * Reads `pop`'s book, adds the outbox, writes it back and gives `book`
   * what changed since the last exchange that read it. Resolves with how
   * many entries `book` took, or undefined when it did not run (not due) or
   * failed (logged); never rejects.
   */
  async exchange(pop: string, book: LatencyBook, now: number = Date.now()): Promise<number | undefined> {
    if (!this.due(now)) return undefined;
    this.#running = true;
    this.#last = now;
    const samples = this.outbox.drain();
    try {
      const cache = await this.#open();
      const key = `${KEY_ORIGIN}${encodeURIComponent(pop)}`;
      const found = await cache.match(key);
      const text = found ? await found.text() : undefined;
      const parsed = text !== undefined ? PopBook.parse(text) : undefined;
      if (text !== undefined && !parsed) console.warn(`service book: ${pop}'s book does not read back; starting it again`);
      const shared = parsed ?? new PopBook();
      shared.add(samples, now);
      await cache.put(key, new Response(shared.serialize(), { headers: { 'content-type': 'application/json', 'cache-control': `max-age=${BOOK_MAX_AGE_S}` } }));
      const fed = shared.applyTo(book, this.#readAt);
      this.#readAt = now;
      return fed;
    } catch (err) {
      console.warn(`service book: exchange for ${pop} failed: ${(err as Error).message}`);
      return undefined;
    } finally {
      this.#running = false;
    }
  }
}

/** This isolate's exchanges. */
export const isolateServiceExchange = new ServiceExchange();

/** Keeps one service time measured from this isolate, for its PoP's book. */
export function noteService(backend: string, model: string, serviceMs: number): void {
  isolateServiceExchange.note(backend, model, serviceMs);
}

/**
 * The exchange of this isolate's service times with the book of the data
 * centre `colo` (the runtime's, not a simulated PoP's: the Cache API is the
 * data centre's) as a task to run after the response; undefined when none is due.
 */
export function serviceExchangeTask(colo: string): (() => Promise<unknown>) | undefined {
  if (!isolateServiceExchange.due()) return undefined;
  return () => isolateServiceExchange.exchange(colo, isolateRouting.latency);
}
