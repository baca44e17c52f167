/**
 * `npm run bench:gpu`: bench:backend on a GPU host, ready to run, bounded in
 * time (about 8 minutes with defaults). It installs nothing: first it checks
 * that the GPU provider (BENCH_GPU_PROVIDER: `cuda`, or `webgpu`, which
 * onnxruntime-node bundles and which needs only a Vulkan driver) can serve
 * (EXECUTION_PROVIDERS, the NVIDIA driver and onnxruntime-node's CUDA library
 * from `npm run install:cuda` for CUDA, and a real session on a tiny model)
 * and stops at once, saying what is missing, when it cannot; then it runs
 * `bench/backend.ts` with BENCH_PROVIDER set to it for `ocr-det` and `embed`,
 * each under `timeout`, then each model once more on the CPU provider of the
 * same machine at concurrency 16 (the baseline; BENCH_GPU_BASELINE=0 skips
 * it), and prints one summary: served / ceiling and batching on/off per
 * model, and the GPU's ceiling and served rate over the CPU's. Exit 0 when every step ran (goals met or not), 1 when the
 * provider is unavailable, 2 when a step failed or timed out. Method:
 * docs/benchmarks.md, "bench:gpu".
 *
 * Env: BENCH_GPU_PROVIDER (cuda), BENCH_GPU_MODELS (ocr-det,embed), BENCH_GPU_BASELINE (1), BENCH_GPU_STEP_SECONDS (200 per
 * model), BENCH_GPU_PREFLIGHT_SECONDS (90), CUDA_DEVICE_ID (0); each step gets
 * BENCH_SECONDS (5), BENCH_WARMUP_SECONDS (1), BENCH_CEILING_SECONDS (1),
 * BENCH_QUIET_WAIT_SECONDS (3), BENCH_LOADGEN_THREADS (4), BENCH_MAX_RATE
 * (20000) and BENCH_CONCURRENCY (ocr-det 1,4,16,64; embed 1,16,48) unless
 * set; results in bench/results/gpu-<model>.json.
 */

import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { generateDemoModels } from '../gpu-backend/src/demo-models/generate.ts';
import { silentLogger } from '../gpu-backend/src/log.ts';
import { SessionFactory } from '../gpu-backend/src/serving/sessions.ts';
import { envList, envNumber } from './lib/env.ts';

const ROOT = path.resolve(import.meta.dirname, '..');
const MODELS = envList('BENCH_GPU_MODELS', 'ocr-det,embed');
for (const m of MODELS) if (m !== 'ocr-det' && m !== 'embed') throw new Error(`BENCH_GPU_MODELS must list ocr-det and/or embed, got ${JSON.stringify(m)}`);
const STEP_SECONDS = envNumber('BENCH_GPU_STEP_SECONDS', 200, 30, 600);
const PREFLIGHT_SECONDS = envNumber('BENCH_GPU_PREFLIGHT_SECONDS', 90, 10, 600);
const CUDA_DEVICE_ID = process.env.CUDA_DEVICE_ID?.trim() || '0';
const PROVIDER = gpuProvider(process.env.BENCH_GPU_PROVIDER);
const NAME = PROVIDER === 'cuda' ? 'CUDA' : 'WebGPU';
const BASELINE = (process.env.BENCH_GPU_BASELINE?.trim() || '1') !== '0';
/** The baseline's concurrency: where bench:backend measures batching on and off. */
const BASELINE_CONCURRENCY = '16';
const STEP_DEFAULTS: Record<string, string> = {
  BENCH_SECONDS: '5',
  BENCH_WARMUP_SECONDS: '1',
  BENCH_CEILING_SECONDS: '1',
  BENCH_QUIET_WAIT_SECONDS: '3',
  BENCH_LOADGEN_THREADS: '4',
  BENCH_MAX_RATE: '20000',
};
// embed's queue holds 48 (max_queue_size): more concurrency only measures 429s.
const CONCURRENCY: Record<string, string> = { 'ocr-det': '1,4,16,64', embed: '1,16,48' };

function gpuProvider(value: string | undefined): 'cuda' | 'webgpu' {
  const v = (value?.trim() || 'cuda').toLowerCase();
  if (v !== 'cuda' && v !== 'webgpu') throw new Error(`BENCH_GPU_PROVIDER must be cuda or webgpu, got ${JSON.stringify(value)}`);
  return v;
}

