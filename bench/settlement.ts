/**
 * `npm run bench:settlement`: what settlement (docs/api.md sections 4 and 5)
 * costs, with the edge's real code in workerd (bench/settlement/worker.js):
 * signing receipts, the queue send, appends into one ledger shard, and
 * building, closing and proving Merkle batches of 1e5 and 1e6 receipts (also
 * in Node). A script, not a test: it prints what one run measured and whether
 * each goal was met here. Method and figures: docs/benchmarks.md.
 *
 * Env: SETTLEMENT_BENCH_SIZES (100000,1000000; quick: 10000),
 * SETTLEMENT_BENCH_MERKLE_SIZES (the same as SIZES), SETTLEMENT_BENCH_SIGN
 * (20000), SETTLEMENT_BENCH_SENDS (2000), SETTLEMENT_BENCH_ROUNDS (3),
 * SETTLEMENT_BENCH_APPEND_RECEIPTS (30000), SETTLEMENT_BENCH_CALLERS (1,4),
 * SETTLEMENT_BENCH_PROOFS (1000), SETTLEMENT_BENCH_LOCAL_TRACES (0). Results
 * go to bench/results/settlement-<timestamp>.json; all state lives in a temp
 * dir, deleted at the end (also on Ctrl-C).
 */

import { spawn } from 'node:child_process';
import { readdirSync, readFileSync, statfsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { generateEd25519 } from '../shared/keys.ts';
import { chunkedProof, inclusionProof, leafHash, merkleRoot, equalHashes, verifyInclusion, type Hash } from '../receipts/merkle.ts';
import { verifyInclusionProof, type InclusionProof, type Jwks } from '../receipts/verify.ts';
import { machineBusyMs } from './lib/cpu.ts';
import { envIntList, envNumber } from './lib/env.ts';
import { seededUnit } from '../gpu-backend/src/demo-models/random.ts';
import { startWranglerDev } from './lib/processes.ts';
import { writeResults } from './lib/results.ts';
import { median } from './lib/load.ts';

const ROOT = path.resolve(import.meta.dirname, '..');
const BENCH_DIR = path.join(ROOT, 'bench', 'settlement');

const SIZES = envIntList('SETTLEMENT_BENCH_SIZES', '100000,1000000', 1, 10_000_000);
const MERKLE_SIZES = envIntList('SETTLEMENT_BENCH_MERKLE_SIZES', SIZES.join(','), 1, 10_000_000);
const SIGN = envNumber('SETTLEMENT_BENCH_SIGN', 20_000, 100, 1_000_000);
const SENDS = envNumber('SETTLEMENT_BENCH_SENDS', 2000, 10, 100_000);
const ROUNDS = envNumber('SETTLEMENT_BENCH_ROUNDS', 3, 1, 20);
const APPEND_RECEIPTS = envNumber('SETTLEMENT_BENCH_APPEND_RECEIPTS', 30_000, 100, 1_000_000);
const CALLERS = envIntList('SETTLEMENT_BENCH_CALLERS', '1,4', 1, 64);
const PROOFS = envNumber('SETTLEMENT_BENCH_PROOFS', 1000, 1, 100_000);
/** 1: leave wrangler dev's local trace store and explorer on (their default), to see what they cost. */
const LOCAL_TRACES = envNumber('SETTLEMENT_BENCH_LOCAL_TRACES', 0, 0, 1) === 1;
/** RPC batch: the queue consumer's max_batch_size (wrangler.toml). */
const BATCH = 100;
/** Concurrent callers while loading the close batches. */
const LOAD_CALLERS = Math.max(...CALLERS);
/** Merkle chunk of the ledger (workers/settlement/SettlementLedger.ts CHUNK). */
const CHUNK = 1024;
/** The archive's multipart part size (workers/settlement/archive.ts). */
const PART_BYTES = 8 * 1024 * 1024;

const GOAL_SIGN_US = 100;
const GOAL_CLOSE_S = 10;
const GOAL_CLOSE_SIZE = 1_000_000;
const ISSUER = 'https://mesh.bench.local'; // bench/settlement/wrangler.toml MESH_ISSUER

const log = (line: string) => console.log(`[bench] ${line}`);
const fmt = (n: number, digits = 0) => (Number.isFinite(n) ? n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits }) : 'n/a');
const sec = (ms: number) => (Number.isFinite(ms) ? `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s` : 'n/a');

// ---- the bench Worker ------------------------------------------------------

const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });

interface Answer<T> {
  status: number;
  value: T;
  ms: number;
}

/** POSTs to the bench Worker (node:http: no client timeout, a close may take minutes); times it. */
function request<T>(base: string, route: string, body?: unknown): Promise<Answer<T>> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request(`${base}${route}`, { method: 'POST', agent, headers: payload ? { 'content-type': 'application/json' } : {} }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('error', reject);
      res.on('end', () => {
        const ms = performance.now() - started;
        try {
          resolve({ status: res.statusCode ?? 0, value: JSON.parse(text) as T, ms });
        } catch {
          reject(new Error(`${route}: HTTP ${res.statusCode}, not JSON: ${text.slice(0, 500)}`));
        }
      });
    });
    req.on('error', reject);
    req.end(payload);
  });
}

async function post<T>(base: string, route: string, body?: unknown): Promise<Answer<T>> {
  const a = await request<T & { error?: string }>(base, route, body);
  if (a.status !== 200) throw new Error(`${route}: HTTP ${a.status}: ${a.value.error ?? JSON.stringify(a.value)}`);
  return a;
}

