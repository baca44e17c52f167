/**
 * Draining: on SIGTERM the backend stops reporting ready, refuses new
 * inferences with 503, and waits (bounded) for the HTTP requests in flight to
 * finish before it exits.
 */

export class Lifecycle {
  #draining = false;
  #active = 0;
  #idle: (() => void)[] = [];

  get draining(): boolean {
    return this.#draining;
  }

  /** HTTP requests being handled now. */
  get active(): number {
    return this.#active;
  }

  beginDrain(): void {
    this.#draining = true;
  }

  /** Counts one request as in flight until the returned function is called. */
  enter(): () => void {
    this.#active++;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.#active--;
      if (this.#active === 0) for (const wake of this.#idle.splice(0)) wake();
    };
  }

  /** Resolves true once no request is in flight, or false after `timeoutMs`. */
  async idle(timeoutMs: number): Promise<boolean> {
    if (this.#active === 0) return true;
    return new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      this.#idle.push(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }
}
