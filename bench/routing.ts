/**
 * `npm run bench:routing`: what one routing decision costs the edge, by the
 * size of the world. Synthetic directory snapshots of 10, 1,000 and 10,000
 * backends (spread over the mesh's regions as the 308 PoPs are, several
 * models each, production's filters and standing) are ranked for requests
 * from one PoP, as an isolate ranks them, by:
 *
 * - old: the full scan (`rankByScoreReference`, test/workers/routing/reference.ts:
 *   every backend filtered and scored, then a full sort);
 * - new: the per-snapshot routing index (workers/routing/snapshot-index.ts:
 *   the model's candidates only, cached geometry, no key built per lookup,
 *   the best 8 selected without a sort), as `candidatesFor` calls it;
 *
 * each followed by the P2C pick (`pickAttempts`); and new, learning: each
 * decision then records what an answer teaches the isolate (a service time
 * and an RTT for the first pick, a call in flight begun and ended), which the
 * index follows through the books' change logs. The index is built once per
 * snapshot (warm decisions); its build time, and the first decision from a
 * PoP after it (which fills that PoP's geometry), are reported apart. Every
 * request's new answer is checked against the old one's first 8 before
 * anything is timed. A script, not a test: per-decision medians over batches,
 * and their ratio. Then what one exchange with the PoP's service book costs
 * an isolate (routing/pop-book.ts, once a second after a response): the book
 * read back, one isolate's second of samples added, written out, and what
 * changed taken into the isolate's book, at 100 entries and at the bound.
 * Method and figures: docs/benchmarks.md.
 *
 * Env: BENCH_ROUTING_SIZES (10,1000,10000), BENCH_ROUTING_MODELS (8 model
 * names; each backend announces 1 to 3), BENCH_ROUTING_MEASURED (256: the
 * backends the isolate has measured, with an RTT from its PoP and a service
 * time; the new path scores these and takes the rest in a cached order), BENCH_BATCHES (21 per path and size),
 * BENCH_BATCH_MS (20: the least time one batch runs). Results also go to
 * bench/results/routing.json.
 */

import { REGIONS } from '../shared/regions.ts';
import type { HeartbeatModel } from '../shared/heartbeat.ts';
import type { BackendEntry } from '../workers/directory/backend.ts';
import { greatCircleKm } from '../workers/geo/distance.ts';
import { POPS, popLocation } from '../workers/geo/pops.ts';
import { PendingCalls, trackPending } from '../workers/routing/isolate.ts';
import { LatencyBook } from '../workers/routing/latency.ts';
import { pickAttempts } from '../workers/routing/p2c.ts';
import { MAX_POP_BOOK_ENTRIES, PopBook, type OutboxEntry } from '../workers/routing/pop-book.ts';
import { RttTable, type RttOrigin } from '../workers/routing/rtt.ts';
import type { RoutingStats, ScoreOptions, ScoreRequest, Scored } from '../workers/routing/score.ts';
import { rankIndexed } from '../workers/routing/rank.ts';
import { buildRoutingIndex } from '../workers/routing/snapshot-index.ts';
import { rankByScoreReference } from '../test/workers/routing/reference.ts';
import { seededUnit } from '../gpu-backend/src/demo-models/random.ts';
import { envIntList, envNumber } from './lib/env.ts';
import { writeResults } from './lib/results.ts';

/** How many of the ranked candidates the new path keeps (workers/inference/candidates.ts RANKED). */
const TOP = 8;
const POP = 'FRA';
const NOW = 1_000_000;

interface World {
  backends: BackendEntry[];
  stats: RoutingStats;
  options: ScoreOptions;
  requests: ScoreRequest[];
  /** Mean candidates (backends announcing the model) per request. */
  perModel: number;
}