interface Worker {
  url: string;
  /** wrangler's pid, which leads its process group (workerd is in it). */
  pgid: number;
  stop(): Promise<void>;
}


/**
 * Bundles bench/settlement/ once (`wrangler deploy --dry-run`) into `dir`,
 * with a copy of its wrangler.toml that runs that bundle as it is: the run
 * measures one snapshot of the code, and edits to workers/ or shared/ while
 * it runs (wrangler dev watches every imported file) cannot restart it.
 */
async function bundleWorker(dir: string): Promise<string> {
  const bin = path.join(ROOT, 'node_modules', '.bin');
  const env = { ...process.env, WRANGLER_SEND_METRICS: 'false', PATH: `${bin}:${process.env.PATH}` };
  const out = await new Promise<string>((resolve, reject) => {
    const child = spawn(path.join(bin, 'wrangler'), ['deploy', '--dry-run', '--outdir', path.join(dir, 'bundle'), '--config', path.join(BENCH_DIR, 'wrangler.toml')], {
      cwd: ROOT,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let text = '';
    child.stdout.on('data', (c: Buffer) => (text += c.toString('utf8')));
    child.stderr.on('data', (c: Buffer) => (text += c.toString('utf8')));
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolve(text) : reject(new Error(`bundling bench/settlement/ failed (${code}):\n${text}`))));
  });
  const config = await readFile(path.join(BENCH_DIR, 'wrangler.toml'), 'utf8');
  if (!/^main = "worker\.js"$/m.test(config)) throw new Error(`bench/settlement/wrangler.toml: expected main = "worker.js"\n${out}`);
  const file = path.join(dir, 'wrangler.toml');
  await writeFile(file, config.replace(/^main = "worker\.js"$/m, 'main = "bundle/worker.js"\nno_bundle = true'));
  return file;
}

/** `wrangler dev` on the bundled bench Worker (see bundleWorker), its own process group, state in `stateDir`. */
async function startWorker(config: string, envFile: string, stateDir: string): Promise<Worker> {
  const w = await startWranglerDev({
    root: ROOT,
    config,
    envFile,
    stateDir,
    // wrangler dev's local trace store and explorer (on by default) record every request and RPC in
    // a SQLite Durable Object of their own, on the same thread; off, unless asked for.
    env: LOCAL_TRACES ? {} : { X_LOCAL_OBSERVABILITY: 'false', X_LOCAL_EXPLORER: 'false' },
    readyPath: '/ready',
    readyTimeoutMs: 90_000,
    // wrangler dev does not always leave on SIGTERM; its state is a temp dir, so a short grace.
    graceMs: 3000,
    name: 'the bench Worker',
  });
  return { url: w.url, pgid: w.pid, stop: w.stop };
}

/** CPU (user + system) and bytes written to storage so far by the workerd processes of process group `pgid` (Linux /proc; NaN elsewhere). */
function workerdUsage(pgid: number): { cpuMs: number; writeBytes: number } {
  let cpuMs = 0;
  let writeBytes = 0;
  let found = false;
  let pids: string[] = [];
  try {
    pids = readdirSync('/proc').filter((d) => /^\d+$/.test(d));
  } catch {
    return { cpuMs: Number.NaN, writeBytes: Number.NaN };
  }
  for (const pid of pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[2]) !== pgid || !comm.startsWith('workerd')) continue;
      cpuMs += ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
      const io = /^write_bytes: (\d+)$/m.exec(readFileSync(`/proc/${pid}/io`, 'utf8'));
      writeBytes += io ? Number(io[1]) : Number.NaN;
      found = true;
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  return found ? { cpuMs, writeBytes } : { cpuMs: Number.NaN, writeBytes: Number.NaN };
}

/** CPU used so far by this process and every process of group `pgid` (wrangler, workerd), ms. */
function ourCpuMs(pgid: number): number {
  const self = process.cpuUsage();
  let group = 0;
  try {
    for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
      try {
        const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
        const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        if (Number(fields[2]) === pgid) group += ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
      } catch {
        // gone meanwhile
      }
    }
  } catch {
    return Number.NaN;
  }
  return group + (self.user + self.system) / 1000;
}

/** What workerd used between `before` and now, per item. */
function usageSince(pgid: number, before: { cpuMs: number; writeBytes: number }, items: number, wallMs: number) {
  const now = workerdUsage(pgid);
  return {
    cpuUsPerItem: ((now.cpuMs - before.cpuMs) * 1000) / items,
    writeBytesPerItem: (now.writeBytes - before.writeBytes) / items,
    /** Share of one core workerd used meanwhile. */
    cpuShare: (now.cpuMs - before.cpuMs) / wallMs,
  };
}

// ---- measurements ------------------------------------------------------------



/** Per-item µs of a request that does `n` things, minus the same request doing none; median over rounds. */
async function perItemUs(base: string, route: (n: number) => string, n: number, what: string): Promise<{ us: number; rounds: number[] }> {
  await post(base, route(Math.min(n, 500))); // warm-up: JIT, first-call setup
  const rounds: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const empty = await post(base, route(0));
    const full = await post(base, route(n));
    rounds.push(((full.ms - empty.ms) * 1000) / n);
  }
  const us = median(rounds);
  log(`${what}: ${us.toFixed(1)} µs each (rounds: ${rounds.map((x) => x.toFixed(1)).join(', ')})`);
  return { us, rounds };
}

interface MerkleResult {
  size: number;
  leafHashMs: number;
  rootMs: number;
  chunkedBuildMs: number;
  chunkedProofUs: number;
  verifyUs: number;
  fullProofMs: number;
  fullProofs: number;
  proofs: number;
  ok: boolean;
}

