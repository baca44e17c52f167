import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { REGIONS } from '../../../shared/regions.ts';
import { LatencyBook } from '../../../workers/routing/latency.ts';
import { OutlierDetector } from '../../../workers/routing/outliers.ts';
import { pickAttempts } from '../../../workers/routing/p2c.ts';
import { RttTable } from '../../../workers/routing/rtt.ts';
import { allowedRegions, drainMsOf, loadSince, type RoutingStats } from '../../../workers/routing/score.ts';
import { rankByScore } from '../../../workers/routing/rank.ts';
import { backend, ids, model, pop, seeded } from './fixtures.ts';

const none: RoutingStats = {};
const cold = (over = {}) => [model({ warm: false, ...over })];

describe('rankByScore: expected time to a complete answer', () => {
  it('prefers a warm backend a little farther over a cold one nearby', () => {
    // Jakarta PoP: a cold backend in Jakarta, a warm one in Singapore (~900 km).
    const list = [backend('cgk-cold', 'ap-southeast-3', { models: cold() }), backend('sin-warm', 'ap-southeast')];
    const ranked = rankByScore(list, { model: 'embed', from: pop('CGK') }, none, 0);
    expect(ids(ranked)).toEqual(['sin-warm', 'cgk-cold']);
    expect(ranked[1]!.coldMs).toBe(5_000); // default load time
    // Even a measured load time shorter than maxExtraMs does not bring the cold one ahead.
    const quick = rankByScore(list, { model: 'embed', from: pop('CGK') }, { coldStartMs: new Map([['embed', 5]]) }, 0);
    expect(ids(quick)).toEqual(['sin-warm', 'cgk-cold']);
    expect(quick[1]!.coldMs).toBe(150);
  });

  it('takes a cold backend only when every warm one is more than maxExtraMs worse', () => {
    const list = [backend('cgk-cold', 'ap-southeast-3', { models: cold() }), backend('iad-warm', 'us-east')];
    const stats: RoutingStats = { coldStartMs: new Map([['embed', 50]]) };
    // Jakarta -> Ashburn is ~16,000 km: ~330 ms of RTT, more than 150 ms of extra latency.
    expect(ids(rankByScore(list, { model: 'embed', from: pop('CGK') }, stats, 0))).toEqual(['cgk-cold', 'iad-warm']);
    // With the default (seconds of) load time the far warm one still wins.
    expect(ids(rankByScore(list, { model: 'embed', from: pop('CGK') }, none, 0))).toEqual(['iad-warm', 'cgk-cold']);
    // Cold backends can be left out altogether.
    expect(ids(rankByScore(list, { model: 'embed', from: pop('CGK') }, stats, 0, { allowCold: false }))).toEqual(['iad-warm']);
  });

  it('prefers a much nearer warm backend over a far one', () => {
    const list = [backend('iad', 'us-east'), backend('fra', 'eu-west'), backend('sin', 'ap-southeast')];
    expect(ids(rankByScore(list, { model: 'embed', from: pop('FRA') }, none, 0))).toEqual(['fra', 'iad', 'sin']);
    expect(ids(rankByScore(list, { model: 'embed', from: pop('SIN') }, none, 0))[0]).toBe('sin');
    expect(ids(rankByScore(list, { model: 'embed', from: pop('IAD') }, none, 0))[0]).toBe('iad');
  });

  it('makes a loaded backend lose to an idle one in the same region (heartbeat load and own pending calls)', () => {
    const busy = backend('busy', 'eu-west', { capacity: { slots: 4, inFlight: 4, queued: 8 } });
    const idle = backend('idle', 'eu-west');
    const ranked = rankByScore([busy, idle], { model: 'embed', from: pop('FRA') }, none, 0);
    expect(ids(ranked)).toEqual(['idle', 'busy']);
    // The request being placed counts in the queue it would join: (load + 1) / slots x service.
    expect(ranked[1]!.queueMs).toBe(((12 + 1) / 4) * 20);
    expect(ranked[0]!.queueMs).toBe((1 / 4) * 20);
    const a = backend('a', 'eu-west');
    const b = backend('b', 'eu-west');
    expect(ids(rankByScore([a, b], { model: 'embed', from: pop('FRA') }, { pending: new Map([['a', 3]]) }, 0))).toEqual(['b', 'a']);
  });

  it("reads a heartbeat's load as worked off since: a queue reported a while ago no longer keeps requests away", () => {
    // 4 slots, 20 ms per request: 12 reported at t = 0 are 8 at 20 ms, gone by 60 ms.
    const busy = backend('busy', 'eu-west', { capacity: { slots: 4, inFlight: 4, queued: 8 }, lastSeen: 0 });
    const idle = backend('idle', 'eu-west', { lastSeen: 0 });
    const at = (now: number) => rankByScore([busy, idle], { model: 'embed', from: pop('FRA') }, none, now).find((c) => c.backend.id === 'busy')!.queueMs;
    expect(at(0)).toBe(((12 + 1) / 4) * 20);
    expect(at(20)).toBe(((8 + 1) / 4) * 20);
    expect(at(60)).toBe((1 / 4) * 20);
    expect(at(5_000)).toBe((1 / 4) * 20);
    // This isolate's own calls in flight are not worked off: the heartbeat has not seen them.
    const pending: RoutingStats = { pending: new Map([['busy', 2]]) };
    expect(rankByScore([busy], { model: 'embed', from: pop('FRA') }, pending, 5_000)[0]!.queueMs).toBe(((2 + 1) / 4) * 20);
    // A backend whose answers take longer than its heartbeat's p50 says works its queue off at the measured pace, not the claimed one.
    const latency = new LatencyBook({ ewma: { decayMs: 1e12 } });
    latency.observe('busy', 'embed', 200, 0); // claims 20 ms, measured at 200
    const slow = rankByScore([busy], { model: 'embed', from: pop('FRA') }, { latency }, 200)[0]!;
    expect(slow.serviceMs).toBeCloseTo(200, 6);
    expect(slow.queueMs).toBeCloseTo(((8 + 1) / 4) * 200, 6); // 4 served in 200 ms, not all 12
  });

  it('loadSince: the reported load less what the slots served since, never below 0', () => {
    expect(loadSince(12, 4, 0, 20)).toBe(12);
    expect(loadSince(12, 4, -50, 20)).toBe(12); // a heartbeat stamped after now (clocks apart): as reported
    expect(loadSince(12, 4, 30, 20)).toBe(6);
    expect(loadSince(12, 4, 1_000, 20)).toBe(0);
    expect(loadSince(3, 0, 20, 20)).toBe(2); // no slots reported: one
    // drainMsOf: the slowest warm model's p50, as a queue may hold any of them; the slowest of all when none is warm.
    expect(drainMsOf({ models: [model({ p50Ms: 20 }), model({ name: 'chat', p50Ms: 300 })] })).toBe(300);
    expect(drainMsOf({ models: [model({ p50Ms: 20 }), model({ name: 'chat', p50Ms: 300, warm: false })] })).toBe(20);
    expect(drainMsOf({ models: [model({ p50Ms: 20, warm: false }), model({ name: 'chat', p50Ms: 300, warm: false })] })).toBe(300);
    expect(drainMsOf({ models: [] })).toBe(1);
  });

  it('lets measured RTTs and measured latency override the geometric and heartbeat guesses', () => {
    const list = [backend('fra', 'eu-west'), backend('ams', 'eu-west')];
    const rtt = new RttTable();
    rtt.observe('FRA', 'fra', 40); // a bad path, measured
    expect(ids(rankByScore(list, { model: 'embed', from: pop('FRA') }, { rtt }, 0))).toEqual(['ams', 'fra']);
    const latency = new LatencyBook();
    latency.observe('ams', 'embed', 300, 0); // a spike in ams's service time
    const ranked = rankByScore(list, { model: 'embed', from: pop('FRA') }, { latency }, 0);
    expect(ids(ranked)).toEqual(['fra', 'ams']);
    // The measured service time replaces the heartbeat's p50; the RTT stays the PoP's own.
    expect(ranked[1]!.serviceMs).toBeCloseTo(300, 6);
    const fromSin = rankByScore(list, { model: 'embed', from: pop('SIN') }, { latency }, 0);
    expect(fromSin[1]!.rttMs).toBeGreaterThan(ranked[1]!.rttMs + 100);
  });

  it('filters by model, version, readiness, expiry and ejection', () => {
    const detector = new OutlierDetector({ now: () => 0 });
    const list = [
      backend('ok', 'eu-west'),
      backend('v2', 'eu-west', { models: [model({ version: '2' })] }),
      backend('other', 'eu-west', { models: [model({ name: 'clf' })] }),
      backend('draining', 'eu-west', { ready: false }),
      backend('expired', 'eu-west', { expiresAt: 1_000 }),
      backend('ejected', 'eu-west'),
    ];
    for (let i = 0; i < 5; i++) detector.recordFailure(list[5]!, list.length);
    const from = pop('FRA');
    expect(ids(rankByScore(list, { model: 'embed', from }, { ejected: detector }, 1_000))).toEqual(['ok', 'v2']);
    expect(ids(rankByScore(list, { model: 'embed', version: '2', from }, { ejected: detector }, 1_000))).toEqual(['v2']);
    expect(ids(rankByScore(list, { model: 'embed', from }, none, 999)).sort()).toEqual(['ejected', 'expired', 'ok', 'v2']);
  });
});

