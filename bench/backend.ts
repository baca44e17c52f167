/**
 * `npm run bench:backend`: how close one backend process gets to its model's
 * own speed (served / an in-process `session.run` ceiling, at saturation) and
 * what dynamic batching buys (on / off at concurrency 16). A script, not a
 * test: it prints ratios from one run, never absolute times as pass/fail.
 * Method and figures: docs/benchmarks.md.
 *
 * Workloads (BENCH_MODEL): `embed` (default; one 31-word text as JSON BYTES,
 * the demo model) and `ocr-det` (PaddleOCR v4 detection, compute-bound: one
 * fixed-seed FP32 image [1, 3, S, S] sent and answered in the binary tensor
 * extension, S = BENCH_OCR_SIZE, 320).
 *
 * Env: BENCH_MODEL (embed), BENCH_SECONDS (8), BENCH_WARMUP_SECONDS (1.5),
 * BENCH_CEILING_SECONDS (1.5 per batch size), BENCH_CONCURRENCY (1,4,16,64;
 * ocr-det 1,4,16), BENCH_QUIET_WAIT_SECONDS (20; 0: never wait for a quiet
 * CPU), BENCH_PROVIDER (cpu; cuda or webgpu: ceiling and backend on that GPU
 * provider, stopping if it does not start), BENCH_LOADGEN_THREADS (1), BENCH_MAX_RATE (none: the
 * most requests/s the token pools are sized for, where the ceiling is far
 * above what one backend's HTTP serves, e.g. on a GPU), BENCH_OCR_SIZE (320),
 * BENCH_INSTANCES (the model config's instance_group count; on a GPU, 2
 * overlaps one batch's copies with the next one's run), BENCH_RESULTS_FILE
 * (bench/results/backend.json for embed,
 * backend-<model>.json otherwise); INTRA_OP_THREADS, INFERENCE_THREAD,
 * HTTP_THREADS and CUDA_DEVICE_ID go to the backend.
 */