/** (3a) receipts/merkle.ts in Node over `size` leaves. */
function merkleInNode(size: number, pool: readonly string[], rand: () => number): MerkleResult {
  const mask = pool.length - 1; // a power of two
  let t = performance.now();
  const leaves: Hash[] = new Array<Hash>(size);
  for (let i = 0; i < size; i++) leaves[i] = leafHash(pool[i & mask]!);
  const leafHashMs = performance.now() - t;

  t = performance.now();
  const root = merkleRoot(leaves);
  const rootMs = performance.now() - t;

  t = performance.now();
  const chunkRoots: Hash[] = [];
  for (let c = 0; c < size; c += CHUNK) chunkRoots.push(merkleRoot(leaves.slice(c, c + CHUNK)));
  const chunkedRoot = merkleRoot(chunkRoots);
  const chunkedBuildMs = performance.now() - t;
  let ok = equalHashes(root, chunkedRoot);

  const picks = Array.from({ length: PROOFS }, () => Math.floor(rand() * size));
  t = performance.now();
  const paths = picks.map((i) => chunkedProof(leaves.slice(i - (i % CHUNK), i - (i % CHUNK) + CHUNK), i % CHUNK, chunkRoots, Math.floor(i / CHUNK)));
  const chunkedProofUs = ((performance.now() - t) * 1000) / PROOFS;

  t = performance.now();
  for (let k = 0; k < PROOFS; k++) ok = verifyInclusion(leaves[picks[k]!]!, picks[k]!, size, paths[k]!, root) && ok;
  const verifyUs = ((performance.now() - t) * 1000) / PROOFS;

  // inclusionProof over the whole list rebuilds the tree each time: a few, up to ~3 s.
  let fullProofs = 0;
  t = performance.now();
  while (fullProofs < PROOFS && (fullProofs < 2 || performance.now() - t < 3000)) {
    const i = picks[fullProofs]!;
    const full = inclusionProof(leaves, i);
    ok = full.length === paths[fullProofs]!.length && full.every((h, k) => equalHashes(h, paths[fullProofs]![k]!)) && ok;
    fullProofs++;
  }
  const fullProofMs = (performance.now() - t) / fullProofs;
  return { size, leafHashMs, rootMs, chunkedBuildMs, chunkedProofUs, verifyUs, fullProofMs, fullProofs, proofs: PROOFS, ok };
}

interface StateAnswer {
  signed: { id: string; count: number; merkle_root: string }[];
  stats: { receipts: number; open: number; batches: Record<string, number> };
}

interface CloseAnswer {
  closed?: string[];
  error?: string;
  /** workerd's clock (ms) when the bench Worker called close(), and when it returned. */
  startedAt: number;
  endedAt: number;
  /** When the batch was seen archived (the ledger's alarm archives it after close() returns); NaN if never. */
  archivedAt: number;
  /** The ledger's archive bucket, seen through bench/settlement/worker.js's ArchiveTap. */
  archive: { firstIoAt: number; lastIoAt: number; calls: number; parts: number; bytes: number; events: [string, number][] };
}

interface CloseTiming {
  /** From the call to the batch archived: close, then the alarm's archive. */
  ms: number;
  /** close() itself: seal + tree + totals + sign; the batch is readable and provable when it returns. */
  signMs: number;
  /** From close() returning to the batch archived in R2 (the ledger's alarm). */
  archiveMs: number;
  error: string | undefined;
  parts: number;
  bytes: number;
  /** Mean ms between consecutive uploadPart completions (building one 8 MiB part and writing it). */
  msPerPart: number;
  events: [string, number][];
}

function closeTiming(a: CloseAnswer): CloseTiming {
  const partTimes = a.archive.events.filter(([what]) => what.startsWith('uploadPart')).map(([, t]) => t);
  const msPerPart = partTimes.length > 1 ? (partTimes[partTimes.length - 1]! - partTimes[0]!) / (partTimes.length - 1) : Number.NaN;
  const archived = Number.isFinite(a.archivedAt);
  return {
    ms: (archived ? a.archivedAt : a.endedAt) - a.startedAt,
    signMs: a.endedAt - a.startedAt,
    archiveMs: archived ? a.archivedAt - a.endedAt : Number.NaN,
    error: a.error ?? (archived ? undefined : 'the batch was never archived'),
    parts: a.archive.parts,
    bytes: a.archive.bytes,
    msPerPart,
    events: a.archive.events,
  };
}

interface LedgerResult {
  size: number;
  loadMs: number;
  loadPerS: number;
  load: ReturnType<typeof usageSince>;
  /** Appends per second over the load's last step (its signing time subtracted), once the shard holds ~90% of `size`. */
  lastAppendPerS: number;
  /** close(), end to end and split at the first archive write; `error` when it failed. */
  close: CloseTiming;
  archiveBytes: number;
  archiveObjects: string[];
  /** The ledger's chunked Merkle build over `size` leaf hashes already in memory, in workerd. */
  treeMs: number;
  /** Reading the batch's receipts through receipts() in pages of 2000 (the archive's page size), µs per receipt, and how many. */
  readUs: number;
  readCount: number;
  proofMs: number;
  rpcFloorMs: number;
  proofsOk: number;
  proofsVerified: number;
  batchId: string;
  merkleRoot: string;
}

