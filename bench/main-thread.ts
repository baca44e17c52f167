/**
 * `npm run bench:main-thread`: how much CPU one request costs the backend's
 * main thread, with the per-request work on HTTP threads (HTTP_THREADS=2) and
 * the model on a worker (INFERENCE_THREAD=worker), as on a GPU host. What is
 * left on the main thread is serialised there and caps one backend however
 * fast its GPU: 1 / (its CPU per request). A script, not a test: it prints
 * figures from one run, never absolute times as pass/fail. Method and
 * figures: docs/benchmarks.md.
 *
 * The main thread is the thread whose tid is the backend's pid; its on-CPU
 * time is read from /proc/<pid>/task/<pid>/schedstat (nanoseconds) before and
 * after each timed closed-loop phase (and from .../stat, 10 ms ticks, as a
 * cross-check). Every other thread's time is summed by thread name.
 *
 * Env: BENCH_MODEL (embed; also classifier), BENCH_CONCURRENCY (16,64),
 * BENCH_SECONDS (8), BENCH_WARMUP_SECONDS (1.5), BENCH_ROUNDS (2),
 * BENCH_PROVIDER (cpu), BENCH_LOADGEN_THREADS (1), BENCH_QUIET_WAIT_SECONDS
 * (20); HTTP_THREADS (2) and INFERENCE_THREAD (worker) go to the backend, with
 * INTRA_OP_THREADS and CUDA_DEVICE_ID when set; BENCH_BACKEND_ENV: JSON of
 * extra backend env (e.g. NODE_OPTIONS for a CPU profile). It first measures
 * what a thread hand-off costs on this machine (lib/wake-cost.ts). Results also go to
 * bench/results/main-thread.json.
 */


import os from 'node:os';
import path from 'node:path';
import { generateDemoModels } from '../gpu-backend/src/demo-models/generate.ts';
import { startBackend, startFakeEdge, type BackendProcess, type FakeEdge } from './lib/backend-process.ts';
import { machineBusyMs, processCpuMs, threadCpuMs, threadRunMs, threadsOf, waitForQuiet } from './lib/cpu.ts';
import { envIntList, envNumber } from './lib/env.ts';
import { quantile, median } from './lib/load.ts';
import { closedLoopThreads } from './lib/load-threads.ts';
import { writeResults } from './lib/results.ts';
import { measureWakeCost, type WakeCost } from './lib/wake-cost.ts';
import { machineLine, openScratch } from './lib/scratch.ts';

const GOAL_MAIN_THREAD_MS = 0.03;
const TEXT =
  'The delivery drone left the warehouse at dawn, crossed the river twice in heavy wind, and landed on the hospital roof with three boxes of insulin for the night shift nurses.';
const WORKLOADS: Record<string, { body: Uint8Array; output: string; shape: string }> = {
  embed: { body: json({ inputs: [{ name: 'text', shape: [1], datatype: 'BYTES', data: [TEXT] }] }), output: 'embedding', shape: '1x256' },
  classifier: {
    body: json({ inputs: [{ name: 'features', shape: [1, 16], datatype: 'FP32', data: Array.from({ length: 16 }, (_, i) => i / 10) }] }),
    output: 'probabilities',
    shape: '1x4',
  },
};
const MODEL = process.env.BENCH_MODEL?.trim() || 'embed';
const WORKLOAD = WORKLOADS[MODEL];
if (!WORKLOAD) throw new Error(`BENCH_MODEL must be one of ${Object.keys(WORKLOADS).join(', ')}, got ${JSON.stringify(MODEL)}`);
const CONCURRENCIES = envIntList('BENCH_CONCURRENCY', '16,64', 1, 256);
const SECONDS = envNumber('BENCH_SECONDS', 8, 1, 45);
const WARMUP_SECONDS = envNumber('BENCH_WARMUP_SECONDS', 1.5, 0, 10);
const ROUNDS = envNumber('BENCH_ROUNDS', 2, 1, 10);
const LOADGEN_THREADS = envNumber('BENCH_LOADGEN_THREADS', 1, 1, 64);
const PROVIDER = (process.env.BENCH_PROVIDER?.trim() || 'cpu').toLowerCase();
if (PROVIDER !== 'cpu' && PROVIDER !== 'cuda' && PROVIDER !== 'webgpu') throw new Error(`BENCH_PROVIDER must be cpu, cuda or webgpu, got ${JSON.stringify(PROVIDER)}`);
const HTTP_THREADS = process.env.HTTP_THREADS?.trim() || '2';
const INFERENCE_THREAD = process.env.INFERENCE_THREAD?.trim() || 'worker';
/** The most requests/s a token pool is sized for. */
const MAX_RATE = 5000;
const CORES = os.availableParallelism();
const NOISY_OTHER_CPU = 0.05;
const QUIET_WAIT_MS = envNumber('BENCH_QUIET_WAIT_SECONDS', 20, 0, 600) * 1000;

