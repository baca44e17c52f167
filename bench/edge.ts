/**
 * `npm run bench:edge`: what the mesh edge adds to a request's latency, (c) the
 * mesh edge minus (b) a bare pass-through Worker in the same local runtime,
 * with (a) the backend called directly for reference; settlement runs in a
 * second workerd, as in production. A script, not a test: it prints
 * differences measured within one run, never absolute times as pass/fail.
 * Method and figures: docs/benchmarks.md.
 *
 * Env: BENCH_ROUNDS (3), BENCH_SECONDS (6), BENCH_WARMUP_SECONDS (1),
 * BENCH_PRIME_SECONDS (3), BENCH_CONCURRENCY (1,16), BENCH_MODELS (classifier;
 * also: embed), BENCH_EDGE_INTERLEAVE (1; 0: separate phases only),
 * BENCH_EDGE_SETTLEMENT (apart; together: queue consumer and ledger in the
 * edge's workerd), BENCH_EDGE_LOCAL_TRACES (0; 1: wrangler dev's trace store
 * on), BENCH_EDGE_VARS (JSON of extra edge vars), BENCH_QUIET_WAIT_SECONDS (20;
 * 0: never wait for a quiet CPU). Results also go to bench/results/edge.json.
 */

import { readFileSync, readdirSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import type { IncomingHttpHeaders } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { importJWK, type CryptoKey } from 'jose';
import { ROOT, startMesh, type LocalMesh } from '../scripts/local-mesh.ts';
import { sha256Hex } from '../receipts/hash.ts';
import { machineBusyMs, processCpuMs } from './lib/cpu.ts';
import { envIntList, envList, envNumber } from './lib/env.ts';
import { closedLoop, interleavedLoop, quantile } from './lib/load.ts';
import { benchWranglerConfigs } from './lib/edge-config.ts';
import { signDispatchTokens } from './lib/tokens.ts';
import { startWranglerDev, type WranglerDev } from './lib/processes.ts';

const BACKEND = { id: 'fra-1', region: 'eu-west', provider: 'provider-fra' };
const COLO = 'FRA';
const GOAL_P50_MS = 0.5;
const GOAL_P99_MS = 1;
const SECONDS = envNumber('BENCH_SECONDS', 6, 1, 45); // dispatch tokens live 60 s from signing
const WARMUP_SECONDS = envNumber('BENCH_WARMUP_SECONDS', 1, 0, 10);
const ROUNDS = envNumber('BENCH_ROUNDS', 3, 1, 10);
/** Seconds of unmeasured load through each path before the first round. */
const PRIME_SECONDS = envNumber('BENCH_PRIME_SECONDS', 3, 0, 30);
/**
 * `apart` (default): the receipts queue's consumer and the ledger shards run in a second `wrangler dev`
 * (bench/lib/edge-config.ts), as production runs them elsewhere; `together`: in the edge's workerd.
 */
const SETTLEMENT = (process.env.BENCH_EDGE_SETTLEMENT ?? 'apart').trim().toLowerCase();
/** 1: leave wrangler dev's local trace store and explorer on (its default for a human at `npm start`). */
const LOCAL_TRACES = envNumber('BENCH_EDGE_LOCAL_TRACES', 0, 0, 1) === 1;
if (SETTLEMENT !== 'apart' && SETTLEMENT !== 'together') throw new Error(`BENCH_EDGE_SETTLEMENT must be "apart" or "together", got ${JSON.stringify(SETTLEMENT)}`);
const CONCURRENCIES = envIntList('BENCH_CONCURRENCY', '1,16', 1, 256);
/**
 * 1 (default): each round also runs the three paths interleaved at concurrency 1
 * (one request a, then b, then c, ...), and the goal at concurrency 1 is judged
 * on it; 0: separate phases only.
 */
const INTERLEAVE = envNumber('BENCH_EDGE_INTERLEAVE', 1, 0, 1) === 1;
const MODELS = envList('BENCH_MODELS', 'classifier');
const CORES = os.availableParallelism();
/** More than this share of the machine used by processes outside the bench flags a phase. */
const NOISY_OTHER_CPU = 0.05;
/** The most requests per second any path is assumed to reach, to size the warm-up's token pool. */
const MAX_RATE = 6000;
/** Before each phase, wait up to this long (and 6x this long in all) for other processes to leave the CPU alone. */
const QUIET_WAIT_MS = envNumber('BENCH_QUIET_WAIT_SECONDS', 20, 0, 600) * 1000;
let quietBudgetMs = 6 * QUIET_WAIT_MS;

const WORKLOADS: Record<string, { body: Uint8Array; check: (json: unknown) => boolean; what: string }> = {
  classifier: {
    body: json({ inputs: [{ name: 'features', shape: [1, 16], datatype: 'FP32', data: Array.from({ length: 16 }, (_, i) => i / 10) }] }),
    check: (j) => outputShape(j, 'probabilities') === '1x4',
    what: 'one row of 16 FP32 features -> 4 probabilities',
  },
  embed: {
    body: json({
      inputs: [{ name: 'text', shape: [1], datatype: 'BYTES', data: ['The delivery drone left the warehouse at dawn and landed on the hospital roof.'] }],
    }),
    check: (j) => outputShape(j, 'embedding') === '1x256',
    what: 'one 14-word text as BYTES -> 256 floats',
  },
};

const PATHS = ['direct', 'passthrough', 'mesh'] as const;
type PathId = (typeof PATHS)[number];
const LABEL: Record<PathId, string> = { direct: '(a) direct to the backend', passthrough: '(b) bare pass-through Worker', mesh: '(c) mesh edge' };

interface Phase {
  model: string;
  path: PathId;
  concurrency: number;
  round: number;
  requests: number;
  /** Answers in the warm-up before the measurement (they carry receipts too). */
  warmupRequests: number;
  reqPerS: number;
  p50Ms: number;
  p99Ms: number;
  meanMs: number;
  /** Mean of the answers' `server-timing` entries, ms (edge;dur, backend;dur, total;dur as each path's answers carry them). */
  serverTiming: Record<string, number>;
  /** CPU ms per answer: the runtime's process group (workerd + wrangler), its workerd alone, the backend, this load generator. */
  cpuMsPerReq: { runtime: number; workerd: number; backend: number; loadgen: number };
  /** Share of the machine that processes outside the bench used meanwhile. */
  otherCpu: number;
  errors: Record<string, number>;
  errorSamples: string[];
  tokensRanOut: boolean;
}

/** One round of the three paths interleaved request by request at concurrency 1. */
interface Interleaved {
  model: string;
  round: number;
  /** Per path, in PATHS order. */
  paths: Record<PathId, { requests: number; reqPerS: number; p50Ms: number; p99Ms: number; runtimeCpuMs: number; errors: Record<string, number>; errorSamples: string[] }>;
  warmupMeshRequests: number;
  otherCpu: number;
  tokensRanOut: boolean;
}

const log = (line: string) => console.log(`[bench] ${line}`);

async function main(): Promise<void> {
  const started = performance.now();
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'mesh-bench-edge-'));
  let mesh: LocalMesh | undefined;
  let passthrough: Passthrough | undefined;
  let settlement: WranglerDev | undefined;
  const stopAll = async () => {
    await passthrough?.stop().catch(() => undefined);
    await settlement?.stop().catch(() => undefined);
    await mesh?.stop().catch(() => undefined);
    await rm(tmp, { recursive: true, force: true });
  };
  process.once('SIGINT', () => {
    log('interrupted: stopping');
    void stopAll().finally(() => process.exit(130));
  });

  try {
    log(`${os.cpus().length} CPU(s) (${os.cpus()[0]?.model ?? '?'}), node ${process.version}`);
    // Every wrangler dev here inherits these: its own dev registry (the edge's queue reaches the settlement
    // process through it), and, unless asked for, no local trace store and explorer, which record every
    // request, subrequest and RPC in a SQLite Durable Object of their own on the Worker's thread (wrangler
    // dev tooling, not the runtime; their cost is in docs/benchmarks.md).
    process.env.WRANGLER_REGISTRY_PATH = path.join(tmp, 'registry');
    await mkdir(process.env.WRANGLER_REGISTRY_PATH, { recursive: true });
    if (!LOCAL_TRACES) {
      process.env.X_LOCAL_OBSERVABILITY = 'false';
      process.env.X_LOCAL_EXPLORER = 'false';
    }
    const configs = await benchWranglerConfigs(ROOT, path.join(tmp, 'config'));
    log(`starting the local mesh (edge in wrangler dev + backend ${BACKEND.id}) in ${tmp}`);
    mesh = await startMesh({
      port: 0,
      backendPortBase: 0,
      backends: [BACKEND],
      dir: path.join(tmp, 'mesh'),
      log: (line) => console.log(`  ${line}`),
      ...(process.env.BENCH_EDGE_VARS ? { edgeVars: JSON.parse(process.env.BENCH_EDGE_VARS) as Record<string, string> } : {}),
      ...(SETTLEMENT === 'apart' ? { wranglerConfig: configs.edge } : {}),
    });
    const backend = mesh.backends[0]!;
    const edgeGroup = wranglerGroup(new URL(mesh.edgeUrl).port);
    log(`mesh ready: edge ${mesh.edgeUrl} (process group ${edgeGroup ?? '?'}), backend ${backend.url} (pid ${backend.process?.pid ?? '?'})`);
    if (SETTLEMENT === 'apart') {
      settlement = await startWranglerDev({
        root: ROOT,
        config: configs.settlement,
        stateDir: path.join(tmp, 'settlement'),
        envFile: path.join(tmp, 'mesh', 'edge.env'),
        vars: { MESH_ISSUER: mesh.edgeUrl, MESH_DEV: '1' },
        readyPath: '/v2/health/live',
        readyTimeoutMs: 60_000,
        graceMs: 3000,
        name: 'the settlement Worker',
        // It stands for invocations that in production run on other machines: at the lowest CPU priority
        // it takes the cores the request path leaves idle, and catches up between phases (ledgerCatchUp).
        nice: 19,
      });
      log(`settlement (queue consumer and ledger shards) in a second wrangler dev: ${settlement.url} (process group ${settlement.pid})`);
    }
    const ledgerUrl = settlement?.url ?? mesh.edgeUrl;
    const adminToken = mesh.adminToken;
    const receiptsBefore = await ledgerReceipts(ledgerUrl, adminToken);
    let primedMeshAnswers = 0;
    const interleaved: Interleaved[] = [];
    const answeredSoFar = (ps: Phase[]) =>
      primedMeshAnswers +
      ps.filter((p) => p.path === 'mesh').reduce((n, p) => n + p.requests + p.warmupRequests, 0) +
      interleaved.reduce((n, x) => n + x.paths.mesh.requests + x.warmupMeshRequests, 0);
    /** Waits (up to 15 s) until the ledger holds `expected` receipts of this run; returns how many it holds. */
    const ledgerCatchUp = async (expected: number): Promise<number> => {
      let receipts = (await ledgerReceipts(ledgerUrl, adminToken)) - receiptsBefore;
      for (const deadline = Date.now() + 15_000; receipts < expected && Date.now() < deadline; ) {
        await new Promise((r) => setTimeout(r, 200));
        receipts = (await ledgerReceipts(ledgerUrl, adminToken)) - receiptsBefore;
      }
      return receipts;
    };
    const settlementCpuBefore = settlement ? (groupCpuMs().get(settlement.pid)?.all ?? Number.NaN) : Number.NaN;
    passthrough = await startPassthrough(backend.url, path.join(tmp, 'passthrough'));
    log(`pass-through Worker ready: ${passthrough.url} (process group ${passthrough.pid}) -> ${backend.url}`);

    const key = (await importJWK(mesh.meshPrivateJwk, 'EdDSA')) as CryptoKey;
    const kid = mesh.meshPrivateJwk.kid!;
    const issuer = mesh.edgeUrl;
    const pids = { edge: edgeGroup, passthrough: passthrough.pid, backend: backend.process?.pid, settlement: settlement?.pid };
    const bases: Record<PathId, string> = { direct: backend.url, passthrough: passthrough.url, mesh: mesh.edgeUrl };

    const phases: Phase[] = [];
    for (const model of MODELS) {
      const workload = WORKLOADS[model];
      if (!workload) throw new Error(`BENCH_MODELS: no workload for "${model}" (have ${Object.keys(WORKLOADS).join(', ')})`);
      log(`model ${model}: ${workload.what}, body ${workload.body.byteLength} bytes`);
      const bodySha256 = await sha256Hex(workload.body);
      const consumerKey = mesh.consumerKey;
      const tokensFor = async (p: PathId, count: number): Promise<string[]> =>
        p === 'mesh' ? new Array<string>(count).fill(consumerKey) : signDispatchTokens({ key, kid, issuer, aud: BACKEND.id, model, bodySha256, count });

      // Priming, not measured: the first seconds of load through a fresh wrangler dev are slower (JIT, caches).
      if (PRIME_SECONDS > 0) {
        const c = Math.max(...CONCURRENCIES);
        for (const p of PATHS) {
          const tokens = await tokensFor(p, Math.ceil(MAX_RATE * PRIME_SECONDS) + c);
          const primed = await closedLoop({ url: `${bases[p]}/v2/models/${model}/infer`, body: workload.body, tokens, concurrency: c, durationMs: PRIME_SECONDS * 1000, ...(p === 'mesh' ? { headers: { 'x-mesh-dev-colo': COLO } } : {}) });
          if (p === 'mesh') primedMeshAnswers += primed.ok;
          log(`${model}: primed ${p} with ${primed.ok} requests at concurrency ${c}`);
        }
        await ledgerCatchUp(answeredSoFar(phases));
      }
      for (let round = 1; round <= ROUNDS; round++) {
        for (const concurrency of CONCURRENCIES) {
          // Rotate the order each round, so no path always runs right after another one.
          const order = PATHS.map((_, i) => PATHS[(i + round - 1) % PATHS.length]!);
          for (const p of order) {
            const runtimePid = p === 'mesh' ? pids.edge : p === 'passthrough' ? pids.passthrough : undefined;
            const phase = await measure({ model, path: p, concurrency, round, url: `${bases[p]}/v2/models/${model}/infer`, workload, tokensFor, runtimePid, pids });
            phases.push(phase);
            // The queue delivers up to a second later: let the ledger take this phase's receipts before the next phase.
            if (p === 'mesh') await ledgerCatchUp(answeredSoFar(phases));
          }
          if (concurrency === 1 && INTERLEAVE) {
            interleaved.push(await measureInterleaved({ model, round, bases, workload, tokensFor, pids }));
            await ledgerCatchUp(answeredSoFar(phases));
          }
        }
      }
    }

    // Every answer through the edge carries a receipt, which must reach the ledger (queue, consumer, shard).
    const answered = answeredSoFar(phases);
    const receipts = await ledgerCatchUp(answered);
    const settlementCpuMs = settlement ? (groupCpuMs().get(settlement.pid)?.all ?? Number.NaN) - settlementCpuBefore : Number.NaN;
    const ledger = { answered, receipts, settlementCpuMsPerReceipt: settlementCpuMs / Math.max(1, receipts) };
    const results = report(phases, interleaved, performance.now() - started, ledger);
    const dir = path.join(ROOT, 'bench', 'results');
    await mkdir(dir, { recursive: true });
    const file = path.join(dir, 'edge.json');
    await writeFile(file, `${JSON.stringify(results, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 2)}\n`);
    log(`results written to ${path.relative(process.cwd(), file)}`);
  } finally {
    await stopAll();
  }
}

