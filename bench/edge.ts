/**
 * `npm run bench:edge`: what the mesh edge adds to a request's latency, (c) the
 * mesh edge minus (b) a bare pass-through Worker in the same local runtime,
 * with (a) the backend called directly for reference; settlement runs in a
 * second workerd, as in production. A script, not a test: it prints
 * differences measured within one run, never absolute times as pass/fail.
 * Method and figures: docs/benchmarks.md.
 *
 * It also measures what sampled verification (docs/api.md section 6.1) costs:
 * the mesh has a second backend of another provider (the checker, iad-1) that
 * answers through (c) are re-executed on, provider-fra's sample rate is set
 * to BENCH_VERIFY_RATE with the admin route, and (d) is the same edge with
 * `x-mesh-verify: none`. On the answer's path: (c) - (d), judged on the
 * interleaved rounds in which the checker did re-execute (the edge leaves it
 * out of the candidates while it is ejected). Extra backend work: the
 * checker's inferences beyond the consumer answers it served (a hedge may go
 * to it), per answer through (c) that fra-1 served, against the rate; the
 * ledger's verification receipts count the re-executions alone.
 *
 * Env: BENCH_ROUNDS (3), BENCH_SECONDS (6), BENCH_WARMUP_SECONDS (1),
 * BENCH_PRIME_SECONDS (3), BENCH_CONCURRENCY (1,16), BENCH_MODELS (classifier;
 * also: embed), BENCH_EDGE_INTERLEAVE (1; 0: separate phases only),
 * BENCH_EDGE_SETTLEMENT (apart; together: queue consumer and ledger in the
 * edge's workerd), BENCH_EDGE_LOCAL_TRACES (0; 1: wrangler dev's trace store
 * on), BENCH_EDGE_INSPECTOR (0: every Worker without wrangler's DevTools
 * inspector, scripts/wrangler-dev-no-inspector.ts; 1: with it, as the wrangler
 * CLI runs them), BENCH_EDGE_VARS (JSON of extra edge vars), BENCH_QUIET_WAIT_SECONDS (20;
 * 0: never wait for a quiet CPU), BENCH_VERIFY_RATE (0.05, 0..1: provider-fra's
 * sample rate for the run), BENCH_EDGE_CACHE (1: the answer-cache case after
 * the rest; 0: skip it; only: the cache case alone, the quick mode). Results
 * also go to bench/results/edge.json (edge-cache.json for the cache case).
 *
 * The answer-cache case (docs/api.md section 2.13): `embed` (deterministic)
 * at concurrency 1, interleaved request by request: (a) direct, (b) the bare
 * pass-through Worker, (h) the edge answering the same request from its cache
 * (a hit, after the first), (m) the edge with a new text each request (a miss:
 * looked up, computed, stored after the answer). It reports hit against miss
 * and hit against (b), as ratios within each round. The other mesh paths send
 * `cache-control: no-store`, so a deterministic model there is always computed.
 */

import { mkdir } from 'node:fs/promises';
import type { IncomingHttpHeaders } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { importJWK, type CryptoKey } from 'jose';
import { ROOT, startMesh, type LocalMesh } from '../scripts/local-mesh.ts';
import { sha256Hex } from '../receipts/hash.ts';
import { machineBusyMs, processCpuMs } from './lib/cpu.ts';
import { envIntList, envList, envNumber } from './lib/env.ts';
import { closedLoop, interleavedLoop, quantile, median, type ClosedLoopResult } from './lib/load.ts';
import { benchWranglerConfigs } from './lib/edge-config.ts';
import { startPassthrough, startSettlementApart } from './lib/side-workers.ts';
import { signDispatchTokens } from './lib/tokens.ts';
import { groupCpuMs, wranglerGroup, type WranglerDev } from './lib/processes.ts';
import { writeResults } from './lib/results.ts';
import { machineLine, openScratch } from './lib/scratch.ts';
import { quietGate } from './lib/quiet.ts';

const BACKEND = { id: 'fra-1', region: 'eu-west', provider: 'provider-fra' };
/** A backend of another provider: sampled answers are re-executed on it, and the edge's hedge may go to it. */
const CHECKER = { id: 'iad-1', region: 'us-east', provider: 'provider-iad' };
const COLO = 'FRA';
const GOAL_P50_MS = 0.5;
const GOAL_P99_MS = 1;
/** Sampled verification may add at most this to the consumer's p50, (c) - (d), interleaved at concurrency 1. */
const GOAL_VERIFY_P50_MS = 0.05;
/** Its extra backend work per sampled answer must be within this share of the sample rate. */
const GOAL_EXTRA_WORK_TOLERANCE = 0.1;
/** provider-fra's sample rate for the run, set with `PUT /admin/providers/provider-fra/verification`. */
const VERIFY_RATE = envNumber('BENCH_VERIFY_RATE', 0.05, 0, 1);
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
/** 1: every Worker with wrangler's DevTools inspector attached, as the wrangler CLI runs it (a console line then costs ~0.1 ms of the Worker's thread). */
const INSPECTOR = envNumber('BENCH_EDGE_INSPECTOR', 0, 0, 1) === 1;
if (SETTLEMENT !== 'apart' && SETTLEMENT !== 'together') throw new Error(`BENCH_EDGE_SETTLEMENT must be "apart" or "together", got ${JSON.stringify(SETTLEMENT)}`);
const CONCURRENCIES = envIntList('BENCH_CONCURRENCY', '1,16', 1, 256);
/**
 * 1 (default): each round also runs the four paths interleaved at concurrency 1
 * (one request of each in turn, INTERLEAVE_CYCLE), and the goals at concurrency
 * 1 are judged on it; 0: separate phases only.
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
const quiet = quietGate({ noisyShare: NOISY_OTHER_CPU, waitMs: QUIET_WAIT_MS, log: (line) => log(line) });

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

const PATHS = ['direct', 'passthrough', 'mesh', 'mesh-none'] as const;
type PathId = (typeof PATHS)[number];
/** The two paths through the mesh edge: the same edge URL and consumer key, `x-mesh-verify` sampled or none. */
type MeshPath = Extract<PathId, 'mesh' | 'mesh-none'>;
const MESH_PATHS: readonly MeshPath[] = ['mesh', 'mesh-none'];
const isMesh = (p: PathId): p is MeshPath => p === 'mesh' || p === 'mesh-none';
const LABEL: Record<PathId, string> = {
  direct: '(a) direct to the backend',
  passthrough: '(b) bare pass-through Worker',
  mesh: '(c) mesh edge, x-mesh-verify: sampled',
  'mesh-none': '(d) mesh edge, x-mesh-verify: none',
};
/**
 * The separate phases' order, rotated each round: neither mesh path runs
 * right after the other, on an edge the other has just loaded (with a plain
 * rotation of PATHS, (d) always followed (c)).
 */
const PHASE_ORDER: readonly PathId[] = ['direct', 'mesh', 'passthrough', 'mesh-none'];
/**
 * The interleaved rounds' cycle: the three-path cycle (a, b, mesh) with (c)
 * and (d) taking the mesh's slot in turn. Each of them follows (b) and is
 * followed by (a), as the mesh was before there were two: a request right
 * after another one on the same workerd is faster (a position effect larger
 * than the cost (c) - (d) looks for), so neither may follow the other; and a
 * re-execution, which runs right after the answer of (c) it checks, overlaps
 * (a), as in every cycle. (c) and (d) get one slot in six each, so the
 * interleaved round runs INTERLEAVE_SECONDS.
 */
const INTERLEAVE_CYCLE: readonly PathId[] = ['direct', 'passthrough', 'mesh', 'direct', 'passthrough', 'mesh-none'];
/** Twice a phase (dispatch tokens live 60 s from signing): (c) and (d) get about as many requests as the mesh had in a three-path cycle. */
const INTERLEAVE_SECONDS = Math.min(45, 2 * SECONDS);

/** Request headers of each path through the edge: computed every time (no-store: never from the answer cache). */
function headersOf(p: PathId): Record<string, string> | undefined {
  return isMesh(p) ? { 'x-mesh-dev-colo': COLO, 'x-mesh-verify': p === 'mesh' ? 'sampled' : 'none', 'cache-control': 'no-store' } : undefined;
}

/** `1`: the answer-cache case after the rest; `0`: none; `only`: the cache case alone. */
const CACHE_CASE = (process.env.BENCH_EDGE_CACHE ?? '1').trim().toLowerCase();
if (!['0', '1', 'only'].includes(CACHE_CASE)) throw new Error(`BENCH_EDGE_CACHE must be 0, 1 or only, got ${JSON.stringify(CACHE_CASE)}`);

/**
 * Answers through each mesh path by the backend that served them (its
 * `x-mesh-backend`), every answer of the run counted: priming, warm-ups,
 * measurements. Each carries a consumer receipt; those fra-1 served through
 * (c) are the ones provider-fra's sample rate applies to.
 */
const served: Record<MeshPath, Record<string, number>> = { mesh: {}, 'mesh-none': {} };
const countServed = (p: MeshPath) => (h: IncomingHttpHeaders) => {
  const id = String(h['x-mesh-backend'] ?? '?');
  served[p][id] = (served[p][id] ?? 0) + 1;
};
/** Hedges to the checker the edge has logged so far (its `hedging to <backend>` warning). */
let checkerHedges = 0;
const servedTotal = (p: MeshPath) => Object.values(served[p]).reduce((a, b) => a + b, 0);
const meshAnswers = () => servedTotal('mesh') + servedTotal('mesh-none');

