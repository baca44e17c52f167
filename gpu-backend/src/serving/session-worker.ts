/**
 * The worker-thread side of session-pool.ts: owns ONNX Runtime sessions and
 * runs them here, off the main thread, because a session's `run()` holds the
 * thread that calls it for the whole execution. A pool's own thread holds one
 * session (key 0, opened from workerData); a shared thread
 * (shared-session-thread.ts) holds several, opened by message, and runs them
 * one at a time, as a device that must not be used from two threads needs.
 *
 * Messages: workerData `{ modelPath, options }` opens session 0 and posts
 * `{ kind: 'open', key: 0, inputNames, outputNames }` or `{ kind: 'open-failed', key: 0, message }`;
 * `{ open: { key, modelPath, options } }` does the same for session `key`;
 * each `{ id, key?, feeds, fetches }` gets `{ id, outputs }` (output buffers
 * transferred, not copied) or `{ id, error }`; `{ release: true, key? }`
 * releases that session and answers `{ kind: 'released', key }`; the main
 * thread ends the thread once no session is left on it.
 */

import { parentPort, workerData } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';
import type { OpenRequest, RunRequest, RunReply, WireTensor, SessionWorkerInit } from './session-pool.ts';

const port = parentPort;
if (!port) throw new Error('session-worker.ts runs as a worker thread (session-pool.ts starts it), not on its own.');

// Errors reach the main thread as messages and are logged there, once.
ort.env.logLevel = 'fatal';

const sessions = new Map<number, ort.InferenceSession>();

async function open(key: number, init: SessionWorkerInit): Promise<boolean> {
  try {
    const session = await ort.InferenceSession.create(init.modelPath, init.options);
    sessions.set(key, session);
    port!.postMessage({ kind: 'open', key, inputNames: session.inputNames, outputNames: session.outputNames });
    return true;
  } catch (err) {
    port!.postMessage({ kind: 'open-failed', key, message: err instanceof Error ? err.message : String(err) });
    return false;
  }
}

const init = workerData as SessionWorkerInit | undefined;
if (init && !(await open(0, init))) port.close();

port.on('message', (message: RunRequest | OpenRequest | { release: true; key?: number }) => {
  if ('open' in message) {
    void open(message.open.key, message.open);
    return;
  }
  if ('release' in message) {
    const key = message.key ?? 0;
    const releasing = sessions.get(key)?.release() ?? Promise.resolve();
    sessions.delete(key);
    void releasing.catch(() => undefined).then(() => port.postMessage({ kind: 'released', key }));
    return;
  }
  void run(message);
});

async function run({ id, key = 0, feeds, fetches }: RunRequest): Promise<void> {
  const session = sessions.get(key);
  if (!session) {
    port!.postMessage({ id, error: 'The session was released.' } satisfies RunReply);
    return;
  }
  try {
    const ortFeeds: Record<string, ort.Tensor> = {};
    for (const [name, t] of Object.entries(feeds)) ortFeeds[name] = new ort.Tensor(t.type as 'float32', t.data as Float32Array, t.dims);
    const results = await session.run(ortFeeds, fetches);
    const outputs: Record<string, WireTensor> = {};
    const transfer: ArrayBuffer[] = [];
    for (const name of fetches) {
      const t = results[name]!;
      outputs[name] = { type: t.type, dims: t.dims, data: t.data as WireTensor['data'] };
      if (ArrayBuffer.isView(t.data) && t.data.buffer instanceof ArrayBuffer && !transfer.includes(t.data.buffer)) {
        transfer.push(t.data.buffer);
      }
    }
    port!.postMessage({ id, outputs } satisfies RunReply, transfer);
  } catch (err) {
    port!.postMessage({ id, error: err instanceof Error ? err.message : String(err) } satisfies RunReply);
  }
}