/** A synthetic snapshot of `n` backends and an isolate's measurements of it, from a seed. */
function world(n: number, models: number, measuredCount: number, seed: number): World {
  const random = seededUnit(seed);
  const pick = <T>(list: readonly T[]): T => list[Math.floor(random() * list.length)]!;
  const pops = Object.keys(POPS);
  const names = Array.from({ length: models }, (_, i) => `model-${i}`);
  const nearestRegion = (at: { lat: number; lon: number }) =>
    REGIONS.reduce((best, r) => (greatCircleKm(at, r) < greatCircleKm(at, best) ? r : best)).id;
  const backends: BackendEntry[] = [];
  for (let i = 0; i < n; i++) {
    const at = popLocation(pick(pops))!;
    const count = 1 + Math.floor(random() * 3);
    const announced = new Set<string>();
    while (announced.size < count) announced.add(pick(names));
    const entries: HeartbeatModel[] = [...announced].map((name) => ({
      name,
      version: random() < 0.8 ? '1' : '2',
      warm: random() < 0.85,
      maxBatchSize: 8,
      p50Ms: 10 + Math.floor(random() * 50),
    }));
    const roll = random();
    backends.push({
      id: `backend-${i.toString(36)}-${Math.floor(random() * 1e6).toString(36)}`,
      provider: `provider-${i % 50}`,
      region: nearestRegion(at),
      url: `https://b${i}.example`,
      lat: at.lat,
      lon: at.lon,
      executionProvider: 'cuda',
      ready: roll > 0.02,
      models: entries,
      capacity: { slots: 4, inFlight: Math.floor(random() * 4), queued: Math.floor(random() * 3) },
      lastSeen: NOW - 1_000,
      expiresAt: roll > 0.01 ? NOW + 30_000 : NOW - 1,
      location: roll < 0.99 ? { state: 'verified' } : { state: 'refuted', evidence: { pop: 'AMS', failed: 'reach', minRttMs: 1, samples: 5, distanceKm: 9_000, reachKm: 150 } },
    });
  }
  // The isolate's measurements: the backends it has dispatched to (`measuredCount`, drawn at random) have an RTT from
  // its PoP and a service time for one model; 2% of them a call in flight; 1% of all backends are ejected.
  const rtt = new RttTable();
  const latency = new LatencyBook();
  const pending = new PendingCalls(); // the isolate's own map: its changes move the routing index's bounds
  const ejected = new Set<string>();
  for (let m = 0; m < Math.min(measuredCount, n); m++) {
    const b = backends[Math.floor(random() * n)]!;
    rtt.observe(POP, b.id, 5 + random() * 200);
    latency.observe(b.id, pick(b.models).name, 10 + random() * 80, NOW - 5_000);
    if (random() < 0.02) pending.set(b.id, 1 + Math.floor(random() * 3));
  }
  for (const b of backends) if (random() < 0.01) ejected.add(b.id);
  const stats: RoutingStats = {
    rtt,
    latency,
    pending,
    ejected: { isEjected: (id: string) => ejected.has(id) },
    coldStartMs: new Map([[names[0]!, 3_000]]),
  };
  const options: ScoreOptions = {
    allowCold: false,
    quarantined: new Set(['provider-7']),
    penalties: new Map([['provider-3', 2]]),
  };
  const from: RttOrigin = { code: POP, ...popLocation(POP)! };
  const eu = new Set(['eu-west']);
  const requests: ScoreRequest[] = names.flatMap((model, i) => [
    { model, from },
    i % 2 === 0 ? { model, from, residency: eu } : { model, version: '1', from },
  ]);
  const perModel = requests.reduce((s, r) => s + backends.filter((b) => b.models.some((m) => m.name === r.model)).length, 0) / requests.length;
  return { backends, stats, options, requests, perModel };
}