interface Phase {
  round: number;
  concurrency: number;
  requests: number;
  reqPerS: number;
  p50Ms: number;
  p99Ms: number;
  /** Main thread CPU per request, ms: schedstat (ns resolution) and stat (10 ms ticks). */
  mainMsPerReq: number;
  mainTickMsPerReq: number;
  /** Share of one core the main thread was busy during the phase. */
  mainBusy: number;
  /** Requests per model execution (/metrics: nv_inference_count / nv_inference_exec_count). */
  meanBatch: number;
  backendMsPerReq: number;
  /** Other threads' CPU per request by thread name, ms. */
  threadsMsPerReq: Record<string, number>;
  loadgenMsPerReq: number;
  otherCpu: number;
  errors: Record<string, number>;
  errorSamples: string[];
}

const log = (line: string) => console.log(`[bench] ${line}`);

async function main(): Promise<void> {
  const started = performance.now();
  let edge: FakeEdge | undefined;
  let backend: BackendProcess | undefined;
  const scratch = await openScratch('mesh-bench-main-', log, [() => backend?.stop(), () => edge?.close()]);
  const tmp = scratch.dir;
  try {
    log(machineLine());
    const wake = await measureWakeCost();
    log(
      `thread hand-offs on this machine: a post to a sleeping thread costs the poster ${wake.postAsleepUs.toFixed(1)} us of CPU (${wake.postAwakeUs.toFixed(1)} us to an awake one) ` +
        `and the woken thread ${wake.wokenUs.toFixed(1)} us: each time the main thread wakes another thread or is woken counts about that much`,
    );
    const repo = path.join(tmp, 'models');
    await generateDemoModels(repo);
    edge = await startFakeEdge();
    backend = await startBackend({
      edge,
      repository: repo,
      models: MODEL,
      env: {
        EXECUTION_PROVIDERS: PROVIDER,
        HTTP_THREADS,
        INFERENCE_THREAD,
        ...(process.env.INTRA_OP_THREADS ? { INTRA_OP_THREADS: process.env.INTRA_OP_THREADS } : {}),
        ...(process.env.CUDA_DEVICE_ID ? { CUDA_DEVICE_ID: process.env.CUDA_DEVICE_ID } : {}),
        ...(process.env.BENCH_BACKEND_ENV ? (JSON.parse(process.env.BENCH_BACKEND_ENV) as Record<string, string>) : {}),
      },
    });
    const ready = (await (await fetch(`${backend.url}/v2/health/ready`)).json()) as { executionProvider?: string };
    if (ready.executionProvider !== PROVIDER) throw new Error(`the backend serves on ${ready.executionProvider}, not ${PROVIDER}`);
    if (!Number.isFinite(threadRunMs(backend.pid))) throw new Error(`/proc/${backend.pid}/task/${backend.pid}/schedstat is not readable: this bench needs Linux /proc`);
    const names = threadsOf(backend.pid);
    log(
      `backend pid ${backend.pid} ready at ${backend.url} (${MODEL}, ${PROVIDER}, HTTP_THREADS=${HTTP_THREADS}, INFERENCE_THREAD=${INFERENCE_THREAD}); ` +
        `${names.length} threads: ${summariseNames(names.map((t) => t.name))}`,
    );
    const idleMsPerS = await idleMainThread(backend.pid, 2000);
    log(`idle: the main thread uses ${idleMsPerS.toFixed(3)} ms of CPU per second with no request`);

    const phases: Phase[] = [];
    for (let round = 1; round <= ROUNDS; round++) {
      for (const concurrency of round % 2 === 1 ? CONCURRENCIES : [...CONCURRENCIES].reverse()) {
        phases.push(await measure(edge, backend, round, concurrency));
      }
    }
    const results = report(phases, idleMsPerS, wake, performance.now() - started);
    await writeResults('main-thread.json', results, log);
  } finally {
    await scratch.close();
  }
}

