/**
 * Real faults on a real local mesh: the Worker in workerd (wrangler dev) and
 * six real backend processes (ONNX Runtime, CPU provider), each behind a fault
 * proxy of our own (test/helpers/fault-proxy.ts) whose URL it announces, so
 * the edge reaches every backend through its proxy (heartbeats go straight to
 * the edge, so a faulty backend still looks alive to the directory). A steady
 * stream of `embed` requests from simulated PoPs (SIN, CGK, FRA, IAD;
 * MESH_DEV's x-mesh-dev-colo) runs while a backend flaps, hangs, is slowed,
 * resets until ejected, is killed, while a whole pinned region is out, and
 * while one backend stalls (hedging).
 *
 *   ap-southeast: sg-1, sg-2, sg-3   (SIN, CGK; three, so that with one
 *                                     ejected, the half-region cap, two stay)
 *   eu-west:      fra-1, fra-2       (FRA)
 *   us-east:      iad-1              (IAD)
 *
 * The scenarios share one mesh and one edge isolate, so its routing memory
 * (ejections for 30 s, the retry budget's 10 s window, latency samples)
 * carries from one to the next, and their order matters: iad-1 flaps first,
 * so that its ejection is over when it stalls for the hedging test at the
 * end; fra-2's ejection and its recovery are two tests around the others, so
 * that the 30 s ejection (workers/routing/outliers.ts) overlaps them; sg-2
 * hangs before sg-3 is killed, so that no other ejection in ap-southeast
 * (at most half a region, here one of three) keeps the hung backend in
 * rotation; the pinned outage comes after the kill, so that one of the three
 * is still ejected and every request has exactly two candidates (one retry),
 * which is what the retry budget has to cap.
 *
 * A failed consumer request is any answer but a 200 with exactly one
 * `x-mesh-receipt` that verifies against the JWKS and names the backend that
 * answered; receipt ids must be unique across the whole file. Every scenario
 * prints one `[faults]` line (requests, failures and why, receipts, latency,
 * who answered, the hedges and failed attempts the edge logged, what the
 * proxies saw); afterAll prints them again as the matrix.
 *
 * Knobs for investigating (defaults are what the suite runs with):
 * FAULTS_PAUSE_MS (pause between one loop's requests, 50) and
 * FAULTS_LOG=<file> (every line the edge and the backends printed).
 */

import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createLocalJWKSet, jwtVerify, type JSONWebKeySet, type JWTVerifyGetKey } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TYP, type ReceiptClaims } from '../../shared/jwt.ts';
import { startMesh, type BackendSpec, type LocalMesh, type RunningBackend } from '../../scripts/local-mesh.ts';
import { startFaultProxy, type FaultProxy, type FaultProxyStats } from '../helpers/fault-proxy.ts';
import { settle } from '../helpers/settlement.ts';

const SPECS: BackendSpec[] = [
  { id: 'sg-1', region: 'ap-southeast', provider: 'provider-sg-1' },
  { id: 'sg-2', region: 'ap-southeast', provider: 'provider-sg-2' },
  { id: 'sg-3', region: 'ap-southeast', provider: 'provider-sg-3' },
  { id: 'fra-1', region: 'eu-west', provider: 'provider-fra-1' },
  { id: 'fra-2', region: 'eu-west', provider: 'provider-fra-2' },
  { id: 'iad-1', region: 'us-east', provider: 'provider-iad-1' },
];
/** The edge's per-attempt timeout here (BACKEND_TIMEOUT_MS); short, so a hung backend costs a request 1.5 s, not 15 s. */
const BACKEND_TIMEOUT_MS = 1_500;
/** workers/routing/outliers.ts defaults: 5 consecutive failures eject for 30 s (first time). */
const EJECT_AFTER = 5;
const EJECTION_MS = 30_000;
/** workers/routing/retry-budget.ts defaults. */
const BUDGET = { ratio: 0.2, floor: 3 * 10, windowMs: 10_000 };
/** A consumer request that has no answer after this long is a failure (a hang). */
const REQUEST_TIMEOUT_MS = 10_000;
/** Upper bound on the requests one stream loop sends, whatever its duration. */
const MAX_PER_LOOP = 2_000;