interface MeasureOptions {
  model: string;
  path: PathId;
  concurrency: number;
  round: number;
  url: string;
  workload: { body: Uint8Array; check: (json: unknown) => boolean };
  tokensFor: (p: PathId, count: number) => Promise<string[]>;
  /** Process group of the wrangler dev this path goes through. */
  runtimePid: number | undefined;
  pids: { edge: number | undefined; passthrough: number; backend: number | undefined; settlement: number | undefined };
}

async function measure(o: MeasureOptions): Promise<Phase> {
  const what = `${o.model} round ${o.round}/${ROUNDS}, concurrency ${String(o.concurrency).padStart(2)}, ${o.path.padEnd(11)}`;
  const headers = o.path === 'mesh' ? { 'x-mesh-dev-colo': COLO } : undefined;
  const check = (body: Buffer, h: IncomingHttpHeaders) => {
    if (!o.workload.check(JSON.parse(body.toString('utf8')))) throw new Error(`unexpected answer: ${body.toString('utf8').slice(0, 200)}`);
    if (o.path === 'mesh') {
      if (typeof h['x-mesh-receipt'] !== 'string') throw new Error('the answer has no x-mesh-receipt');
      if (h['x-mesh-backend'] !== BACKEND.id) throw new Error(`served by ${String(h['x-mesh-backend'])}, not ${BACKEND.id}`);
    } else if (typeof h['x-provider-attestation'] !== 'string') throw new Error('the answer has no x-provider-attestation');
  };

  await quiet(what, [o.pids.edge, o.pids.passthrough, o.pids.backend, o.pids.settlement]);
  // Warm-up: a pool for the fastest any path goes; the run's pool from the warm-up's rate.
  let runCount = Math.ceil(MAX_RATE * SECONDS) + 2 * o.concurrency;
  let warmupRequests = 0;
  if (WARMUP_SECONDS > 0) {
    const tokens = await o.tokensFor(o.path, Math.ceil(MAX_RATE * WARMUP_SECONDS) + o.concurrency);
    const warm = await closedLoop({ url: o.url, body: o.workload.body, tokens, concurrency: o.concurrency, durationMs: WARMUP_SECONDS * 1000, headers, check });
    if (warm.ok === 0) throw new Error(`${what}: no request succeeded in the warm-up: ${warm.errorSamples.join('; ')}`);
    warmupRequests = warm.ok;
    if (!warm.exhausted) runCount = Math.min(runCount, Math.ceil((warm.ok / warm.elapsedMs) * 1000 * SECONDS * 2) + 2 * o.concurrency + 200);
  }
  const tokens = await o.tokensFor(o.path, runCount);

  const timing: Record<string, { sum: number; n: number }> = {};
  const onAnswer = (h: IncomingHttpHeaders) => {
    const st = h['server-timing'];
    if (typeof st !== 'string') return;
    for (const m of st.matchAll(/([a-z]+);dur=([0-9.]+)/g)) {
      const t = (timing[m[1]!] ??= { sum: 0, n: 0 });
      t.sum += Number(m[2]);
      t.n++;
    }
  };
  const cpu = () => {
    const self = process.cpuUsage();
    const groups = groupCpuMs();
    const of = (pid: number | undefined) => (pid === undefined ? { all: Number.NaN, workerd: Number.NaN } : (groups.get(pid) ?? { all: Number.NaN, workerd: Number.NaN }));
    return {
      loadgen: (self.user + self.system) / 1000,
      runtime: of(o.runtimePid),
      backend: o.pids.backend === undefined ? Number.NaN : processCpuMs(o.pids.backend),
      ours:
        of(o.pids.edge).all +
        of(o.pids.passthrough).all +
        (o.pids.settlement === undefined ? 0 : of(o.pids.settlement).all) +
        (o.pids.backend === undefined ? 0 : processCpuMs(o.pids.backend)) +
        (self.user + self.system) / 1000,
      machine: machineBusyMs(),
    };
  };
  const before = cpu();
  const result = await closedLoop({ url: o.url, body: o.workload.body, tokens, concurrency: o.concurrency, durationMs: SECONDS * 1000, headers, onAnswer });
  const after = cpu();
  const n = Math.max(1, result.ok);
  const phase: Phase = {
    model: o.model,
    path: o.path,
    concurrency: o.concurrency,
    round: o.round,
    requests: result.ok,
    warmupRequests,
    reqPerS: (result.ok * 1000) / result.elapsedMs,
    p50Ms: quantile(result.latenciesMs, 0.5),
    p99Ms: quantile(result.latenciesMs, 0.99),
    meanMs: result.latenciesMs.reduce((a, b) => a + b, 0) / n,
    serverTiming: Object.fromEntries(Object.entries(timing).map(([k, t]) => [k, t.sum / t.n])),
    cpuMsPerReq: {
      runtime: o.runtimePid === undefined ? 0 : (after.runtime.all - before.runtime.all) / n,
      workerd: o.runtimePid === undefined ? 0 : (after.runtime.workerd - before.runtime.workerd) / n,
      backend: (after.backend - before.backend) / n,
      loadgen: (after.loadgen - before.loadgen) / n,
    },
    otherCpu: Math.max(0, after.machine - before.machine - (after.ours - before.ours)) / (CORES * result.elapsedMs),
    errors: result.errors,
    errorSamples: result.errorSamples,
    tokensRanOut: result.exhausted,
  };
  const errorCount = Object.values(result.errors).reduce((a, b) => a + b, 0);
  const edgeDur = phase.serverTiming.edge;
  log(
    `${what}: ${phase.reqPerS.toFixed(0).padStart(5)} req/s, p50 ${phase.p50Ms.toFixed(2)} ms, p99 ${phase.p99Ms.toFixed(2)} ms` +
      (edgeDur !== undefined ? `, edge;dur ${edgeDur.toFixed(2)} ms` : '') +
      (o.runtimePid !== undefined ? `, runtime CPU ${phase.cpuMsPerReq.runtime.toFixed(3)} ms/req` : '') +
      (errorCount > 0 ? `, ${errorCount} ERRORS: ${JSON.stringify(result.errors)} ${result.errorSamples[0] ?? ''}` : '') +
      (result.exhausted ? ' (the pre-signed tokens ran out before the deadline)' : '') +
      (phase.otherCpu > NOISY_OTHER_CPU ? ` (other processes used ${(phase.otherCpu * 100).toFixed(0)}% of the CPU)` : ''),
  );
  return phase;
}