async function measure(edge: FakeEdge, backend: BackendProcess, round: number, concurrency: number): Promise<Phase> {
  const what = `round ${round}/${ROUNDS}, concurrency ${String(concurrency).padStart(3)}`;
  const url = `${backend.url}/v2/models/${MODEL}/infer`;
  const quiet = await waitForQuiet({ pids: [backend.pid], cores: CORES, threshold: NOISY_OTHER_CPU, maxMs: QUIET_WAIT_MS, sampleMs: 300 });
  if (quiet.other > NOISY_OTHER_CPU) log(`${what}: other processes still use ${(quiet.other * 100).toFixed(0)}% of the CPU; measuring anyway (flagged)`);
  let count = Math.ceil(MAX_RATE * SECONDS * 1.5) + 2 * concurrency;
  if (WARMUP_SECONDS > 0) {
    const tokens = await edge.signTokens(MODEL, WORKLOAD!.body, Math.ceil(MAX_RATE * WARMUP_SECONDS) + concurrency);
    const warm = await closedLoopThreads({ url, body: WORKLOAD!.body, tokens, concurrency, durationMs: WARMUP_SECONDS * 1000, threads: LOADGEN_THREADS, check });
    if (warm.ok === 0 || warm.errors['bad-answer']) throw new Error(`${what}: the warm-up failed: ${warm.errorSamples.join('; ')}`);
    if (!warm.exhausted) count = Math.min(count, Math.ceil((warm.ok / warm.elapsedMs) * 1000 * SECONDS * 2) + 2 * concurrency + 200);
  }
  const tokens = await edge.signTokens(MODEL, WORKLOAD!.body, count);
  const sample = () => {
    const self = process.cpuUsage();
    return {
      main: threadRunMs(backend.pid),
      mainTicks: threadCpuMs(backend.pid),
      process: processCpuMs(backend.pid),
      threads: threadsOf(backend.pid),
      loadgen: (self.user + self.system) / 1000,
      machine: machineBusyMs(),
      at: performance.now(),
    };
  };
  const m0 = await batchCounts(backend.url);
  const a = sample();
  const result = await closedLoopThreads({ url, body: WORKLOAD!.body, tokens, concurrency, durationMs: SECONDS * 1000, threads: LOADGEN_THREADS });
  const b = sample();
  const m1 = await batchCounts(backend.url);
  const n = Math.max(1, result.ok);
  const byName: Record<string, number> = {};
  for (const t of b.threads) {
    if (t.tid === backend.pid) continue;
    const before = a.threads.find((x) => x.tid === t.tid)?.ms ?? 0;
    byName[t.name] = (byName[t.name] ?? 0) + (t.ms - before) / n;
  }
  const ours = b.process - a.process + (b.loadgen - a.loadgen);
  const phase: Phase = {
    round,
    concurrency,
    requests: result.ok,
    reqPerS: (result.ok * 1000) / result.elapsedMs,
    p50Ms: quantile(result.latenciesMs, 0.5),
    p99Ms: quantile(result.latenciesMs, 0.99),
    mainMsPerReq: (b.main - a.main) / n,
    mainTickMsPerReq: (b.mainTicks - a.mainTicks) / n,
    mainBusy: (b.main - a.main) / (b.at - a.at),
    meanBatch: (m1.inferences - m0.inferences) / (m1.executions - m0.executions),
    backendMsPerReq: (b.process - a.process) / n,
    threadsMsPerReq: byName,
    loadgenMsPerReq: (b.loadgen - a.loadgen) / n,
    otherCpu: Math.max(0, b.machine - a.machine - ours) / (CORES * (b.at - a.at)),
    errors: result.errors,
    errorSamples: result.errorSamples,
  };
  const errors = Object.values(result.errors).reduce((x, y) => x + y, 0);
  log(
    `${what}: ${phase.reqPerS.toFixed(0)} req/s, p50 ${phase.p50Ms.toFixed(2)} ms, mean batch ${phase.meanBatch.toFixed(2)}; main thread ${(phase.mainMsPerReq * 1000).toFixed(1)} us/req ` +
      `(ticks: ${(phase.mainTickMsPerReq * 1000).toFixed(0)} us), busy ${(phase.mainBusy * 100).toFixed(1)}%; backend ${phase.backendMsPerReq.toFixed(3)} ms/req` +
      (errors > 0 ? `; ${errors} errors ${JSON.stringify(result.errors)} ${result.errorSamples[0] ?? ''}` : '') +
      (phase.otherCpu > NOISY_OTHER_CPU ? ` (other processes used ${(phase.otherCpu * 100).toFixed(0)}% of the CPU)` : ''),
  );
  return phase;
}