const log = (line: string) => console.log(`[bench:gpu] ${line}`);

class Unavailable extends Error {}

/** Throws Unavailable saying why the GPU provider cannot serve here; returns when a session on it opened and ran. */
async function preflight(): Promise<void> {
  const providers = process.env.EXECUTION_PROVIDERS?.trim();
  if (providers && !providers.split(',').map((p) => p.trim().toLowerCase()).includes(PROVIDER)) {
    throw new Unavailable(`EXECUTION_PROVIDERS=${providers} leaves ${PROVIDER} out; unset it or include ${PROVIDER}.`);
  }
  log(`EXECUTION_PROVIDERS: ${providers ?? '(unset: the backend default cuda,cpu)'}; the benches force ${PROVIDER} with BENCH_PROVIDER=${PROVIDER}`);
  if (PROVIDER === 'cuda' && (os.platform() !== 'linux' || os.arch() !== 'x64')) throw new Unavailable(`onnxruntime-node ships CUDA for linux x64 only; this is ${os.platform()} ${os.arch()}.`);

  const smi = await run('nvidia-smi', ['-L'], 20_000);
  const noSmi = smi.code !== 0 || !/GPU \d+:/.test(smi.out);
  if (noSmi && PROVIDER === 'cuda') {
    throw new Unavailable(`no NVIDIA GPU or driver: \`nvidia-smi -L\` ${smi.code === null ? 'did not finish' : smi.code === 127 ? 'is not installed' : `exited ${smi.code}`}${smi.out.trim() ? `: ${smi.out.trim().split('\n')[0]}` : ''}`);
  }
  if (noSmi) log('nvidia-smi: no NVIDIA GPU listed (WebGPU may still find another vendor\'s)');
  else for (const line of smi.out.trim().split('\n')) log(`nvidia-smi: ${line}`);
  if (PROVIDER === 'cuda') checkCudaLibrary();
  await tinySession();
}

/** onnxruntime-node's CUDA provider library is there (`npm run install:cuda`). */
function checkCudaLibrary(): void {

  const binDir = path.join(ROOT, 'node_modules', 'onnxruntime-node', 'bin');
  const libs = existsSync(binDir)
    ? readdirSync(binDir, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('libonnxruntime_providers_cuda.so'))
    : [];
  if (libs.length === 0) {
    throw new Unavailable(`onnxruntime-node's CUDA provider (libonnxruntime_providers_cuda.so) is not under ${path.relative(ROOT, binDir)}: run \`npm run install:cuda\` first (this script installs nothing).`);
  }
  log(`onnxruntime-node CUDA provider: ${libs.map((l) => path.join(path.relative(ROOT, binDir), l)).join(', ')}`);
}

