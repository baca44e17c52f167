import { describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG } from '../../sim/config.ts';
import { COLD, FAILED, RETRIED } from '../../sim/run.ts';
import { FRANKFURT, quietConfig, run as runIn } from './scenarios.ts';
import type { PolicyName } from '../../sim/policies/index.ts';
import type { SimConfig } from '../../sim/config.ts';

/** Runs in the one-city world unless `world` says the whole one. */
const run = (config: SimConfig, policy: PolicyName, world?: 'world') => runIn(config, policy, world ? undefined : [FRANKFURT]);

const count = (flags: Uint8Array, bit: number) => flags.reduce((n, f) => n + (f & bit ? 1 : 0), 0);

/** Two sites at Frankfurt, the first of which fails at 5 s for good, refusing connections or hanging. */
const oneDies = (mode: 'refusing' | 'hanging', requests: number, ratePerSecond: number) =>
  quietConfig({ requests, ratePerSecond, sites: 2, faults: { scripted: [{ backend: 0, atMs: 5_000, ms: 3_600_000, mode }] } });

describe('one simulation run', () => {
  it('gives one user next to one idle backend its physical floor plus the edge overhead, for every policy through the PoP', () => {
    const config = quietConfig();
    for (const policy of ['mesh', 'mesh-no-hedge', 'nearest-node', 'random-node', 'full-knowledge'] as const) {
      const r = run(config, policy);
      expect(count(r.flags, FAILED)).toBe(0);
      for (let i = 0; i < r.requests; i++) expect(r.latency[i]).toBeCloseTo(r.floor[i]! + config.edge.overheadMs, 3);
    }
  });

  it("records what the mesh's score expected of each first attempt that answered, and what it took; a policy that does not score records nothing", () => {
    const config = quietConfig();
    const calls = (r: ReturnType<typeof run>) => [...r.estimates.cloud, ...r.estimates.site].reduce((n, e) => n + e.n, 0);
    const mesh = run(config, 'mesh');
    expect(count(mesh.flags, FAILED)).toBe(0);
    expect(calls(mesh)).toBe(mesh.requests);
    for (const e of [...mesh.estimates.cloud, ...mesh.estimates.site].filter((x) => x.n > 0)) {
      expect(e.expectedMs / e.n).toBeGreaterThan(0);
      // An idle backend next to the user: the call took about what was expected (the score's geometric RTT and queue term err high).
      expect(e.tookMs / e.n).toBeLessThanOrEqual(e.expectedMs / e.n);
    }
    expect(calls(run(config, 'random-node'))).toBe(0);
  });

  it('is deterministic for a seed, and another seed gives other arrivals', () => {
    const config = { ...DEFAULT_CONFIG, requests: 3_000, ratePerSecond: 2_000, sites: { ...DEFAULT_CONFIG.sites, count: 120 } };
    const a = run(config, 'mesh', 'world');
    const b = run(config, 'mesh', 'world');
    expect(Buffer.from(a.latency.buffer).equals(Buffer.from(b.latency.buffer))).toBe(true);
    expect(Buffer.from(a.flags.buffer).equals(Buffer.from(b.flags.buffer))).toBe(true);
    const c = run({ ...config, seed: 2 }, 'mesh', 'world');
    expect(Buffer.from(a.city.buffer).equals(Buffer.from(c.city.buffer))).toBe(false);
  });

  it('counts the slot time started while requests arrived, over the arrivals\' span, apart from the drain after', () => {
    const config = { ...DEFAULT_CONFIG, requests: 3_000, ratePerSecond: 2_000, sites: { ...DEFAULT_CONFIG.sites, count: 120 } };
    const r = run(config, 'mesh', 'world');
    // 3,000 arrivals at 2,000/s: about 1.5 s of them, then the last answers.
    expect(r.arrivalsMs).toBeGreaterThan(1_200);
    expect(r.arrivalsMs).toBeLessThan(1_800);
    expect(r.simulatedMs).toBeGreaterThan(r.arrivalsMs);
    const arriving = r.busyArrivingMs.cloud + r.busyArrivingMs.site;
    expect(arriving).toBeGreaterThan(0);
    // Executions started after the last arrival count in the cost, not in the busy share.
    expect(arriving).toBeLessThan(r.busyMs.cloud + r.busyMs.site);
    expect(r.busyArrivingMs.site).toBeLessThanOrEqual(r.busyMs.site);
  });

  it('meets the same arrivals under every policy', () => {
    const config = { ...DEFAULT_CONFIG, requests: 2_000, ratePerSecond: 2_000, sites: { ...DEFAULT_CONFIG.sites, count: 60 } };
    const mesh = run(config, 'mesh', 'world');
    const cloud = run(config, 'cloud-nearest', 'world');
    expect(Array.from(cloud.city)).toEqual(Array.from(mesh.city));
    expect(Array.from(cloud.model)).toEqual(Array.from(mesh.model));
  });

  it('loses no request to a dead backend under the mesh when another is warm; a naive marketplace does', () => {
    const config = oneDies('refusing', 400, 10);
    const mesh = run(config, 'mesh');
    expect(count(mesh.flags, FAILED)).toBe(0);
    expect(count(mesh.flags, RETRIED)).toBeGreaterThan(0); // it did meet the dead backend
    const naive = run(config, 'random-node');
    expect(count(naive.flags, FAILED)).toBeGreaterThan(0);
  });

  it('has each isolate of a PoP learn a dead backend for itself, so more requests meet it with more isolates, and loses none', () => {
    const config = oneDies('refusing', 400, 20);
    const one = run(config, 'mesh');
    const eight = run({ ...config, edge: { ...config.edge, isolatesPerPop: 8 } }, 'mesh');
    expect(count(one.flags, FAILED)).toBe(0);
    expect(count(eight.flags, FAILED)).toBe(0);
    // The lone isolate meets it until outlier ejection takes it out (five failures in a row); each of the eight does the same.
    expect(count(one.flags, RETRIED)).toBeGreaterThan(0);
    expect(count(eight.flags, RETRIED)).toBe(8 * count(one.flags, RETRIED));
  });

  it('gets past a hung backend by timeout and retry without hedging, sooner with hedges, never failing the request', () => {
    const config = oneDies('hanging', 300, 10);
    const waited = (latency: Float32Array) => latency.reduce((n, ms) => n + (ms >= config.edge.timeoutMs ? 1 : 0), 0);
    const plain = run(config, 'mesh-no-hedge');
    expect(count(plain.flags, FAILED)).toBe(0);
    expect(waited(plain.latency)).toBeGreaterThan(0); // some waited for the timeout before the ejection
    expect(waited(plain.latency)).toBeLessThan(20); // the ejection stops it after a few
    const hedged = run(config, 'mesh');
    expect(count(hedged.flags, FAILED)).toBe(0);
    expect(waited(hedged.latency)).toBeLessThan(waited(plain.latency));
  });

  it('with full knowledge, queues a request only when every slot is taken (the reference the mesh is measured against)', () => {
    // Three sites of 4 slots at the user's city (within a few km: under 0.1 ms apart); at 300 requests/s of 12 ms about 3.6 slots
    // are busy on average: one site alone often queues, all twelve are rarely taken at once.
    const base = quietConfig({ requests: 3_000, ratePerSecond: 300, sites: 3 });
    const config = { ...base, sites: { ...base.sites, slotsMin: 4, slotsMax: 4 } };
    const waited = (r: ReturnType<typeof run>) => r.latency.reduce((n, ms, i) => n + (ms > r.floor[i]! + config.edge.overheadMs + 0.5 ? 1 : 0), 0);
    const known = run(config, 'full-knowledge');
    expect(count(known.flags, FAILED)).toBe(0);
    expect(waited(known)).toBeLessThanOrEqual(3);
    // The nearest node, always the same one, makes many wait behind its four slots.
    expect(waited(run(config, 'nearest-node'))).toBeGreaterThan(300);
  });

  it('makes a naive policy pay a cold start where the model is not warm, and the mesh route around it', () => {
    const config = quietConfig({ requests: 100, ratePerSecond: 5, sites: 3 });
    const cold = { ...config, sites: { ...config.sites, warmChance: 0 } };
    // warmChance 0: each site starts with one model warm, the only one there is; so add a second model nobody has warm.
    const twoModels = { ...cold, models: [...cold.models, { name: 'chat', share: 1, serviceMs: 50, serviceSigma: 0, loadMs: 2_000 }] };
    const naive = run(twoModels, 'nearest-node');
    expect(count(naive.flags, COLD)).toBeGreaterThan(0);
    const mesh = run(twoModels, 'mesh');
    expect(count(mesh.flags, COLD)).toBe(0);
  });
});