let mesh: LocalMesh;
let dir: string;
let jwks: JWTVerifyGetKey;
const proxies = new Map<string, FaultProxy>();
const logs: string[] = [];
/** Every request of the file, for the retry budget's window and the receipt ids. */
const all: Sample[] = [];
const jtis = new Set<string>();
const matrix: string[] = [];

const proxy = (id: string) => proxies.get(id)!;
const backend = (id: string): RunningBackend => mesh.backends.find((b) => b.id === id)!;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'mesh-faults-'));
  try {
    mesh = await startMesh({
      port: 0,
      backendPortBase: 0,
      dir,
      backends: SPECS,
      log: (line) => logs.push(line),
      edgeVars: { BACKEND_TTL_SECONDS: '3', SNAPSHOT_REFRESH_MS: '500', BACKEND_TIMEOUT_MS: String(BACKEND_TIMEOUT_MS) },
      backendEnv: { HEARTBEAT_INTERVAL_MS: '500', MODELS: 'embed' },
      readyTimeoutMs: 90_000,
      publicUrl: async (spec, port) => {
        const p = await startFaultProxy({ target: { host: '127.0.0.1', port } });
        proxies.set(spec.id, p);
        return p.url;
      },
    });
    const set = (await (await fetch(`${mesh.edgeUrl}/.well-known/jwks.json`)).json()) as JSONWebKeySet;
    jwks = createLocalJWKSet(set);
  } catch (err) {
    console.error(logs.slice(-200).join('\n'));
    throw err;
  }
});

afterAll(async () => {
  await mesh?.stop();
  await Promise.all([...proxies.values()].map((p) => p.close()));
  await rm(dir, { recursive: true, force: true });
  if (matrix.length > 0) console.log(['[faults] matrix', ...matrix].join('\n'));
  // FAULTS_LOG=<file> keeps every line the edge and the backends printed.
  if (process.env.FAULTS_LOG) await writeFile(process.env.FAULTS_LOG, logs.join('\n') + '\n');
});

// ---------------------------------------------------------------------------
// The stream

interface Sample {
  pop: string;
  /** ms since epoch when sent and when the answer (or the error) was complete. */
  sent: number;
  done: number;
  status: number;
  backend: string | undefined;
  receipts: number;
  jti: string | undefined;
  /** The receipt JWT, when the request was answered. */
  receipt?: string;
  /** Why it counts as failed: the error code, a receipt problem or a client error. */
  failure: string | undefined;
  /** The error message the consumer was given, when the edge answered with an error. */
  message?: string;
}

interface StreamOptions {
  /** PoPs and how many loops each. */
  loops: Record<string, number>;
  durationMs: number;
  /** Pause between one loop's requests. */
  pauseMs?: number;
  headers?: Record<string, string>;
}

const embedBody = JSON.stringify({ inputs: [{ name: 'text', shape: [1], datatype: 'BYTES', data: ['the quick brown fox jumps over the lazy dog'] }] });