/** The check of a path's first answer: the workload's output, and what the path must carry. */
function answerCheck(p: PathId, check: (json: unknown) => boolean): (body: Buffer, h: IncomingHttpHeaders) => void {
  return (body, h) => {
    if (!check(JSON.parse(body.toString('utf8')))) throw new Error(`unexpected answer from ${p}: ${body.toString('utf8').slice(0, 200)}`);
    if (isMesh(p)) {
      if (typeof h['x-mesh-receipt'] !== 'string') throw new Error('the answer has no x-mesh-receipt');
      const by = h['x-mesh-backend'];
      if (by !== BACKEND.id && by !== CHECKER.id) throw new Error(`served by ${String(by)}, not ${BACKEND.id} or ${CHECKER.id}`);
    } else if (typeof h['x-provider-attestation'] !== 'string') throw new Error('the answer has no x-provider-attestation');
  };
}

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
  /** CPU ms per answer: the runtime's process group (workerd + wrangler), its workerd alone, the backend, the checker backend, this load generator. */
  cpuMsPerReq: { runtime: number; workerd: number; backend: number; checker: number; loadgen: number };
  /** Share of the machine that processes outside the bench used meanwhile. */
  otherCpu: number;
  /** The checker over the warm-up and the measurement: its inferences (metrics) and the answers it served here. */
  checker: CheckerCount;
  errors: Record<string, number>;
  errorSamples: string[];
  tokensRanOut: boolean;
}

/**
 * The checker's inferences over a stretch of the run (its metrics), the
 * consumer answers it served in it, and the answers fra-1 served through the
 * mesh path(s) measured: through (c), the answers whose re-executions the
 * other inferences hold (with any hedge to the checker that lost).
 */
interface CheckerCount {
  inferences: number;
  served: number;
  fraAnswers: number;
  /** Hedges to the checker the edge logged meanwhile. */
  hedges: number;
}

/** The checker's inferences besides the answers it served, per answer fra-1 served through (c). */
const reexecutedShare = (x: CheckerCount) => (x.inferences - x.served) / x.fraAnswers;
/**
 * Whether a stretch of (c) measured verification at all: its checker ran at
 * least half the rate's re-executions. While the checker is not among a
 * request's candidates (ejected after failures: a hedge that lost before it
 * started answering counts as one), answers are not re-executed.
 */
const reexecuted = (x: CheckerCount) => VERIFY_RATE === 0 || reexecutedShare(x) >= VERIFY_RATE / 2;

/** One round of the four paths interleaved request by request at concurrency 1. */
interface Interleaved {
  model: string;
  round: number;
  /**
   * Per path. runtimeCpuMs: the path's runtime per answer; (c) and (d) share
   * the edge's process group, so theirs is the edge's CPU per answer of both.
   */
  paths: Record<
    PathId,
    { requests: number; warmupRequests: number; reqPerS: number; p50Ms: number; p99Ms: number; runtimeCpuMs: number; errors: Record<string, number>; errorSamples: string[] }
  >;
  otherCpu: number;
  checker: CheckerCount;
  tokensRanOut: boolean;
}

/** The process groups (or processes) whose CPU the bench counts as its own. */
interface Pids {
  edge: number | undefined;
  passthrough: number;
  backend: number | undefined;
  checker: number | undefined;
  settlement: number | undefined;
}

/** What the verification run did, read from the checker's metrics and the ledger at the end. */
interface VerificationCount {
  rate: number;
  /** Answers through (c) that fra-1 served: the ones provider-fra's rate applies to. */
  sampledAnswers: number;
  /** The checker's successful inferences over the run (its `nv_inference_request_success`). */
  checkerInferences: number;
  /** Consumer answers the checker served, through (c) and (d). */
  checkerServed: number;
  /** checkerInferences - checkerServed: re-executions, and hedges to the checker that lost. */
  extraWork: number;
  share: number;
  /** Binomial standard deviation of the share at this rate and this many sampled answers. */
  sd: number;
  met: boolean;
  /** Verification receipts in the ledger, by the backend that re-executed (undefined when they could not be listed). */
  receiptsByBackend: Record<string, number> | undefined;
}

interface LedgerCount {
  /** Consumer answers through the edge, (c) and (d). */
  answered: number;
  /** Receipts of this run in the ledger, all kinds. */
  receipts: number;
  /** By kind, from the closed batches' receipts (undefined when they could not be listed). */
  consumerReceipts: number | undefined;
  verificationReceipts: number | undefined;
  settlementCpuMsPerReceipt: number;
}

const log = (line: string) => console.log(`[bench] ${line}`);

async function main(): Promise<void> {
  const started = performance.now();
  let mesh: LocalMesh | undefined;
  let passthrough: Passthrough | undefined;
  let settlement: WranglerDev | undefined;
  const scratch = await openScratch('mesh-bench-edge-', log, [() => passthrough?.stop(), () => settlement?.stop(), () => mesh?.stop()]);
  const tmp = scratch.dir;

  try {
    log(machineLine());
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
    log(`starting the local mesh (edge in wrangler dev + backends ${BACKEND.id} and ${CHECKER.id}) in ${tmp}`);
    mesh = await startMesh({
      port: 0,
      backendPortBase: 0,
      backends: [BACKEND, CHECKER],
      dir: path.join(tmp, 'mesh'),
      log: (line) => {
        if (line.includes(`hedging to ${CHECKER.id}`)) checkerHedges++;
        console.log(`  ${line}`);
      },
      ...(process.env.BENCH_EDGE_VARS ? { edgeVars: JSON.parse(process.env.BENCH_EDGE_VARS) as Record<string, string> } : {}),
      ...(SETTLEMENT === 'apart' ? { wranglerConfig: configs.edge } : {}),
      inspector: INSPECTOR,
    });
    const backend = mesh.backends.find((b) => b.id === BACKEND.id)!;
    const checker = mesh.backends.find((b) => b.id === CHECKER.id)!;
    const edgeGroup = wranglerGroup(new URL(mesh.edgeUrl).port);
    log(
      `mesh ready: edge ${mesh.edgeUrl} (process group ${edgeGroup ?? '?'}), backend ${backend.url} (pid ${backend.process?.pid ?? '?'}), ` +
        `checker ${checker.url} (pid ${checker.process?.pid ?? '?'})`,
    );
    // Over the whole run from here: every inference the checker runs is a consumer answer it served, a
    // re-execution, or a hedge to it that lost.
    const checkerBefore = await inferencesOf(checker.url);
    if (SETTLEMENT === 'apart') {
      // At nice 19 it takes the cores the request path leaves idle, and catches up between phases (ledgerCatchUp).
      settlement = await startSettlementApart({ config: configs.settlement, edgeUrl: mesh.edgeUrl, meshDir: path.join(tmp, 'mesh'), stateDir: path.join(tmp, 'settlement'), inspector: INSPECTOR });
      log(`settlement (queue consumer and ledger shards) in a second wrangler dev: ${settlement.url} (process group ${settlement.pid})`);
    }
    const ledgerUrl = settlement?.url ?? mesh.edgeUrl;
    const adminToken = mesh.adminToken;
    const receiptsBefore = await ledgerReceipts(ledgerUrl, adminToken);
    const interleaved: Interleaved[] = [];
    /**
     * Waits (up to 15 s) until the ledger holds at least `expected` receipts of this run; returns how many
     * it holds. Between phases `expected` is the consumer answers so far, a lower bound: the verification
     * receipts come on top.
     */
    const ledgerCatchUp = async (expected: number): Promise<number> => {
      let receipts = (await ledgerReceipts(ledgerUrl, adminToken)) - receiptsBefore;
      for (const deadline = Date.now() + 15_000; receipts < expected && Date.now() < deadline; ) {
        await new Promise((r) => setTimeout(r, 200));
        receipts = (await ledgerReceipts(ledgerUrl, adminToken)) - receiptsBefore;
      }
      return receipts;
    };
    const settlementCpuBefore = settlement ? (groupCpuMs().get(settlement.pid)?.all ?? Number.NaN) : Number.NaN;
    passthrough = await startPassthrough(backend.url, path.join(tmp, 'passthrough'), INSPECTOR);
    log(`pass-through Worker ready: ${passthrough.url} (process group ${passthrough.pid}) -> ${backend.url}`);

    const key = (await importJWK(mesh.meshPrivateJwk, 'EdDSA')) as CryptoKey;
    const kid = mesh.meshPrivateJwk.kid!;
    const issuer = mesh.edgeUrl;
    const pids: Pids = { edge: edgeGroup, passthrough: passthrough.pid, backend: backend.process?.pid, checker: checker.process?.pid, settlement: settlement?.pid };
    const bases: Record<PathId, string> = { direct: backend.url, passthrough: passthrough.url, mesh: mesh.edgeUrl, 'mesh-none': mesh.edgeUrl };
    const consumerKey = mesh.consumerKey;

    if (CACHE_CASE !== 'only') {
      await setSampleRate(mesh.edgeUrl, adminToken, consumerKey, MODELS[0]!);

      const phases: Phase[] = [];
      for (const model of MODELS) {
        const workload = WORKLOADS[model];
        if (!workload) throw new Error(`BENCH_MODELS: no workload for "${model}" (have ${Object.keys(WORKLOADS).join(', ')})`);
        log(`model ${model}: ${workload.what}, body ${workload.body.byteLength} bytes`);
        const bodySha256 = await sha256Hex(workload.body);
        const tokensFor = async (p: PathId, count: number): Promise<string[]> =>
          isMesh(p) ? new Array<string>(count).fill(consumerKey) : signDispatchTokens({ key, kid, issuer, aud: BACKEND.id, model, bodySha256, count });

        // Priming, not measured: the first seconds of load through a fresh wrangler dev are slower (JIT, caches).
        if (PRIME_SECONDS > 0) {
          const c = Math.max(...CONCURRENCIES);
          for (const p of PATHS) {
            const tokens = await tokensFor(p, Math.ceil(MAX_RATE * PRIME_SECONDS) + c);
            const headers = headersOf(p);
            const primed = await closedLoop({
              url: `${bases[p]}/v2/models/${model}/infer`,
              body: workload.body,
              tokens,
              concurrency: c,
              durationMs: PRIME_SECONDS * 1000,
              check: answerCheck(p, workload.check),
              ...(headers ? { headers } : {}),
              ...(isMesh(p) ? { onAnswer: countServed(p) } : {}),
            });
            const errors = Object.values(primed.errors).reduce((a, b) => a + b, 0);
            log(`${model}: primed ${p} with ${primed.ok} requests at concurrency ${c}${errors > 0 ? `, ${errors} ERRORS: ${primed.errorSamples[0] ?? ''}` : ''}`);
          }
          await ledgerCatchUp(meshAnswers());
        }
        for (let round = 1; round <= ROUNDS; round++) {
          for (const concurrency of CONCURRENCIES) {
            // Rotate the order each round, so no path always runs first or last.
            const order = PHASE_ORDER.map((_, i) => PHASE_ORDER[(i + round - 1) % PHASE_ORDER.length]!);
            for (const p of order) {
              const runtimePid = isMesh(p) ? pids.edge : p === 'passthrough' ? pids.passthrough : undefined;
              const phase = await measure({ model, path: p, concurrency, round, url: `${bases[p]}/v2/models/${model}/infer`, workload, tokensFor, runtimePid, pids, checkerUrl: checker.url });
              phases.push(phase);
              // The queue delivers up to a second later: let the ledger take this phase's receipts before the next phase.
              if (isMesh(p)) await ledgerCatchUp(meshAnswers());
            }
            if (concurrency === 1 && INTERLEAVE) {
              interleaved.push(await measureInterleaved({ model, round, bases, workload, tokensFor, pids, checkerUrl: checker.url }));
              await ledgerCatchUp(meshAnswers());
            }
          }
        }
      }

      // Every answer through the edge carries a receipt, which must reach the ledger (queue, consumer, shard);
      // each re-execution adds a verification receipt of its own. Re-executions run in waitUntil after their
      // answer: wait until the ledger and the checker's count stand still.
      const answered = meshAnswers();
      await ledgerCatchUp(answered);
      const [receiptsNow, checkerAfter] = await standStill(async () => [(await ledgerReceipts(ledgerUrl, adminToken)) - receiptsBefore, await inferencesOf(checker.url)]);
      const settlementCpuMs = settlement ? (groupCpuMs().get(settlement.pid)?.all ?? Number.NaN) - settlementCpuBefore : Number.NaN;
      const kinds = await receiptsByKind(ledgerUrl, adminToken).catch((err: unknown) => {
        log(`could not list the ledger's receipts by kind: ${(err as Error).message}`);
        return undefined;
      });
      const ledger: LedgerCount = {
        answered,
        receipts: receiptsNow!,
        consumerReceipts: kinds?.consumer,
        verificationReceipts: kinds ? Object.values(kinds.verificationByBackend).reduce((a, b) => a + b, 0) : undefined,
        settlementCpuMsPerReceipt: settlementCpuMs / Math.max(1, receiptsNow!),
      };
      const sampledAnswers = served.mesh[BACKEND.id] ?? 0;
      const checkerServed = (served.mesh[CHECKER.id] ?? 0) + (served['mesh-none'][CHECKER.id] ?? 0);
      const checkerInferences = checkerAfter! - checkerBefore;
      const extraWork = checkerInferences - checkerServed;
      const share = extraWork / sampledAnswers;
      const verification: VerificationCount = {
        rate: VERIFY_RATE,
        sampledAnswers,
        checkerInferences,
        checkerServed,
        extraWork,
        share,
        sd: Math.sqrt((VERIFY_RATE * (1 - VERIFY_RATE)) / sampledAnswers),
        met: Math.abs(share - VERIFY_RATE) <= GOAL_EXTRA_WORK_TOLERANCE * VERIFY_RATE,
        receiptsByBackend: kinds?.verificationByBackend,
      };
      const results = report(phases, interleaved, performance.now() - started, ledger, verification);
      await writeResults('edge.json', results, log);
    }
    if (CACHE_CASE !== '0') {
      const cache = await measureCache({ edgeUrl: mesh.edgeUrl, consumerKey, passthroughUrl: passthrough.url, directUrl: backend.url, key, kid, issuer, pids });
      await writeResults('edge-cache.json', reportCache(cache), log);
    }
  } finally {
    await scratch.close();
  }
}