/**
 * The three paths at concurrency 1, request by request in turn (a, b, c, a,
 * ...): each meets the machine as it is at that moment, so a drift of its
 * speed (tens of percent within a run here) lands on the three alike, which
 * separate phases cannot promise. Each path keeps its own keep-alive socket
 * and token pool; its runtime's CPU is divided by its own answers.
 */
async function measureInterleaved(o: {
  model: string;
  round: number;
  bases: Record<PathId, string>;
  workload: { body: Uint8Array; check: (json: unknown) => boolean };
  tokensFor: (p: PathId, count: number) => Promise<string[]>;
  pids: MeasureOptions['pids'];
}): Promise<Interleaved> {
  const what = `${o.model} round ${o.round}/${ROUNDS}, concurrency  1, interleaved`;
  const targetsWith = async (count: number) =>
    Promise.all(
      PATHS.map(async (p) => ({
        url: `${o.bases[p]}/v2/models/${o.model}/infer`,
        tokens: await o.tokensFor(p, count),
        ...(p === 'mesh' ? { headers: { 'x-mesh-dev-colo': COLO } } : {}),
        check: (body: Buffer) => {
          if (!o.workload.check(JSON.parse(body.toString('utf8')))) throw new Error(`unexpected answer from ${p}: ${body.toString('utf8').slice(0, 200)}`);
        },
      })),
    );
  await quiet(what, [o.pids.edge, o.pids.passthrough, o.pids.backend, o.pids.settlement]);
  let warmupMeshRequests = 0;
  let perPath = Math.ceil((MAX_RATE * SECONDS) / PATHS.length);
  if (WARMUP_SECONDS > 0) {
    const warm = await interleavedLoop({ targets: await targetsWith(Math.ceil((MAX_RATE * WARMUP_SECONDS) / PATHS.length) + 1), body: o.workload.body, concurrency: 1, durationMs: WARMUP_SECONDS * 1000 });
    warmupMeshRequests = warm[PATHS.indexOf('mesh')]!.ok;
    const rounds = Math.min(...warm.map((r) => r.ok));
    if (rounds === 0) throw new Error(`${what}: no request succeeded on every path in the warm-up`);
    if (!warm[0]!.exhausted) perPath = Math.min(perPath, Math.ceil((rounds / warm[0]!.elapsedMs) * 1000 * SECONDS * 2) + 200);
  }
  const targets = await targetsWith(perPath);
  const groups = () => groupCpuMs();
  const runtimeOf = (p: PathId) => (p === 'mesh' ? o.pids.edge : p === 'passthrough' ? o.pids.passthrough : undefined);
  const self0 = process.cpuUsage();
  const g0 = groups();
  const machine0 = machineBusyMs();
  const backend0 = o.pids.backend === undefined ? 0 : processCpuMs(o.pids.backend);
  const results = await interleavedLoop({ targets, body: o.workload.body, concurrency: 1, durationMs: SECONDS * 1000 });
  const g1 = groups();
  const self = process.cpuUsage(self0);
  const machine = machineBusyMs() - machine0;
  const backend = o.pids.backend === undefined ? 0 : processCpuMs(o.pids.backend) - backend0;
  const groupDelta = (pid: number | undefined) => (pid === undefined ? 0 : (g1.get(pid)?.all ?? Number.NaN) - (g0.get(pid)?.all ?? Number.NaN));
  const ours = groupDelta(o.pids.edge) + groupDelta(o.pids.passthrough) + groupDelta(o.pids.settlement) + backend + (self.user + self.system) / 1000;
  const elapsedMs = Math.max(...results.map((r) => r.elapsedMs));
  const paths = Object.fromEntries(
    PATHS.map((p, i) => {
      const r = results[i]!;
      const runtime = runtimeOf(p);
      return [
        p,
        {
          requests: r.ok,
          reqPerS: (r.ok * 1000) / elapsedMs,
          p50Ms: quantile(r.latenciesMs, 0.5),
          p99Ms: quantile(r.latenciesMs, 0.99),
          runtimeCpuMs: runtime === undefined ? 0 : groupDelta(runtime) / Math.max(1, r.ok),
          errors: r.errors,
          errorSamples: r.errorSamples,
        },
      ];
    }),
  ) as Interleaved['paths'];
  const x: Interleaved = {
    model: o.model,
    round: o.round,
    paths,
    warmupMeshRequests,
    otherCpu: Math.max(0, machine - ours) / (CORES * elapsedMs),
    tokensRanOut: results.some((r) => r.exhausted),
  };
  const errors = PATHS.flatMap((p) => Object.entries(paths[p].errors).map(([k, n]) => `${p} ${k}: ${n}`));
  log(
    `${what}: ` +
      PATHS.map((p) => `${p} p50 ${paths[p].p50Ms.toFixed(2)} / p99 ${paths[p].p99Ms.toFixed(2)} ms`).join(', ') +
      `; mesh - passthrough p50 ${(paths.mesh.p50Ms - paths.passthrough.p50Ms).toFixed(2)} ms` +
      (errors.length > 0 ? `, ERRORS: ${errors.join(', ')} ${PATHS.map((p) => paths[p].errorSamples[0] ?? '').join(' ')}` : '') +
      (x.otherCpu > NOISY_OTHER_CPU ? ` (other processes used ${(x.otherCpu * 100).toFixed(0)}% of the CPU)` : ''),
  );
  return x;
}

