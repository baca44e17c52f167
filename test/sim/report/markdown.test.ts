import { describe, expect, it } from 'vitest';
import { goals, simMarkdown, type SimReport } from '../../../sim/report/markdown.ts';
import type { PolicySummary } from '../../../sim/stats.ts';

function summary(policy: string, p50: number, p99: number, farP50: number, within: number, scored = false, busy?: PolicySummary['busy']): PolicySummary {
  const band = (label: string, v: number) => ({ label, requests: 10, failedShare: 0, coldShare: 0, p50: v, p90: v, p99: v * 1.5, floorViaPopP50: v / 2, floorDirectP50: v / 2 + 25 });
  return {
    policy,
    label: policy,
    requests: 40,
    overall: { p50, p90: p50, p99 },
    failedShare: 0,
    coldShare: 0,
    hedgedShare: 0,
    retriedShare: 0,
    coldP50: Number.NaN,
    costPer1k: 0.01,
    bands: [band('< 500 km', p50), band('500-1000 km', p50), band('1000-3000 km', farP50), band('> 3000 km', farP50)],
    byModel: [{ model: 'embed', requests: 40, failedShare: 0, p50, p90: p50, p99 }],
    withinFloorShare: within,
    floorRatioP50: 1.1,
    perPop: [],
    executed: [{ model: 'embed', kinds: [{ kind: 'cloud', share: 0.4, meanBatch: 1.25, meanWaitMs: 6.6 }, { kind: 'site', share: 0.6, meanBatch: 1.84, meanWaitMs: 88.7 }] }],
    ...(busy ? { busy } : {}),
    estimates: scored
      ? [{ model: 'embed', kinds: [{ kind: 'cloud', calls: 0, meanExpectedMs: Number.NaN, meanTookMs: Number.NaN }, { kind: 'site', calls: 9, meanExpectedMs: 31.2, meanTookMs: 44.9 }] }]
      : [],
    simulatedS: 1,
    wallS: 1,
    placementLoads: 0,
  };
}

/** A report of a small world, with `fields` over its defaults. */
function reportOf(fields: Partial<SimReport> & Pick<SimReport, 'command' | 'summaries'>): SimReport {
  return { seed: 1, requestsPerPolicy: 40, ratePerSecond: 100, world: { pops: 308, cities: 3, cloudBackends: 1, sites: 2, models: 'embed' }, pictures: [], wallS: 3, ...fields };
}