/**
 * Sets provider-fra's sample rate to VERIFY_RATE (the admin route), then
 * makes sure the edge's snapshot has it before the first answer counted:
 * the route marks the isolate's snapshot stale, the next request refreshes
 * it in the background, and a refresh already under way may have read the
 * registry before the change, so a few requests (through (d), counted) more
 * than SNAPSHOT_REFRESH_MS apart.
 */
async function setSampleRate(edgeUrl: string, adminToken: string, consumerKey: string, model: string): Promise<void> {
  const res = await fetch(`${edgeUrl}/admin/providers/${BACKEND.provider}/verification`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ sample_rate: VERIFY_RATE }),
  });
  if (!res.ok) throw new Error(`PUT /admin/providers/${BACKEND.provider}/verification: HTTP ${res.status} ${await res.text()}`);
  const standing = (await res.json()) as { sampleRate?: number | null };
  if (standing.sampleRate !== VERIFY_RATE) throw new Error(`${BACKEND.provider}'s sample rate reads ${String(standing.sampleRate)} after setting it to ${VERIFY_RATE}`);
  const workload = WORKLOADS[model]!;
  for (let i = 0; i < 3; i++) {
    const r = await closedLoop({
      url: `${edgeUrl}/v2/models/${model}/infer`,
      body: workload.body,
      tokens: [consumerKey],
      concurrency: 1,
      durationMs: 5000,
      headers: headersOf('mesh-none')!,
      onAnswer: countServed('mesh-none'),
    });
    if (r.ok !== 1) throw new Error(`a request through the edge after setting the sample rate failed: ${r.errorSamples.join('; ')}`);
    await new Promise((resolve) => setTimeout(resolve, 1200));
  }
  log(`${BACKEND.provider}'s sample rate set to ${VERIFY_RATE} (PUT /admin/providers/${BACKEND.provider}/verification)`);
}

/** Reads `read` every 500 ms until it returns the same values for 3 s (at most 30 s); returns the last. */
async function standStill(read: () => Promise<number[]>): Promise<number[]> {
  let last = await read();
  let stillSince = Date.now();
  for (const deadline = Date.now() + 30_000; Date.now() < deadline && Date.now() - stillSince < 3000; ) {
    await new Promise((r) => setTimeout(r, 500));
    const now = await read();
    if (now.some((v, i) => v !== last[i])) stillSince = Date.now();
    last = now;
  }
  return last;
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
  pids: Pids;
  checkerUrl: string;
}

/** Every process the bench runs: the quiet check counts them as its own. */
const ownGroups = (pids: Pids) => [pids.edge, pids.passthrough, pids.backend, pids.checker, pids.settlement];