import { cp, readFile, readdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { generateDemoModels } from '../gpu-backend/src/demo-models/generate.ts';
import { silentLogger } from '../gpu-backend/src/log.ts';
import { installOcrModels } from '../gpu-backend/src/ocr/models.ts';
import { SessionFactory } from '../gpu-backend/src/serving/sessions.ts';
import { isExecutionProvider, type ExecutionProvider } from '../shared/heartbeat.ts';
import { tokenize } from '../shared/tokenizer.ts';
import { machineBusyMs, waitForQuiet } from './lib/cpu.ts';
import { envIntList, envNumber } from './lib/env.ts';
import { ROOT, startBackend, startFakeEdge, type BackendProcess, type FakeEdge } from './lib/backend-process.ts';
import { quantile } from './lib/load.ts';
import { closedLoopThreads } from './lib/load-threads.ts';
import { answerOutputs, seededFloats, tensorRequest } from './lib/payload.ts';
import { writeResults } from './lib/results.ts';
import { machineLine, openScratch } from './lib/scratch.ts';

const TEXT =
  'The delivery drone left the warehouse at dawn, crossed the river twice in heavy wind, and landed on the hospital roof with three boxes of insulin for the night shift nurses.';

/** What one bench run serves: the model, its request, its ceiling's feeds and its goals. */
interface Workload {
  model: string;
  /** One line for the log and the report. */
  what: string;
  /** The exact request every call sends, and the headers it needs besides the token. */
  body: Uint8Array;
  headers?: Record<string, string>;
  /** Batch sizes the ceiling is measured at (up to the config's max_batch_size). */
  batchSizes: number[];
  defaultConcurrency: string;
  goalServedVsCeiling: number;
  /** The batching on/off goal at GAIN_CONCURRENCY; undefined: reported, no goal. */
  goalBatchingGain: number | undefined;
  /** Puts the model (and its configs) into a repository. */
  install(dir: string): Promise<void>;
  /** The ceiling's feeds: `batch` copies of the request's input. */
  feeds(batch: number): Record<string, ort.Tensor>;
  /** The output the ceiling fetches. */
  output: string;
  /** Throws unless the first answer is the expected output with an attestation. */
  check(body: Buffer, headers: Record<string, unknown>): void;
  settings: Record<string, unknown>;
}

function embedWorkload(): Workload {
  const ids = tokenize(TEXT);
  const body = new TextEncoder().encode(JSON.stringify({ inputs: [{ name: 'text', shape: [1], datatype: 'BYTES', data: [TEXT] }] }));
  return {
    model: 'embed',
    what: `embed, one text of ${TEXT.split(/\s+/).length} words as BYTES (seq ${ids.length}), body ${body.length} bytes`,
    body,
    batchSizes: [1, 2, 4, 8, 16, 32],
    defaultConcurrency: '1,4,16,64',
    goalServedVsCeiling: 0.85,
    goalBatchingGain: 3,
    install: async (dir) => void (await generateDemoModels(dir)),
    feeds(batch) {
      const data = new BigInt64Array(batch * ids.length);
      for (let r = 0; r < batch; r++) for (let i = 0; i < ids.length; i++) data[r * ids.length + i] = BigInt(ids[i]!);
      return { input_ids: new ort.Tensor('int64', data, [batch, ids.length]) };
    },
    output: 'embedding',
    check: checkEmbedAnswer,
    settings: { text: TEXT, seq: ids.length, bodyBytes: body.length },
  };
}

/** ocr-det's input: a fixed-seed FP32 image [1, 3, size, size] (values in [-1, 1), as after PaddleOCR's normalisation). */
function ocrDetWorkload(size: number): Workload {
  const image = seededFloats(3 * size * size, 0x0cd);
  const { body, headers } = tensorRequest({ name: 'x', shape: [1, 3, size, size], data: image, format: 'binary' });
  const output = 'sigmoid_0.tmp_0';
  return {
    model: 'ocr-det',
    what: `ocr-det, one fixed-seed FP32 image [1, 3, ${size}, ${size}] in the binary tensor extension, answered in binary; body ${body.length} bytes`,
    body,
    headers,
    batchSizes: [1, 2, 4],
    defaultConcurrency: '1,4,16',
    goalServedVsCeiling: 0.9,
    goalBatchingGain: undefined,
    install: async (dir) => void (await installOcrModels(dir)),
    feeds(batch) {
      const data = new Float32Array(batch * image.length);
      for (let r = 0; r < batch; r++) data.set(image, r * image.length);
      return { x: new ort.Tensor('float32', data, [batch, 3, size, size]) };
    },
    output,
    check(answer, h) {
      const [out, ...more] = answerOutputs(answer, h['inference-header-content-length'] as string | undefined);
      if (more.length > 0 || !out || out.name !== output || out.format !== 'binary' || out.shape.join('x') !== `1x1x${size}x${size}` || out.size !== 4 * size * size) {
        throw new Error(`unexpected answer: ${JSON.stringify(out)}${more.length > 0 ? ` and ${more.length} more outputs` : ''}`);
      }
      if (typeof h['x-provider-attestation'] !== 'string') throw new Error('the answer has no x-provider-attestation');
    },
    settings: { imageSize: size, input: `FP32 [1,3,${size},${size}]`, format: 'binary extension both ways', bodyBytes: body.length },
  };
}

const MODEL_CHOICE = (process.env.BENCH_MODEL?.trim() || 'embed').toLowerCase();
const OCR_SIZE = envNumber('BENCH_OCR_SIZE', 320, 32, 1024);
if (OCR_SIZE % 32 !== 0) throw new Error(`BENCH_OCR_SIZE must be a multiple of 32, got ${OCR_SIZE}`);
const W: Workload =
  MODEL_CHOICE === 'embed'
    ? embedWorkload()
    : MODEL_CHOICE === 'ocr-det'
      ? ocrDetWorkload(OCR_SIZE)
      : (() => {
          throw new Error(`BENCH_MODEL must be embed or ocr-det, got ${JSON.stringify(process.env.BENCH_MODEL)}`);
        })();
const MODEL = W.model;
const BODY = W.body;
const BATCH_SIZES = W.batchSizes;
const GOAL_SERVED_VS_CEILING = W.goalServedVsCeiling;
const GOAL_BATCHING_GAIN = W.goalBatchingGain;
const GAIN_CONCURRENCY = 16;
/** Above this share of all cores, other processes make a measurement unreliable; above this drift, the report says the CPU changed. */
const NOISY_OTHER_CPU = 0.05;
const NOISY_DRIFT = 0.1;
/** The ceiling at each batch size is the best of this many windows of BENCH_CEILING_SECONDS / CEILING_WINDOWS. */
const CEILING_WINDOWS = 3;
/** Before each measurement, wait up to this long (and this long in all) for other processes to go quiet. */
const QUIET_WAIT_MS = envNumber('BENCH_QUIET_WAIT_SECONDS', 20, 0, 600) * 1000;
const QUIET_BUDGET_MS = 4 * QUIET_WAIT_MS;
let quietSpentMs = 0;

/** Waits (bounded) until other processes leave the machine alone, so they do not skew the next measurement. */
async function quiet(what: string, pids: readonly number[] = []): Promise<void> {
  const maxMs = Math.min(QUIET_WAIT_MS, QUIET_BUDGET_MS - quietSpentMs);
  if (maxMs <= 0) return;
  const first = await waitForQuiet({ pids, cores: CORES, threshold: NOISY_OTHER_CPU, maxMs: 0, sampleMs: 300 });
  if (first.other <= NOISY_OTHER_CPU) return;
  log(`${what}: other processes use ${(first.other * 100).toFixed(0)}% of the CPU; waiting up to ${(maxMs / 1000).toFixed(0)} s for them to stop`);
  const { other, waitedMs } = await waitForQuiet({ pids, cores: CORES, threshold: NOISY_OTHER_CPU, maxMs });
  quietSpentMs += waitedMs;
  if (other > NOISY_OTHER_CPU) log(`${what}: still ${(other * 100).toFixed(0)}% after ${(waitedMs / 1000).toFixed(0)} s; measuring anyway (flagged)`);
}

const SECONDS = envNumber('BENCH_SECONDS', 8, 1, 45); // tokens live 60 s from signing
const WARMUP_SECONDS = envNumber('BENCH_WARMUP_SECONDS', 1.5, 0, 10);
const CEILING_SECONDS = envNumber('BENCH_CEILING_SECONDS', 1.5, 0.2, 10);
const CONCURRENCIES = envIntList('BENCH_CONCURRENCY', W.defaultConcurrency, 1, 256);
/** The most requests/s the token pools are sized for (default: whatever the ceiling allows). */
const MAX_RATE = envNumber('BENCH_MAX_RATE', Number.POSITIVE_INFINITY, 1, 1e7);
const RESULTS_FILE = process.env.BENCH_RESULTS_FILE?.trim() || path.join('bench', 'results', MODEL === 'embed' ? 'backend.json' : `backend-${MODEL}.json`);
const INTRA_OP_THREADS = process.env.INTRA_OP_THREADS?.trim() || undefined;
/** Threads of load generator (one thread sends ~10,000 requests/s at most: raise it for a GPU backend on a big host). */
const LOADGEN_THREADS = envNumber('BENCH_LOADGEN_THREADS', 1, 1, 64);
const INSTANCES = process.env.BENCH_INSTANCES?.trim() ? Math.round(envNumber('BENCH_INSTANCES', 1, 1, 16)) : undefined;
/** The execution provider of the ceiling and the backend: `cpu`, or `cuda` / `webgpu` on a GPU host (no fallback: the bench stops if it does not start). */
const PROVIDER = benchProvider(process.env.BENCH_PROVIDER);
const CUDA_DEVICE_ID = process.env.CUDA_DEVICE_ID?.trim() || '0';
/** The backend's INFERENCE_THREAD (passed through from the environment). */
const INFERENCE_THREAD = process.env.INFERENCE_THREAD?.trim() || 'auto';
/** The backend's HTTP_THREADS (passed through from the environment). */
const HTTP_THREADS = process.env.HTTP_THREADS?.trim() || 'auto';

interface CeilingPoint {
  batch: number;
  msPerRun: number;
  rowsPerS: number;
  /** Share of the machine other processes used meanwhile. */
  otherCpu: number;
}

const CORES = os.availableParallelism();

interface Run {
  batching: 'on' | 'off';
  concurrency: number;
  requests: number;
  reqPerS: number;
  p50Ms: number;
  p99Ms: number;
  meanBatch: number;
  /** Wall time per model execution (batch), ms: the batch cycle, model run and everything serialised with it. */
  msPerBatch: number;
  /** Mean time in the backend's handler, queue and compute per request, ms (from /metrics). */
  backendMs: number;
  queueMs: number;
  computeMs: number;
  backendCpuMsPerReq: number;
  /** The backend's main thread alone; with the model on worker threads, the per-request work serialised on it. */
  mainThreadCpuMsPerReq: number;
  loadgenCpuMsPerReq: number;
  /** Share of the machine (every core) that other processes used during the run. */
  otherCpu: number;
  errors: Record<string, number>;
  errorSamples: string[];
  tokensRanOut: boolean;
  /** Batching on: the ceiling at its best batch size measured right after this run. */
  ceilingAfter?: CeilingPoint;
}

const log = (line: string) => console.log(`[bench] ${line}`);

async function main(): Promise<void> {
  const started = performance.now();
  let edge: FakeEdge | undefined;
  let backend: BackendProcess | undefined;
  let ceilingSession: CeilingSession | undefined;
  const scratch = await openScratch('mesh-bench-', log, [() => backend?.stop(), () => ceilingSession?.close(), () => edge?.close()]);
  const tmp = scratch.dir;

  try {
    log(machineLine(`, onnxruntime-node ${ort.env.versions.node ?? '?'}`));
    log(`workload: ${W.what}`);
    const on = path.join(tmp, 'batching-on');
    const off = path.join(tmp, 'batching-off');
    log(`${MODEL === 'embed' ? 'generating the demo models' : `installing ${MODEL}`} into ${on}`);
    await W.install(on);
    if (INSTANCES !== undefined) await withInstances(on, INSTANCES);
    await cp(on, off, { recursive: true });
    await withoutDynamicBatching(off);

    const modelPath = path.join(on, MODEL, '1', 'model.onnx');
    ceilingSession = await openCeiling(modelPath);
    const ceiling: CeilingPoint[] = [];
    for (const batch of BATCH_SIZES) ceiling.push(await ceilingSession.measure(batch));
    const best = ceiling.reduce((a, b) => (b.rowsPerS > a.rowsPerS ? b : a));
    log(`ceiling: ${best.rowsPerS.toFixed(0)} rows/s at batch ${best.batch} (${best.msPerRun.toFixed(2)} ms per run)`);

    edge = await startFakeEdge();
    const runs: Run[] = [];
    for (const [batching, repo] of [['on', on], ['off', off]] as const) {
      log(`batching ${batching}: starting the backend (${repo})`);
      backend = await startBackend({
        edge,
        repository: repo,
        models: MODEL,
        env: { EXECUTION_PROVIDERS: PROVIDER, CUDA_DEVICE_ID, ...(INTRA_OP_THREADS ? { INTRA_OP_THREADS } : {}) },
      });
      const serving = ((await (await fetch(`${backend.url}/v2/health/ready`)).json()) as { executionProvider?: string }).executionProvider;
      if (serving !== PROVIDER) throw new Error(`the backend serves on ${serving}, not ${PROVIDER} (its log says why)`);
      log(`batching ${batching}: backend pid ${backend.pid} ready at ${backend.url}, on ${serving}`);
      for (const concurrency of CONCURRENCIES) {
        const run = await measure(edge, backend, batching, concurrency, best.rowsPerS);
        // The ceiling right after each batching-on run, with the backend idle: the CPU after
        // seconds of load (a VM's host throttles it) is the CPU the run had, so served/ceiling
        // compares like with like.
        if (batching === 'on') run.ceilingAfter = await ceilingSession.measure(best.batch, `ceiling right after batching on, concurrency ${concurrency}`);
        runs.push(run);
      }
      const code = await backend.stop();
      log(`batching ${batching}: backend stopped (exit ${code})`);
      backend = undefined;
    }

    // The ceiling again at its best batch size: a drift between the two says the machine changed under the runs.
    const recheck = await ceilingSession.measure(best.batch, 'ceiling re-check');

    const results = report(ceiling, best, recheck, runs, edge.heartbeats, performance.now() - started);
    await writeResults(path.resolve(ROOT, RESULTS_FILE), results, log);
  } finally {
    await scratch.close();
  }
}

/** Removes `dynamic_batching` from every model's config.json in `repo`. */
async function withoutDynamicBatching(repo: string): Promise<void> {
  await editConfigs(repo, (config) => void delete config.dynamic_batching);
}

/** Every model of `repo` served by `count` instances (BENCH_INSTANCES). */
async function withInstances(repo: string, count: number): Promise<void> {
  await editConfigs(repo, (config) => {
    const groups = (config.instance_group as { count?: number }[] | undefined) ?? [{}];
    config.instance_group = groups.map((g) => ({ ...g, count }));
  });
}

async function editConfigs(repo: string, edit: (config: Record<string, unknown>) => void): Promise<void> {
  for (const entry of await readdir(repo, { withFileTypes: true })) {
    if (!entry.isDirectory()) continue;
    const file = path.join(repo, entry.name, 'config.json');
    const config = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
    edit(config);
    await writeFile(file, `${JSON.stringify(config, null, 2)}\n`);
  }
}

interface CeilingSession {
  /** session.run at `batch` rows: the best of CEILING_WINDOWS windows. */
  measure(batch: number, label?: string): Promise<CeilingPoint>;
  close(): Promise<void>;
}

/**
 * ONNX Runtime in this process, on the main thread, with the backend's own
 * session options and ORT's default intra-op threads (every core): the
 * model alone on the whole machine. With INTRA_OP_THREADS set, a second
 * session with that many threads is measured too and each point is the
 * better of the two, so a setting that slows the model also lowers no bar.
 */
async function openCeiling(modelPath: string): Promise<CeilingSession> {
  const open = async (intraOpThreads?: number) => {
    const sessions = new SessionFactory({
      providers: [PROVIDER],
      cudaDeviceId: Number(CUDA_DEVICE_ID),
      thread: 'main',
      log: silentLogger,
      ...(intraOpThreads !== undefined ? { intraOpThreads } : {}),
    });
    try {
      return (await sessions.open(modelPath)).session;
    } catch (err) {
      throw new Error(`the ceiling's ${PROVIDER} session did not open: ${sessions.cudaFailure ?? sessions.webgpuFailure ?? (err as Error).message}`, { cause: err });
    }
  };
  const sessions = [await open()];
  if (INTRA_OP_THREADS) sessions.push(await open(Number(INTRA_OP_THREADS)));
  return {
    async measure(batch, label = 'ceiling') {
      const feeds = W.feeds(batch);
      await quiet(`${label}: batch ${batch}`);
      let point: CeilingPoint | undefined;
      for (const session of sessions) {
        for (let i = 0; i < 5; i++) await session.run(feeds, [W.output]);
        // Best of three windows: the ceiling is an upper bound, and a window the
        // machine (or the VM's host) slowed down says nothing about the model.
        for (let w = 0; w < CEILING_WINDOWS; w++) {
          let runs = 0;
          const cpu0 = process.cpuUsage();
          const machine0 = machineBusyMs();
          const t0 = performance.now();
          let elapsed = 0;
          while (elapsed < (CEILING_SECONDS * 1000) / CEILING_WINDOWS || runs < 5) {
            await session.run(feeds, [W.output]);
            runs++;
            elapsed = performance.now() - t0;
          }
          const cpu = process.cpuUsage(cpu0);
          const other = Math.max(0, machineBusyMs() - machine0 - (cpu.user + cpu.system) / 1000) / (CORES * elapsed);
          const window = { batch, msPerRun: elapsed / runs, rowsPerS: (batch * runs * 1000) / elapsed, otherCpu: other };
          if (!point || window.rowsPerS > point.rowsPerS) point = window;
        }
      }
      log(`${label}: batch ${String(batch).padStart(2)}: ${point!.msPerRun.toFixed(2)} ms per run, ${point!.rowsPerS.toFixed(0)} rows/s${busyNote(point!.otherCpu)}`);
      return point!;
    },
    close: async () => {
      for (const session of sessions) await session.release();
    },
  };
}

async function measure(edge: FakeEdge, backend: BackendProcess, batching: 'on' | 'off', concurrency: number, ceilingRowsPerS: number): Promise<Run> {
  const what = `batching ${batching}, concurrency ${concurrency}`;
  const url = `${backend.url}/v2/models/${MODEL}/infer`;
  // Tokens are signed before each phase, never during one. The warm-up gets twice
  // what the ceiling allows; the measured run 3x what the warm-up achieved, but
  // no more than 1.5x what the ceiling allows.
  const rate = Math.min(ceilingRowsPerS, MAX_RATE);
  const ceilingCount = Math.ceil(rate * SECONDS * 1.5) + 2 * concurrency;
  let runCount = ceilingCount;
  await quiet(what, [backend.pid]);
  if (WARMUP_SECONDS > 0) {
    const warmCount = Math.ceil(rate * WARMUP_SECONDS * 2) + concurrency;
    log(`${what}: signing ${warmCount} dispatch tokens, warming up ${WARMUP_SECONDS} s`);
    const tokens = await edge.signTokens(MODEL, BODY, warmCount);
    const warm = await closedLoopThreads({ url, body: BODY, tokens, concurrency, durationMs: WARMUP_SECONDS * 1000, threads: LOADGEN_THREADS, ...(W.headers ? { headers: W.headers } : {}) });
    if (warm.ok === 0) throw new Error(`${what}: no request succeeded in the warm-up: ${warm.errorSamples.join('; ')}`);
    if (!warm.exhausted) runCount = Math.min(ceilingCount, Math.ceil((warm.ok / warm.elapsedMs) * 1000 * SECONDS * 3) + 2 * concurrency + 100);
  }
  log(`${what}: signing ${runCount} dispatch tokens`);
  const tokens = await edge.signTokens(MODEL, BODY, runCount);

  log(`${what}: measuring ${SECONDS} s`);
  const before = await scrape(backend.url);
  const cpuBefore = process.cpuUsage();
  const backendCpuBefore = backend.cpuMs();
  const mainCpuBefore = backend.mainThreadCpuMs();
  const machineBefore = machineBusyMs();
  const result = await closedLoopThreads({
    url,
    body: BODY,
    tokens,
    concurrency,
    durationMs: SECONDS * 1000,
    check: W.check,
    threads: LOADGEN_THREADS,
    ...(W.headers ? { headers: W.headers } : {}),
  });
  const cpu = process.cpuUsage(cpuBefore);
  const backendCpu = backend.cpuMs() - backendCpuBefore;
  const mainCpu = backend.mainThreadCpuMs() - mainCpuBefore;
  const machine = machineBusyMs() - machineBefore;
  const after = await scrape(backend.url);

  const d = (name: string) => (after[name] ?? 0) - (before[name] ?? 0);
  const inferences = d('nv_inference_count');
  const executions = d('nv_inference_exec_count');
  const successes = d('nv_inference_request_success');
  const computeMsPerReq = successes > 0 ? d('nv_inference_compute_infer_duration_us') / 1000 / successes : Number.NaN;
  const n = Math.max(1, result.ok);
  const run: Run = {
    batching,
    concurrency,
    requests: result.ok,
    reqPerS: (result.ok * 1000) / result.elapsedMs,
    p50Ms: quantile(result.latenciesMs, 0.5),
    p99Ms: quantile(result.latenciesMs, 0.99),
    meanBatch: executions > 0 ? inferences / executions : Number.NaN,
    msPerBatch: executions > 0 ? result.elapsedMs / executions : Number.NaN,
    backendMs: successes > 0 ? d('nv_inference_request_duration_us') / 1000 / successes : Number.NaN,
    queueMs: successes > 0 ? d('nv_inference_queue_duration_us') / 1000 / successes : Number.NaN,
    computeMs: computeMsPerReq,
    backendCpuMsPerReq: backendCpu / n,
    mainThreadCpuMsPerReq: mainCpu / n,
    loadgenCpuMsPerReq: (cpu.user + cpu.system) / 1000 / n,
    otherCpu: Math.max(0, machine - backendCpu - (cpu.user + cpu.system) / 1000) / (CORES * result.elapsedMs),
    errors: result.errors,
    errorSamples: result.errorSamples,
    tokensRanOut: result.exhausted,
  };
  const errorCount = Object.values(result.errors).reduce((a, b) => a + b, 0);
  log(
    `${what}: ${run.reqPerS.toFixed(0)} req/s, p50 ${run.p50Ms.toFixed(2)} ms, p99 ${run.p99Ms.toFixed(2)} ms, mean batch ${run.meanBatch.toFixed(2)}` +
      (errorCount > 0 ? `, ${errorCount} ERRORS: ${JSON.stringify(result.errors)} ${result.errorSamples[0] ?? ''}` : '') +
      (result.exhausted ? ' (the pre-signed tokens ran out before the deadline)' : '') +
      busyNote(run.otherCpu),
  );
  return run;
}

function benchProvider(value: string | undefined): ExecutionProvider {
  const v = (value ?? 'cpu').trim().toLowerCase();
  if (!isExecutionProvider(v)) throw new Error(`BENCH_PROVIDER must be cpu, cuda or webgpu, got ${JSON.stringify(value)}`);
  return v;
}

/** The first answer must be one 256-float embedding with an attestation. */
function checkEmbedAnswer(body: Buffer, headers: Record<string, unknown>): void {
  const json = JSON.parse(body.toString('utf8')) as { outputs?: { name: string; shape: number[]; data: number[] }[] };
  const out = json.outputs?.[0];
  if (!out || out.name !== 'embedding' || out.shape.join('x') !== '1x256' || out.data.length !== 256) {
    throw new Error(`unexpected answer: ${body.toString('utf8').slice(0, 200)}`);
  }
  if (typeof headers['x-provider-attestation'] !== 'string') throw new Error('the answer has no x-provider-attestation');
}

/** The backend's /metrics counters for MODEL (summed over versions), by metric name. */
async function scrape(base: string): Promise<Record<string, number>> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const m = /^(nv_inference_[a-z_]+)\{([^}]*)\} (\S+)$/.exec(line);
    if (!m || !m[2]!.includes(`model="${MODEL}"`)) continue;
    out[m[1]!] = (out[m[1]!] ?? 0) + Number(m[3]);
  }
  return out;
}