const median = (xs: readonly number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

/** Decisions per batch so that one batch runs at least `batchMs`. */
function calibrate(decide: (i: number) => unknown, batchMs: number): number {
  for (let n = 1; ; n *= 2) {
    const t0 = performance.now();
    for (let i = 0; i < n; i++) decide(i);
    if (performance.now() - t0 >= batchMs || n >= 1 << 22) return n;
  }
}

function timeBatch(decide: (i: number) => unknown, n: number): number {
  const t0 = performance.now();
  for (let i = 0; i < n; i++) decide(i);
  return ((performance.now() - t0) * 1_000) / n; // us per decision
}

/**
 * One exchange with a PoP's book of `entries` (backend, model) pairs, as
 * inference/service-exchange.ts runs it: parse, add 64 pairs of one
 * isolate's second, serialize, and apply what changed to the isolate's book.
 */
function exchangeCost(entries: number, batches: number, batchMs: number): { entries: number; chars: number; exchangeUs: number } {
  const modelOf = (i: number) => `model-${i % 8}`;
  const stored = new PopBook();
  stored.add(Array.from({ length: entries }, (_, i): OutboxEntry => ({ backend: `backend-${i}`, model: modelOf(i), sumMs: 40 + (i % 9), count: 4, lastAt: NOW })), NOW);
  const text = stored.serialize();
  const mine = new LatencyBook({ histogram: false, ewma: { fastUp: false } });
  const second = Array.from({ length: 64 }, (_, i): OutboxEntry => ({ backend: `backend-${i * 3}`, model: modelOf(i * 3), sumMs: 50, count: 5, lastAt: NOW + 500 }));
  const exchange = (i: number) => {
    const book = PopBook.parse(text)!;
    book.add(second, NOW + 1_000 + i);
    book.serialize();
    return book.applyTo(mine, NOW + 999);
  };
  const n = calibrate(exchange, batchMs);
  const us: number[] = [];
  for (let b = 0; b < batches; b++) us.push(timeBatch(exchange, n));
  return { entries, chars: text.length, exchangeUs: median(us) };
}

const same = (a: readonly Scored[], b: readonly Scored[]) =>
  a.length === b.length && a.every((c, i) => c.backend === b[i]!.backend && c.expectedMs === b[i]!.expectedMs && c.model === b[i]!.model);

async function main(): Promise<void> {
  const sizes = envIntList('BENCH_ROUTING_SIZES', '10,1000,10000', 1, 1_000_000);
  const models = envNumber('BENCH_ROUTING_MODELS', 8, 1, 1_000);
  const measured = envNumber('BENCH_ROUTING_MEASURED', 256, 0, 1_000_000);
  const batches = envNumber('BENCH_BATCHES', 21, 3, 1_000);
  const batchMs = envNumber('BENCH_BATCH_MS', 20, 1, 10_000);
  const log = (line: string) => console.log(line);
  log(`bench:routing: node ${process.version}, ${models} models, ${measured} backends measured, PoP ${POP}, ${batches} batches of >= ${batchMs} ms per path`);
  const rows = [];
  for (const n of sizes) {
    const w = world(n, models, measured, 0x5eed + n);
    const random = seededUnit(7);
    // Build: median of several (each a fresh index; geometry empty).
    const builds: number[] = [];
    const firsts: number[] = [];
    for (let r = 0; r < 9; r++) {
      const t0 = performance.now();
      const fresh = buildRoutingIndex(w.backends);
      const t1 = performance.now();
      rankIndexed(fresh, w.requests[0]!, w.stats, NOW, w.options, TOP);
      firsts.push((performance.now() - t1) * 1_000);
      builds.push(t1 - t0);
    }
    const index = buildRoutingIndex(w.backends);
    // Correctness first: the new first 8 are the old first 8, score for score.
    for (const request of w.requests) {
      const old = rankByScoreReference(w.backends, request, w.stats, NOW, w.options).slice(0, TOP);
      const now = rankIndexed(index, request, w.stats, NOW, w.options, TOP);
      if (!same(old, now)) throw new Error(`n=${n} ${request.model}: the index disagrees with the scan`);
    }
    const q = w.requests.length;
    const oldDecide = (i: number) => pickAttempts(rankByScoreReference(w.backends, w.requests[i % q]!, w.stats, NOW, w.options), random);
    const newDecide = (i: number) => pickAttempts(rankIndexed(index, w.requests[i % q]!, w.stats, NOW, w.options, TOP), random);
    const learnDecide = (i: number) => {
      const request = w.requests[i % q]!;
      const picked = pickAttempts(rankIndexed(index, request, w.stats, NOW, w.options, TOP), random);
      const first = picked[0];
      if (first) {
        const done = trackPending(w.stats as { pending: PendingCalls }, first.backend.id);
        w.stats.latency!.observe(first.backend.id, request.model, 10 + random() * 80, NOW);
        w.stats.rtt!.observe(POP, first.backend.id, 5 + random() * 200);
        done();
      }
      return picked;
    };
    const oldN = calibrate(oldDecide, batchMs);
    const newN = calibrate(newDecide, batchMs);
    const learnN = calibrate(learnDecide, batchMs);
    const oldUs: number[] = [];
    const newUs: number[] = [];
    const learnUs: number[] = [];
    for (let b = 0; b < batches; b++) {
      // Rotate which goes first, so drift lands on all alike.
      const paths = [() => oldUs.push(timeBatch(oldDecide, oldN)), () => newUs.push(timeBatch(newDecide, newN)), () => learnUs.push(timeBatch(learnDecide, learnN))];
      for (let p = 0; p < paths.length; p++) paths[(b + p) % paths.length]!();
    }
    const row = {
      backends: n,
      candidatesPerRequest: Math.round(w.perModel),
      oldUs: median(oldUs),
      newUs: median(newUs),
      learningUs: median(learnUs),
      ratio: median(oldUs) / median(newUs),
      buildMs: median(builds),
      firstDecisionUs: median(firsts),
    };
    rows.push(row);
    log(
      `n=${String(n).padStart(6)}: ~${row.candidatesPerRequest} candidates/request; old ${row.oldUs.toFixed(2)} us, new ${row.newUs.toFixed(2)} us per decision ` +
        `(old/new ${row.ratio.toFixed(1)}x), new while learning ${row.learningUs.toFixed(2)} us; index build ${row.buildMs.toFixed(3)} ms, first decision from ${POP} after it ${row.firstDecisionUs.toFixed(1)} us`,
    );
  }
  log('');
  log('| backends | candidates / request | old (scan + sort) us / decision | new (index, top 8) us / decision | old / new | new, learning after each decision us | index build ms | first decision after a build us |');
  log('| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const r of rows) {
    log(
      `| ${r.backends.toLocaleString('en')} | ${r.candidatesPerRequest} | ${r.oldUs.toFixed(2)} | ${r.newUs.toFixed(2)} | ${r.ratio.toFixed(1)}x | ${r.learningUs.toFixed(2)} | ${r.buildMs.toFixed(3)} | ${r.firstDecisionUs.toFixed(1)} |`,
    );
  }
  const popBook = [100, MAX_POP_BOOK_ENTRIES].map((entries) => exchangeCost(entries, batches, batchMs));
  log('');
  for (const e of popBook) log(`the PoP's service book, ${e.entries} entries (${e.chars} characters): ${e.exchangeUs.toFixed(0)} us per exchange`);
  await writeResults('routing.json', { node: process.version, models, measured, pop: POP, batches, batchMs, rows, popBook }, log);
}

await main();
