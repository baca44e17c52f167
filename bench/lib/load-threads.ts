/**
 * `closedLoop` (load.ts) spread over worker threads, for hosts where one
 * thread of load generator would be the bottleneck (a GPU backend on a big
 * machine answers more requests per second than one Node thread can send;
 * docs/benchmarks.md). The concurrency and the token pool are
 * split between the threads, which start together; latencies, counts and
 * errors are merged, and the first answer is checked here. With one thread it
 * is `closedLoop` itself, in this thread.
 */

import type http from 'node:http';
import { Worker } from 'node:worker_threads';
import { closedLoop, type ClosedLoopOptions, type ClosedLoopResult } from './load.ts';

/** workerData of one load thread: closedLoop's options, without the callbacks. */
export interface LoadThreadInit {
  options: Omit<ClosedLoopOptions, 'check' | 'onAnswer'> & { keepFirstAnswer: boolean };
}

/** A load thread's result, with its first 200 answer when asked for. */
export interface LoadThreadResult extends ClosedLoopResult {
  first?: { body: Uint8Array; headers: http.IncomingHttpHeaders };
}

const WORKER_URL = new URL('./load-worker.ts', import.meta.url);

/** Runs the closed loop on `threads` threads (1: in this thread). `onAnswer` needs one thread. */
export async function closedLoopThreads(o: ClosedLoopOptions & { threads: number }): Promise<ClosedLoopResult> {
  const threads = Math.max(1, Math.min(o.threads, o.concurrency));
  if (threads === 1) return closedLoop(o);
  if (o.onAnswer) throw new Error('closedLoopThreads: onAnswer needs threads = 1.');
  const workers: Worker[] = [];
  const results: Promise<LoadThreadResult>[] = [];
  const ready: Promise<void>[] = [];
  let tokenStart = 0;
  for (let t = 0; t < threads; t++) {
    // Concurrency and tokens in proportion: thread t gets workers [t*c/n, (t+1)*c/n).
    const concurrency = Math.floor(((t + 1) * o.concurrency) / threads) - Math.floor((t * o.concurrency) / threads);
    const tokenEnd = Math.floor(((t + 1) * o.tokens.length) / threads);
    const init: LoadThreadInit = {
      options: {
        url: o.url,
        body: o.body,
        tokens: o.tokens.slice(tokenStart, tokenEnd),
        concurrency,
        durationMs: o.durationMs,
        ...(o.timeoutMs !== undefined ? { timeoutMs: o.timeoutMs } : {}),
        ...(o.headers ? { headers: o.headers } : {}),
        keepFirstAnswer: t === 0 && o.check !== undefined,
      },
    };
    tokenStart = tokenEnd;
    const worker = new Worker(WORKER_URL, { workerData: init });
    workers.push(worker);
    ready.push(new Promise((resolve) => worker.once('message', () => resolve())));
    results.push(
      new Promise((resolve, reject) => {
        worker.on('message', (m: { result?: LoadThreadResult }) => m.result && resolve(m.result));
        worker.once('error', reject);
        worker.once('exit', (code) => reject(new Error(`a load thread exited (code ${code}) before it finished`)));
      }),
    );
  }
  await Promise.all(ready);
  for (const worker of workers) worker.postMessage('go');
  const parts = await Promise.all(results);
  await Promise.all(workers.map((w) => w.terminate()));

  const errors: Record<string, number> = {};
  const errorSamples: string[] = [];
  for (const part of parts) {
    for (const [k, n] of Object.entries(part.errors)) errors[k] = (errors[k] ?? 0) + n;
    errorSamples.push(...part.errorSamples.slice(0, Math.max(0, 5 - errorSamples.length)));
  }
  const first = parts[0]?.first;
  if (o.check && first) {
    try {
      o.check(Buffer.from(first.body), first.headers);
    } catch (err) {
      errors['bad-answer'] = (errors['bad-answer'] ?? 0) + 1;
      errorSamples.push(`bad-answer: ${(err as Error).message.slice(0, 300)}`);
    }
  }
  const latencies = new Float64Array(parts.reduce((n, p) => n + p.latenciesMs.length, 0));
  let at = 0;
  for (const part of parts) {
    latencies.set(part.latenciesMs, at);
    at += part.latenciesMs.length;
  }
  return {
    latenciesMs: latencies,
    ok: parts.reduce((n, p) => n + p.ok, 0),
    errors,
    errorSamples,
    elapsedMs: Math.max(...parts.map((p) => p.elapsedMs)),
    exhausted: parts.some((p) => p.exhausted),
  };
}
