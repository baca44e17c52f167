/**
 * The worker-thread side of session-pool.ts: owns ONE ONNX Runtime session
 * and runs it here, off the main thread, because a session's `run()` holds
 * the thread that calls it for the whole execution.
 *
 * Messages: workerData `{ modelPath, options }` opens the session and posts
 * `{ kind: 'open', inputNames, outputNames }` or `{ kind: 'open-failed', message }`;
 * then each `{ id, feeds, fetches }` gets `{ id, outputs }` (output buffers
 * transferred, not copied) or `{ id, error }`; `{ release: true }` releases the
 * session and answers `{ kind: 'released' }`, after which the main thread ends it.
 */

import { parentPort, workerData } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';
import type { RunRequest, RunReply, WireTensor, SessionWorkerInit } from './session-pool.ts';

const port = parentPort;
if (!port) throw new Error('session-worker.ts runs as a worker thread (session-pool.ts starts it), not on its own.');

const init = workerData as SessionWorkerInit;
// Errors reach the main thread as messages and are logged there, once.
ort.env.logLevel = 'fatal';

let session: ort.InferenceSession | undefined;
try {
  session = await ort.InferenceSession.create(init.modelPath, init.options);
  port.postMessage({ kind: 'open', inputNames: session.inputNames, outputNames: session.outputNames });
} catch (err) {
  port.postMessage({ kind: 'open-failed', message: err instanceof Error ? err.message : String(err) });
  port.close();
}

port.on('message', (message: RunRequest | { release: true }) => {
  if ('release' in message) {
    const releasing = session?.release() ?? Promise.resolve();
    session = undefined;
    void releasing.catch(() => undefined).then(() => port.postMessage({ kind: 'released' }));
    return;
  }
  void run(message);
});

async function run({ id, feeds, fetches }: RunRequest): Promise<void> {
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