describe('the simulator report', () => {
  it('judges the goals from the summaries', () => {
    const verdicts = goals([summary('cloud-nearest', 100, 300, 150, 0.2), summary('mesh', 60, 110, 100, 0.96)]);
    expect(verdicts.map((g) => g.met)).toEqual([true, true, true, undefined]);
    const worse = goals([summary('cloud-nearest', 100, 300, 120, 0.2), summary('mesh', 60, 130, 100, 0.9)]);
    expect(worse.map((g) => g.met)).toEqual([false, false, false, undefined]);
    expect(worse[2]!.measured).toContain('20 ms better');
    // Beside each model's ratio, what its service times alone allow.
    const withTails = goals([summary('mesh', 60, 130, 100, 0.9)], { service: [{ model: 'embed', p50: 12, p99: 31, ratio: 31 / 12 }] });
    expect(withTails[1]!.measured).toBe('embed 2.2x (its service times alone: 2.6x)');
    // And what its requests' floors allow: the users' places and last miles.
    const withFloors = goals([summary('mesh', 60, 130, 100, 0.9)], { service: [{ model: 'embed', p50: 12, p99: 31, ratio: 31 / 12 }], floors: [{ model: 'embed', p50: 36, p99: 83, ratio: 83 / 36 }] });
    expect(withFloors[1]!.measured).toBe('embed 2.2x (its service times alone: 2.6x; its floors: 2.3x)');
    expect(goals([summary('mesh', 60, 130, 100, 0.9)], { floors: [{ model: 'embed', p50: 36, p99: 83, ratio: 83 / 36 }] })[1]!.measured).toBe('embed 2.2x (its floors: 2.3x)');
    // Beside the floor share, what routing that knew every queue reached on the same arrivals; it judges nothing.
    const known = goals([summary('mesh', 60, 130, 100, 0.5), summary('full-knowledge', 55, 120, 90, 0.93)]);
    expect(known[0]!.measured).toBe('50.0% of users; full knowledge (a reference): 93.0%');
    expect(known[0]!.met).toBe(false);
  });

  it('shows every policy, the essay beside them, the goals and the pictures', () => {
    const report = reportOf({
      command: 'npm run sim -- --quick',
      summaries: [summary('cloud-us-east', 250, 800, 300, 0), summary('random-node', 240, 29_000, 240, 0), summary('mesh', 60, 110, 100, 0.96, true, { cloud: 0.231, site: 0.093, fleet: 0.126 })],
      serviceTails: [{ model: 'embed', p50: 12, p99: 31, ratio: 31 / 12 }],
      floorTails: [{ model: 'embed', p50: 36, p99: 83, ratio: 83 / 36 }],
      pictures: [{ label: 'Map', path: 'sim/map-mesh.svg' }],
    });
    const md = simMarkdown(report);
    expect(md).toContain('`npm run sim -- --quick`');
    // The mesh's isolates per PoP, named when more than one.
    expect(md).toContain('308 PoPs, users from');
    expect(simMarkdown({ ...report, world: { ...report.world, isolatesPerPop: 4 } })).toContain('308 PoPs (the mesh: 4 isolates each), users from');
    expect(md).toMatch(/\| Centralized cloud \| 50-150 ms \| 200-500 ms \| < 1 s \| cloud-us-east \| 250 ms \| 800 ms \| none \| median above, p99 above/);
    expect(md).toMatch(/\| Edge DePIN .* random-node \| 240 ms \| 29.00 s .* median within, p99 above/);
    expect(md).toContain('![Map](sim/map-mesh.svg)');
    expect(md).toContain('| median within 1.3x of the physical floor for 95% of users | 96.0% of users (its fleet\'s slots 12.6% busy) | yes |');
    expect(md).toContain('| p99 under 2x the median (per model) | embed 1.8x (its service times alone: 2.6x; its floors: 2.3x) | yes |');
    expect(md).toContain('*Its service times alone*');
    expect(md).toContain('*Its floors*');
    expect(md).toContain('### Where each model ran');
    // Then how busy the simulated fleet was; '-' for a policy summarised without it.
    expect(md).toContain('| mesh | cloud 40.0% (batch 1.25, wait 7 ms); site 60.0% (batch 1.84, wait 89 ms) | 12.6% (cloud 23.1%, sites 9.3%) |');
    expect(md).toContain('| random-node | cloud 40.0% (batch 1.25, wait 7 ms); site 60.0% (batch 1.84, wait 89 ms) | - |');
    // The floor per band, through the PoP and straight to the nearest region, from the first policy's arrivals (the same for all).
    expect(md).toContain('| through the PoP | 125 ms | 125 ms | 150 ms | 150 ms |');
    expect(md).toContain('| difference | 25 ms | 25 ms | 25 ms | 25 ms |');
    // Only the policy that scores has a row in how its score predicted.
    expect(md).toContain('### How the score predicted');
    expect(md).toContain('| mesh | cloud: none; site: expected 31 ms, took 45 ms |');
    expect(md).not.toMatch(/\| random-node \| cloud: /);
  });

  it('shows the floor goal by load when the mesh ran at several rates, and nothing of it when not', () => {
    const at = (p50: number, within: number, busy?: PolicySummary['busy']) => {
      const s = summary('mesh', p50, p50 * 3, p50, within, false, busy);
      return { overall: s.overall, byModel: s.byModel, withinFloorShare: s.withinFloorShare, ...(s.busy ? { busy: s.busy } : {}) };
    };
    const report = reportOf({
      command: 'npm run sim -- --policies mesh --rates 1000,20000',
      requestsPerPolicy: 200_000,
      ratePerSecond: 20_000,
      summaries: [summary('mesh', 86, 950, 90, 0.15)],
      loads: [
        { ratePerSecond: 1_000, summary: at(71, 0.95, { cloud: 0.042, site: 0.01, fleet: 0.018 }) },
        { ratePerSecond: 20_000, summary: at(86, 0.151) },
      ],
    });
    const md = simMarkdown(report);
    expect(md).toContain('### The floor goal by load: the mesh at each arrival rate');
    expect(md).toContain('200,000 requests at each rate');
    expect(md).toContain('| requests/s | slots busy | p50 / p99 | embed p50 / p99 | users within 1.3x of the floor |');
    expect(md).toContain('| 1,000 | 1.8% (4.2%, 1.0%) | 71 ms / 213 ms | 71 ms / 213 ms | 95.0% |');
    expect(md).toContain('| 20,000 | - | 86 ms / 258 ms | 86 ms / 258 ms | 15.1% |');
    // With the full-knowledge reference at each rate, its share beside the mesh's.
    const withReference = simMarkdown({ ...report, loads: report.loads!.map((l, i) => ({ ...l, fullKnowledgeWithinFloorShare: [0.99, 0.9][i]! })) });
    expect(withReference).toContain('| users within 1.3x of the floor | the same, full knowledge (a reference) |');
    expect(withReference).toContain('| 20,000 | - | 86 ms / 258 ms | 86 ms / 258 ms | 15.1% | 90.0% |');
    const { loads: _, ...without } = report;
    expect(simMarkdown(without)).not.toContain('floor goal by load');
  });
});