function report(phases: Phase[], interleaved: Interleaved[], totalMs: number, ledger: { answered: number; receipts: number; settlementCpuMsPerReceipt: number }): unknown {
  const f = (v: number | undefined, digits = 2) => (v !== undefined && Number.isFinite(v) ? v.toFixed(digits) : 'n/a');
  const signed = (v: number) => (Number.isFinite(v) ? `${v >= 0 ? '+' : ''}${v.toFixed(2)}` : 'n/a');
  const errorsOf = (p: Phase) => Object.values(p.errors).reduce((a, b) => a + b, 0);
  const lines: string[] = [];
  const summary: unknown[] = [];
  const verdicts: string[] = [];
  for (const model of MODELS) {
    const rows: Record<string, Record<PathId, ReturnType<typeof aggregate>>> = {};
    for (const c of CONCURRENCIES) {
      rows[c] = Object.fromEntries(PATHS.map((p) => [p, aggregate(phases.filter((x) => x.model === model && x.path === p && x.concurrency === c))])) as Record<
        PathId,
        ReturnType<typeof aggregate>
      >;
    }
    lines.push(
      '',
      `Edge latency, ${model} (${WORKLOADS[model]!.what}); closed loop, ${SECONDS} s per phase, median of ${ROUNDS} rounds; ${CORES} cores shared by everything`,
      '',
      '| path | concurrency | req/s | p50 ms | p99 ms | edge;dur ms | runtime CPU ms/req | backend CPU ms/req | errors |',
      '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    );
    for (const c of CONCURRENCIES) {
      for (const p of PATHS) {
        const a = rows[c]![p];
        lines.push(
          `| ${LABEL[p]} | ${c} | ${f(a.reqPerS, 0)} | ${f(a.p50Ms)} | ${f(a.p99Ms)} | ${p === 'mesh' ? f(a.edgeDurMs) : '-'} | ${p === 'direct' ? '-' : f(a.runtimeCpuMs, 3)} | ${f(a.backendCpuMs, 3)} | ${a.errors}${a.tokensRanOut ? ' (tokens ran out)' : ''} |`,
        );
      }
    }
    lines.push(
      '',
      '| difference (median over rounds of the difference within a round) | concurrency | p50 ms | p99 ms | runtime CPU ms/req |',
      '| --- | ---: | ---: | ---: | ---: |',
    );
    const costs: unknown[] = [];
    for (const c of CONCURRENCIES) {
      const r = rows[c]!;
      // Differences are taken within each round (the phases of a round run back to back) and then the
      // median over rounds: this VM's speed drifts by tens of percent over a run, which a difference of
      // medians taken from different rounds would mistake for the mesh's cost.
      const paired = (x: PathId, y: PathId, get: (p: Phase) => number) => {
        const of = (id: PathId) => phases.filter((q) => q.model === model && q.path === id && q.concurrency === c);
        const ys = new Map(of(y).map((q) => [q.round, get(q)]));
        return median(of(x).flatMap((q) => (ys.has(q.round) ? [get(q) - ys.get(q.round)!] : [])).filter(Number.isFinite));
      };
      lines.push(
        `| runtime floor, (b) - (a) | ${c} | ${signed(paired('passthrough', 'direct', (q) => q.p50Ms))} | ${signed(paired('passthrough', 'direct', (q) => q.p99Ms))} | ${f(r.passthrough.runtimeCpuMs, 3)} |`,
      );
      const p50 = paired('mesh', 'passthrough', (q) => q.p50Ms);
      const p99 = paired('mesh', 'passthrough', (q) => q.p99Ms);
      lines.push(`| **mesh's own cost, (c) - (b)** | ${c} | **${signed(p50)}** | **${signed(p99)}** | ${signed(paired('mesh', 'passthrough', (q) => q.cpuMsPerReq.runtime))} |`);
      const met = p50 < GOAL_P50_MS && p99 < GOAL_P99_MS;
      const judgedInterleaved = c === 1 && interleaved.some((x) => x.model === model);
      verdicts.push(
        `${model}, concurrency ${c}${judgedInterleaved ? ' (separate phases, for reference)' : ''}: mesh's own cost ${signed(p50)} ms p50, ${signed(p99)} ms p99` +
          (judgedInterleaved ? '' : `; goal < ${GOAL_P50_MS} ms p50 and < ${GOAL_P99_MS} ms p99: ${met ? 'met' : 'MISSED'}`),
      );
      costs.push({
        concurrency: c,
        p50Ms: p50,
        p99Ms: p99,
        runtimeCpuMsPerReq: paired('mesh', 'passthrough', (q) => q.cpuMsPerReq.runtime),
        met,
        floorP50Ms: paired('passthrough', 'direct', (q) => q.p50Ms),
        floorP99Ms: paired('passthrough', 'direct', (q) => q.p99Ms),
      });
    }
    // Concurrency 1, interleaved: the goal at concurrency 1 is judged here (see measureInterleaved).
    const mixed = interleaved.filter((x) => x.model === model);
    let interleavedCost: unknown;
    if (mixed.length > 0) {
      const med = (get: (x: Interleaved) => number) => median(mixed.map(get).filter(Number.isFinite));
      lines.push(
        '',
        `Interleaved at concurrency 1: one request (a), then (b), then (c), and so on, ${SECONDS} s per round; median of ${mixed.length} rounds`,
        '',
        '| path | req/s | p50 ms | p99 ms | runtime CPU ms/req | errors |',
        '| --- | ---: | ---: | ---: | ---: | ---: |',
      );
      for (const p of PATHS) {
        const errs = mixed.reduce((n, x) => n + Object.values(x.paths[p].errors).reduce((a, b) => a + b, 0), 0);
        lines.push(
          `| ${LABEL[p]} | ${f(med((x) => x.paths[p].reqPerS), 0)} | ${f(med((x) => x.paths[p].p50Ms))} | ${f(med((x) => x.paths[p].p99Ms))} | ${p === 'direct' ? '-' : f(med((x) => x.paths[p].runtimeCpuMs), 3)} | ${errs} |`,
        );
      }
      const d = (x: PathId, y: PathId, get: (q: Interleaved['paths'][PathId]) => number) => med((r) => get(r.paths[x]) - get(r.paths[y]));
      const p50 = d('mesh', 'passthrough', (q) => q.p50Ms);
      const p99 = d('mesh', 'passthrough', (q) => q.p99Ms);
      const cpu = d('mesh', 'passthrough', (q) => q.runtimeCpuMs);
      lines.push(
        '',
        '| difference (median over rounds of the difference within a round) | p50 ms | p99 ms | runtime CPU ms/req |',
        '| --- | ---: | ---: | ---: |',
        `| runtime floor, (b) - (a) | ${signed(d('passthrough', 'direct', (q) => q.p50Ms))} | ${signed(d('passthrough', 'direct', (q) => q.p99Ms))} | - |`,
        `| **mesh's own cost, (c) - (b)** | **${signed(p50)}** | **${signed(p99)}** | ${signed(cpu)} |`,
      );
      const met = p50 < GOAL_P50_MS && p99 < GOAL_P99_MS;
      verdicts.push(
        `${model}, concurrency 1 (interleaved): mesh's own cost ${signed(p50)} ms p50, ${signed(p99)} ms p99 (rounds: ${mixed.map((x) => signed(x.paths.mesh.p50Ms - x.paths.passthrough.p50Ms)).join(', ')} ms p50); goal < ${GOAL_P50_MS} ms p50 and < ${GOAL_P99_MS} ms p99: ${met ? 'met' : 'MISSED'}`,
      );
      interleavedCost = { concurrency: 1, p50Ms: p50, p99Ms: p99, runtimeCpuMsPerReq: cpu, met, rounds: mixed.length };
    }
    summary.push({ model, body: new TextDecoder().decode(WORKLOADS[model]!.body), rows, costs, interleaved: interleavedCost });
  }
  lines.push('');
  lines.push(...verdicts);
  lines.push(`(c) has auth, routing, dispatch token, attestation check, receipt and the receipt's queue send on (in waitUntil, batched per isolate; Miniflare's local queue).`);
  lines.push(
    SETTLEMENT === 'apart'
      ? `The queue's consumer and the ledger shards ran in a second wrangler dev at nice 19 (as production runs them elsewhere), sharing the machine's idle CPU but not the edge's workerd: ${Number.isFinite(ledger.settlementCpuMsPerReceipt) ? `${ledger.settlementCpuMsPerReceipt.toFixed(3)} ms of CPU per receipt there` : 'its CPU unknown'}. BENCH_EDGE_SETTLEMENT=together runs them in the edge's workerd.`
      : `The queue's consumer and the ledger shards ran in the edge's workerd, on its thread (BENCH_EDGE_SETTLEMENT=together; not how production runs).`,
  );
  lines.push(
    `Receipts: ${ledger.receipts} in the ledger for ${ledger.answered} answers through the edge (priming and warm-ups included)${ledger.receipts === ledger.answered ? ': none lost, none doubled' : ': MISMATCH'}.`,
  );
  if (!LOCAL_TRACES) lines.push(`wrangler dev's local trace store and explorer were off for every Worker (BENCH_EDGE_LOCAL_TRACES=1 leaves them on).`);
  lines.push(`edge;dur is the edge's own server-timing (its total minus its backend call), in whole ms of workerd's clock, which only advances on I/O: it under-reports CPU time.`);
  const withErrors = phases.filter((p) => errorsOf(p) > 0);
  const mixedErrors = interleaved.filter((x) => PATHS.some((p) => Object.keys(x.paths[p].errors).length > 0));
  if (mixedErrors.length > 0) lines.push(`interleaved rounds with errors: ${mixedErrors.map((x) => `${x.model}/r${x.round}: ${PATHS.map((p) => x.paths[p].errorSamples[0] ?? '').join(' ')}`).join('; ')}`);
  if (withErrors.length > 0) lines.push(`phases with errors: ${withErrors.map((p) => `${p.model}/${p.path}/c${p.concurrency}/r${p.round}: ${p.errorSamples[0] ?? ''}`).join('; ')}`);
  const busiest = Math.max(...phases.map((p) => p.otherCpu), ...interleaved.map((x) => x.otherCpu));
  if (busiest > NOISY_OTHER_CPU) lines.push(`WARNING: other processes used up to ${(busiest * 100).toFixed(0)}% of the CPU during a phase; rerun on a quiet machine before trusting small differences.`);
  lines.push(`(total ${(totalMs / 1000).toFixed(0)} s)`);
  console.log(lines.join('\n'));

  return {
    date: new Date().toISOString(),
    machine: { cores: CORES, cpu: os.cpus()[0]?.model, memoryGiB: Math.round(os.totalmem() / 2 ** 30), node: process.version, platform: `${os.platform()} ${os.arch()}` },
    settings: { seconds: SECONDS, warmupSeconds: WARMUP_SECONDS, rounds: ROUNDS, concurrency: CONCURRENCIES, models: MODELS, colo: COLO, backend: BACKEND, settlement: SETTLEMENT, localTraces: LOCAL_TRACES, interleave: INTERLEAVE },
    goal: { p50Ms: GOAL_P50_MS, p99Ms: GOAL_P99_MS },
    notes: [
      'queue send in waitUntil, batched per isolate (Miniflare local queue)',
      SETTLEMENT === 'apart' ? 'queue consumer and ledger in a second wrangler dev' : 'queue consumer and ledger in the edge workerd',
      'edge;dur: workerd clock, whole ms, advances only on I/O',
    ],
    summary,
    ledger,
    phases,
    interleaved,
    noisy: { maxOtherCpu: busiest, warned: busiest > NOISY_OTHER_CPU },
  };
}

/** Medians over rounds of each statistic of one (model, path, concurrency). */
function aggregate(ps: Phase[]) {
  const med = (get: (p: Phase) => number | undefined) => median(ps.map(get).filter((v): v is number => v !== undefined && Number.isFinite(v)));
  return {
    rounds: ps.length,
    reqPerS: med((p) => p.reqPerS),
    p50Ms: med((p) => p.p50Ms),
    p99Ms: med((p) => p.p99Ms),
    meanMs: med((p) => p.meanMs),
    edgeDurMs: med((p) => p.serverTiming.edge),
    backendDurMs: med((p) => p.serverTiming.backend),
    runtimeCpuMs: med((p) => p.cpuMsPerReq.runtime),
    workerdCpuMs: med((p) => p.cpuMsPerReq.workerd),
    backendCpuMs: med((p) => p.cpuMsPerReq.backend),
    loadgenCpuMs: med((p) => p.cpuMsPerReq.loadgen),
    errors: ps.reduce((n, p) => n + Object.values(p.errors).reduce((a, b) => a + b, 0), 0),
    tokensRanOut: ps.some((p) => p.tokensRanOut),
  };
}

function median(values: number[]): number {
  if (values.length === 0) return Number.NaN;
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/**
 * Waits (bounded by QUIET_WAIT_MS, and QUIET_WAIT_MS x 6 over the run) until
 * processes outside the bench's own process groups use at most
 * NOISY_OTHER_CPU of the machine over 300 ms.
 */
async function quiet(what: string, groups: readonly (number | undefined)[]): Promise<void> {
  const ours = () => {
    const g = groupCpuMs();
    const self = process.cpuUsage();
    return groups.reduce<number>((n, pid) => n + (pid === undefined ? 0 : (g.get(pid)?.all ?? 0)), 0) + (self.user + self.system) / 1000;
  };
  const started = performance.now();
  let said = false;
  for (;;) {
    const machine0 = machineBusyMs();
    const ours0 = ours();
    const t0 = performance.now();
    await new Promise((r) => setTimeout(r, 300));
    const other = Math.max(0, machineBusyMs() - machine0 - (ours() - ours0)) / (CORES * (performance.now() - t0));
    const waited = performance.now() - started;
    if (!(other > NOISY_OTHER_CPU)) break;
    if (waited >= Math.min(QUIET_WAIT_MS, quietBudgetMs)) {
      log(`${what}: other processes still use ${(other * 100).toFixed(0)}% of the CPU after ${(waited / 1000).toFixed(0)} s; measuring anyway (flagged)`);
      break;
    }
    if (!said) log(`${what}: other processes use ${(other * 100).toFixed(0)}% of the CPU; waiting up to ${(Math.min(QUIET_WAIT_MS, quietBudgetMs) / 1000).toFixed(0)} s`);
    said = true;
  }
  quietBudgetMs = Math.max(0, quietBudgetMs - (performance.now() - started - 300));
}

type Passthrough = WranglerDev;


/** Starts bench/passthrough/ with `wrangler dev`, the flags scripts/local-mesh.ts gives the edge, forwarding to `target`. */
/** Receipts in every ledger shard of the Worker at `url` (its admin API). */
async function ledgerReceipts(url: string, adminToken: string): Promise<number> {
  const res = await fetch(`${url}/admin/settlement/shards`, { headers: { authorization: `Bearer ${adminToken}` } });
  if (!res.ok) throw new Error(`GET ${url}/admin/settlement/shards: HTTP ${res.status} ${await res.text()}`);
  const { shards } = (await res.json()) as { shards: { receipts: number }[] };
  return shards.reduce((n, s) => n + s.receipts, 0);
}

async function startPassthrough(target: string, stateDir: string): Promise<Passthrough> {
  return startWranglerDev({
    root: ROOT,
    config: path.join(ROOT, 'bench', 'passthrough', 'wrangler.toml'),
    stateDir,
    vars: { TARGET: target },
    readyPath: '/v2/health/ready',
    readyTimeoutMs: 60_000,
    graceMs: 5000,
    name: 'the pass-through Worker',
  });
}

/** The pid of the `wrangler dev` serving `port` (it leads its own process group: local-mesh.ts starts it detached). */
function wranglerGroup(port: string): number | undefined {
  for (const pid of pidsOnMachine()) {
    try {
      const args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      const at = args.indexOf('--port');
      if (args.some((a) => a.includes('wrangler')) && args.includes('dev') && at >= 0 && args[at + 1] === port) {
        const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
        const pgrp = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]);
        return pgrp;
      }
    } catch {
      // gone meanwhile
    }
  }
  return undefined;
}

function pidsOnMachine(): number[] {
  try {
    return readdirSync('/proc').filter((d) => /^\d+$/.test(d)).map(Number);
  } catch {
    return [];
  }
}

/** CPU ms of every process group so far (Linux /proc): all its processes, and its workerd processes alone. */
function groupCpuMs(): Map<number, { all: number; workerd: number }> {
  const out = new Map<number, { all: number; workerd: number }>();
  for (const pid of pidsOnMachine()) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const pgrp = Number(fields[2]);
      const ms = ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
      const g = out.get(pgrp) ?? { all: 0, workerd: 0 };
      g.all += ms;
      if (comm.startsWith('workerd')) g.workerd += ms;
      out.set(pgrp, g);
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

function outputShape(j: unknown, name: string): string | undefined {
  const out = (j as { outputs?: { name: string; shape: number[]; data: unknown[] }[] }).outputs?.find((o) => o.name === name);
  return out?.shape.join('x');
}

function json(value: unknown): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(value));
}

main().catch((err: unknown) => {
  console.error('[bench] failed:', err);
  process.exitCode = 1;
});