/** (3b) One batch of `size` receipts in a fresh ledger: load, close (timed, split), proofs. */
async function ledgerBatch(w: Worker, size: number, run: number, jwks: Jwks, rand: () => number, signUs: number): Promise<LedgerResult> {
  const base = w.url;
  const name = `batch-${size}-${run}`;
  log(`ledger ${fmt(size)}: loading ${fmt(size)} receipts into one shard (signed in workerd, appended in batches of ${BATCH} by ${LOAD_CALLERS} callers)`);
  const step = Math.max(BATCH, Math.ceil(size / 10 / BATCH) * BATCH);
  const usage0 = workerdUsage(w.pgid);
  const loadStart = performance.now();
  let lastStep = { count: 0, ms: 0 };
  for (let from = 0; from < size; from += step) {
    const count = Math.min(step, size - from);
    const stepStart = performance.now();
    const a = await post<{ appended: number; duplicate: number; invalid: number }>(base, `/load?do=${name}&run=${run}&from=${from}&count=${count}&callers=${LOAD_CALLERS}&batch=${BATCH}`);
    if (a.value.appended !== count) throw new Error(`load: ${count} receipts sent, ${JSON.stringify(a.value)}`);
    lastStep = { count, ms: performance.now() - stepStart };
    const done = from + count;
    const elapsed = performance.now() - loadStart;
    log(`  ${String(Math.round((done * 100) / size)).padStart(3)}%  ${fmt(done)} receipts, ${sec(elapsed)}, ${fmt((done * 1000) / elapsed)}/s${done < size ? `, ~${sec((elapsed / done) * (size - done))} left` : ''}`);
  }
  // A call to the same object: it answers once whatever the appends left behind is done.
  const before = (await post<StateAnswer>(base, `/state?do=${name}`)).value;
  const loadMs = performance.now() - loadStart;
  const load = usageSince(w.pgid, usage0, size, loadMs);
  if (before.stats.open !== size) throw new Error(`the open batch holds ${before.stats.open} receipts, not ${size}`);
  // Appends alone near the end of the load: the last step's time less its signing (one thread does both).
  const lastAppendPerS = (lastStep.count * 1000) / (lastStep.ms - (lastStep.count * signUs) / 1000);
  log(`  appends alone over the last ${fmt(lastStep.count)} (signing subtracted): ${fmt(lastAppendPerS)} receipts/s`);
  log(`  workerd: ${fmt(load.cpuUsPerItem)} µs of CPU and ${fmt(load.writeBytesPerItem / 1024, 1)} KiB written to disk per receipt (${fmt(load.cpuShare * 100)}% of one core)`);

  log(`ledger ${fmt(size)}: close(shard), timed`);
  const close = closeTiming((await post<CloseAnswer>(base, `/close?do=${name}`)).value);
  if (close.error === undefined) {
    log(`  closed (seal + tree + totals + sign) in ${sec(close.signMs)}; archived by the alarm ${sec(close.archiveMs)} later (${close.parts} parts, ${(close.bytes / 2 ** 20).toFixed(0)} MiB)`);
  } else {
    log(`  close FAILED after ${sec(close.ms)} (seal + tree + totals + sign ${sec(close.signMs)}, then ${close.parts} archive parts): ${close.error.split('\n')[0]}`);
  }

  // Signed even when the archive failed: the batch, its proofs and its receipts are there.
  const after = (await post<StateAnswer>(base, `/state?do=${name}`)).value;
  const batch = after.signed[0];
  if (!batch || batch.count !== size || after.signed.length !== 1) throw new Error(`expected one signed batch of ${size}: ${JSON.stringify(after.signed)}`);
  const objects = (await post<{ key: string; size: number }[]>(base, `/archive?id=${batch.id}`)).value;
  const names = objects.map((o) => o.key.split('/').pop()!);
  if (close.error === undefined && (!names.includes('batch.json') || !names.includes('receipts.ndjson'))) throw new Error(`archive incomplete: ${names.join(', ')}`);

  log(`ledger ${fmt(size)}: where closing goes: the Merkle build alone in workerd, and reading the receipts back`);
  await post(base, `/micro?what=leaves&n=${size}`);
  const tree = await post(base, `/micro?what=tree&n=${size}`);
  await post(base, `/micro?what=leaves&n=0`);
  const readCount = Math.min(size, 200_000);
  const read = await post<{ read: number }>(base, `/read?do=${name}&id=${batch.id}&from=0&count=${readCount}`);
  if (read.value.read !== readCount) throw new Error(`read ${read.value.read} receipts back, not ${readCount}`);
  const readUs = (read.ms * 1000) / readCount;
  log(`  chunked Merkle build over ${fmt(size)} leaf hashes in memory: ${sec(tree.ms)}; reading receipts back through receipts(): ${readUs.toFixed(1)} µs each`);

  log(`ledger ${fmt(size)}: proof(shard, jti) for ${fmt(PROOFS)} random leaves, one call after another`);
  const leaves = Array.from({ length: PROOFS }, () => Math.floor(rand() * size));
  await post(base, `/proofs?do=${name}&run=${run}`, leaves.slice(0, 20)); // warm-up
  const floor = await post(base, `/rpc?do=${name}&n=${PROOFS}`);
  const proofs = await post<{ asked: number; ok: number; kept: { leaf: number; jti: string; proof: InclusionProof }[] }>(base, `/proofs?do=${name}&run=${run}&keep=5`, leaves);
  const { batch: batchJwt } = (await post<{ batch: string }>(base, `/batch?do=${name}&id=${batch.id}`)).value;
  let verified = 0;
  for (const k of proofs.value.kept) {
    const { receipt } = (await post<{ receipt: string }>(base, `/receipt?do=${name}&id=${batch.id}&leaf=${k.proof.leaf_index}`)).value;
    const v = await verifyInclusionProof(receipt, k.proof, batchJwt, jwks, { issuer: ISSUER });
    if (v.receipt.jti === k.jti && v.batch.count === size) verified++;
  }
  const proofMs = proofs.ms / PROOFS;
  const rpcFloorMs = floor.ms / PROOFS;
  log(`  proof: ${proofMs.toFixed(2)} ms per call (a trivial RPC: ${rpcFloorMs.toFixed(2)} ms); ${proofs.value.ok}/${PROOFS} found, ${verified}/${proofs.value.kept.length} checked with receipts/verify.ts`);
  if (proofs.value.ok !== PROOFS || verified !== proofs.value.kept.length) throw new Error('some proofs were missing or did not verify');

  return {
    size,
    loadMs,
    loadPerS: (size * 1000) / loadMs,
    load,
    lastAppendPerS,
    close,
    archiveBytes: objects.reduce((n, o) => n + o.size, 0),
    archiveObjects: names,
    treeMs: tree.ms,
    readUs,
    readCount,
    proofMs,
    rpcFloorMs,
    proofsOk: proofs.value.ok,
    proofsVerified: verified,
    batchId: batch.id,
    merkleRoot: batch.merkle_root,
  };
}

