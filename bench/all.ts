/**
 * `npm run bench`: every benchmark, one after another (never in parallel:
 * they would measure each other), each as a child process (`npm run
 * <script>`) with its output streamed through under a prefix, then one
 * markdown report (bench/lib/report.ts) written into docs/benchmarks.md
 * between its markers. A bench that fails does not stop the others; it is
 * shown as failed in the report and the exit code is 1. bench:gpu is not run
 * (it needs a GPU); the report says so.
 *
 * Options: --quick (every bench with small settings, set through its knobs
 * unless the environment sets them; the sim with --quick), --only a,b (a
 * subset: backend, edge, settlement, tensors, main-thread, routing, sim),
 * --no-write (print the report instead of writing the docs).
 */

import { execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { readFile, readdir, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { killGroup, live, supervise } from './lib/processes.ts';
import { BENCHES, renderReport, replaceReport, scriptOf, sectionAnchors, type BenchName, type BenchOutcome, type Machine } from './lib/report.ts';
import { RESULTS_DIR } from './lib/results.ts';

interface Options {
  quick: boolean;
  only: BenchName[];
  write: boolean;
}

/** How `npm run bench` runs one bench and finds its results. */
interface BenchPlan {
  /** Knobs for --quick, set unless the environment sets them. */
  quick: Record<string, string>;
  /** Arguments for --quick. */
  quickArgs?: string[];
  /** Its results file in RESULTS_DIR, or a pattern for one with a timestamp in its name. */
  results: string | RegExp;
  /** Read as text (the sim's markdown fragment) instead of JSON. */
  text?: boolean;
}

const ROOT = path.resolve(import.meta.dirname, '..');
const DOCS = path.join(ROOT, 'docs', 'benchmarks.md');
/** A bench running longer than this is stopped and counted as failed. */
const LIMIT_S = { quick: 10 * 60, full: 60 * 60 };
/** After SIGINT, how long a bench has to stop its processes before its group is killed. */
const STOP_GRACE_MS = 20_000;

const PLANS: Record<BenchName, BenchPlan> = {
  backend: {
    quick: { BENCH_SECONDS: '2', BENCH_WARMUP_SECONDS: '0.5', BENCH_CEILING_SECONDS: '0.5', BENCH_CONCURRENCY: '16', BENCH_QUIET_WAIT_SECONDS: '2' },
    results: 'backend.json',
  },
  edge: {
    quick: { BENCH_ROUNDS: '1', BENCH_SECONDS: '2', BENCH_WARMUP_SECONDS: '0.5', BENCH_PRIME_SECONDS: '1', BENCH_QUIET_WAIT_SECONDS: '2' },
    results: 'edge.json',
  },
  settlement: {
    quick: { SETTLEMENT_BENCH_SIZES: '10000', SETTLEMENT_BENCH_SIGN: '5000', SETTLEMENT_BENCH_APPEND_RECEIPTS: '10000', SETTLEMENT_BENCH_PROOFS: '200' },
    results: /^settlement-.*\.json$/,
  },
  tensors: {
    quick: {
      BENCH_TENSOR_SIZES: '16KB,1MB',
      BENCH_ROUNDS: '1',
      BENCH_SECONDS: '1',
      BENCH_MIN_REQUESTS: '4',
      BENCH_PRIME_SECONDS: '0.5',
      BENCH_QUIET_WAIT_SECONDS: '2',
    },
    results: 'tensors.json',
  },
  'main-thread': {
    quick: { BENCH_SECONDS: '3', BENCH_WARMUP_SECONDS: '0.5', BENCH_ROUNDS: '1', BENCH_QUIET_WAIT_SECONDS: '2' },
    results: 'main-thread.json',
  },
  routing: { quick: { BENCH_BATCHES: '7', BENCH_BATCH_MS: '10' }, results: 'routing.json' },
  sim: { quick: {}, quickArgs: ['--quick'], results: 'sim.md', text: true },
};

const log = (line: string) => console.log(line);

function usage(problem: string): never {
  console.error(`${problem}\nusage: npm run bench [-- [--quick] [--only ${BENCHES.join(',')}] [--no-write]]`);
  process.exit(2);
}

function parseArgs(args: readonly string[]): Options {
  const options: Options = { quick: false, only: [...BENCHES], write: true };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === '--quick') options.quick = true;
    else if (arg === '--no-write') options.write = false;
    else if (arg === '--only' || arg.startsWith('--only=')) {
      const value = arg === '--only' ? args[++i] : arg.slice('--only='.length);
      if (!value) usage('--only needs a comma list of benches');
      const names = value.split(',').map((s) => s.trim().replace(/^bench:/, '')).filter(Boolean);
      const unknown = names.filter((n) => !(BENCHES as readonly string[]).includes(n));
      if (unknown.length > 0) usage(`--only: no bench ${unknown.map((n) => JSON.stringify(n)).join(', ')}`);
      options.only = BENCHES.filter((b) => names.includes(b));
    } else usage(`unknown argument ${JSON.stringify(arg)}`);
  }
  return options;
}

