/**
 * One HTTP worker (http-pool.ts starts them and says why): it listens on the
 * backend's port beside the others (SO_REUSEPORT) and serves
 * `createWorkerApp`. An inference is read, its dispatch token checked (own
 * JWKS cache, same rules as the main thread), its body parsed and, once the
 * model's config is known here, checked, tokenized and converted
 * (worker-executor.ts); the main thread spends the token, batches and runs
 * the model (serving/executor.ts); the answer comes back here to be metered,
 * serialised, hashed and attested. Location
 * probes are signed here (the edge times them). Every other route is
 * forwarded whole. On `drain` it stops listening and reports once
 * the requests it holds are answered.
 */

import { createAdaptorServer } from '@hono/node-server';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parentPort, threadId, workerData } from 'node:worker_threads';
import { createWorkerApp } from './app.ts';
import { Attestor } from '../mesh/attestation.ts';
import { ProbeSigner } from '../mesh/probe.ts';
import { DispatchVerifier, edgeJwks } from '../mesh/dispatch.ts';
import { fromWire, type InferJob, type InferencePort, type WorkerAnswer } from '../serving/executor.ts';
import { WorkerExecutor } from './worker-executor.ts';
import type { StepResult } from '../serving/pipeline-steps.ts';
import { Outbox, type HttpWorkerInit, type PoolMessage, type WorkerMessage, type WireResponse } from './http-pool.ts';
import { Lifecycle, closeServer } from '../lifecycle.ts';
import { stdioLogger } from '../log.ts';
import type { RequestTiming } from '../metrics.ts';
import { importProviderKey } from '../mesh/provider-key.ts';

const port = parentPort;
if (!port) throw new Error('http-worker.ts runs as a worker thread (http-pool.ts starts it), not on its own.');
const { config, port: listenPort } = workerData as HttpWorkerInit;
const outbox = new Outbox<WorkerMessage>((messages, transfer) => port.postMessage(messages, transfer));
const post = (message: WorkerMessage, transfer: readonly ArrayBuffer[] = []) => outbox.push(message, transfer);

const log = stdioLogger(`backend ${config.backendId} http-worker-${threadId}`);
const lifecycle = new Lifecycle();
const runs = new Map<number, { resolve: (answer: WorkerAnswer) => void; reject: (err: Error) => void }>();
const fetches = new Map<number, (response: WireResponse) => void>();
const steps = new Map<number, { resolve: (output: StepResult) => void; reject: (err: Error) => void }>();
/** The run id each admitted pipeline job went out with, to release it by. */
const admissions = new WeakMap<InferJob, number>();
let nextId = 0;
/** Set once the app is built (a drain may arrive before: the worker then has nothing to finish). */
let server: Server | undefined;

/** The main thread's executor, across the thread: requests are prepared here and only batched and run there. */
const worker = new WorkerExecutor(
  {
    run: (job, transfer) =>
      new Promise<WorkerAnswer>((resolve, reject) => {
        const id = nextId++;
        runs.set(id, { resolve, reject });
        if (job.admit) admissions.set(job, id);
        post({ t: 'run', id, job }, transfer);
      }),
    step: (name, input) =>
      new Promise<StepResult>((resolve, reject) => {
        const id = nextId++;
        steps.set(id, { resolve, reject });
        post({ t: 'step', id, name, input }, [input.data.buffer as ArrayBuffer]);
      }),
    release: (job, serviceMs) => {
      const id = admissions.get(job);
      if (id !== undefined) post(serviceMs === undefined ? { t: 'release', id } : { t: 'release', id, serviceMs });
    },
  },
  config.modelRepository,
);
const executor: InferencePort = {
  run: (job: InferJob) => worker.run(job),
  succeeded: (name: string, version: string, timing: RequestTiming) => post({ t: 'succeeded', name, version, timing }),
  failed: (name, code) => post({ t: 'failed', name, code }),
  tokenRejected: (code) => post({ t: 'rejected', code }),
};

/** Statuses whose responses have no body (a `Response` refuses one). */
const NO_BODY = new Set([101, 204, 205, 304]);

async function forward(request: Request, body: ArrayBuffer | null): Promise<Response> {
  const id = nextId++;
  const answered = new Promise<WireResponse>((resolve) => fetches.set(id, resolve));
  post({ t: 'fetch', id, request: { method: request.method, url: request.url, headers: [...request.headers], body } }, body ? [body] : []);
  const response = await answered;
  const empty = request.method === 'HEAD' || NO_BODY.has(response.status);
  return new Response(empty ? null : response.body, { status: response.status, headers: response.headers });
}

port.on('message', (messages: PoolMessage[]) => {
  for (const message of messages) handle(message);
});

function handle(message: PoolMessage): void {
  switch (message.t) {
    case 'ran': {
      const pending = runs.get(message.id);
      runs.delete(message.id);
      if ('answer' in message) pending?.resolve(message.answer);
      else pending?.reject(fromWire(message.error));
      return;
    }
    case 'stepped': {
      const pending = steps.get(message.id);
      steps.delete(message.id);
      if ('output' in message) pending?.resolve(message.output);
      else pending?.reject(fromWire(message.error));
      return;
    }
    case 'fetched': {
      const resolve = fetches.get(message.id);
      fetches.delete(message.id);
      resolve?.(message.response);
      return;
    }
    case 'drain':
      void drain(message.timeoutMs);
      return;
  }
}

const key = await importProviderKey(config.providerKey);
const app = createWorkerApp({
  maxBodyBytes: config.maxBodyBytes,
  dispatch: new DispatchVerifier({ backendId: config.backendId, issuer: config.meshIssuer, getKey: edgeJwks(config.edgeUrl) }),
  attestor: new Attestor({ key, providerId: config.providerId, backendId: config.backendId }),
  probe: new ProbeSigner({ key, backendId: config.backendId }),
  executor,
  lifecycle,
  log,
  forward,
});

// Plain HTTP/1.1 (no `createServer` option), so a node:http Server.
const http = createAdaptorServer({ fetch: app.fetch, hostname: config.host, port: listenPort }) as Server;
server = http;
http.once('error', (err) => post({ t: 'listen-failed', message: err.message }));
http.listen({ host: config.host, port: listenPort, reusePort: true }, () => {
  http.removeAllListeners('error');
  http.on('error', (err) => log.error('the HTTP server failed', err));
  post({ t: 'listening', address: http.address() as AddressInfo });
});

async function drain(timeoutMs: number): Promise<void> {
  post({ t: 'drained', idle: server ? await closeServer(server, lifecycle, timeoutMs) : true });
}