describe('region pinning and data residency', () => {
  it('combines the pin and the residency; a pin outside the residency allows nothing', () => {
    expect(allowedRegions(undefined, undefined)).toBeUndefined();
    expect([...allowedRegions('eu-west', undefined)!]).toEqual(['eu-west']);
    expect([...allowedRegions('eu-west', new Set(['eu-west', 'us-east']))!]).toEqual(['eu-west']);
    expect(allowedRegions('ap-south', new Set(['eu-west']))!.size).toBe(0);
    const list = [backend('fra', 'eu-west'), backend('bom', 'ap-south')];
    expect(rankByScore(list, { model: 'embed', from: pop('BOM'), pin: 'ap-south', residency: new Set(['eu-west']) }, none, 0)).toEqual([]);
    expect(ids(rankByScore(list, { model: 'embed', from: pop('BOM'), residency: new Set(['eu-west']) }, none, 0))).toEqual(['fra']);
  });

  it('never ranks a backend outside the allowed regions (property)', () => {
    const regionIds = [...REGIONS.map((r) => r.id), 'nowhere'];
    const region = fc.constantFrom(...regionIds);
    const entry = fc.record({
      region,
      ready: fc.boolean(),
      warm: fc.boolean(),
      name: fc.constantFrom('embed', 'clf'),
      p50Ms: fc.integer({ min: 0, max: 500 }),
      inFlight: fc.nat(20),
      lat: fc.double({ min: -90, max: 90, noNaN: true }),
      lon: fc.double({ min: -180, max: 180, noNaN: true }),
    });
    const pops = ['FRA', 'SIN', 'IAD', 'GRU', 'CGK', 'JNB', 'SYD'];
    fc.assert(
      fc.property(
        fc.array(entry, { maxLength: 30 }),
        fc.option(region, { nil: undefined }),
        fc.option(fc.uniqueArray(region, { maxLength: 4 }), { nil: undefined }),
        fc.constantFrom(...pops),
        fc.integer(),
        (entries, pin, residencyList, code, seed) => {
          const list = entries.map((e, i) =>
            backend(`b${i}`, e.region, {
              ready: e.ready,
              lat: e.lat,
              lon: e.lon,
              models: [model({ name: e.name, warm: e.warm, p50Ms: e.p50Ms })],
              capacity: { slots: 4, inFlight: e.inFlight, queued: 0 },
            }),
          );
          const residency = residencyList ? new Set(residencyList) : undefined;
          const ranked = rankByScore(list, { model: 'embed', from: pop(code), pin, residency }, none, 0, {
            locate: (b) => b, // the backends' own (random) coordinates
          });
          const allowed = (r: string) => (pin === undefined || r === pin) && (residency === undefined || residency.has(r));
          for (const c of ranked) expect(allowed(c.backend.region)).toBe(true);
          if (pin !== undefined && residency !== undefined && !residency.has(pin)) expect(ranked).toEqual([]);
          // Nothing allowed and eligible is dropped either.
          const eligible = list.filter((b) => b.ready && b.models[0]!.name === 'embed' && allowed(b.region));
          expect(ranked.length).toBe(eligible.length);
          // The attempt order is the same candidates, reordered.
          const attempts = pickAttempts(ranked, seeded(seed));
          expect(ids(attempts).sort()).toEqual(ids(ranked).sort());
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe('proof of location in routing', () => {
  const refuted = { state: 'refuted' as const, evidence: { pop: 'FRA', minRttMs: 3, samples: 5, distanceKm: 10_270, reachKm: 350, failed: 'reach' as const } };
  const list = [
    backend('sin-liar', 'ap-southeast', { location: refuted }),
    backend('sin-honest', 'ap-southeast', { location: { state: 'verified' } }),
    backend('sin-new', 'ap-southeast', { location: { state: 'unverified' } }),
  ];

  it('gives a refuted backend no pinned or residency-restricted request', () => {
    const pinned = rankByScore(list, { model: 'embed', from: pop('SIN'), pin: 'ap-southeast' }, none, 0);
    expect(ids(pinned).sort()).toEqual(['sin-honest', 'sin-new']);
    const resident = rankByScore(list, { model: 'embed', from: pop('SIN'), residency: new Set(['ap-southeast', 'eu-west']) }, none, 0);
    expect(ids(resident).sort()).toEqual(['sin-honest', 'sin-new']);
    // The only backend there being refuted, a restricted request has none.
    expect(rankByScore([list[0]!], { model: 'embed', from: pop('SIN'), pin: 'ap-southeast' }, none, 0)).toEqual([]);
  });

  it('still ranks it for a request any region may serve', () => {
    expect(ids(rankByScore(list, { model: 'embed', from: pop('SIN') }, none, 0)).sort()).toEqual(['sin-honest', 'sin-liar', 'sin-new']);
  });
});

describe('penalties in routing (docs/api.md section 6.3)', () => {
  const list = () => [backend('fra-a', 'eu-west', { provider: 'a' }), backend('fra-b', 'eu-west', { provider: 'b' }), backend('iad-c', 'us-east', { provider: 'c' })];

  it('gives a quarantined provider no traffic at all', () => {
    const ranked = rankByScore(list(), { model: 'embed', from: pop('FRA') }, none, 0, { quarantined: new Set(['a']) });
    expect(ids(ranked)).toEqual(['fra-b', 'iad-c']);
  });

  it("multiplies a penalized provider's expected time, so it ranks behind an equal peer but still serves", () => {
    const plain = rankByScore(list(), { model: 'embed', from: pop('FRA') }, none, 0);
    const ranked = rankByScore(list(), { model: 'embed', from: pop('FRA') }, none, 0, { penalties: new Map([['a', 2]]) });
    expect(ids(ranked)).toEqual(['fra-b', 'fra-a', 'iad-c']);
    const a = ranked.find((s) => s.backend.id === 'fra-a')!;
    expect(a.expectedMs).toBeCloseTo(2 * plain.find((s) => s.backend.id === 'fra-a')!.expectedMs);
  });
});