function git(...args: string[]): string | undefined {
  try {
    return execFileSync('git', args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return undefined;
  }
}

function machine(): Machine {
  const read = (file: string) => {
    try {
      return readFileSync(file, 'utf8');
    } catch {
      return '';
    }
  };
  const cpu = /^model name\s*:\s*(.+)$/m.exec(read('/proc/cpuinfo'))?.[1]?.trim() ?? os.cpus()[0]?.model ?? 'unknown CPU';
  const distro = /^PRETTY_NAME="?([^"\n]+)"?/m.exec(read('/etc/os-release'))?.[1];
  const kernel = `${os.type()} ${os.release()} ${os.arch()}`;
  return { cpu, cores: os.availableParallelism(), memoryGiB: Math.round(os.totalmem() / 2 ** 30), node: process.version, os: distro ? `${distro} (${kernel})` : kernel };
}

/** Writes `text` line by line with `prefix`, holding back an unfinished last line until it is finished or `flush`ed. */
function prefixed(prefix: string): { write(text: string): void; flush(): void } {
  let pending = '';
  return {
    write(text) {
      const lines = (pending + text).split('\n');
      pending = lines.pop()!;
      for (const line of lines) log(`${prefix}${line}`);
    },
    flush() {
      if (pending) log(`${prefix}${pending}`);
      pending = '';
    },
  };
}

/** The bench's results, written since `since` (ms epoch); throws with the reason when there are none. */
async function readResults(plan: BenchPlan, since: number): Promise<{ file: string; results: unknown }> {
  let file: string | undefined;
  if (typeof plan.results === 'string') file = path.join(RESULTS_DIR, plan.results);
  else {
    const pattern = plan.results;
    const names = (await readdir(RESULTS_DIR).catch(() => [] as string[])).filter((n) => pattern.test(n));
    const dated = await Promise.all(names.map(async (n) => ({ n, t: (await stat(path.join(RESULTS_DIR, n))).mtimeMs })));
    const newest = dated.sort((a, b) => b.t - a.t)[0];
    if (newest) file = path.join(RESULTS_DIR, newest.n);
  }
  const relative = path.relative(ROOT, file ?? path.join(RESULTS_DIR, String(plan.results)));
  const written = file ? await stat(file).catch(() => undefined) : undefined;
  // mtime has a coarser clock than Date.now() on some file systems: a second of slack.
  if (!file || !written || written.mtimeMs < since - 1000) throw new Error(`it exited 0 but wrote no ${relative} in this run`);
  const text = await readFile(file, 'utf8');
  if (plan.text) return { file: relative, results: text };
  try {
    return { file: relative, results: JSON.parse(text) as unknown };
  } catch (err) {
    throw new Error(`${relative} is not JSON: ${(err as Error).message}`);
  }
}

/** The bench running now, for Ctrl-C. */
let currentChild: ReturnType<typeof spawn> | undefined;
let interrupted = false;