/** The model's inferences and executions so far (its /metrics counters, summed over versions). */
async function batchCounts(base: string): Promise<{ inferences: number; executions: number }> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const out = { inferences: 0, executions: 0 };
  for (const line of text.split('\n')) {
    const m = /^nv_inference_(count|exec_count)\{([^}]*)\} (\S+)$/.exec(line);
    if (!m || !m[2]!.includes(`model="${MODEL}"`)) continue;
    if (m[1] === 'count') out.inferences += Number(m[3]);
    else out.executions += Number(m[3]);
  }
  return out;
}

function check(body: Buffer): void {
  const out = (JSON.parse(body.toString('utf8')) as { outputs?: { name: string; shape: number[] }[] }).outputs?.[0];
  if (!out || out.name !== WORKLOAD!.output || out.shape.join('x') !== WORKLOAD!.shape) throw new Error(`unexpected answer: ${body.toString('utf8').slice(0, 200)}`);
}

async function idleMainThread(pid: number, ms: number): Promise<number> {
  const a = threadRunMs(pid);
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, ms));
  return ((threadRunMs(pid) - a) * 1000) / (performance.now() - t0);
}

/** `node x3, libuv-worker x4` from a list of thread names. */
function summariseNames(names: string[]): string {
  const counts = new Map<string, number>();
  for (const n of names) counts.set(n, (counts.get(n) ?? 0) + 1);
  return [...counts].map(([n, c]) => (c > 1 ? `${n} x${c}` : n)).join(', ');
}