// ---- main --------------------------------------------------------------------

async function main(): Promise<void> {
  const started = performance.now();
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  log(`${os.cpus().length} CPU(s) (${os.cpus()[0]?.model ?? '?'}), node ${process.version}, ${Math.round(os.totalmem() / 2 ** 30)} GiB memory`);
  log(`sizes: ledger ${SIZES.map((n) => fmt(n)).join(', ')}; Merkle in Node ${MERKLE_SIZES.map((n) => fmt(n)).join(', ')}`);

  // Disk per receipt: SQLite ~2.1 KB (row, jti index, free pages), R2 ~1.6 KB (plus a failed upload's parts until aborted).
  const receiptBytes = 1600;
  const needBytes = (SIZES.reduce((a, b) => a + b, 0) + APPEND_RECEIPTS * CALLERS.length + SIGN) * receiptBytes * 4 + 2 ** 30;
  const fsStat = statfsSync(os.tmpdir());
  const freeBytes = fsStat.bavail * fsStat.bsize;
  log(`disk: ${(freeBytes / 2 ** 30).toFixed(1)} GiB free in ${os.tmpdir()}, this run needs about ${(needBytes / 2 ** 30).toFixed(1)} GiB`);
  if (freeBytes < needBytes) {
    throw new Error(`not enough disk in ${os.tmpdir()}: ${(freeBytes / 2 ** 30).toFixed(1)} GiB free, about ${(needBytes / 2 ** 30).toFixed(1)} GiB needed; use smaller SETTLEMENT_BENCH_SIZES or set TMPDIR`);
  }

  const tmp = await mkdtemp(path.join(os.tmpdir(), 'mesh-bench-settlement-'));
  let worker: Worker | undefined;
  let stopping: Promise<void> | undefined;
  const stopAll = () =>
    (stopping ??= (async () => {
      await worker?.stop().catch(() => undefined);
      await rm(tmp, { recursive: true, force: true });
    })());
  const onSignal = (sig: NodeJS.Signals) => {
    log(`${sig}: stopping the bench Worker and deleting ${tmp}`);
    void stopAll().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  try {
    // Local-dev signing key for this run only.
    const key = await generateEd25519(`bench-local-dev-${Date.now().toString(36)}`);
    const envFile = path.join(tmp, 'bench.env');
    await writeFile(envFile, `# LOCAL-DEV signing key generated by bench/settlement.ts for one run.\nMESH_SIGNING_KEYS='${JSON.stringify({ keys: [key.privateJwk] })}'\n`, { mode: 0o600 });
    log(`bundling bench/settlement/ (a snapshot: later edits to the code do not reach this run)`);
    const config = await bundleWorker(tmp);
    log(`starting the bench Worker (wrangler dev, workerd; state in ${tmp})`);
    worker = await startWorker(config, envFile, path.join(tmp, 'state'));
    const base = worker.url;
    log(`bench Worker ready at ${base}`);
    const busy0 = { machine: machineBusyMs(), ours: ourCpuMs(worker.pgid), at: performance.now() };
    const jwks = (await post<Jwks>(base, '/jwks')).value;
    const rand = seededUnit(0x5e77); // the leaves a run picks are reproducible

    // (3a) Merkle in Node, over real receipts.
    const samples = (await post<string[]>(base, '/sample?run=1&n=1024')).value;
    const merkle: MerkleResult[] = [];
    for (const size of MERKLE_SIZES) {
      log(`Merkle in Node, ${fmt(size)} leaves: leafHash, merkleRoot, the ledger's chunked build, ${fmt(PROOFS)} proofs`);
      const m = merkleInNode(size, samples, rand);
      log(
        `  leafHash ${sec(m.leafHashMs)} (${((m.leafHashMs * 1000) / size).toFixed(2)} µs each), merkleRoot ${sec(m.rootMs)}, chunked ${sec(m.chunkedBuildMs)}, ` +
          `chunkedProof ${m.chunkedProofUs.toFixed(0)} µs, verifyInclusion ${m.verifyUs.toFixed(1)} µs, inclusionProof (whole list) ${m.fullProofMs.toFixed(1)} ms; ${m.ok ? 'all consistent' : 'MISMATCH'}`,
      );
      if (!m.ok) throw new Error('Merkle results disagree (roots or proofs)');
      merkle.push(m);
    }

    // (1) Signing and the queue send.
    log(`signing: building ${fmt(SIGN)} receipts' claims (not timed), then signing them in one request, ${ROUNDS} rounds`);
    await post(base, `/claims?run=2&n=${SIGN}`);
    const sizeInfo = (await post<{ meanChars: number; minChars: number; maxChars: number }>(base, `/sign?n=${Math.min(SIGN, 1000)}`)).value;
    const attestationChars = Math.round(
      samples.reduce((n, jwt) => n + (JSON.parse(Buffer.from(jwt.split('.')[1]!, 'base64url').toString('utf8')) as { attestation: string }).attestation.length, 0) / samples.length,
    );
    const sign = await perItemUs(base, (n) => `/sign?n=${n}`, SIGN, 'signReceipt in workerd');
    const poolSize = Math.max(APPEND_RECEIPTS, SENDS);
    log(`signing a pool of ${fmt(poolSize)} receipts for the send and append phases`);
    await post(base, `/pool?run=3&n=${poolSize}`);
    const send = await perItemUs(base, (n) => `/send?n=${n}&batch=1`, SENDS, 'queue send, one receipt per sendBatch, in Miniflare');
    const sendBatched = await perItemUs(base, (n) => `/send?n=${n}&batch=16`, SENDS, 'queue send, 16 receipts per sendBatch, in Miniflare');

    // (2) Appends into one shard.
    const appends: Measured['appends'] = [];
    for (const callers of CALLERS) {
      const name = `append-c${callers}`;
      await post(base, `/state?do=${name}`); // the object exists and is warm before timing
      const usage0 = workerdUsage(worker.pgid);
      const t0 = performance.now();
      const a = await post<{ appended: number; calls: number }>(base, `/append?do=${name}&callers=${callers}&batch=${BATCH}`);
      await post(base, `/state?do=${name}`); // answers once whatever the appends left behind is done
      const ms = performance.now() - t0;
      if (a.value.appended !== APPEND_RECEIPTS) throw new Error(`append: ${JSON.stringify(a.value)}`);
      const perS = (APPEND_RECEIPTS * 1000) / ms;
      const usage = usageSince(worker.pgid, usage0, APPEND_RECEIPTS, ms);
      appends.push({ callers, perS, ms, msPerCall: ms / a.value.calls, ...usage });
      log(
        `appends, one shard, ${callers} caller(s): ${fmt(APPEND_RECEIPTS)} receipts in ${sec(ms)}: ${fmt(perS)} receipts/s (${(ms / a.value.calls).toFixed(1)} ms per call of ${BATCH}); ` +
          `workerd ${fmt(usage.cpuUsPerItem)} µs CPU and ${fmt(usage.writeBytesPerItem / 1024, 1)} KiB written per receipt, ${fmt(usage.cpuShare * 100)}% of one core`,
      );
    }
    const micro = Math.min(APPEND_RECEIPTS, 10_000);
    const parts = {
      decode: (await perItemUs(base, (n) => `/micro?what=decode&n=${n}`, micro, 'append breakdown: decodePayload')).us,
      leaf: (await perItemUs(base, (n) => `/micro?what=leaf&n=${n}`, micro, 'append breakdown: leafHash')).us,
      rpc: (await perItemUs(base, (n) => `/micro?what=rpc&n=${n}&do=rpc-probe`, micro, 'append breakdown: RPC + per-call work (refused receipts)')).us,
    };
    const archiveParts = {
      ndjsonUs: (await perItemUs(base, (n) => `/micro?what=ndjson&n=${n}`, micro, 'archive breakdown: one NDJSON line, as archive.ts builds it')).us,
      r2PartMs: (await perItemUs(base, (n) => `/micro?what=r2part&n=${n}`, 10, 'archive breakdown: one 8 MiB multipart part into Miniflare R2')).us / 1000,
    };
    const appendUs = 1e6 / appends[0]!.perS;
    const rest = appendUs - parts.decode - parts.leaf - parts.rpc;
    log(`append breakdown (${appends[0]!.callers} caller): ${appendUs.toFixed(0)} µs per receipt = decodePayload ${parts.decode.toFixed(0)} + leafHash ${parts.leaf.toFixed(0)} + RPC/call ${parts.rpc.toFixed(0)} + SQLite insert and the rest ${rest.toFixed(0)}`);

    // (3b) Batches in the ledger.
    const ledgers: LedgerResult[] = [];
    for (const [i, size] of SIZES.entries()) ledgers.push(await ledgerBatch(worker, size, 100 + i, jwks, rand, sign.us));

    const totalMs = performance.now() - started;
    const otherCpu = Math.max(0, machineBusyMs() - busy0.machine - (ourCpuMs(worker.pgid) - busy0.ours)) / (os.cpus().length * (performance.now() - busy0.at));
    const results = report({ otherCpu, sign, sizeInfo, attestationChars, send, sendBatched, appends, parts, archiveParts, appendUs, rest, merkle, ledgers, totalMs });
    await writeResults(`settlement-${stamp}.json`, results, log);
  } finally {
    log('stopping the bench Worker and deleting its state');
    await stopAll();
  }
}

interface Measured {
  /** Share of the machine that processes other than the bench's used during the measurements. */
  otherCpu: number;
  sign: { us: number; rounds: number[] };
  sizeInfo: { meanChars: number; minChars: number; maxChars: number };
  attestationChars: number;
  send: { us: number; rounds: number[] };
  sendBatched: { us: number; rounds: number[] };
  appends: ({ callers: number; perS: number; ms: number; msPerCall: number } & ReturnType<typeof usageSince>)[];
  parts: { decode: number; leaf: number; rpc: number };
  archiveParts: { ndjsonUs: number; r2PartMs: number };
  appendUs: number;
  rest: number;
  merkle: MerkleResult[];
  ledgers: LedgerResult[];
  totalMs: number;
}

function report(m: Measured): unknown {
  const rows: [string, string, string][] = [];
  const signMet = m.sign.us < GOAL_SIGN_US;
  rows.push(['receipt JWT size (all section 4 claims)', `${fmt(m.sizeInfo.meanChars)} chars (${fmt(m.sizeInfo.minChars)}-${fmt(m.sizeInfo.maxChars)}), attestation ${fmt(m.attestationChars)} chars`, '-']);
  rows.push([
    'receipt signing in workerd (signReceipt)',
    `${m.sign.us.toFixed(1)} µs per receipt = ${fmt(1e6 / m.sign.us)} receipts/s (one thread)`,
    `< ${GOAL_SIGN_US} µs per request: **${signMet ? 'met' : 'NOT met'}**`,
  ]);
  rows.push([
    'queue send per receipt (`recordReceipt`, in waitUntil after the answer; Miniflare local queue, not production): alone / 16 per sendBatch',
    `${(m.send.us / 1000).toFixed(2)} ms / ${(m.sendBatched.us / 1000).toFixed(3)} ms`,
    '- (reported separately)',
  ]);
  for (const a of m.appends) {
    rows.push([
      `ledger appends, ONE shard, RPC batches of ${BATCH}, ${a.callers} caller${a.callers > 1 ? 's' : ''}`,
      `**${fmt(a.perS)} receipts/s** (${a.msPerCall.toFixed(1)} ms per call; workerd ${fmt(a.cpuShare * 100)}% of one core, ${fmt(a.writeBytesPerItem / 1024, 1)} KiB written per receipt)`,
      '-',
    ]);
  }
  rows.push([
    'append time per receipt: decodePayload + leafHash + RPC/call + SQLite insert & rest',
    `${m.appendUs.toFixed(0)} µs = ${m.parts.decode.toFixed(0)} + ${m.parts.leaf.toFixed(0)} + ${m.parts.rpc.toFixed(0)} + ${m.rest.toFixed(0)}`,
    '-',
  ]);
  for (const r of m.merkle) {
    const n = fmt(r.size);
    rows.push([`Merkle in Node, ${n}: leafHash of every receipt`, `${sec(r.leafHashMs)} (${((r.leafHashMs * 1000) / r.size).toFixed(2)} µs each)`, '-']);
    rows.push([`Merkle in Node, ${n}: merkleRoot / ledger's chunked build`, `${sec(r.rootMs)} / ${sec(r.chunkedBuildMs)}`, '-']);
    rows.push([`Merkle in Node, ${n}: proof (ledger's chunkedProof) / verifyInclusion`, `${(r.chunkedProofUs / 1000).toFixed(2)} ms / ${r.verifyUs.toFixed(1)} µs (mean of ${fmt(r.proofs)})`, '-']);
    rows.push([`Merkle in Node, ${n}: inclusionProof over the whole leaf list (rebuilds the tree)`, `${r.fullProofMs.toFixed(1)} ms (mean of ${r.fullProofs})`, '-']);
  }
  let closeVerdict = `not run (SETTLEMENT_BENCH_SIZES has no ${fmt(GOAL_CLOSE_SIZE)})`;
  for (const l of m.ledgers) {
    const n = fmt(l.size);
    rows.push([
      `ledger ${n}: load (sign + append, ${LOAD_CALLERS} callers)`,
      `${sec(l.loadMs)} (${fmt(l.loadPerS)} receipts/s; workerd ${fmt(l.load.cpuUsPerItem)} µs CPU, ${fmt(l.load.writeBytesPerItem / 1024, 1)} KiB written per receipt)`,
      '-',
    ]);
    rows.push([`ledger ${n}: appends alone over the load's last 10% (signing time subtracted)`, `**${fmt(l.lastAppendPerS)} receipts/s** into a shard that already holds ${fmt(l.size * 0.9)}`, '-']);
    const c = l.close;
    const failed = c.error !== undefined;
    const met = !failed && c.signMs < GOAL_CLOSE_S * 1000;
    const isGoal = l.size === GOAL_CLOSE_SIZE;
    rows.push([
      `ledger ${n}: **close(shard)**: seal + tree + totals + sign (the batch is readable and provable when it returns)`,
      failed ? `**FAILED** after ${sec(c.ms)}: ${c.error!.split('\n')[0]}` : `**${sec(c.signMs)}**`,
      isGoal ? `< ${GOAL_CLOSE_S} s: **${met ? 'met' : 'NOT met'}**` : '-',
    ]);
    if (isGoal) closeVerdict = `${met ? 'met' : 'NOT met'}: ${failed ? `close FAILED after ${sec(c.ms)} (${c.error!.split('\n')[0]})` : sec(c.signMs)} (then the archive, ${sec(c.archiveMs)}, in the alarm)`;
    rows.push([
      `ledger ${n}: … of which the Merkle build (the same chunked build over ${n} leaf hashes in memory, in workerd)`,
      `${sec(l.treeMs)}; the rest, ≈ ${sec(c.signMs - l.treeMs)}, is the scan of ${n} receipt rows and the totals`,
      '-',
    ]);
    rows.push([`ledger ${n}: close to archived, end to end`, `${sec(c.ms)}`, '-']);
    const pace = Number.isFinite(c.msPerPart) ? `; ${c.msPerPart.toFixed(0)} ms per 8 MiB part` : '';
    rows.push([`ledger ${n}: … archive to R2 by the alarm, after close() returned${failed ? ' (failed)' : ''}`, `${sec(c.archiveMs)} (${(c.bytes / 2 ** 20).toFixed(0)} MiB, ${c.parts} parts${pace})`, '-']);
    const perReceipt = (c.archiveMs * 1000) / l.size;
    const r2PerReceipt = (m.archiveParts.r2PartMs * 1000 * c.bytes) / PART_BYTES / l.size;
    rows.push([
      `ledger ${n}: … archive per receipt: read rows + NDJSON line + R2 write`,
      `${perReceipt.toFixed(1)} µs measured; pieces: ${l.readUs.toFixed(1)} (receipts() RPC, pages of 2000) + ${m.archiveParts.ndjsonUs.toFixed(1)} + ${r2PerReceipt.toFixed(1)} (${m.archiveParts.r2PartMs.toFixed(0)} ms per 8 MiB part)`,
      '-',
    ]);
    rows.push([`ledger ${n}: proof(shard, jti), random leaves, one RPC each`, `${l.proofMs.toFixed(2)} ms (a trivial RPC: ${l.rpcFloorMs.toFixed(2)} ms)`, '-']);
  }
  if (!m.ledgers.some((l) => l.size === GOAL_CLOSE_SIZE) && m.ledgers.length > 0) {
    const big = m.ledgers[m.ledgers.length - 1]!;
    const factor = GOAL_CLOSE_SIZE / big.size;
    closeVerdict += `; projected linearly from ${fmt(big.size)}: close ≈ ${sec(big.close.signMs * factor)}, archived ≈ ${sec(big.close.ms * factor)}, load ≈ ${sec(big.loadMs * factor)}`;
  }

  const lines = [
    '',
    `Settlement bench, ${os.cpus().length} cores (${os.cpus()[0]?.model ?? '?'}); workerd via wrangler dev (Miniflare storage${LOCAL_TRACES ? ', local trace store ON' : ', local trace store off'}); one run`,
    '',
    '| measure | value | goal |',
    '| --- | --- | --- |',
    ...rows.map(([a, b, c]) => `| ${a} | ${b} | ${c} |`),
    '',
    `Goal "signing adds under 0.1 ms per request": ${signMet ? 'met' : 'NOT met'} (${m.sign.us.toFixed(1)} µs).`,
    `Goal "a ${fmt(GOAL_CLOSE_SIZE)}-receipt batch closes in under ${GOAL_CLOSE_S} s": ${closeVerdict}.`,
    `One shard holds about ${fmt(Math.max(...m.appends.map((a) => a.perS)))} appends/s here while small (${fmt(APPEND_RECEIPTS)} receipts)` +
      (m.ledgers.length > 0 ? `, about ${fmt(m.ledgers[m.ledgers.length - 1]!.lastAppendPerS)}/s once it holds ${fmt(m.ledgers[m.ledgers.length - 1]!.size * 0.9)} (the jti index grows; bytes written per receipt rise).` : '.'),
    `The queue send is Miniflare's local queue: indicative only, not production's.`,
    `Other processes used ${fmt(m.otherCpu * 100)}% of the machine (${os.cpus().length} cores) meanwhile${m.otherCpu > 0.05 ? ': WARNING, the numbers may be low; rerun on a quiet machine' : ''}.`,
    `command: ${commandLine()}`,
    `(total ${sec(m.totalMs)})`,
  ];
  console.log(lines.join('\n'));
  return {
    date: new Date().toISOString(),
    command: commandLine(),
    machine: { cores: os.cpus().length, cpu: os.cpus()[0]?.model, memoryGiB: Math.round(os.totalmem() / 2 ** 30), node: process.version, platform: `${os.platform()} ${os.arch()}` },
    settings: { localTraces: LOCAL_TRACES, sizes: SIZES, merkleSizes: MERKLE_SIZES, sign: SIGN, sends: SENDS, rounds: ROUNDS, appendReceipts: APPEND_RECEIPTS, callers: CALLERS, loadCallers: LOAD_CALLERS, batch: BATCH, proofs: PROOFS },
    otherCpu: m.otherCpu,
    goals: { signUs: GOAL_SIGN_US, closeSeconds: GOAL_CLOSE_S, closeSize: GOAL_CLOSE_SIZE },
    receipt: { ...m.sizeInfo, attestationChars: m.attestationChars },
    sign: { usPerReceipt: m.sign.us, perSecond: 1e6 / m.sign.us, rounds: m.sign.rounds, met: signMet },
    queueSend: { usPerReceiptAlone: m.send.us, usPerReceiptIn16: m.sendBatched.us, rounds: m.send.rounds, note: "Miniflare's local queue, not production's" },
    appends: m.appends,
    appendBreakdownUs: { total: m.appendUs, ...m.parts, insertAndRest: m.rest },
    archiveBreakdown: m.archiveParts,
    merkle: m.merkle,
    ledger: m.ledgers,
    closeGoal: closeVerdict,
    table: rows,
    totalMs: m.totalMs,
  };
}

function commandLine(): string {
  const knobs = Object.entries(process.env)
    .filter(([k]) => k.startsWith('SETTLEMENT_BENCH_'))
    .map(([k, v]) => `${k}=${v}`);
  return [...knobs, 'npm run bench:settlement'].join(' ');
}

main().catch((err: unknown) => {
  console.error('[bench] failed:', err);
  process.exitCode = 1;
});