/** Runs one bench to its end (or its time limit) and collects its results. */
async function runBench(name: BenchName, step: string, options: Options, scripts: Record<string, string>): Promise<BenchOutcome> {
  const plan = PLANS[name];
  const script = scriptOf(name);
  const knobs = Object.fromEntries(
    [
      ...Object.entries(process.env).filter(([k]) => /^(BENCH_|SETTLEMENT_BENCH_)/.test(k) && k !== 'BENCH_RESULTS_FILE'),
      ...(options.quick ? Object.entries(plan.quick).filter(([k]) => process.env[k] === undefined) : []),
    ].filter((e): e is [string, string] => e[1] !== undefined),
  );
  const args = options.quick ? (plan.quickArgs ?? []) : [];
  const command = [...Object.entries(knobs).map(([k, v]) => `${k}=${v}`), 'npm run', script, ...(args.length > 0 ? ['--', ...args] : [])].join(' ');
  const started = Date.now();
  const seconds = () => (Date.now() - started) / 1000;
  if (!scripts[script]) {
    return { name, command, seconds: 0, failure: { reason: `\`npm run ${script}\` does not exist: package.json has no "${script}" script.`, output: '' } };
  }
  // backend.ts writes where BENCH_RESULTS_FILE says: here, where this run reads it.
  const extra = name === 'backend' ? { BENCH_RESULTS_FILE: path.join(RESULTS_DIR, 'backend.json') } : {};
  const child = spawn('npm', ['run', script, ...(args.length > 0 ? ['--', ...args] : [])], {
    cwd: ROOT,
    env: { ...process.env, ...knobs, ...extra },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  currentChild = child;
  const supervised = supervise(child, STOP_GRACE_MS);
  const out = prefixed(`  [${name}] `);
  const err = prefixed(`  [${name}] `);
  child.stdout!.on('data', (c: Buffer) => out.write(c.toString('utf8')));
  child.stderr!.on('data', (c: Buffer) => err.write(c.toString('utf8')));
  const limitS = options.quick ? LIMIT_S.quick : LIMIT_S.full;
  let timedOut = false;
  let kill: NodeJS.Timeout | undefined;
  const limit = setTimeout(() => {
    timedOut = true;
    log(`  [${name}] still running after ${limitS} s: stopping it`);
    killGroup(child, 'SIGINT');
    kill = setTimeout(() => killGroup(child, 'SIGKILL'), STOP_GRACE_MS);
  }, limitS * 1000);
  const progress = setInterval(() => log(`${step} ... ${Math.round(seconds())} s`), 60_000);
  const ended = await new Promise<{ code: number | null; signal: NodeJS.Signals | null; error?: Error }>((resolve) => {
    child.once('error', (error) => resolve({ code: null, signal: null, error }));
    child.once('close', (code, signal) => resolve({ code, signal }));
  });
  clearTimeout(limit);
  clearTimeout(kill);
  clearInterval(progress);
  out.flush();
  err.flush();
  currentChild = undefined;
  const output = supervised.output();
  if (ended.error) {
    live.delete(child);
    return { name, command, seconds: seconds(), failure: { reason: `it did not start: ${ended.error.message}`, output } };
  }
  // Whatever of its process group is left (a workerd that outlived wrangler) goes too.
  await supervised.stop();
  if (timedOut) return { name, command, seconds: seconds(), failure: { reason: `stopped after its limit of ${limitS} s.`, output } };
  if (ended.code !== 0) {
    return { name, command, seconds: seconds(), failure: { reason: ended.signal ? `killed by ${ended.signal}.` : `exit code ${ended.code}.`, output } };
  }
  try {
    const { file, results } = await readResults(plan, started);
    return { name, command, seconds: seconds(), resultsFile: file, results };
  } catch (e) {
    return { name, command, seconds: seconds(), failure: { reason: `${(e as Error).message}.`, output } };
  }
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const options = parseArgs(argv);
  const startedAt = new Date();
  const commit = git('rev-parse', '--short', 'HEAD') ?? 'unknown';
  const dirty = (git('status', '--porcelain') ?? '') !== '';
  const scripts = (JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { scripts?: Record<string, string> }).scripts ?? {};

  process.on('SIGINT', () => {
    if (interrupted) {
      if (currentChild) killGroup(currentChild, 'SIGKILL');
      process.exit(130);
    }
    interrupted = true;
    log('interrupted: stopping the running bench (Ctrl-C again to kill it); the docs are not written');
    if (currentChild) killGroup(currentChild, 'SIGINT');
  });

  log(`npm run bench: ${options.only.map(scriptOf).join(', ')}, ${options.quick ? 'quick' : 'full'}, one after another`);
  const outcomes: BenchOutcome[] = [];
  for (const [i, name] of options.only.entries()) {
    const step = `[${i + 1}/${options.only.length}] ${scriptOf(name)}`;
    log(`${step} ...`);
    const outcome = await runBench(name, step, options, scripts);
    if (interrupted) {
      process.exitCode = 130;
      return;
    }
    outcomes.push(outcome);
    log(`${step} ... ${Math.round(outcome.seconds)} s, ${outcome.failure ? `FAILED: ${outcome.failure.reason}` : 'ok'}`);
  }

  const docs = await readFile(DOCS, 'utf8');
  const report = renderReport(
    {
      command: `npm run bench${argv.length > 0 ? ` -- ${argv.join(' ')}` : ''}`,
      date: startedAt.toISOString(),
      commit,
      dirty,
      machine: machine(),
      quick: options.quick,
      totalSeconds: (Date.now() - startedAt.getTime()) / 1000,
    },
    outcomes,
    sectionAnchors(docs),
  );
  if (options.write) {
    await writeFile(DOCS, replaceReport(docs, report));
    log(`report written to ${path.relative(process.cwd(), DOCS)}`);
  } else {
    log('');
    log(report);
  }
  const failed = outcomes.filter((o) => o.failure);
  if (failed.length > 0) {
    log(`${failed.length} of ${outcomes.length} failed: ${failed.map((o) => scriptOf(o.name)).join(', ')}`);
    process.exitCode = 1;
  }
}

await main();