async function measure(o: MeasureOptions): Promise<Phase> {
  const what = `${o.model} round ${o.round}/${ROUNDS}, concurrency ${String(o.concurrency).padStart(2)}, ${o.path.padEnd(11)}`;
  const headers = headersOf(o.path);
  const check = answerCheck(o.path, o.workload.check);
  let byChecker = 0;
  let byBackend = 0;
  const count = isMesh(o.path)
    ? (h: IncomingHttpHeaders) => {
        countServed(o.path as MeshPath)(h);
        if (h['x-mesh-backend'] === CHECKER.id) byChecker++;
        else if (h['x-mesh-backend'] === BACKEND.id) byBackend++;
      }
    : undefined;

  await quiet(what, ownGroups(o.pids));
  const checker0 = await inferencesOf(o.checkerUrl);
  const hedges0 = checkerHedges;
  // Warm-up: a pool for the fastest any path goes; the run's pool from the warm-up's rate.
  let runCount = Math.ceil(MAX_RATE * SECONDS) + 2 * o.concurrency;
  let warmupRequests = 0;
  if (WARMUP_SECONDS > 0) {
    const tokens = await o.tokensFor(o.path, Math.ceil(MAX_RATE * WARMUP_SECONDS) + o.concurrency);
    const warm = await closedLoop({
      url: o.url,
      body: o.workload.body,
      tokens,
      concurrency: o.concurrency,
      durationMs: WARMUP_SECONDS * 1000,
      check,
      ...(headers ? { headers } : {}),
      ...(count ? { onAnswer: count } : {}),
    });
    if (warm.ok === 0) throw new Error(`${what}: no request succeeded in the warm-up: ${warm.errorSamples.join('; ')}`);
    warmupRequests = warm.ok;
    if (!warm.exhausted) runCount = Math.min(runCount, Math.ceil((warm.ok / warm.elapsedMs) * 1000 * SECONDS * 2) + 2 * o.concurrency + 200);
  }
  const tokens = await o.tokensFor(o.path, runCount);

  const timing: Record<string, { sum: number; n: number }> = {};
  const onAnswer = (h: IncomingHttpHeaders) => {
    count?.(h);
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
      checker: o.pids.checker === undefined ? Number.NaN : processCpuMs(o.pids.checker),
      ours:
        of(o.pids.edge).all +
        of(o.pids.passthrough).all +
        (o.pids.settlement === undefined ? 0 : of(o.pids.settlement).all) +
        (o.pids.backend === undefined ? 0 : processCpuMs(o.pids.backend)) +
        (o.pids.checker === undefined ? 0 : processCpuMs(o.pids.checker)) +
        (self.user + self.system) / 1000,
      machine: machineBusyMs(),
    };
  };
  const before = cpu();
  const result = await closedLoop({ url: o.url, body: o.workload.body, tokens, concurrency: o.concurrency, durationMs: SECONDS * 1000, onAnswer, ...(headers ? { headers } : {}) });
  const after = cpu();
  const checker1 = await inferencesOf(o.checkerUrl);
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
      checker: (after.checker - before.checker) / n,
      loadgen: (after.loadgen - before.loadgen) / n,
    },
    otherCpu: Math.max(0, after.machine - before.machine - (after.ours - before.ours)) / (CORES * result.elapsedMs),
    checker: { inferences: checker1 - checker0, served: byChecker, fraAnswers: byBackend, hedges: checkerHedges - hedges0 },
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
      (isMesh(o.path) ? `, ${CHECKER.id}: ${phase.checker.hedges} hedges, served ${byChecker}, ${phase.checker.inferences - byChecker} other inferences` : '') +
      (errorCount > 0 ? `, ${errorCount} ERRORS: ${JSON.stringify(result.errors)} ${result.errorSamples[0] ?? ''}` : '') +
      (result.exhausted ? ' (the pre-signed tokens ran out before the deadline)' : '') +
      (phase.otherCpu > NOISY_OTHER_CPU ? ` (other processes used ${(phase.otherCpu * 100).toFixed(0)}% of the CPU)` : ''),
  );
  return phase;
}

/**
 * The four paths at concurrency 1, request by request in turn
 * (INTERLEAVE_CYCLE: a, b, c, a, b, d, a, ...): each meets the machine as it
 * is at that moment, so a drift of its speed (tens of percent within a run
 * here) lands on all alike, which separate phases cannot promise. Each slot
 * of the cycle keeps its own keep-alive socket and token pool; a path's
 * figures are over all its slots. Its runtime's CPU is divided by its own
 * answers, except that (c) and (d) share the edge's, divided by the answers
 * of both.
 */
