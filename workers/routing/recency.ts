/**
 * Recency order for the routing books' bounded entries (latency.ts,
 * rtt.ts): an intrusive doubly-linked list, least recently observed first,
 * so that an observation moves its entry to the newest end with a few
 * pointer writes (no map deleted from and re-inserted into, no key built)
 * and eviction takes the oldest in O(1): exact LRU.
 */

/** What an entry carries to sit in a `RecencyList`. */
export interface Recent {
  older: Recent | undefined;
  newer: Recent | undefined;
}

export class RecencyList<T extends Recent> {
  #oldest: T | undefined;
  #newest: T | undefined;
  #size = 0;

  /** How many entries it holds. */
  get size(): number {
    return this.#size;
  }

  /** Takes the least recently observed entry out and returns it; undefined when empty. */
  takeOldest(): T | undefined {
    const entry = this.#oldest;
    if (entry) this.remove(entry);
    return entry;
  }

  /** Appends `entry` (not in the list) as the newest. */
  add(entry: T): void {
    entry.older = this.#newest;
    entry.newer = undefined;
    if (this.#newest) this.#newest.newer = entry;
    else this.#oldest = entry;
    this.#newest = entry;
    this.#size++;
  }

  /** Takes `entry` (in the list) out. */
  remove(entry: T): void {
    if (entry.older) entry.older.newer = entry.newer;
    else this.#oldest = entry.newer as T | undefined;
    if (entry.newer) entry.newer.older = entry.older;
    else this.#newest = entry.older as T | undefined;
    entry.older = entry.newer = undefined;
    this.#size--;
  }

  /** Makes `entry` (in the list) the newest. */
  touch(entry: T): void {
    if (this.#newest === entry) return;
    this.remove(entry);
    this.add(entry);
  }
}
