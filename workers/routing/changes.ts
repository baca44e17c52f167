/**
 * A bounded record of what changed in a book of measurements, by sequence
 * number: each change names a scope (a model, a PoP) and a backend id. A
 * reader that remembers the sequence it last read visits only what changed
 * since, in its scope, or learns that the record no longer reaches back that
 * far and starts over. The routing index keeps its candidates in order of a
 * bound of their scores this way (bound-order.ts), instead of re-reading
 * every measurement on every request.
 */

export const DEFAULT_CHANGE_LOG_SIZE = 1024;

export class ChangeLog {
  readonly #scopes: string[];
  readonly #ids: string[];
  readonly #size: number;
  #seq = 0;

  constructor(size: number = DEFAULT_CHANGE_LOG_SIZE) {
    if (!(Number.isInteger(size) && size > 0)) throw new RangeError('ChangeLog: size must be a positive integer.');
    this.#size = size;
    this.#scopes = new Array<string>(size);
    this.#ids = new Array<string>(size);
  }

  /** The sequence number of the next change: a reader that has read everything remembers this. */
  get seq(): number {
    return this.#seq;
  }

  /** Notes that `id` changed in `scope`. */
  note(scope: string, id: string): void {
    const at = this.#seq % this.#size;
    this.#scopes[at] = scope;
    this.#ids[at] = id;
    this.#seq++;
  }

  /**
   * Calls `visit` with the id of every change in `scope` from sequence `since`
   * on, oldest first (an id changed twice is visited twice). False, visiting
   * nothing, when older changes have been overwritten: the reader must start over.
   */
  since(since: number, scope: string, visit: (id: string) => void): boolean {
    if (since > this.#seq || this.#seq - since > this.#size) return false;
    for (let s = since; s < this.#seq; s++) {
      const at = s % this.#size;
      if (this.#scopes[at] === scope) visit(this.#ids[at]!);
    }
    return true;
  }
}