async function measureInterleaved(o: {
  model: string;
  round: number;
  bases: Record<PathId, string>;
  workload: { body: Uint8Array; check: (json: unknown) => boolean };
  tokensFor: (p: PathId, count: number) => Promise<string[]>;
  pids: Pids;
  checkerUrl: string;
}): Promise<Interleaved> {
  const what = `${o.model} round ${o.round}/${ROUNDS}, concurrency  1, interleaved`;
  let byChecker = 0;
  let fraAnswers = 0;
  const countMesh = (p: MeshPath) => (h: IncomingHttpHeaders) => {
    countServed(p)(h);
    if (h['x-mesh-backend'] === CHECKER.id) byChecker++;
    else if (p === 'mesh' && h['x-mesh-backend'] === BACKEND.id) fraAnswers++;
  };
  const targetsWith = async (count: number) =>
    Promise.all(
      INTERLEAVE_CYCLE.map(async (p) => {
        const headers = headersOf(p);
        return {
          url: `${o.bases[p]}/v2/models/${o.model}/infer`,
          tokens: await o.tokensFor(p, count),
          check: answerCheck(p, o.workload.check),
          ...(headers ? { headers } : {}),
          ...(isMesh(p) ? { onAnswer: countMesh(p) } : {}),
        };
      }),
    );
  /** The slots' results merged by path. */
  const byPath = (results: ClosedLoopResult[]) =>
    Object.fromEntries(
      PATHS.map((p) => {
        const slots = results.filter((_, i) => INTERLEAVE_CYCLE[i] === p);
        const errors: Record<string, number> = {};
        for (const r of slots) for (const [k, m] of Object.entries(r.errors)) errors[k] = (errors[k] ?? 0) + m;
        return [
          p,
          {
            ok: slots.reduce((m, r) => m + r.ok, 0),
            latenciesMs: Float64Array.from(slots.flatMap((r) => [...r.latenciesMs])),
            errors,
            errorSamples: slots.flatMap((r) => r.errorSamples).slice(0, 5),
          },
        ];
      }),
    ) as Record<PathId, Pick<ClosedLoopResult, 'ok' | 'latenciesMs' | 'errors' | 'errorSamples'>>;
  const slots = INTERLEAVE_CYCLE.length;
  await quiet(what, ownGroups(o.pids));
  const checker0 = await inferencesOf(o.checkerUrl);
  const hedges0 = checkerHedges;
  let warmup = Object.fromEntries(PATHS.map((p) => [p, 0])) as Record<PathId, number>;
  let perSlot = Math.ceil((MAX_RATE * INTERLEAVE_SECONDS) / slots);
  if (WARMUP_SECONDS > 0) {
    const warm = await interleavedLoop({ targets: await targetsWith(Math.ceil((MAX_RATE * WARMUP_SECONDS) / slots) + 1), body: o.workload.body, concurrency: 1, durationMs: WARMUP_SECONDS * 1000 });
    const merged = byPath(warm);
    warmup = Object.fromEntries(PATHS.map((p) => [p, merged[p].ok])) as Record<PathId, number>;
    const cycles = Math.min(...warm.map((r) => r.ok));
    if (cycles === 0) throw new Error(`${what}: no request succeeded on every path in the warm-up`);
    if (!warm[0]!.exhausted) perSlot = Math.min(perSlot, Math.ceil((cycles / warm[0]!.elapsedMs) * 1000 * INTERLEAVE_SECONDS * 2) + 200);
  }
  const targets = await targetsWith(perSlot);
  const groups = () => groupCpuMs();
  const self0 = process.cpuUsage();
  const g0 = groups();
  const machine0 = machineBusyMs();
  const backendCpu = () => (o.pids.backend === undefined ? 0 : processCpuMs(o.pids.backend)) + (o.pids.checker === undefined ? 0 : processCpuMs(o.pids.checker));
  const backend0 = backendCpu();
  const results = await interleavedLoop({ targets, body: o.workload.body, concurrency: 1, durationMs: INTERLEAVE_SECONDS * 1000 });
  const g1 = groups();
  const self = process.cpuUsage(self0);
  const machine = machineBusyMs() - machine0;
  const backend = backendCpu() - backend0;
  const checker1 = await inferencesOf(o.checkerUrl);
  const groupDelta = (pid: number | undefined) => (pid === undefined ? 0 : (g1.get(pid)?.all ?? Number.NaN) - (g0.get(pid)?.all ?? Number.NaN));
  const ours = groupDelta(o.pids.edge) + groupDelta(o.pids.passthrough) + groupDelta(o.pids.settlement) + backend + (self.user + self.system) / 1000;
  const elapsedMs = Math.max(...results.map((r) => r.elapsedMs));
  const merged = byPath(results);
  const meshOk = MESH_PATHS.reduce((sum, p) => sum + merged[p].ok, 0);
  const paths = Object.fromEntries(
    PATHS.map((p) => {
      const r = merged[p];
      const runtimeCpuMs = isMesh(p) ? groupDelta(o.pids.edge) / Math.max(1, meshOk) : p === 'passthrough' ? groupDelta(o.pids.passthrough) / Math.max(1, r.ok) : 0;
      return [
        p,
        {
          requests: r.ok,
          warmupRequests: warmup[p],
          reqPerS: (r.ok * 1000) / elapsedMs,
          p50Ms: quantile(r.latenciesMs, 0.5),
          p99Ms: quantile(r.latenciesMs, 0.99),
          runtimeCpuMs,
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
    otherCpu: Math.max(0, machine - ours) / (CORES * elapsedMs),
    checker: { inferences: checker1 - checker0, served: byChecker, fraAnswers, hedges: checkerHedges - hedges0 },
    tokensRanOut: results.some((r) => r.exhausted),
  };
  const errors = PATHS.flatMap((p) => Object.entries(paths[p].errors).map(([k, m]) => `${p} ${k}: ${m}`));
  log(
    `${what}: ` +
      PATHS.map((p) => `${p} p50 ${paths[p].p50Ms.toFixed(2)} / p99 ${paths[p].p99Ms.toFixed(2)} ms`).join(', ') +
      `; mesh - passthrough p50 ${(paths.mesh.p50Ms - paths.passthrough.p50Ms).toFixed(2)} ms` +
      `; mesh - mesh-none p50 ${(paths.mesh.p50Ms - paths['mesh-none'].p50Ms).toFixed(3)} ms` +
      `; ${CHECKER.id}: ${x.checker.hedges} hedges, served ${byChecker}, ${x.checker.inferences - byChecker} other inferences` +
      (errors.length > 0 ? `, ERRORS: ${errors.join(', ')} ${PATHS.map((p) => paths[p].errorSamples[0] ?? '').join(' ')}` : '') +
      (x.otherCpu > NOISY_OTHER_CPU ? ` (other processes used ${(x.otherCpu * 100).toFixed(0)}% of the CPU)` : ''),
  );
  return x;
}

function report(phases: Phase[], interleaved: Interleaved[], totalMs: number, ledger: LedgerCount, verification: VerificationCount): unknown {
  const f = (v: number | undefined, digits = 2) => (v !== undefined && Number.isFinite(v) ? v.toFixed(digits) : 'n/a');
  const signed = (v: number, digits = 2) => (Number.isFinite(v) ? `${v >= 0 ? '+' : ''}${v.toFixed(digits)}` : 'n/a');
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
      `| path | concurrency | req/s | p50 ms | p99 ms | edge;dur ms | runtime CPU ms/req | backend CPU ms/req | ${CHECKER.id} CPU ms/req | hedges to ${CHECKER.id} / answers it served | ${CHECKER.id} other inferences / ${BACKEND.id} answer | errors |`,
      '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    );
    for (const c of CONCURRENCIES) {
      for (const p of PATHS) {
        const a = rows[c]![p];
        const ps = phases.filter((x) => x.model === model && x.path === p && x.concurrency === c);
        const byChecker = `${ps.reduce((n, x) => n + x.checker.hedges, 0)} / ${ps.reduce((n, x) => n + x.checker.served, 0)}`;
        const extra = ps.reduce((n, x) => n + x.checker.inferences - x.checker.served, 0) / ps.reduce((n, x) => n + x.checker.fraAnswers, 0);
        lines.push(
          `| ${LABEL[p]} | ${c} | ${f(a.reqPerS, 0)} | ${f(a.p50Ms)} | ${f(a.p99Ms)} | ${isMesh(p) ? f(a.edgeDurMs) : '-'} | ${p === 'direct' ? '-' : f(a.runtimeCpuMs, 3)} | ${f(a.backendCpuMs, 3)} | ${f(a.checkerCpuMs, 3)} | ` +
            `${isMesh(p) ? byChecker : '-'} | ${isMesh(p) ? f(extra, 4) : '-'} | ${a.errors}${a.tokensRanOut ? ' (tokens ran out)' : ''} |`,
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
      const vP50 = paired('mesh', 'mesh-none', (q) => q.p50Ms);
      const vP99 = paired('mesh', 'mesh-none', (q) => q.p99Ms);
      const vCpu = paired('mesh', 'mesh-none', (q) => q.cpuMsPerReq.runtime);
      lines.push(`| sampled verification on the answer's path, (c) - (d) | ${c} | ${signed(vP50, 3)} | ${signed(vP99, 3)} | ${signed(vCpu, 3)} |`);
      const met = p50 < GOAL_P50_MS && p99 < GOAL_P99_MS;
      const judgedInterleaved = c === 1 && interleaved.some((x) => x.model === model);
      verdicts.push(
        `${model}, concurrency ${c}${judgedInterleaved ? ' (separate phases, for reference)' : ''}: mesh's own cost ${signed(p50)} ms p50, ${signed(p99)} ms p99` +
          (judgedInterleaved ? '' : `; goal < ${GOAL_P50_MS} ms p50 and < ${GOAL_P99_MS} ms p99: ${met ? 'met' : 'MISSED'}`),
      );
      // The verification goal is about the answer's path, judged at concurrency 1 (interleaved when there
      // are interleaved rounds); at higher concurrency the re-executions' CPU shares the cores with the answers.
      const verifyMet = vP50 < GOAL_VERIFY_P50_MS;
      const verifyJudged = c === 1 && !judgedInterleaved;
      const cOf = phases.filter((q) => q.model === model && q.path === 'mesh' && q.concurrency === c);
      verdicts.push(
        `${model}, concurrency ${c}${judgedInterleaved ? ' (separate phases, for reference)' : c === 1 ? '' : ' (for reference: the cores are shared, so the re-executions\' CPU shows here)'}: ` +
          `sampled verification on the answer's path ${signed(vP50, 3)} ms p50, ${signed(vP99, 3)} ms p99 (${cOf.filter((q) => reexecuted(q.checker)).length} of ${cOf.length} (c) phases re-executed)` +
          (verifyJudged ? `; goal < ${GOAL_VERIFY_P50_MS} ms p50: ${verifyMet ? 'met' : 'MISSED'}` : ''),
      );
      costs.push({
        concurrency: c,
        p50Ms: p50,
        p99Ms: p99,
        runtimeCpuMsPerReq: paired('mesh', 'passthrough', (q) => q.cpuMsPerReq.runtime),
        met,
        floorP50Ms: paired('passthrough', 'direct', (q) => q.p50Ms),
        floorP99Ms: paired('passthrough', 'direct', (q) => q.p99Ms),
        verifyP50Ms: vP50,
        verifyP99Ms: vP99,
        verifyRuntimeCpuMsPerReq: vCpu,
        verifyCheckerCpuMsPerReq: paired('mesh', 'mesh-none', (q) => q.cpuMsPerReq.checker),
        ...(verifyJudged ? { verifyMet } : {}),
      });
    }
    // Concurrency 1, interleaved: the goals at concurrency 1 are judged here (see measureInterleaved).
    const mixed = interleaved.filter((x) => x.model === model);
    let interleavedCost: unknown;
    if (mixed.length > 0) {
      const med = (get: (x: Interleaved) => number) => median(mixed.map(get).filter(Number.isFinite));
      lines.push(
        '',
        `Interleaved at concurrency 1: one request at a time in the cycle ${INTERLEAVE_CYCLE.map((p) => LABEL[p].slice(0, 3)).join(', ')}, ${INTERLEAVE_SECONDS} s per round; median of ${mixed.length} rounds`,
        '',
        '| path | req/s | p50 ms | p99 ms | runtime CPU ms/req | errors |',
        '| --- | ---: | ---: | ---: | ---: | ---: |',
      );
      for (const p of PATHS) {
        const errs = mixed.reduce((n, x) => n + Object.values(x.paths[p].errors).reduce((a, b) => a + b, 0), 0);
        lines.push(
          `| ${LABEL[p]} | ${f(med((x) => x.paths[p].reqPerS), 0)} | ${f(med((x) => x.paths[p].p50Ms))} | ${f(med((x) => x.paths[p].p99Ms))} | ${p === 'direct' ? '-' : `${f(med((x) => x.paths[p].runtimeCpuMs), 3)}${isMesh(p) ? ' (c and d)' : ''}`} | ${errs} |`,
        );
      }
      const d = (x: PathId, y: PathId, get: (q: Interleaved['paths'][PathId]) => number) => med((r) => get(r.paths[x]) - get(r.paths[y]));
      const p50 = d('mesh', 'passthrough', (q) => q.p50Ms);
      const p99 = d('mesh', 'passthrough', (q) => q.p99Ms);
      const cpu = d('mesh', 'passthrough', (q) => q.runtimeCpuMs);
      // The verification goal is judged on the rounds in which the checker re-executed (see `reexecuted`).
      const valid = mixed.filter((x) => reexecuted(x.checker));
      const dOver = (rounds: Interleaved[], get: (q: Interleaved['paths'][PathId]) => number) =>
        median(rounds.map((r) => get(r.paths.mesh) - get(r.paths['mesh-none'])).filter(Number.isFinite));
      const vP50 = dOver(valid, (q) => q.p50Ms);
      const vP99 = dOver(valid, (q) => q.p99Ms);
      const allP50 = dOver(mixed, (q) => q.p50Ms);
      const allP99 = dOver(mixed, (q) => q.p99Ms);
      lines.push(
        '',
        '| difference (median over rounds of the difference within a round) | p50 ms | p99 ms | runtime CPU ms/req |',
        '| --- | ---: | ---: | ---: |',
        `| runtime floor, (b) - (a) | ${signed(d('passthrough', 'direct', (q) => q.p50Ms))} | ${signed(d('passthrough', 'direct', (q) => q.p99Ms))} | - |`,
        `| **mesh's own cost, (c) - (b)** | **${signed(p50)}** | **${signed(p99)}** | ${signed(cpu)} |`,
        `| **sampled verification on the answer's path, (c) - (d)**, the ${valid.length} of ${mixed.length} rounds with re-executions | **${signed(vP50, 3)}** | **${signed(vP99, 3)}** | - (one edge) |`,
        `| sampled verification on the answer's path, (c) - (d), all rounds | ${signed(allP50, 3)} | ${signed(allP99, 3)} | - (one edge) |`,
      );
      const extraShares = mixed.map((x) => reexecutedShare(x.checker));
      lines.push(
        '',
        `${CHECKER.id} in the interleaved rounds: ${mixed.map((x) => x.checker.hedges).join(', ')} hedges to it, ${mixed.map((x) => x.checker.served).join(', ')} answers served; other inferences per answer ${BACKEND.id} served through (c): ${extraShares.map((v) => f(v, 4)).join(', ')}` +
          ` (a round re-executed when at least half the rate, ${f(VERIFY_RATE / 2, 4)})`,
      );
      const met = p50 < GOAL_P50_MS && p99 < GOAL_P99_MS;
      verdicts.push(
        `${model}, concurrency 1 (interleaved): mesh's own cost ${signed(p50)} ms p50, ${signed(p99)} ms p99 (rounds: ${mixed.map((x) => signed(x.paths.mesh.p50Ms - x.paths.passthrough.p50Ms)).join(', ')} ms p50); goal < ${GOAL_P50_MS} ms p50 and < ${GOAL_P99_MS} ms p99: ${met ? 'met' : 'MISSED'}`,
      );
      const verifyMet = valid.length > 0 && vP50 < GOAL_VERIFY_P50_MS;
      const verifyRounds = mixed.map((x) => x.paths.mesh.p50Ms - x.paths['mesh-none'].p50Ms);
      verdicts.push(
        `${model}, concurrency 1 (interleaved): sampled verification on the answer's path ${signed(vP50, 3)} ms p50, ${signed(vP99, 3)} ms p99 over the ${valid.length} of ${mixed.length} rounds with re-executions ` +
          `(rounds: ${mixed.map((x, i) => `${signed(verifyRounds[i]!, 3)} [${f(reexecutedShare(x.checker), 3)} re-executed]`).join(', ')} ms p50); ` +
          `goal < ${GOAL_VERIFY_P50_MS} ms p50: ${valid.length === 0 ? 'NOT JUDGED (no round re-executed)' : verifyMet ? 'met' : 'MISSED'}`,
      );
      interleavedCost = {
        concurrency: 1,
        p50Ms: p50,
        p99Ms: p99,
        runtimeCpuMsPerReq: cpu,
        met,
        rounds: mixed.length,
        verify: { p50Ms: vP50, p99Ms: vP99, met: verifyMet, judgedRounds: valid.map((x) => x.round), allRoundsP50Ms: allP50, allRoundsP99Ms: allP99, roundsP50Ms: verifyRounds, checkerExtraPerAnswer: extraShares },
      };
    }
    summary.push({ model, body: new TextDecoder().decode(WORKLOADS[model]!.body), rows, costs, interleaved: interleavedCost });
  }
  lines.push('');
  lines.push(...verdicts);

  const v = verification;
  const lo = VERIFY_RATE * (1 - GOAL_EXTRA_WORK_TOLERANCE);
  const hi = VERIFY_RATE * (1 + GOAL_EXTRA_WORK_TOLERANCE);
  lines.push(
    `Extra backend work of sampled verification: ${CHECKER.id} ran ${v.extraWork} inferences beyond the ${v.checkerServed} consumer answers it served (${v.checkerInferences} in all, its nv_inference_request_success), ` +
      `for ${v.sampledAnswers} answers through (c) that ${BACKEND.id} served (priming and warm-ups included): ${f(v.share, 4)} per answer against BENCH_VERIFY_RATE ${VERIFY_RATE} ` +
      `(binomial sd ${f(v.sd, 4)}; ratio ${f(v.share / VERIFY_RATE, 3)}); goal within ${GOAL_EXTRA_WORK_TOLERANCE * 100}% of the rate (${f(lo, 4)} to ${f(hi, 4)}): ${v.met ? 'met' : 'MISSED'}.`,
  );
  const receiptedOnChecker = v.receiptsByBackend?.[CHECKER.id] ?? 0;
  lines.push(
    `  That count holds the re-executions and also any hedge to ${CHECKER.id} that lost (aborted once ${BACKEND.id} answered; the backend had run it anyway). ` +
      (v.receiptsByBackend
        ? `${receiptedOnChecker} re-executions on ${CHECKER.id} have a verification receipt in the ledger (${f(receiptedOnChecker / v.sampledAnswers, 4)} per answer), so ${v.extraWork - receiptedOnChecker} of its extra inferences were not receipted re-executions.`
        : 'The ledger could not be listed by kind, so the two are not told apart.'),
  );
  const cPhases = phases.filter((p) => p.path === 'mesh');
  const silent = cPhases.filter((p) => !reexecuted(p.checker));
  lines.push(
    `  (c) phases in which ${CHECKER.id} ran under half the rate's re-executions: ${silent.length} of ${cPhases.length}` +
      (silent.length > 0
        ? ` (${silent.map((p) => `c${p.concurrency}/r${p.round}: ${f(reexecutedShare(p.checker), 4)}`).join(', ')}). While ${CHECKER.id} is not among a request's candidates (ejected after failures in a row; a hedge to it that lost before it started answering counts as one), answers are not re-executed.`
        : '.'),
  );
  const byBackend = (p: MeshPath) => `${served[p][CHECKER.id] ?? 0} of ${servedTotal(p)} through ${p === 'mesh' ? '(c)' : '(d)'}`;
  const others = MESH_PATHS.flatMap((p) => Object.entries(served[p]).filter(([id]) => id !== BACKEND.id && id !== CHECKER.id).map(([id, n]) => `${n} by ${id} through ${p}`));
  lines.push(
    `Answers served by the checker ${CHECKER.id} (picked, or a hedge or retry that won): ${byBackend('mesh')}, ${byBackend('mesh-none')}; the edge logged ${checkerHedges} hedges to it` +
      (others.length > 0 ? `; UNEXPECTED: ${others.join(', ')}` : '') +
      `. (d)'s answers are never re-executed; ${CHECKER.id}'s are re-executed on ${BACKEND.id} at ${CHECKER.provider}'s rate (the mesh's rule), which adds to ${BACKEND.id}'s work, not ${CHECKER.id}'s.`,
  );
  lines.push(
    `(c) has auth, routing, dispatch token, attestation check, receipt and the receipt's queue send on (in waitUntil, batched per isolate; Miniflare's local queue); ` +
      `after the answer (waitUntil) the attestation's signature is settled and, for a sample of answers, the request is re-executed on ${CHECKER.id}. (d) is the same edge with x-mesh-verify: none: no re-execution.`,
  );
  lines.push(
    SETTLEMENT === 'apart'
      ? `The queue's consumer and the ledger shards ran in a second wrangler dev at nice 19 (as production runs them elsewhere), sharing the machine's idle CPU but not the edge's workerd: ${Number.isFinite(ledger.settlementCpuMsPerReceipt) ? `${ledger.settlementCpuMsPerReceipt.toFixed(3)} ms of CPU per receipt there` : 'its CPU unknown'}. BENCH_EDGE_SETTLEMENT=together runs them in the edge's workerd.`
      : `The queue's consumer and the ledger shards ran in the edge's workerd, on its thread (BENCH_EDGE_SETTLEMENT=together; not how production runs).`,
  );
  if (ledger.consumerReceipts !== undefined && ledger.verificationReceipts !== undefined) {
    const kinds = ledger.consumerReceipts + ledger.verificationReceipts;
    const byChecker = Object.entries(v.receiptsByBackend ?? {}).map(([id, n]) => `${n} by ${id}`).join(', ') || 'none';
    lines.push(
      `Receipts: ${ledger.receipts} in the ledger, counted by sub after closing the open batches: ${ledger.consumerReceipts} consumer receipts for ${ledger.answered} answers through the edge ((c) and (d), priming and warm-ups included)` +
        `${ledger.consumerReceipts === ledger.answered ? ': none lost, none doubled' : ': MISMATCH'}; ${ledger.verificationReceipts} verification receipts (sub ${VERIFICATION_SUB}, one per re-execution: ${byChecker})` +
        `${kinds === ledger.receipts ? '' : `; the kinds add up to ${kinds}, not ${ledger.receipts}: MISMATCH`}.`,
    );
  } else {
    lines.push(
      `Receipts: ${ledger.receipts} in the ledger for ${ledger.answered} answers through the edge plus the verification receipts (not listed by kind: ${ledger.receipts - ledger.answered} more than the answers; ${v.extraWork} extra inferences on ${CHECKER.id}).`,
    );
  }
  if (!LOCAL_TRACES) lines.push(`wrangler dev's local trace store and explorer were off for every Worker (BENCH_EDGE_LOCAL_TRACES=1 leaves them on).`);
  lines.push(
    INSPECTOR
      ? `Every Worker ran with wrangler's DevTools inspector attached, as the wrangler CLI runs it (BENCH_EDGE_INSPECTOR=0 leaves it out).`
      : `Every Worker ran without wrangler's DevTools inspector (scripts/wrangler-dev-no-inspector.ts; BENCH_EDGE_INSPECTOR=1 attaches it, as the wrangler CLI does).`,
  );
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
    settings: {
      seconds: SECONDS,
      warmupSeconds: WARMUP_SECONDS,
      rounds: ROUNDS,
      concurrency: CONCURRENCIES,
      models: MODELS,
      colo: COLO,
      backend: BACKEND,
      checker: CHECKER,
      verifyRate: VERIFY_RATE,
      settlement: SETTLEMENT,
      localTraces: LOCAL_TRACES,
      inspector: INSPECTOR,
      interleave: INTERLEAVE,
      interleaveCycle: INTERLEAVE_CYCLE,
      interleaveSeconds: INTERLEAVE_SECONDS,
    },
    goal: { p50Ms: GOAL_P50_MS, p99Ms: GOAL_P99_MS, verifyP50Ms: GOAL_VERIFY_P50_MS, extraWorkTolerance: GOAL_EXTRA_WORK_TOLERANCE },
    notes: [
      'queue send in waitUntil, batched per isolate (Miniflare local queue)',
      SETTLEMENT === 'apart' ? 'queue consumer and ledger in a second wrangler dev' : 'queue consumer and ledger in the edge workerd',
      'edge;dur: workerd clock, whole ms, advances only on I/O',
      `(c) x-mesh-verify: sampled, (d) x-mesh-verify: none, same edge; ${BACKEND.provider} sample rate set to verifyRate; re-executions on ${CHECKER.id}`,
      `verification.extraWork counts re-executions and hedges to ${CHECKER.id} that lost; receiptsByBackend counts receipted re-executions`,
      'interleaved runtime CPU of (c) and (d): the edge per answer of both',
    ],
    summary,
    verification: { ...v, servedBy: served, hedgesToChecker: checkerHedges },
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
    checkerCpuMs: med((p) => p.cpuMsPerReq.checker),
    loadgenCpuMs: med((p) => p.cpuMsPerReq.loadgen),
    errors: ps.reduce((n, p) => n + Object.values(p.errors).reduce((a, b) => a + b, 0), 0),
    tokensRanOut: ps.some((p) => p.tokensRanOut),
  };
}



// --- the answer-cache case (docs/api.md section 2.13) --------------------------

const CACHE_PATHS = ['direct', 'passthrough', 'hit', 'miss'] as const;
type CachePath = (typeof CACHE_PATHS)[number];
const CACHE_LABEL: Record<CachePath, string> = {
  direct: '(a) direct to the backend',
  passthrough: '(b) bare pass-through Worker',
  hit: '(h) mesh edge, answer-cache hit',
  miss: '(m) mesh edge, answer-cache miss',
};
/** Each edge request follows one to another process, never one to the edge (the position effect of INTERLEAVE_CYCLE). */
const CACHE_CYCLE: readonly CachePath[] = ['direct', 'hit', 'passthrough', 'miss'];

interface CacheRound {
  round: number;
  paths: Record<CachePath, { requests: number; warmupRequests: number; p50Ms: number; p99Ms: number; meanMs: number; errors: Record<string, number>; errorSamples: string[] }>;
  /** `x-mesh-cache` of the measured answers through the edge, by path. */
  cacheHeaders: Record<'hit' | 'miss', Record<string, number>>;
  /** Mean `edge;dur` of the hits, ms. */
  hitEdgeDurMs: number;
  otherCpu: number;
}

interface CacheCase {
  text: string;
  rounds: CacheRound[];
}

/**
 * The answer-cache case: `embed` at concurrency 1, the four paths of
 * CACHE_CYCLE interleaved request by request, ROUNDS rounds of
 * INTERLEAVE_SECONDS after a warm-up. (h) sends the workload's request every
 * time (its first answer, in the first warm-up, is the miss that fills the
 * entry); (m) sends a text no request has sent before each time.
 */
async function measureCache(o: {
  edgeUrl: string;
  consumerKey: string;
  passthroughUrl: string;
  directUrl: string;
  key: CryptoKey;
  kid: string;
  issuer: string;
  pids: Pids;
}): Promise<CacheCase> {
  const workload = WORKLOADS.embed!;
  const text = (JSON.parse(new TextDecoder().decode(workload.body)) as { inputs: { data: string[] }[] }).inputs[0]!.data[0]!;
  const bodySha256 = await sha256Hex(workload.body);
  const nonce = Math.random().toString(36).slice(2, 8);
  const edgeHeaders = { 'x-mesh-dev-colo': COLO, 'x-mesh-verify': 'none' };
  log(`answer cache: embed, ${workload.what}; (h) the same request each time, (m) a new text each time; x-mesh-verify: none`);
  const rounds: CacheRound[] = [];
  for (let round = 1; round <= ROUNDS; round++) {
    const what = `answer cache round ${round}/${ROUNDS}, concurrency  1, interleaved`;
    const missBody = (i: number) =>
      json({ inputs: [{ name: 'text', shape: [1], datatype: 'BYTES', data: [`${text} (${nonce}.${round}.${i})`] }] });
    const seen: CacheRound['cacheHeaders'] = { hit: {}, miss: {} };
    let edgeDur = { sum: 0, n: 0 };
    const count = (p: 'hit' | 'miss') => (h: IncomingHttpHeaders) => {
      const state = String(h['x-mesh-cache'] ?? 'none');
      seen[p][state] = (seen[p][state] ?? 0) + 1;
      const m = p === 'hit' && state === 'hit' ? /edge;dur=([0-9.]+)/.exec(String(h['server-timing'] ?? '')) : null;
      if (m) edgeDur = { sum: edgeDur.sum + Number(m[1]), n: edgeDur.n + 1 };
    };
    const check = (body: Buffer) => {
      if (!workload.check(JSON.parse(body.toString('utf8')))) throw new Error(`unexpected answer: ${body.toString('utf8').slice(0, 200)}`);
    };
    const targetsWith = async (count_: number, warm: boolean) =>
      Promise.all(
        CACHE_CYCLE.map(async (p) => {
          const dispatchTokens = () => signDispatchTokens({ key: o.key, kid: o.kid, issuer: o.issuer, aud: BACKEND.id, model: 'embed', bodySha256, count: count_ });
          switch (p) {
            case 'direct':
              return { url: `${o.directUrl}/v2/models/embed/infer`, tokens: await dispatchTokens(), check };
            case 'passthrough':
              return { url: `${o.passthroughUrl}/v2/models/embed/infer`, tokens: await dispatchTokens(), check };
            case 'hit':
              return { url: `${o.edgeUrl}/v2/models/embed/infer`, tokens: new Array<string>(count_).fill(o.consumerKey), headers: edgeHeaders, check, ...(warm ? {} : { onAnswer: count('hit') }) };
            case 'miss':
              // Warm-up and measurement texts differ: every (m) request is a text never sent.
              return {
                url: `${o.edgeUrl}/v2/models/embed/infer`,
                tokens: new Array<string>(count_).fill(o.consumerKey),
                headers: edgeHeaders,
                check,
                bodyFor: (i: number) => missBody(warm ? -1 - i : i),
                ...(warm ? {} : { onAnswer: count('miss') }),
              };
          }
        }),
      );
    const byPath = (results: ClosedLoopResult[]) =>
      Object.fromEntries(
        CACHE_PATHS.map((p) => {
          const r = results[CACHE_CYCLE.indexOf(p)]!;
          return [p, r];
        }),
      ) as Record<CachePath, ClosedLoopResult>;
    await quiet(what, ownGroups(o.pids));
    const slots = CACHE_CYCLE.length;
    let perSlot = Math.ceil((MAX_RATE * INTERLEAVE_SECONDS) / slots);
    let warmup = Object.fromEntries(CACHE_PATHS.map((p) => [p, 0])) as Record<CachePath, number>;
    if (WARMUP_SECONDS > 0 || round === 1) {
      // Round 1 always warms up: its first (h) request fills the entry.
      const seconds = Math.max(WARMUP_SECONDS, 1);
      const warm = byPath(await interleavedLoop({ targets: await targetsWith(Math.ceil((MAX_RATE * seconds) / slots) + 1, true), body: workload.body, concurrency: 1, durationMs: seconds * 1000 }));
      warmup = Object.fromEntries(CACHE_PATHS.map((p) => [p, warm[p].ok])) as Record<CachePath, number>;
      const cycles = Math.min(...CACHE_PATHS.map((p) => warm[p].ok));
      if (cycles === 0) throw new Error(`${what}: no request succeeded on every path in the warm-up: ${CACHE_PATHS.map((p) => warm[p].errorSamples[0] ?? '').join(' ')}`);
      if (!warm.direct.exhausted) perSlot = Math.min(perSlot, Math.ceil((cycles / warm.direct.elapsedMs) * 1000 * INTERLEAVE_SECONDS * 2) + 200);
    }
    const targets = await targetsWith(perSlot, false);
    const self0 = process.cpuUsage();
    const g0 = groupCpuMs();
    const machine0 = machineBusyMs();
    const backendCpu = () => (o.pids.backend === undefined ? 0 : processCpuMs(o.pids.backend)) + (o.pids.checker === undefined ? 0 : processCpuMs(o.pids.checker));
    const backend0 = backendCpu();
    const results = await interleavedLoop({ targets, body: workload.body, concurrency: 1, durationMs: INTERLEAVE_SECONDS * 1000 });
    const g1 = groupCpuMs();
    const self = process.cpuUsage(self0);
    const groupDelta = (pid: number | undefined) => (pid === undefined ? 0 : (g1.get(pid)?.all ?? Number.NaN) - (g0.get(pid)?.all ?? Number.NaN));
    const ours = groupDelta(o.pids.edge) + groupDelta(o.pids.passthrough) + groupDelta(o.pids.settlement) + backendCpu() - backend0 + (self.user + self.system) / 1000;
    const elapsedMs = Math.max(...results.map((r) => r.elapsedMs));
    const merged = byPath(results);
    const r: CacheRound = {
      round,
      paths: Object.fromEntries(
        CACHE_PATHS.map((p) => {
          const x = merged[p];
          const mean = x.latenciesMs.reduce((a, b) => a + b, 0) / Math.max(1, x.ok);
          return [p, { requests: x.ok, warmupRequests: warmup[p], p50Ms: quantile(x.latenciesMs, 0.5), p99Ms: quantile(x.latenciesMs, 0.99), meanMs: mean, errors: x.errors, errorSamples: x.errorSamples }];
        }),
      ) as CacheRound['paths'],
      cacheHeaders: seen,
      hitEdgeDurMs: edgeDur.sum / Math.max(1, edgeDur.n),
      otherCpu: Math.max(0, machineBusyMs() - machine0 - ours) / (CORES * elapsedMs),
    };
    rounds.push(r);
    const ps = r.paths;
    log(
      `${what}: ` +
        CACHE_PATHS.map((p) => `${p} p50 ${ps[p].p50Ms.toFixed(2)} / p99 ${ps[p].p99Ms.toFixed(2)} ms`).join(', ') +
        `; hit/passthrough p50 ${(ps.hit.p50Ms / ps.passthrough.p50Ms).toFixed(2)}, hit/miss p50 ${(ps.hit.p50Ms / ps.miss.p50Ms).toFixed(2)}` +
        `; x-mesh-cache (h) ${JSON.stringify(seen.hit)}, (m) ${JSON.stringify(seen.miss)}` +
        (r.otherCpu > NOISY_OTHER_CPU ? ` (other processes used ${(r.otherCpu * 100).toFixed(0)}% of the CPU)` : ''),
    );
  }
  return { text, rounds };
}

/** Prints the answer-cache case's table and ratios; returns what goes to bench/results/edge-cache.json. */
function reportCache(c: CacheCase): unknown {
  const f = (v: number, digits = 2) => (Number.isFinite(v) ? v.toFixed(digits) : 'n/a');
  const med = (get: (r: CacheRound) => number) => median(c.rounds.map(get).filter(Number.isFinite));
  const ratio = (x: CachePath, y: CachePath, q: 'p50Ms' | 'p99Ms' | 'meanMs') => med((r) => r.paths[x][q] / r.paths[y][q]);
  const lines = [
    '',
    `Answer cache, embed (${WORKLOADS.embed!.what}); interleaved at concurrency 1 in the cycle ${CACHE_CYCLE.map((p) => CACHE_LABEL[p].slice(0, 3)).join(', ')}, ${INTERLEAVE_SECONDS} s per round; median of ${c.rounds.length} rounds`,
    '',
    '| path | p50 ms | p99 ms | mean ms | x-mesh-cache of the answers | errors |',
    '| --- | ---: | ---: | ---: | --- | ---: |',
  ];
  for (const p of CACHE_PATHS) {
    const errors = c.rounds.reduce((n, r) => n + Object.values(r.paths[p].errors).reduce((a, b) => a + b, 0), 0);
    const headers =
      p === 'hit' || p === 'miss'
        ? Object.entries(c.rounds.reduce<Record<string, number>>((acc, r) => {
            for (const [k, n] of Object.entries(r.cacheHeaders[p])) acc[k] = (acc[k] ?? 0) + n;
            return acc;
          }, {}))
            .map(([k, n]) => `${k} ${n}`)
            .join(', ')
        : '-';
    lines.push(`| ${CACHE_LABEL[p]} | ${f(med((r) => r.paths[p].p50Ms))} | ${f(med((r) => r.paths[p].p99Ms))} | ${f(med((r) => r.paths[p].meanMs))} | ${headers} | ${errors} |`);
  }
  const ratios = {
    hitOverPassthrough: { p50: ratio('hit', 'passthrough', 'p50Ms'), p99: ratio('hit', 'passthrough', 'p99Ms'), mean: ratio('hit', 'passthrough', 'meanMs') },
    hitOverMiss: { p50: ratio('hit', 'miss', 'p50Ms'), p99: ratio('hit', 'miss', 'p99Ms'), mean: ratio('hit', 'miss', 'meanMs') },
    missOverPassthrough: { p50: ratio('miss', 'passthrough', 'p50Ms'), p99: ratio('miss', 'passthrough', 'p99Ms'), mean: ratio('miss', 'passthrough', 'meanMs') },
    hitOverDirect: { p50: ratio('hit', 'direct', 'p50Ms'), p99: ratio('hit', 'direct', 'p99Ms'), mean: ratio('hit', 'direct', 'meanMs') },
  };
  lines.push(
    '',
    '| ratio (median over rounds of the ratio within a round) | p50 | p99 | mean |',
    '| --- | ---: | ---: | ---: |',
    `| **hit / pass-through, (h) / (b)** | **${f(ratios.hitOverPassthrough.p50)}** | **${f(ratios.hitOverPassthrough.p99)}** | ${f(ratios.hitOverPassthrough.mean)} |`,
    `| hit / miss, (h) / (m) | ${f(ratios.hitOverMiss.p50)} | ${f(ratios.hitOverMiss.p99)} | ${f(ratios.hitOverMiss.mean)} |`,
    `| miss / pass-through, (m) / (b) | ${f(ratios.missOverPassthrough.p50)} | ${f(ratios.missOverPassthrough.p99)} | ${f(ratios.missOverPassthrough.mean)} |`,
    `| hit / direct, (h) / (a) | ${f(ratios.hitOverDirect.p50)} | ${f(ratios.hitOverDirect.p99)} | ${f(ratios.hitOverDirect.mean)} |`,
    '',
  );
  const met = ratios.hitOverPassthrough.p50 <= 1 && ratios.hitOverPassthrough.p99 <= 1;
  lines.push(
    `embed, answer cache: a hit costs ${f(ratios.hitOverPassthrough.p50)}x the bare pass-through Worker's p50 and ${f(ratios.hitOverPassthrough.p99)}x its p99 ` +
      `(rounds: ${c.rounds.map((r) => f(r.paths.hit.p50Ms / r.paths.passthrough.p50Ms)).join(', ')}), and ${f(ratios.hitOverMiss.p50)}x a miss's p50; ` +
      `goal: no more than the pass-through (ratio <= 1 at p50 and p99): ${met ? 'met' : 'MISSED'}. Hits' own edge;dur: ${f(med((r) => r.hitEdgeDurMs))} ms (whole ms of workerd's clock).`,
    "The cache is Miniflare's Cache API in the edge's workerd (a local service over its own storage): in production it is the PoP's cache, in the same data centre.",
  );
  const busiest = Math.max(...c.rounds.map((r) => r.otherCpu));
  if (busiest > NOISY_OTHER_CPU) lines.push(`WARNING: other processes used up to ${(busiest * 100).toFixed(0)}% of the CPU during a round; rerun on a quiet machine before trusting small differences.`);
  console.log(lines.join('\n'));
  return {
    date: new Date().toISOString(),
    machine: { cores: CORES, cpu: os.cpus()[0]?.model, memoryGiB: Math.round(os.totalmem() / 2 ** 30), node: process.version, platform: `${os.platform()} ${os.arch()}` },
    settings: { rounds: ROUNDS, warmupSeconds: WARMUP_SECONDS, interleaveSeconds: INTERLEAVE_SECONDS, cycle: CACHE_CYCLE, colo: COLO, verify: 'none', settlement: SETTLEMENT },
    text: c.text,
    ratios,
    goal: { hitOverPassthroughMax: 1, met },
    rounds: c.rounds,
  };
}

type Passthrough = WranglerDev;

/** Receipts in every ledger shard of the Worker at `url` (its admin API). */
async function ledgerReceipts(url: string, adminToken: string): Promise<number> {
  const res = await fetch(`${url}/admin/settlement/shards`, { headers: { authorization: `Bearer ${adminToken}` } });
  if (!res.ok) throw new Error(`GET ${url}/admin/settlement/shards: HTTP ${res.status} ${await res.text()}`);
  const { shards } = (await res.json()) as { shards: { receipts: number }[] };
  return shards.reduce((n, s) => n + s.receipts, 0);
}

/** The `sub` of verification receipts: the operator's verification account (docs/api.md section 6.1). */
const VERIFICATION_SUB = 'mesh-verification';

/**
 * The ledger's receipts by kind: closes the open batches (`POST
 * /admin/settlement/close`, signed at once), then reads every closed batch's
 * receipts (billing routes) and counts them by `sub`: verification receipts
 * by the backend that re-executed, every other one as a consumer's.
 */
async function receiptsByKind(url: string, adminToken: string): Promise<{ total: number; consumer: number; verificationByBackend: Record<string, number> }> {
  const auth = { authorization: `Bearer ${adminToken}` };
  const get = async <T>(route: string, init?: RequestInit): Promise<T> => {
    const res = await fetch(`${url}${route}`, { headers: auth, ...init });
    if (!res.ok) throw new Error(`${init?.method ?? 'GET'} ${route}: HTTP ${res.status} ${await res.text()}`);
    return (await res.json()) as T;
  };
  await get('/admin/settlement/close', { method: 'POST' });
  const counts = { total: 0, consumer: 0, verificationByBackend: {} as Record<string, number> };
  for (let after: string | null = ''; after !== null; ) {
    const list: { batches: { id: string }[]; next: string | null } = await get(`/v1/settlement/batches?limit=1000${after ? `&after=${encodeURIComponent(after)}` : ''}`);
    for (const batch of list.batches) {
      for (let from: number | null = 0; from !== null; ) {
        const page: { receipts: string[]; next: number | null } = await get(`/v1/settlement/batches/${encodeURIComponent(batch.id)}/receipts?from=${from}&limit=5000`);
        for (const jwt of page.receipts) {
          const claims = JSON.parse(Buffer.from(jwt.split('.')[1] ?? '', 'base64url').toString('utf8')) as { sub?: string; backend?: string };
          counts.total++;
          if (claims.sub === VERIFICATION_SUB) {
            const by = claims.backend ?? '?';
            counts.verificationByBackend[by] = (counts.verificationByBackend[by] ?? 0) + 1;
          } else counts.consumer++;
        }
        from = page.next;
      }
    }
    after = list.next;
  }
  return counts;
}

/** Successful inferences of the backend at `url` so far: `nv_inference_request_success` of its /metrics, summed over labels. */
async function inferencesOf(url: string): Promise<number> {
  const res = await fetch(`${url}/metrics`);
  if (!res.ok) throw new Error(`GET ${url}/metrics: HTTP ${res.status}`);
  let n = 0;
  for (const line of (await res.text()).split('\n')) {
    const m = /^nv_inference_request_success(?:\{[^}]*\})?\s+(\S+)/.exec(line);
    if (m) n += Number(m[1]);
  }
  return n;
}

/** Starts bench/passthrough/ with `wrangler dev`, the flags scripts/local-mesh.ts gives the edge, forwarding to `target`. */
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
