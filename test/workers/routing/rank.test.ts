import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { REGIONS } from '../../../shared/regions.ts';
import type { HeartbeatModel } from '../../../shared/heartbeat.ts';
import type { BackendEntry } from '../../../workers/directory/backend.ts';
import type { LocationVerdict } from '../../../workers/geo/location.ts';
import { greatCircleKm } from '../../../workers/geo/distance.ts';
import { POPS } from '../../../workers/geo/pops.ts';
import { PendingCalls, trackPending } from '../../../workers/routing/isolate.ts';
import { LatencyBook } from '../../../workers/routing/latency.ts';
import { RttTable, type RttOrigin } from '../../../workers/routing/rtt.ts';
import type { RoutingStats, ScoreOptions, ScoreRequest } from '../../../workers/routing/score.ts';
import { rankIndexed } from '../../../workers/routing/rank.ts';
import { buildRoutingIndex, geometryFor, originKey, routingIndexFor } from '../../../workers/routing/snapshot-index.ts';
import { backend, model, pop } from './fixtures.ts';
import { rankByScoreReference } from './reference.ts';

const POP_CODES = Object.keys(POPS);
/** The PoPs most requests come from and the measured RTTs are taken at, so that measurements meet requests. */
const HOT_POPS = ['FRA', 'AMS', 'SIN', 'IAD', 'NRT', 'GRU'];
const REGION_IDS = [...REGIONS.map((r) => r.id), 'nowhere']; // 'nowhere': no region coordinates, the claim counts
const MODELS = ['embed', 'ocr', 'llm'];
const VERSIONS = ['1', '2'];
const PROVIDERS = ['p1', 'p2', 'p3', 'p4'];
const NOW = 1_000;

/** `arb` or undefined; undefined `absentWeight` times as often. */
const sometimes = <T>(arb: fc.Arbitrary<T>, absentWeight = 2): fc.Arbitrary<T | undefined> =>
  fc.oneof({ weight: absentWeight, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: arb });

/** Coarse values so that equal scores (ties) happen often. */
const arbModel = fc.record({
  name: fc.constantFrom(...MODELS),
  version: fc.constantFrom(...VERSIONS),
  warm: fc.boolean(),
  p50Ms: fc.constantFrom(5, 10, 20, 20, 40, 80),
}).map((m): HeartbeatModel => model(m));

const arbLocation: fc.Arbitrary<LocationVerdict | undefined> = fc.oneof(
  fc.constant(undefined),
  fc.constantFrom<LocationVerdict>({ state: 'verified' }, { state: 'unverified' }),
  fc.record({
    pop: fc.constantFrom(...POP_CODES.slice(0, 40), 'ZZZ'),
    failed: fc.constantFrom<'reach' | 'ceiling'>('reach', 'ceiling'),
  }).map(({ pop, failed }): LocationVerdict => ({ state: 'refuted', evidence: { pop, failed, minRttMs: 1, samples: 3, distanceKm: 100, reachKm: 50 } })),
);

const arbBackend = fc.record({
  region: fc.constantFrom(...REGION_IDS),
  provider: fc.constantFrom(...PROVIDERS),
  // Claims (routing uses them once verified) mostly at region coordinates, so that placed backends still tie often.
  at: fc.constantFrom(...REGIONS.slice(0, 4).map((r) => ({ lat: r.lat, lon: r.lon })), { lat: 10, lon: 0 }, { lat: -33.9, lon: 151.2 }),
  ready: fc.constantFrom(true, true, true, true, true, false),
  expiresAt: fc.constantFrom(NOW - 1, NOW, NOW + 1, Infinity, Infinity, Infinity, Infinity),
  models: fc.array(arbModel, { minLength: 0, maxLength: 4 }),
  slots: fc.constantFrom(0, 1, 4),
  inFlight: fc.nat(3),
  queued: fc.nat(3),
  // The heartbeat's age, so that its load is read partly worked off (score.ts `loadSince`), or not at all.
  lastSeen: fc.constantFrom(NOW, NOW, NOW - 10, NOW - 100, NOW - 1_000),
  location: arbLocation,
});

