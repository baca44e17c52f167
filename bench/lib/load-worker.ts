/**
 * One thread of `closedLoopThreads` (load-threads.ts): says it is ready, runs
 * `closedLoop` when told to go, and posts its result (with its first 200
 * answer, when asked, for the main thread to check).
 */

import type http from 'node:http';
import { parentPort, workerData } from 'node:worker_threads';
import { closedLoop } from './load.ts';
import type { LoadThreadInit, LoadThreadResult } from './load-threads.ts';

const port = parentPort;
if (!port) throw new Error('load-worker.ts runs as a worker thread of load-threads.ts.');
const { options } = workerData as LoadThreadInit;
const { keepFirstAnswer, ...loop } = options;

port.once('message', async () => {
  let first: LoadThreadResult['first'];
  const check = keepFirstAnswer
    ? (body: Buffer, headers: http.IncomingHttpHeaders) => {
        first = { body: new Uint8Array(body), headers };
      }
    : undefined;
  const result = await closedLoop({ ...loop, ...(check ? { check } : {}) });
  const out: LoadThreadResult = { ...result, ...(first ? { first } : {}) };
  port.postMessage({ result: out }, [result.latenciesMs.buffer as ArrayBuffer]);
});
port.postMessage('ready');