function report(ceiling: CeilingPoint[], best: CeilingPoint, recheck: CeilingPoint, runs: Run[], heartbeats: number, totalMs: number): unknown {
  const f = (v: number, digits = 1) => (Number.isFinite(v) ? v.toFixed(digits) : 'n/a');
  const pct = (v: number) => `${f(v * 100, 0)}%`;
  const errorsOf = (r: Run) => Object.values(r.errors).reduce((a, b) => a + b, 0);
  const lines: string[] = [];
  const input = MODEL === 'embed' ? `seq ${tokenize(TEXT).length}` : String(W.settings.input);
  lines.push('', `Ceiling: session.run in-process, ${MODEL}, ${input}, ${PROVIDER} provider, ${CORES} cores`, '');
  lines.push('| batch | ms per run | rows/s | other CPU |', '| ---: | ---: | ---: | ---: |');
  for (const p of ceiling) lines.push(`| ${p.batch}${p === best ? ' (best)' : ''} | ${f(p.msPerRun, 2)} | ${f(p.rowsPerS, 0)} | ${pct(p.otherCpu)} |`);
  lines.push(`| ${recheck.batch} (re-check after the runs) | ${f(recheck.msPerRun, 2)} | ${f(recheck.rowsPerS, 0)} | ${pct(recheck.otherCpu)} |`);
  lines.push('', `Served: one backend process (${PROVIDER}, INFERENCE_THREAD=${INFERENCE_THREAD}, HTTP_THREADS=${HTTP_THREADS}, instances ${PROVIDER === 'webgpu' ? '1 (WebGPU sessions share one thread)' : (INSTANCES ?? 'as configured')}), closed loop (${LOADGEN_THREADS} load thread(s)), ${SECONDS} s per run`, '');
  lines.push(
    '| batching | concurrency | req/s | p50 ms | p99 ms | mean batch | ms per batch (ceiling) | backend ms (queue / compute) | backend CPU ms/req (main thread) | load-gen CPU ms/req | other CPU | ceiling right after, rows/s | errors |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  );
  for (const r of runs) {
    const errs = errorsOf(r);
    lines.push(
      `| ${r.batching} | ${r.concurrency} | ${f(r.reqPerS, 0)} | ${f(r.p50Ms, 2)} | ${f(r.p99Ms, 2)} | ${f(r.meanBatch, 2)} | ${f(r.msPerBatch, 2)} (${f(ceilingMsAt(ceiling, r.meanBatch), 2)}) | ` +
        `${f(r.backendMs, 2)} (${f(r.queueMs, 2)} / ${f(r.computeMs, 2)}) | ${f(r.backendCpuMsPerReq, 2)} (${f(r.mainThreadCpuMsPerReq, 3)}) | ${f(r.loadgenCpuMsPerReq, 2)} | ${pct(r.otherCpu)} | ` +
        `${r.ceilingAfter ? f(r.ceilingAfter.rowsPerS, 0) : '-'} | ` +
        `${errs === 0 ? '0' : `${errs} ${JSON.stringify(r.errors)}`}${r.tokensRanOut ? ' (tokens ran out)' : ''} |`,
    );
  }

  // Each batching-on run against the ceiling measured right after it (same CPU
  // state); the rested ceiling of the start is shown too.
  const clean = (r: Run) => errorsOf(r) === 0;
  const onRuns = runs.filter((r) => r.batching === 'on' && clean(r));
  const bestServed = onRuns.reduce<Run | undefined>((a, b) => (!a || b.reqPerS > a.reqPerS ? b : a), undefined);
  const ceilingRowsPerS = bestServed?.ceilingAfter?.rowsPerS ?? best.rowsPerS;
  const servedRatio = bestServed ? bestServed.reqPerS / ceilingRowsPerS : Number.NaN;
  const servedRatioRested = bestServed ? bestServed.reqPerS / best.rowsPerS : Number.NaN;
  const on16 = runs.find((r) => r.batching === 'on' && r.concurrency === GAIN_CONCURRENCY);
  const off16 = runs.find((r) => r.batching === 'off' && r.concurrency === GAIN_CONCURRENCY);
  const gain = on16 && off16 && clean(on16) && clean(off16) ? on16.reqPerS / off16.reqPerS : Number.NaN;
  const p99NotWorse = on16 && off16 ? on16.p99Ms <= off16.p99Ms : undefined;
  const servedMet = servedRatio >= GOAL_SERVED_VS_CEILING;
  const gainMet = GOAL_BATCHING_GAIN === undefined ? undefined : gain >= GOAL_BATCHING_GAIN && p99NotWorse === true;

  lines.push('');
  lines.push(
    `served/ceiling at saturation: ${f(servedRatio, 2)} (${bestServed ? `${f(bestServed.reqPerS, 0)} req/s at concurrency ${bestServed.concurrency}` : 'no clean run'} / ` +
      `${f(ceilingRowsPerS, 0)} rows/s at batch ${best.batch} right after it; ${f(servedRatioRested, 2)} against the rested ceiling of the start); ` +
      `goal >= ${GOAL_SERVED_VS_CEILING}: ${servedMet ? 'met' : 'MISSED'}`,
  );
  lines.push(
    `batching on/off at concurrency ${GAIN_CONCURRENCY}: ${f(gain, 2)}x throughput` +
      (on16 && off16 ? `, p99 ${f(on16.p99Ms, 2)} ms vs ${f(off16.p99Ms, 2)} ms (${p99NotWorse ? 'not worse' : 'WORSE'})` : ', not measured') +
      (GOAL_BATCHING_GAIN === undefined ? '; no goal for this model (reported)' : `; goal >= ${GOAL_BATCHING_GAIN}x with p99 not worse: ${gainMet ? 'met' : 'MISSED'}`),
  );
  const withErrors = runs.filter((r) => !clean(r));
  if (withErrors.length > 0) {
    lines.push(`runs with errors (left out of the ratios): ${withErrors.map((r) => `${r.batching}/c${r.concurrency}: ${r.errorSamples[0] ?? ''}`).join('; ')}`);
  }
  const drift = Math.abs(recheck.rowsPerS - best.rowsPerS) / best.rowsPerS;
  const busiest = Math.max(
    ...runs.map((r) => Math.max(r.otherCpu, r.ceilingAfter?.otherCpu ?? 0)),
    ...ceiling.map((p) => p.otherCpu),
    recheck.otherCpu,
  );
  if (drift > NOISY_DRIFT) {
    lines.push(
      `note: the ceiling moved ${pct(drift)} between the start (${f(best.rowsPerS, 0)} rows/s) and the end (${f(recheck.rowsPerS, 0)}): ` +
        'this CPU is slower after sustained load, hence the ceiling measured right after each batching-on run.',
    );
  }
  if (busiest > NOISY_OTHER_CPU) {
    lines.push(
      `WARNING: noisy machine: other processes used up to ${pct(busiest)} of the CPU during a measurement; ` +
        'rerun on a quiet machine before trusting the ratios.',
    );
  }
  lines.push(`(${heartbeats} heartbeat(s) answered; total ${(totalMs / 1000).toFixed(0)} s)`);
  console.log(lines.join('\n'));

  return {
    date: new Date().toISOString(),
    machine: { cores: CORES, cpu: os.cpus()[0]?.model, memoryGiB: Math.round(os.totalmem() / 2 ** 30), node: process.version, platform: `${os.platform()} ${os.arch()}` },
    settings: { model: MODEL, ...W.settings, seconds: SECONDS, warmupSeconds: WARMUP_SECONDS, ceilingSeconds: CEILING_SECONDS, intraOpThreads: INTRA_OP_THREADS ?? 'ORT default', inferenceThread: INFERENCE_THREAD, httpThreads: HTTP_THREADS, instances: INSTANCES ?? 'config', provider: PROVIDER, loadgenThreads: LOADGEN_THREADS, maxRate: Number.isFinite(MAX_RATE) ? MAX_RATE : undefined },
    ceiling: { points: ceiling, best, recheck, drift },
    runs,
    ratios: {
      servedVsCeiling: {
        value: servedRatio,
        served: bestServed?.reqPerS,
        concurrency: bestServed?.concurrency,
        ceiling: ceilingRowsPerS,
        valueVsRestedCeiling: servedRatioRested,
        restedCeiling: best.rowsPerS,
        goal: GOAL_SERVED_VS_CEILING,
        met: servedMet,
      },
      batchingGain: { concurrency: GAIN_CONCURRENCY, value: gain, p99OnMs: on16?.p99Ms, p99OffMs: off16?.p99Ms, p99NotWorse, goal: GOAL_BATCHING_GAIN, met: gainMet },
    },
    noisy: { maxOtherCpu: busiest, warned: busiest > NOISY_OTHER_CPU },
  };
}

/** The ceiling's ms per run at `batch` rows, interpolated linearly between the measured batch sizes. */
function ceilingMsAt(points: readonly CeilingPoint[], batch: number): number {
  if (!Number.isFinite(batch)) return Number.NaN;
  const sorted = [...points].sort((a, b) => a.batch - b.batch);
  for (let i = 1; i < sorted.length; i++) {
    const lo = sorted[i - 1]!;
    const hi = sorted[i]!;
    if (batch <= hi.batch) return lo.msPerRun + ((hi.msPerRun - lo.msPerRun) * (Math.max(batch, lo.batch) - lo.batch)) / (hi.batch - lo.batch);
  }
  return sorted.at(-1)!.msPerRun;
}

function busyNote(otherCpu: number): string {
  return otherCpu > NOISY_OTHER_CPU ? ` (other processes used ${(otherCpu * 100).toFixed(0)}% of the CPU meanwhile)` : '';
}

main().catch((err: unknown) => {
  console.error('[bench] failed:', err);
  process.exitCode = 1;
});