function report(phases: Phase[], idleMsPerS: number, wake: WakeCost, totalMs: number): unknown {
  const f = (v: number, d = 3) => (Number.isFinite(v) ? v.toFixed(d) : 'n/a');
  const lines: string[] = [];
  lines.push('', `Backend main-thread CPU per request: ${MODEL}, ${PROVIDER}, HTTP_THREADS=${HTTP_THREADS}, INFERENCE_THREAD=${INFERENCE_THREAD}, batching on, ${CORES} cores, ${SECONDS} s per phase`, '');
  const names = [...new Set(phases.flatMap((p) => Object.keys(p.threadsMsPerReq)))]
    .map((n) => ({ n, total: phases.reduce((a, p) => a + (p.threadsMsPerReq[n] ?? 0), 0) }))
    .sort((a, b) => b.total - a.total)
    .slice(0, 4)
    .map((x) => x.n);
  lines.push(
    `| round | concurrency | req/s | p50 ms | p99 ms | mean batch | main thread us/req (schedstat) | (ticks) | main thread busy | backend CPU ms/req | ${names.map((n) => `${n} ms/req`).join(' | ')} | errors |`,
    `| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ${names.map(() => '---:').join(' | ')} | ---: |`,
  );
  for (const p of phases) {
    const errors = Object.values(p.errors).reduce((a, b) => a + b, 0);
    lines.push(
      `| ${p.round} | ${p.concurrency} | ${p.reqPerS.toFixed(0)} | ${f(p.p50Ms, 2)} | ${f(p.p99Ms, 2)} | ${f(p.meanBatch, 2)} | **${f(p.mainMsPerReq * 1000, 1)}** | ${f(p.mainTickMsPerReq * 1000, 0)} | ${(p.mainBusy * 100).toFixed(1)}% | ${f(p.backendMsPerReq)} | ` +
        `${names.map((n) => f(p.threadsMsPerReq[n] ?? 0)).join(' | ')} | ${errors} |`,
    );
  }
  const verdicts = CONCURRENCIES.map((c) => {
    const ps = phases.filter((p) => p.concurrency === c);
    const med = median(ps.map((p) => p.mainMsPerReq));
    return { concurrency: c, mainMsPerReq: med, capReqPerS: 1000 / med, met: med < GOAL_MAIN_THREAD_MS };
  });
  lines.push('');
  for (const v of verdicts) {
    lines.push(
      `concurrency ${v.concurrency}: main thread ${f(v.mainMsPerReq * 1000, 1)} us per request (median over rounds): it alone would allow ~${f(v.capReqPerS, 0)} req/s; goal < ${GOAL_MAIN_THREAD_MS * 1000} us: ${v.met ? 'met' : 'MISSED'}`,
    );
  }
  lines.push(`idle main thread: ${f(idleMsPerS)} ms/s (in the figures above, not subtracted)`);
  lines.push(`thread hand-offs: ${f(wake.postAsleepUs, 1)} us to post to a sleeping thread (${f(wake.postAwakeUs, 1)} awake), ${f(wake.wokenUs, 1)} us to be woken`);
  const busiest = Math.max(...phases.map((p) => p.otherCpu));
  if (busiest > NOISY_OTHER_CPU) lines.push(`WARNING: other processes used up to ${(busiest * 100).toFixed(0)}% of the CPU during a phase.`);
  lines.push(`(total ${(totalMs / 1000).toFixed(0)} s)`);
  console.log(lines.join('\n'));
  return {
    date: new Date().toISOString(),
    machine: { cores: CORES, cpu: os.cpus()[0]?.model, node: process.version, platform: `${os.platform()} ${os.arch()}` },
    settings: { model: MODEL, provider: PROVIDER, httpThreads: HTTP_THREADS, inferenceThread: INFERENCE_THREAD, seconds: SECONDS, rounds: ROUNDS, concurrency: CONCURRENCIES, loadgenThreads: LOADGEN_THREADS },
    goal: { mainThreadMsPerReq: GOAL_MAIN_THREAD_MS },
    idleMainThreadMsPerS: idleMsPerS,
    wakeCost: wake,
    verdicts,
    phases,
    noisy: { maxOtherCpu: busiest, warned: busiest > NOISY_OTHER_CPU },
  };
}


function json(value: unknown): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(value));
}

main().catch((err: unknown) => {
  console.error('[bench] failed:', err);
  process.exitCode = 1;
});