// Some backends again under other ids (alike in every field but their place): exact ties in score, which
// random fields alone give too seldom for the coverage check below to hold in every run.
const arbSnapshot = fc.tuple(fc.array(arbBackend, { minLength: 0, maxLength: 60, size: 'medium' }), fc.nat(4)).map(([list, again]) =>
  [...list, ...list.slice(0, again)].map((b, i): BackendEntry =>
    backend(`b${(i * 7919) % 1000}`.padEnd(5, '0'), b.region, {
      provider: b.provider,
      lat: b.at.lat,
      lon: b.at.lon,
      ready: b.ready,
      expiresAt: b.expiresAt,
      models: b.models,
      capacity: { slots: b.slots, inFlight: b.inFlight, queued: b.queued },
      lastSeen: b.lastSeen,
      ...(b.location ? { location: b.location } : {}),
    }),
  ),
);

const arbOrigin: fc.Arbitrary<RttOrigin> = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...HOT_POPS).map((code) => pop(code)) },
  fc.constantFrom(...POP_CODES).map((code) => pop(code)),
  fc.constantFrom(...POP_CODES).map((code) => {
    const { code: _, ...at } = pop(code);
    return at; // no code: geometry only
  }),
);

const arbRequest = fc.record({
  model: fc.constantFrom(...MODELS, ...MODELS, 'absent'),
  version: sometimes(fc.constantFrom(...VERSIONS, '3')),
  from: arbOrigin,
  pin: sometimes(fc.constantFrom(...REGION_IDS.slice(0, 5)), 4),
  residency: sometimes(fc.uniqueArray(fc.constantFrom(...REGION_IDS), { maxLength: 8 }).map((r) => new Set(r)), 3),
}).map((r): ScoreRequest => ({
  model: r.model,
  from: r.from,
  ...(r.version !== undefined ? { version: r.version } : {}),
  ...(r.pin !== undefined ? { pin: r.pin } : {}),
  ...(r.residency !== undefined ? { residency: r.residency } : {}),
}));

const arbOptions = fc.record({
  allowCold: sometimes(fc.boolean()),
  inflation: fc.option(fc.constantFrom(1, 1.5, 2, 3), { nil: undefined }),
  maxExtraMs: fc.option(fc.constantFrom(0, 150, 400), { nil: undefined }),
  defaultColdStartMs: fc.option(fc.constantFrom(100, 5_000), { nil: undefined }),
  quarantined: sometimes(fc.uniqueArray(fc.constantFrom(...PROVIDERS), { maxLength: 1 }).map((p) => new Set(p))),
  penalties: fc.option(
    fc.array(fc.tuple(fc.constantFrom(...PROVIDERS), fc.constantFrom(1.5, 2, 4))).map((p) => new Map(p)),
    { nil: undefined },
  ),
}).map((o): ScoreOptions => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)));

/** How many candidates an order sorts at first: small ones make walks cross the cut into the unsorted rest, and candidates move across it. */
const arbPrefix = fc.constantFrom(1, 2, 3, 32);

/** Measurements over the snapshot's backends: picks by position, so they name backends that exist (and some that do not). */
const arbStats = fc.record({
  rtt: fc.array(fc.tuple(fc.constantFrom(...HOT_POPS, 'LHR'), fc.nat(15), fc.constantFrom(0.5, 5, 30, 200)), { maxLength: 120, size: 'medium' }),
  latency: fc.array(fc.tuple(fc.nat(15), fc.constantFrom(...MODELS), fc.constantFrom(1, 15, 60, 500), fc.nat(2_000)), { maxLength: 40, size: 'medium' }),
  pending: fc.array(fc.tuple(fc.nat(15), fc.nat(5)), { maxLength: 10 }),
  ejected: fc.array(fc.nat(15), { maxLength: 6 }),
  coldStartMs: fc.option(fc.array(fc.tuple(fc.constantFrom(...MODELS), fc.constantFrom(10, 2_000))).map((c) => new Map(c)), { nil: undefined }),
  rttMax: fc.constantFrom(8, 4096),
});

