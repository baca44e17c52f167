/**
 * Draining: on SIGTERM the backend stops reporting ready, refuses new
 * inferences with 503, and waits (bounded) for the HTTP requests in flight to
 * finish before it exits. `closeServer` is the same for one HTTP server: stop
 * listening, wait for its requests, then for its answers to be written.
 */

import type { Server } from 'node:http';

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

/**
 * Stops `server` listening and resolves once every request `lifecycle` counts
 * is handled and every connection has ended, or after `timeoutMs` (false).
 * A handler is done before its answer is written, so idle connections are
 * closed as they become idle (each right after its answer) and the server's
 * own close is awaited: nothing is cut off when the process or thread ends.
 */
export async function closeServer(server: Server, lifecycle: Lifecycle, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  server.closeIdleConnections();
  const idle = await lifecycle.idle(timeoutMs);
  const sweep = setInterval(() => server.closeIdleConnections(), 10);
  let timer: NodeJS.Timeout | undefined;
  const ended = await Promise.race([
    closed.then(() => true),
    new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), Math.max(0, deadline - Date.now()));
    }),
  ]);
  clearInterval(sweep);
  clearTimeout(timer);
  return idle && ended;
}