async function one(pop: string, headers: Record<string, string> = {}): Promise<Sample> {
  const sent = Date.now();
  const base = { pop, sent, backend: undefined, receipts: 0, jti: undefined };
  try {
    const res = await fetch(`${mesh.edgeUrl}/v2/models/embed/infer`, {
      method: 'POST',
      // No sampled re-execution (test/integration/verification.test.ts covers it): every attempt here is one the test made.
      // No answer cache (test/integration/cache.test.ts covers it): every request is computed by a backend.
      headers: {
        authorization: `Bearer ${mesh.consumerKey}`,
        'content-type': 'application/json',
        'x-mesh-dev-colo': pop,
        'x-mesh-verify': 'none',
        'cache-control': 'no-store',
        ...headers,
      },
      body: embedBody,
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
    const body = await res.text();
    const header = res.headers.get('x-mesh-receipt');
    // Several headers of one name come joined by ", "; a JWT has neither.
    const receipts = header === null ? 0 : header.split(',').length;
    const answeredBy = res.headers.get('x-mesh-backend') ?? undefined;
    const sample: Sample = { ...base, done: Date.now(), status: res.status, backend: answeredBy, receipts, failure: undefined };
    if (res.status !== 200) {
      let code = `http_${res.status}`;
      let message: string | undefined;
      try {
        const error = (JSON.parse(body) as { error?: { code?: string; message?: string } }).error;
        code = (error?.code ?? code) + (/retry budget/.test(body) ? ':budget' : '');
        message = error?.message;
      } catch {
        // not JSON: keep the status
      }
      if (receipts !== 0) code += ':receipt_on_failure';
      return { ...sample, failure: code, ...(message !== undefined ? { message } : {}) };
    }
    if (receipts !== 1) return { ...sample, failure: `receipts=${receipts}` };
    try {
      const { payload } = await jwtVerify<ReceiptClaims>(header!, jwks, { algorithms: ['EdDSA'], typ: TYP.receipt, issuer: mesh.edgeUrl });
      if (payload.backend !== answeredBy) return { ...sample, failure: `receipt names ${payload.backend}, header ${answeredBy}` };
      return { ...sample, jti: payload.jti, receipt: header! };
    } catch (err) {
      return { ...sample, failure: `bad receipt: ${(err as Error).message}` };
    }
  } catch (err) {
    return { ...base, done: Date.now(), status: 0, failure: (err as Error).name === 'TimeoutError' ? 'client_timeout' : `client: ${(err as Error).message}` };
  }
}

/**
 * Runs `o.loops` closed loops for `o.durationMs` (each at most MAX_PER_LOOP
 * requests) while `script` runs alongside with `at(ms)` to wait for a moment
 * of the stream; returns every request's sample once both are done.
 */
async function stream(o: StreamOptions, script: (at: (ms: number) => Promise<void>, elapsed: () => number) => Promise<void> = async () => {}): Promise<Sample[]> {
  const start = Date.now();
  const pause = o.pauseMs ?? Number(process.env.FAULTS_PAUSE_MS ?? 50);
  const samples: Sample[] = [];
  const pops = Object.entries(o.loops).flatMap(([pop, n]) => Array.from({ length: n }, () => pop));
  const loops = pops.map(async (pop, i) => {
    await sleep((i * pause) / pops.length); // spread the loops over one pause
    for (let n = 0; n < MAX_PER_LOOP && Date.now() - start < o.durationMs; n++) {
      const s = await one(pop, o.headers);
      samples.push(s);
      all.push(s);
      await sleep(pause);
    }
  });
  const at = (ms: number) => sleep(Math.max(0, start + ms - Date.now()));
  const scripted = script(at, () => Date.now() - start);
  const [scriptResult] = await Promise.allSettled([scripted, Promise.all(loops)]);
  if (scriptResult.status === 'rejected') throw scriptResult.reason;
  return samples.sort((a, b) => a.sent - b.sent);
}

const ms = (xs: number[], q: number) => {
  if (xs.length === 0) return NaN;
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!;
};
const latency = (s: Sample) => s.done - s.sent;

function countBy<T>(xs: readonly T[], key: (x: T) => string | undefined): Record<string, number> {
  const out: Record<string, number> = {};
  for (const x of xs) {
    const k = key(x) ?? '-';
    out[k] = (out[k] ?? 0) + 1;
  }
  return out;
}

/** Proxy counters of every backend now, to subtract later. */
function proxyStats(): Map<string, FaultProxyStats> {
  return new Map([...proxies].map(([id, p]) => [id, p.stats]));
}

/** Connections and HTTP requests each proxy saw since `before`: the attempts the edge made on each backend. */
function attemptsSince(before: Map<string, FaultProxyStats>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [id, p] of proxies) {
    const b = before.get(id)!;
    const s = p.stats;
    const conns = s.connections - b.connections;
    const reqs = s.requests - b.requests;
    if (conns || reqs) out[id] = `${reqs}req/${conns}conn`;
  }
  return out;
}

interface Row {
  requests: number;
  failures: Sample[];
  receipts: number;
  p50: number;
  p99: number;
  max: number;
}

/**
 * Checks receipts (one each, unique ids), prints the scenario's line (with what
 * the edge logged since log line `from`: hedges and failed attempts) and adds
 * it to the matrix.
 */
function report(name: string, samples: Sample[], from: number, notes: Record<string, unknown> = {}): Row {
  const failures = samples.filter((s) => s.failure !== undefined);
  let receipts = 0;
  let duplicates = 0;
  for (const s of samples) {
    if (s.jti === undefined) continue;
    receipts += 1;
    if (jtis.has(s.jti)) duplicates += 1;
    jtis.add(s.jti);
  }
  const lat = samples.map(latency);
  const row: Row = { requests: samples.length, failures, receipts, p50: ms(lat, 0.5), p99: ms(lat, 0.99), max: Math.max(...lat) };
  const why = countBy(failures, (s) => s.failure);
  const edge = edgeSaid(from);
  const hedges = edge.hedges.total ?? 0;
  const extra = Object.entries(notes).map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`);
  const line =
    `${name}: requests=${row.requests} failures=${failures.length}` +
    `${failures.length ? ` ${JSON.stringify(why)} (after ${Math.min(...failures.map(latency))}-${Math.max(...failures.map(latency))} ms)` : ''} ` +
    `receipts=${receipts} duplicate_jtis=${duplicates} p50=${row.p50}ms p99=${row.p99}ms max=${row.max}ms ` +
    `answered_by=${JSON.stringify(countBy(samples.filter((s) => s.status === 200), (s) => s.backend))} ` +
    `hedges=${hedges} (${((100 * hedges) / Math.max(1, samples.length)).toFixed(1)}% of requests) edge_failed_attempts=${JSON.stringify(edge.failed)} ` +
    `outliers=${JSON.stringify(edge.outliers)} ` +
    extra.join(' ');
  console.log(`[faults] ${line}`);
  matrix.push(`  ${line}`);
  expect(duplicates, 'receipt ids must be unique').toBe(0);
  return row;
}

/** Waits (bounded) until the directory lists `id` ready and warm with a heartbeat after `since`. */
async function registered(id: string, since: number, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const res = await fetch(`${mesh.edgeUrl}/admin/backends`, { headers: { authorization: `Bearer ${mesh.adminToken}` } });
    const { backends } = (await res.json()) as { backends: { id: string; ready: boolean; lastSeen: number; models: { warm: boolean }[] }[] };
    const b = backends.find((x) => x.id === id);
    if (b && b.ready && b.lastSeen > since && b.models.length > 0 && b.models.every((m) => m.warm)) return;
    await sleep(200);
  }
  throw new Error(`${id} did not register again within ${timeoutMs} ms`);
}

/** What the edge logged since log line `from`: hedges sent (by target) and failed attempts (by backend and kind). */
function edgeSaid(from: number): { hedges: Record<string, number>; failed: Record<string, number>; outliers: Record<string, number> } {
  const hedges: Record<string, number> = {};
  const failed: Record<string, number> = {};
  // Ejections and holds (workers/routing/isolate.ts's log line), as `fra-2:ejected`.
  const outliers: Record<string, number> = {};
  for (const raw of logs.slice(from)) {
    // wrangler colours its lines
    const line = raw.replace(/\x1b\[[0-9;]*m/g, '');
    const o = /routing: backend (\S+) (ejected|held back) /.exec(line);
    if (o) {
      const k = `${o[1]}:${o[2] === 'ejected' ? 'ejected' : 'held'}`;
      outliers[k] = (outliers[k] ?? 0) + 1;
    }
    const h = /hedging to (\S+)/.exec(line);
    if (h) hedges[h[1]!] = (hedges[h[1]!] ?? 0) + 1;
    const f = /backend (\S+) failed \(([^)]*)\)/.exec(line);
    if (f) {
      const kind = /no answer within/.test(f[2]!) ? 'timeout' : /HTTP \d+/.test(f[2]!) ? f[2]! : 'network';
      const k = `${f[1]}:${kind}`;
      failed[k] = (failed[k] ?? 0) + 1;
    }
  }
  return { hedges: { total: Object.values(hedges).reduce((a, b) => a + b, 0), ...hedges }, failed, outliers };
}

const ALL_POPS = { SIN: 2, CGK: 2, FRA: 2, IAD: 2 };
/** When fra-2 was ejected (its last attempt), for the recovery test. */
let ejectedAt: number | undefined;
/** When the pinned-region outage ended: the retry budget is spent for a window after it. */
let outageEnded = 0;

describe('real faults under a steady stream from SIN, CGK, FRA and IAD', () => {
  it('baseline: no fault, every request answered with one receipt', async () => {
    const before = proxyStats();
    const from = logs.length;
    const samples = await stream({ loops: ALL_POPS, durationMs: 5_000 });
    const row = report('baseline', samples, from, { attempts: attemptsSince(before) });
    expect(row.failures).toEqual([]);
    expect(row.receipts).toBe(row.requests);
    expect(row.requests).toBeGreaterThan(100);
  });

  it('flapping iad-1 (reset / none every 500 ms) costs no consumer request', async () => {
    const before = proxyStats();
    const from = logs.length;
    let flips = 0;
    const samples = await stream({ loops: { IAD: 3, FRA: 1, SIN: 1 }, durationMs: 6_000 }, async (at) => {
      for (let i = 0; i < 10; i++) {
        await at(500 + i * 500);
        await proxy('iad-1').setFault(i % 2 === 0 ? { kind: 'reset' } : { kind: 'none' });
        flips++;
      }
      await proxy('iad-1').setFault({ kind: 'none' });
    });
    const row = report('flap iad-1', samples, from, {
      flips,
      iad1_reset_connections: proxy('iad-1').stats.faults.reset - before.get('iad-1')!.faults.reset,
      iad_answered_by: countBy(samples.filter((s) => s.pop === 'IAD'), (s) => s.backend),
      attempts: attemptsSince(before),
    });
    expect(row.failures).toEqual([]);
    expect(row.receipts).toBe(row.requests);
  });

  it('hanging sg-2 (accepts, never answers) costs no consumer request', async () => {
    const before = proxyStats();
    const from = logs.length;
    const samples = await stream({ loops: ALL_POPS, durationMs: 8_000 }, async (at) => {
      await at(1_000);
      await proxy('sg-2').setFault({ kind: 'hang' });
      await at(6_000);
      await proxy('sg-2').setFault({ kind: 'none' });
    });
    const row = report('hang sg-2', samples, from, {
      hung_connections: proxy('sg-2').stats.faults.hang - before.get('sg-2')!.faults.hang,
      answers_after_a_timeout: samples.filter((s) => s.status === 200 && latency(s) >= BACKEND_TIMEOUT_MS).length,
      attempts: attemptsSince(before),
    });
    expect(row.failures).toEqual([]);
    expect(row.receipts).toBe(row.requests);
    // A request that met the hang waited at most one per-attempt timeout, not the consumer's.
    expect(row.max).toBeLessThan(2 * BACKEND_TIMEOUT_MS + 1_000);
  });

  it('slowing sg-1 to 30x its service time costs nothing and moves traffic off it', async () => {
    const before = proxyStats();
    const from = logs.length;
    const FAULT_AT = 2_500;
    const samples = await stream({ loops: { SIN: 3, CGK: 3, FRA: 1, IAD: 1 }, durationMs: 8_000 }, async (at) => {
      await at(FAULT_AT);
      // 30x: embed's few ms of service times 10 was tens of ms, within what a loaded 2-core CI machine adds to every answer.
      await proxy('sg-1').setFault({ kind: 'slow', factor: 30 });
      await at(8_000);
      await proxy('sg-1').setFault({ kind: 'none' });
    });
    const start = samples[0]!.sent;
    const sg = (s: Sample) => s.status === 200 && s.backend?.startsWith('sg-');
    const shareOfSg1 = (xs: Sample[]) => xs.filter((s) => s.backend === 'sg-1').length / Math.max(1, xs.length);
    const clean = samples.filter((s) => sg(s) && s.sent < start + FAULT_AT);
    const slowed = samples.filter((s) => sg(s) && s.sent >= start + FAULT_AT + 1_000);
    const sg1 = samples.filter((s) => s.backend === 'sg-1');
    const row = report('slow sg-1 x30', samples, from, {
      sg1_share_before: shareOfSg1(clean).toFixed(2),
      sg1_share_during: shareOfSg1(slowed).toFixed(2),
      sg1_p50_before: ms(sg1.filter((s) => s.sent < start + FAULT_AT).map(latency), 0.5),
      sg1_p50_during: ms(sg1.filter((s) => s.sent >= start + FAULT_AT).map(latency), 0.5),
      attempts: attemptsSince(before),
    });
    expect(row.failures).toEqual([]);
    expect(row.receipts).toBe(row.requests);
    expect(slowed.length).toBeGreaterThan(50);
    // Equal backends share about equally while healthy; clearly less for the slow one.
    expect(shareOfSg1(slowed)).toBeLessThan(shareOfSg1(clean) * 0.75);
  });

  it('ejection: fra-2 resetting every connection is ejected after 5 failures and gets no traffic, even once healthy', async () => {
    const before = proxyStats();
    const from = logs.length;
    const seen: { t: number; connections: number }[] = [];
    let faultAt = 0;
    let clearedAt = 0;
    let c0 = 0;
    const samples = await stream({ loops: { FRA: 3, SIN: 1, IAD: 1 }, durationMs: 7_000 }, async (at, elapsed) => {
      await at(1_000);
      faultAt = Date.now();
      c0 = proxy('fra-2').stats.connections;
      await proxy('fra-2').setFault({ kind: 'reset' });
      // Each attempt on fra-2 is now one new connection, reset at once: watch them until they stop.
      while (elapsed() < 4_500) {
        seen.push({ t: Date.now(), connections: proxy('fra-2').stats.connections });
        await sleep(20);
      }
      clearedAt = Date.now();
      await proxy('fra-2').setFault({ kind: 'none' });
    });
    const connectionsInFault = proxy('fra-2').stats.connections - c0;
    // The last new connection fra-2 got: about when the failure that ejected it was counted.
    const last = seen.find((x) => x.connections === c0 + connectionsInFault)?.t ?? faultAt;
    ejectedAt = last;
    // Failed attempts on fra-2 as the edge counted them (new connections reset at once, and the
    // requests on live connections that the fault cut).
    const said = edgeSaid(from);
    const failedOnFra2 = said.failed['fra-2:network'] ?? 0;
    const fra = samples.filter((s) => s.pop === 'FRA');
    const afterEjection = fra.filter((s) => s.sent > last + 100);
    const row = report('eject fra-2', samples, from, {
      fra2_failed_attempts: failedOnFra2,
      fra2_new_connections_in_fault: connectionsInFault,
      fra_requests_until_ejected: fra.filter((s) => s.sent >= faultAt && s.sent <= last).length,
      fra_requests_after_ejection: afterEjection.length,
      fra_requests_after_fault_cleared: fra.filter((s) => s.sent > clearedAt).length,
      fra_answered_by_after_ejection: countBy(afterEjection, (s) => s.backend),
      attempts: attemptsSince(before),
    });
    expect(row.failures).toEqual([]);
    expect(row.receipts).toBe(row.requests);
    // Ejected (not held back: fra-1 was not ejected) after EJECT_AFTER consecutive failures (one or two more may already have been under way).
    expect(said.outliers).toMatchObject({ 'fra-2:ejected': 1 });
    expect(said.outliers['fra-2:held']).toBeUndefined();
    expect(failedOnFra2).toBeGreaterThanOrEqual(EJECT_AFTER);
    expect(failedOnFra2).toBeLessThanOrEqual(EJECT_AFTER + 2);
    // Then nothing, also once the fault cleared, while FRA kept asking.
    expect(last - faultAt).toBeLessThan(2_000);
    expect(afterEjection.length).toBeGreaterThan(30);
    expect(fra.filter((s) => s.sent > clearedAt).length).toBeGreaterThan(10);
    expect(afterEjection.filter((s) => s.backend === 'fra-2')).toEqual([]);
  });

  it('killing sg-3 (SIGKILL) mid-stream costs no consumer request', async () => {
    const before = proxyStats();
    const from = logs.length;
    let killedAt = 0;
    const samples = await stream({ loops: { SIN: 3, CGK: 3, FRA: 1, IAD: 1 }, durationMs: 6_000 }, async (at) => {
      await at(1_500);
      killedAt = Date.now();
      await backend('sg-3').stop(true);
    });
    const after = samples.filter((s) => s.sent > killedAt + 200);
    const row = report('kill sg-3', samples, from, {
      sg3_answers_after_kill: after.filter((s) => s.backend === 'sg-3').length,
      attempts: attemptsSince(before),
    });
    expect(row.failures).toEqual([]);
    expect(row.receipts).toBe(row.requests);
    expect(after.filter((s) => s.backend === 'sg-3')).toEqual([]);
    // It comes back under the same id, port and proxy.
    const restarted = Date.now();
    await backend('sg-3').start();
    await registered('sg-3', restarted);
    console.log(`[faults] sg-3 restarted and registered again in ${Date.now() - restarted} ms`);
  });

  it('a total outage of a pinned region fails fast and the retry budget caps the attempts', async () => {
    const sgs = ['sg-1', 'sg-2', 'sg-3'];
    const before = proxyStats();
    const from = logs.length;
    await Promise.all(sgs.map((id) => proxy(id).setFault({ kind: 'reset' })));
    let samples: Sample[];
    try {
      samples = await stream({ loops: { SIN: 2, CGK: 2, FRA: 1, IAD: 1 }, durationMs: 5_000, pauseMs: 20, headers: { 'x-mesh-region': 'ap-southeast' } });
    } finally {
      await Promise.all(sgs.map((id) => proxy(id).setFault({ kind: 'none' })));
    }
    const end = samples.at(-1)!.done;
    outageEnded = Date.now();
    // Each attempt on a resetting backend is one connection, reset at once.
    const attempts = sgs.reduce((n, id) => n + proxy(id).stats.connections - before.get(id)!.connections, 0);
    const retries = attempts - samples.length;
    // The budget's window holds every request the isolate saw in the last 10 s: the outage's and those before it.
    const inWindow = all.filter((s) => s.sent > end - BUDGET.windowMs - 1_000 && s.sent <= end).length;
    const allowed = Math.ceil(BUDGET.ratio * inWindow + BUDGET.floor);
    report('outage ap-southeast (pinned)', samples, from, {
      statuses: countBy(samples, (s) => String(s.status)),
      attempts,
      retries,
      retries_allowed: allowed,
      requests_in_window: inWindow,
      attempts_per_request: (attempts / samples.length).toFixed(2),
      per_backend: attemptsSince(before),
    });
    expect(samples.length).toBeGreaterThan(100);
    // Every request failed (the region is out and pinned), fast, and without a receipt.
    expect(samples.filter((s) => s.status !== 502 && s.status !== 503)).toEqual([]);
    expect(samples.filter((s) => s.receipts !== 0)).toEqual([]);
    // The consumer learns what happened, not which backend failed or how: those stay in the edge's log.
    expect(samples.filter((s) => !s.message || /sg-\d|127\.0\.0\.1|https?:|reset|ECONN|socket|network/i.test(s.message))).toEqual([]);
    expect(Math.max(...samples.map(latency))).toBeLessThan(2_000);
    // Attempts: one first attempt per request, plus retries within the budget.
    expect(attempts).toBeGreaterThanOrEqual(samples.length);
    expect(retries).toBeLessThanOrEqual(allowed);
  });

  it('recovery: fra-2 gets traffic again once its ejection is over', async () => {
    expect(ejectedAt, 'the ejection scenario ran').toBeDefined();
    const ends = ejectedAt! + EJECTION_MS;
    const before = proxyStats();
    const from = logs.length;
    let firstAttempt: number | undefined;
    const samples = await stream({ loops: { FRA: 2, IAD: 1 }, durationMs: Math.max(2_000, ends + 4_000 - Date.now()), pauseMs: 60 }, async () => {
      while (firstAttempt === undefined && Date.now() < ends + 4_000) {
        if (proxy('fra-2').stats.connections > before.get('fra-2')!.connections) firstAttempt = Date.now();
        await sleep(20);
      }
    });
    const fra2 = samples.filter((s) => s.backend === 'fra-2');
    const row = report('recover fra-2', samples, from, {
      ejection_ended_ms_into_stream: ends - samples[0]!.sent,
      first_fra2_attempt_ms_after_ejection: firstAttempt === undefined ? 'none' : firstAttempt - ejectedAt!,
      fra2_answers: fra2.length,
      attempts: attemptsSince(before),
    });
    expect(row.failures).toEqual([]);
    expect(firstAttempt).toBeDefined();
    // Not before the ejection was over (a little slack for when the ejecting failure was counted), and soon after.
    expect(firstAttempt! - ejectedAt!).toBeGreaterThanOrEqual(EJECTION_MS - 500);
    expect(fra2.length).toBeGreaterThan(0);
  });

  // Last: it needs the edge's hedging (workers/inference/run.ts) and a retry budget that the outage no longer holds.
  it('hedging: iad-1 stalling 2 s on 10% of its requests does not lift the p99 above 1 s', async () => {
    const STALL_MS = 2_000;
    // Warm-up, until the outage's retries have left the budget's window; iad-1 (ejected by the flapping
    // scenario long ago) needs 20 samples in this isolate before the edge hedges.
    const warm = await stream({ loops: { IAD: 2 }, durationMs: Math.max(2_500, outageEnded + BUDGET.windowMs + 1_000 - Date.now()) });
    expect(warm.filter((s) => s.backend === 'iad-1').length).toBeGreaterThanOrEqual(20);
    const before = proxyStats();
    const from = logs.length;
    await proxy('iad-1').setFault({ kind: 'latency', ms: STALL_MS, direction: 'response', share: 0.1 });
    let samples: Sample[];
    try {
      // The hedge budget (10% of the isolate's requests plus 1 a second, design.md "Hedging") must cover the
      // p95 hedges of every backend (about 5%) and the stalls: iad-1 answers about a quarter of this mix, so
      // its 10% stalls ask for about 3% more.
      samples = await stream({ loops: ALL_POPS, durationMs: 12_000 });
    } finally {
      await proxy('iad-1').setFault({ kind: 'none' });
    }
    const iad = samples.filter((s) => s.pop === 'IAD');
    const p99 = ms(iad.map(latency), 0.99);
    const stalled = proxy('iad-1').stats.faults.latency - before.get('iad-1')!.faults.latency;
    const row = report('stall iad-1 (hedging)', samples, from, {
      iad_p50: ms(iad.map(latency), 0.5),
      iad_p99: p99,
      iad_over_1s: iad.filter((s) => latency(s) >= 1_000).length,
      iad_answered_by: countBy(iad, (s) => s.backend),
      stalled_chunks: stalled,
      attempts: attemptsSince(before),
    });
    expect(row.failures).toEqual([]);
    // Enough stalls that, without hedging, more than 1% of IAD requests would wait for the 1.5 s timeout.
    expect(stalled / iad.length).toBeGreaterThan(0.03);
    expect(p99).toBeLessThan(1_000);
    expect(iad.length).toBeGreaterThan(100);
  });

  // After every fault: settlement (docs/api.md section 5) reconciles with what the consumers received.
  it('settlement: every answered request is one receipt in exactly one closed batch; totals add up', async () => {
    const answered = new Map(all.filter((s) => s.receipt !== undefined).map((s) => [s.jti!, s.receipt!]));
    const clientFailures = all.filter((s) => s.status === 0).length;
    const settled = await settle(mesh.edgeUrl, mesh.adminToken, answered.keys());
    const missing = [...answered.keys()].filter((j) => !settled.seen.has(j));
    const doubled = [...settled.seen].filter(([, n]) => n > 1).map(([j]) => j);
    // A receipt the consumer never saw can only come from a request the client gave up on.
    const unseen = [...settled.seen.keys()].filter((j) => !answered.has(j));
    const charged = settled.receipts.reduce((sum, r) => sum + r.amount, 0);
    const sumOf = (o: Record<string, number>) => Object.values(o).reduce((a, b) => a + b, 0);
    const line =
      `[faults] settlement: requests=${all.length} answered=${answered.size} batches=${settled.batches.length} ` +
      `receipts_in_batches=${settled.receipts.length} missing=${missing.length} doubled=${doubled.length} ` +
      `not_seen_by_consumers=${unseen.length} charged_micro_usd=${charged} closes=${settled.closes}`;
    console.log(line);
    matrix.push(line);
    expect(missing).toEqual([]);
    expect(doubled).toEqual([]);
    expect(unseen.length).toBeLessThanOrEqual(clientFailures);
    expect(settled.batches.reduce((n, b) => n + b.count, 0)).toBe(settled.receipts.length);
    expect(settled.batches.reduce((n, b) => n + sumOf(b.totals.consumers), 0)).toBe(charged);
    expect(settled.batches.reduce((n, b) => n + sumOf(b.totals.providers), 0)).toBe(charged);
  });
});