function statsFor(backends: readonly BackendEntry[], s: typeof arbStats extends fc.Arbitrary<infer T> ? T : never): RoutingStats {
  const id = (i: number) => backends[i]?.id ?? `ghost-${i}`;
  const rtt = new RttTable({ maxEntries: s.rttMax }); // a small table evicts: its per-PoP view must follow
  for (const [code, i, ms] of s.rtt) rtt.observe(code, id(i), ms);
  const latency = new LatencyBook();
  for (const [i, name, ms, at] of s.latency) latency.observe(id(i), name, ms, at);
  const ejected = new Set(s.ejected.map(id));
  return {
    rtt,
    latency,
    // The isolate's own map keeps a change log, which bounds then count; a plain map is left out of them.
    pending: (s.rttMax === 8 ? (xs: [string, number][]) => new PendingCalls(xs) : (xs: [string, number][]) => new Map(xs))(s.pending.map(([i, n]) => [id(i), n])),
    ejected: { isEjected: (backendId: string) => ejected.has(backendId) },
    ...(s.coldStartMs ? { coldStartMs: s.coldStartMs } : {}),
  };
}

describe('rankIndexed: the per-snapshot index against the full scan', () => {
  it('returns exactly the scan\'s first k candidates, with equal scores, for random snapshots and requests', () => {
    const seen = { cut: 0, measuredRtt: 0, measuredService: 0, tie: 0 };
    fc.assert(
      fc.property(
        arbSnapshot,
        arbStats,
        fc.array(fc.tuple(arbRequest, arbOptions, fc.oneof(fc.integer({ min: 0, max: 12 }), fc.constant(Infinity))), { minLength: 1, maxLength: 6 }),
        arbPrefix,
        (backends, s, requests, orderPrefix) => {
          const stats = statsFor(backends, s);
          // One index serves every request, as a snapshot's does: its lazily filled geometry is reused across them.
          const index = buildRoutingIndex(backends, undefined, { orderPrefix });
          const passes = [...requests, ...requests, ...requests];
          for (const [n, [request, options, k]] of passes.entries()) {
            if (n === 2 * requests.length) {
              // The isolate learns between requests: a load time measured, new RTTs and service times, a call in flight.
              stats.coldStartMs = new Map(MODELS.map((m, i) => [m, [7, 900, 60_000][(i + s.rttMax) % 3]!]));
              backends.slice(0, 6).forEach((b, i) => {
                stats.rtt!.observe(request.from.code ?? 'FRA', b.id, 1 + i);
                stats.latency!.observe(b.id, b.models[0]?.name ?? 'embed', 3 + i, NOW);
              });
              (stats.pending as Map<string, number>).set(backends[0]?.id ?? 'none', 2);
            }
            const expected = rankByScoreReference(backends, request, stats, NOW, options);
            const got = rankIndexed(index, request, stats, NOW, options, k);
            expect(got).toEqual(expected.slice(0, k));
            // The same objects, not only equal ones (backends may be alike in every field but their place).
            const at = (list: readonly { backend: BackendEntry; model: HeartbeatModel }[]) => list.map((c) => [backends.indexOf(c.backend), c.model]);
            expect(at(got)).toStrictEqual(at(expected.slice(0, k)));
            got.forEach((c, i) => expect(c.model).toBe(expected[i]!.model));
            if (k < expected.length && k > 0) seen.cut++;
            if (got.some((c) => c.rttMs !== c.distanceKm * (2 / 200) * (options.inflation ?? 2) && c.rttMs !== c.distanceKm * (2 / 200))) seen.measuredRtt++;
            if (got.some((c) => c.serviceMs !== c.model.p50Ms)) seen.measuredService++;
            if (expected.some((c, i) => i > 0 && c.expectedMs === expected[i - 1]!.expectedMs)) seen.tie++;
          }
        },
      ),
      { numRuns: 400 },
    );
    // The runs reached what matters: a top k shorter than the list, measured RTTs and service times, exact ties.
    for (const [what, n] of Object.entries(seen)) expect(n, what).toBeGreaterThan(20);
  });

  it('follows an isolate that keeps learning: bounds moved through the change logs, rebuilt when they overflow or time runs past them', () => {
    const ops = fc.oneof(
      fc.record({ op: fc.constant('latency' as const), at: fc.nat(15), model: fc.constantFrom(...MODELS), ms: fc.constantFrom(1, 15, 60, 500) }),
      fc.record({ op: fc.constant('rtt' as const), at: fc.nat(15), pop: fc.constantFrom(...HOT_POPS), ms: fc.constantFrom(0.5, 5, 30, 200) }),
      fc.record({ op: fc.constant('start' as const), at: fc.nat(15) }),
      fc.record({ op: fc.constant('start' as const), at: fc.nat(3) }),
      fc.record({ op: fc.constant('end' as const) }),
      fc.record({ op: fc.constant('end' as const) }),
      fc.record({ op: fc.constant('wait' as const), ms: fc.constantFrom(1, 1, 1, 300, 300, 999, 1_000, 5_000, 60_000) }),
      fc.record({ op: fc.constant('rank' as const), which: fc.nat(2), k: fc.integer({ min: 1, max: 8 }) }),
      fc.record({ op: fc.constant('rank' as const), which: fc.nat(2), k: fc.integer({ min: 1, max: 3 }) }),
    );
    let ranked = 0;
    fc.assert(
      // A few request shapes asked again and again, as an isolate's traffic does: their orders are kept and moved.
      fc.property(arbSnapshot, fc.constantFrom(2, 8, 1024), fc.array(arbRequest, { minLength: 3, maxLength: 3 }), fc.array(ops, { minLength: 1, maxLength: 80, size: 'max' }), arbPrefix, (backends, logSize, requests, steps, orderPrefix) => {
        const routing = {
          latency: new LatencyBook({ histogram: false, changeLogSize: logSize }),
          rtt: new RttTable({ maxEntries: 6, changeLogSize: logSize }),
          pending: new PendingCalls(),
        };
        const calls: (() => void)[] = [];
        const index = buildRoutingIndex(backends, undefined, { orderPrefix });
        const id = (i: number) => backends[i]?.id ?? `ghost-${i}`;
        let now = NOW;
        for (const step of steps) {
          if (step.op === 'latency') routing.latency.observe(id(step.at), step.model, step.ms, now);
          else if (step.op === 'rtt') routing.rtt.observe(step.pop, id(step.at), step.ms);
          else if (step.op === 'start') calls.push(trackPending(routing, id(step.at)));
          else if (step.op === 'end') calls.shift()?.();
          else if (step.op === 'wait') now += step.ms;
          else {
            const request = requests[step.which]!;
            const got = rankIndexed(index, request, routing, now, {}, step.k);
            expect(got).toEqual(rankByScoreReference(backends, request, routing, now).slice(0, step.k));
            ranked++;
          }
        }
      }),
      { numRuns: 1_000 },
    );
    expect(ranked).toBeGreaterThan(4_000);
  });

  it('breaks exact ties like the scan: warm first, then the lower id, then snapshot order', () => {
    const same = { lat: 0, lon: 0 };
    const list = [
      backend('c', 'eu-central', same),
      backend('a', 'eu-central', { ...same, models: [model({ warm: false })] }),
      backend('b', 'eu-central', same),
      backend('a', 'eu-central', same),
      backend('a', 'eu-central', same),
    ];
    const request = { model: 'embed', from: pop('FRA') };
    const expected = rankByScoreReference(list, request, {}, 0, { maxExtraMs: 0, defaultColdStartMs: 0 });
    expect(expected.map((c) => list.indexOf(c.backend))).toEqual([3, 4, 2, 0, 1]);
    for (let k = 1; k <= list.length; k++) {
      const got = rankIndexed(buildRoutingIndex(list), request, {}, 0, { maxExtraMs: 0, defaultColdStartMs: 0 }, k);
      expect(got.map((c) => list.indexOf(c.backend))).toEqual(expected.slice(0, k).map((c) => list.indexOf(c.backend)));
    }
  });

  it('builds a snapshot\'s index once and caches geometry per origin', () => {
    const list = [backend('fra', 'eu-central'), backend('sin', 'ap-southeast', { models: [model({ name: 'ocr' })] })];
    const index = routingIndexFor(list);
    expect(routingIndexFor(list)).toBe(index);
    expect([...index.byModel.keys()].sort()).toEqual(['embed', 'ocr']);
    rankIndexed(index, { model: 'embed', from: pop('FRA') }, {}, 0);
    const km = [...index.geometry.values()][0]!;
    expect(Number.isNaN(km[0]!)).toBe(false); // filled for the embed backend ...
    expect(Number.isNaN(km[1]!)).toBe(true); // ... and not for the ocr one, never asked for
  });

  it('carries the previous snapshot\'s geometry for backends that stayed where they were, and computes the rest', () => {
    const verified = (lat: number, lon: number) => ({ lat, lon, location: { state: 'verified' as const, evidence: { pop: 'FRA' } } as LocationVerdict });
    const first = [backend('gone', 'eu-central'), backend('stays', 'us-east'), backend('moves', 'eu-west', verified(53.3, -6.3)), backend('also', 'ap-southeast')];
    const from = pop('FRA');
    const before = buildRoutingIndex(first);
    rankIndexed(before, { model: 'embed', from }, {}, 0); // fills FRA's distances
    const next = [first[1]!, backend('moves', 'eu-west', verified(48.9, 2.3)), first[3]!, backend('new', 'eu-central')];
    const index = buildRoutingIndex(next, undefined, { previous: before });
    const km = [...index.geometry.values()];
    expect(km).toHaveLength(0); // shifted slots: nothing shared, copied on first use
    const carried = geometryFor(index, originKey(from)); // FRA's distances, as a first request asks for them
    expect(carried[0]).toBe(greatCircleKm(from, index.locations[0]!)); // stays: from the previous index
    expect(carried[2]).toBe(greatCircleKm(from, index.locations[2]!));
    expect(carried[1]).toBeNaN(); // moved
    expect(carried[3]).toBeNaN(); // new
    expect(rankIndexed(index, { model: 'embed', from }, {}, 0)).toEqual(rankByScoreReference(next, { model: 'embed', from }, {}, 0));
    // Nothing moved: the previous index's cache itself.
    expect(buildRoutingIndex(next, undefined, { previous: index }).geometry).toBe(index.geometry);
  });

  it('refuses a locate other than the index\'s', () => {
    const list = [backend('fra', 'eu-central')];
    expect(() => rankIndexed(buildRoutingIndex(list), { model: 'embed', from: pop('FRA') }, {}, 0, { locate: (b) => b })).toThrow(/locate/);
  });
});

describe('RttTable.fromPop', () => {
  it('agrees with measuredMs through updates and evictions', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.constantFrom('FRA', 'AMS', 'SIN'), fc.constantFrom('a', 'b', 'c', 'd'), fc.nat(100)), { maxLength: 60 }), (obs) => {
        const table = new RttTable({ maxEntries: 5 });
        for (const [p, b, ms] of obs) table.observe(p, b, ms);
        for (const p of ['FRA', 'AMS', 'SIN']) {
          for (const b of ['a', 'b', 'c', 'd']) expect(table.fromPop(p)?.get(b)).toBe(table.measuredMs(p, b));
          expect(table.fromPop(p)?.size ?? 0).toBe(['a', 'b', 'c', 'd'].filter((b) => table.measuredMs(p, b) !== undefined).length);
        }
      }),
    );
  });
});