/** A real session on the provider: for CUDA the driver, CUDA 12 and cuDNN 9 libraries all have to load; for WebGPU a GPU adapter must be found. */
async function tinySession(): Promise<void> {
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'mesh-bench-gpu-'));
  try {
    await generateDemoModels(tmp);
    const sessions = new SessionFactory({ providers: [PROVIDER], cudaDeviceId: Number(CUDA_DEVICE_ID), thread: 'main', log: silentLogger });
    const opened = await sessions.open(path.join(tmp, 'classifier', '1', 'model.onnx')).catch((err: unknown) => {
      throw new Unavailable(`a ${NAME} session did not open${PROVIDER === 'cuda' ? ` on device ${CUDA_DEVICE_ID}` : ''}: ${sessions.cudaFailure ?? sessions.webgpuFailure ?? (err as Error).message}`);
    });
    const ort = await import('onnxruntime-node');
    const out = await opened.session.run({ features: new ort.Tensor('float32', new Float32Array(16), [1, 16]) }, ['probabilities']);
    await opened.session.release();
    if (!out.probabilities) throw new Unavailable(`a ${NAME} session opened but its run returned no output`);
    log(`a ${NAME} session opened and ran (provider ${opened.provider})`);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/** Runs `cmd` and collects its output; code 127 when it does not exist, null when killed at `timeoutMs`. */
function run(cmd: string, args: string[], timeoutMs: number): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    let out = '';
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.stdout.on('data', (c: Buffer) => (out += c.toString('utf8')));
    child.stderr.on('data', (c: Buffer) => (out += c.toString('utf8')));
    child.on('error', () => {
      clearTimeout(timer);
      resolve({ code: 127, out });
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

interface Step {
  model: string;
  provider: 'cuda' | 'webgpu' | 'cpu';
  code: number | null;
  timedOut: boolean;
  seconds: number;
  tail: string;
  file: string;
}

/**
 * bench/backend.ts for `model` on `provider` (the GPU one, or `cpu` for the
 * baseline at BASELINE_CONCURRENCY) under `timeout -s INT` (the bench stops
 * its processes on SIGINT), its output prefixed.
 */
async function step(model: string, provider: Step['provider']): Promise<Step> {
  const baseline = provider === 'cpu';
  const file = path.join('bench', 'results', baseline ? `gpu-baseline-cpu-${model}.json` : `gpu-${model}.json`);
  const env: Record<string, string | undefined> = {
    ...process.env,
    ...Object.fromEntries(Object.entries(STEP_DEFAULTS).filter(([k]) => !process.env[k])),
    BENCH_CONCURRENCY: baseline ? BASELINE_CONCURRENCY : (process.env.BENCH_CONCURRENCY ?? CONCURRENCY[model]),
    BENCH_MODEL: model,
    BENCH_PROVIDER: provider,
    BENCH_RESULTS_FILE: file,
    CUDA_DEVICE_ID,
  };
  log(`${model}: bench:backend on ${baseline ? 'the CPU (baseline)' : NAME}, at most ${STEP_SECONDS} s (concurrency ${env.BENCH_CONCURRENCY}, ${env.BENCH_SECONDS} s per run)`);
  const t0 = performance.now();
  let tail = '';
  const code = await new Promise<number | null>((resolve) => {
    const child = spawn('timeout', ['-s', 'INT', '-k', '20', String(STEP_SECONDS), process.execPath, path.join(ROOT, 'bench', 'backend.ts')], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    const pipe = (c: Buffer) => {
      const text = c.toString('utf8');
      tail = (tail + text).slice(-4000);
      for (const line of text.split('\n')) if (line.trim()) console.log(`  [${model}] ${line}`);
    };
    child.stdout.on('data', pipe);
    child.stderr.on('data', pipe);
    child.on('error', (err) => {
      tail += `\n${err.message}`;
      resolve(127);
    });
    child.on('close', (c) => resolve(c));
  });
  const seconds = (performance.now() - t0) / 1000;
  return { model, provider, code, timedOut: code === 124 || code === 137 || code === 130, seconds, tail, file };
}

interface BackendResults {
  ceiling: { best: { batch: number; rowsPerS: number } };
  ratios: {
    servedVsCeiling: { value: number | null; served?: number; concurrency?: number; ceiling: number; goal: number; met: boolean };
    batchingGain: { value: number | null; p99OnMs?: number; p99OffMs?: number; goal?: number; met?: boolean };
  };
  runs: { batching: string; concurrency: number; reqPerS: number; errors: Record<string, number> }[];
}

/** A step's results, when it ran to the end and wrote them. */
function resultsOf(s: Step): BackendResults | undefined {
  try {
    return s.code === 0 ? (JSON.parse(readFileSync(path.join(ROOT, s.file), 'utf8')) as BackendResults) : undefined;
  } catch {
    return undefined;
  }
}

/** Requests/s served with batching on at `concurrency`, when that run had no error. */
function servedAt(r: BackendResults, concurrency: number): number | undefined {
  const run = r.runs.find((x) => x.batching === 'on' && x.concurrency === concurrency);
  return run && Object.values(run.errors).every((n) => n === 0) ? run.reqPerS : undefined;
}

function summary(steps: Step[]): void {
  const f = (v: number | null | undefined, d = 2) => (typeof v === 'number' && Number.isFinite(v) ? v.toFixed(d) : 'n/a');
  const lines = ['', `bench:gpu summary (BENCH_PROVIDER=${PROVIDER}):`, ''];
  lines.push('| model | provider | step | ceiling rows/s (batch) | best served req/s (concurrency) | served / ceiling (goal) | batching on/off at 16 (p99 on / off ms) | errors |', '| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |');
  for (const s of steps) {
    const state = s.code === 0 ? `ok, ${s.seconds.toFixed(0)} s` : s.timedOut ? `TIMED OUT after ${s.seconds.toFixed(0)} s` : `FAILED (exit ${s.code})`;
    const r = resultsOf(s);
    if (!r) {
      lines.push(`| ${s.model} | ${s.provider} | ${state} | - | - | - | - | - |`);
      continue;
    }
    const sv = r.ratios.servedVsCeiling;
    const g = r.ratios.batchingGain;
    const errors = r.runs.reduce((n, run) => n + Object.values(run.errors).reduce((a, b) => a + b, 0), 0);
    lines.push(
      `| ${s.model} | ${s.provider} | ${state} | ${f(r.ceiling.best.rowsPerS, 0)} (${r.ceiling.best.batch}) | ${f(sv.served, 0)} (${sv.concurrency ?? '-'}) | ${f(sv.value)} (>= ${sv.goal}: ${sv.met ? 'met' : 'MISSED'}) | ` +
        `${f(g.value)}x (${f(g.p99OnMs, 1)} / ${f(g.p99OffMs, 1)})${g.goal !== undefined ? ` (>= ${g.goal}x: ${g.met ? 'met' : 'MISSED'})` : ''} | ${errors} |`,
    );
  }
  const pairs = MODELS.map((model) => ({
    model,
    gpu: steps.find((s) => s.model === model && s.provider !== 'cpu'),
    cpu: steps.find((s) => s.model === model && s.provider === 'cpu'),
  })).filter((p) => p.cpu);
  if (pairs.length > 0) {
    const at = Number(BASELINE_CONCURRENCY);
    lines.push('', `${NAME} over this machine's CPU provider (one run each, same machine):`, '');
    lines.push(`| model | ceiling rows/s: ${PROVIDER} / cpu | served req/s at concurrency ${at}, batching on: ${PROVIDER} / cpu |`, '| --- | ---: | ---: |');
    for (const p of pairs) {
      const g = p.gpu && resultsOf(p.gpu);
      const c = resultsOf(p.cpu!);
      const ratio = (a: number | undefined, b: number | undefined) => (a !== undefined && b !== undefined && b > 0 ? `${f(a, 0)} / ${f(b, 0)} = **${f(a / b, 1)}x**` : 'n/a');
      lines.push(`| ${p.model} | ${ratio(g?.ceiling.best.rowsPerS, c?.ceiling.best.rowsPerS)} | ${ratio(g ? servedAt(g, at) : undefined, c ? servedAt(c, at) : undefined)} |`);
    }
  }
  lines.push('', `Full tables above; results in ${steps.map((s) => s.file).join(', ')}.`);
  for (const s of steps.filter((x) => x.code !== 0)) lines.push('', `${s.model} (${s.provider}): last output:`, s.tail.trim().split('\n').slice(-15).join('\n'));
  console.log(lines.join('\n'));
}

async function main(): Promise<void> {
  const started = performance.now();
  log(`${os.cpus().length} CPU(s), node ${process.version}; models ${MODELS.join(', ')}; at most ${PREFLIGHT_SECONDS} s of checks and ${STEP_SECONDS} s per model step${BASELINE ? ` (${MODELS.length} on ${NAME}, ${MODELS.length} on the CPU as the baseline)` : ""}`);
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      preflight(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Unavailable(`the ${NAME} checks did not finish within ${PREFLIGHT_SECONDS} s`)), PREFLIGHT_SECONDS * 1000);
      }),
    ]);
  } catch (err) {
    if (!(err instanceof Unavailable)) throw err;
    console.error(`[bench:gpu] ${NAME.toUpperCase()} UNAVAILABLE: ${err.message}`);
    console.error('[bench:gpu] nothing was benchmarked (this script installs nothing and never falls back to the CPU).');
    process.exit(1);
  } finally {
    clearTimeout(timer);
  }
  const steps: Step[] = [];
  for (const model of MODELS) steps.push(await step(model, PROVIDER));
  if (BASELINE) for (const model of MODELS) steps.push(await step(model, 'cpu'));
  summary(steps);
  log(`total ${((performance.now() - started) / 1000).toFixed(0)} s`);
  process.exitCode = steps.every((s) => s.code === 0) ? 0 : 2;
}

main().catch((err: unknown) => {
  console.error('[bench:gpu] failed:', err);
  process.exitCode = 2;
});
