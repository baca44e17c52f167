/**
 * The simulator's report as markdown (bench/results/sim.md, included by
 * `npm run bench` in docs/benchmarks.md): the world, per policy and per
 * distance band the latency quantiles, failures, cold starts and cost; the
 * essay's table beside ours with a verdict per claim; the goals; the pictures;
 * the scale figures and the floor goal by load when measured.
 */

import type { PolicySummary } from '../stats.ts';
import type { ServiceTail } from '../tails.ts';

export interface ScalePoint {
  requests: number;
  backends: number;
  wallS: number;
  /** Wall time per request, us. */
  usPerRequest: number;
}

/** The mesh policy at one arrival rate (`--rates`): how busy its fleet was, its latency, and how near the floor its users got. */
export interface LoadPoint {
  ratePerSecond: number;
  summary: Pick<PolicySummary, 'overall' | 'byModel' | 'withinFloorShare' | 'busy'>;
  /** The full-knowledge reference's users within 1.3x of the floor at the same rate, when it ran. */
  fullKnowledgeWithinFloorShare?: number;
}

export interface SimReport {
  command: string;
  seed: number;
  requestsPerPolicy: number;
  ratePerSecond: number;
  /** `isolatesPerPop`: the mesh's isolates per PoP, when more than one. */
  /** `popBookExchangeMs`: how often the mesh's isolates exchange with their PoP's service book, when not the default (0: never). */
  world: { pops: number; cities: number; cloudBackends: number; sites: number; models: string; isolatesPerPop?: number; popBookExchangeMs?: number };
  summaries: PolicySummary[];
  /** Per model, p99 / p50 of the world's service times alone (sim/tails.ts): the p99 goal's reference. */
  serviceTails?: ServiceTail[];
  /** Per model, p99 / p50 of the requests' physical floors (sim/tails.ts `floorTails`): the same goal's other reference. */
  floorTails?: ServiceTail[];
  /** Picture paths relative to docs/. */
  pictures: { label: string; path: string }[];
  /** Said where the pictures are when there are none to show. */
  picturesNote?: string;
  scale?: { byRequests: ScalePoint[]; byBackends: ScalePoint[] };
  /** The mesh at each of `--rates`, on the same world and seed. */
  loads?: LoadPoint[];
  wallS: number;
}

const ms = (v: number) => (Number.isFinite(v) ? (v >= 1000 ? `${(v / 1000).toFixed(2)} s` : `${v.toFixed(0)} ms`) : '-');
const pct = (v: number) => (Number.isFinite(v) ? `${(v * 100).toFixed(v < 0.001 && v > 0 ? 3 : 1)}%` : '-');
const row = (cells: (string | number)[]) => `| ${cells.join(' | ')} |`;
const align = (n: number) => row(['---', ...Array.from({ length: n - 1 }, () => '---:')]);

/** The essay's table (centralized cloud, edge DePIN, hybrid orchestrators) and the policy that plays each. */
export const ESSAY = [
  { kind: 'Centralized cloud', median: [50, 150], p99: [200, 500], coldS: [0, 1], policies: ['cloud-us-east', 'cloud-nearest'] },
  { kind: 'Edge DePIN', median: [200, 500], p99: [1000, 5000], coldS: [5, 30], policies: ['random-node', 'nearest-node'] },
  { kind: 'Hybrid orchestrator', median: [100, 300], p99: [500, 2000], coldS: [2, 10], policies: ['mesh-no-hedge', 'mesh'] },
] as const;

const within = (v: number, [lo, hi]: readonly [number, number]) => (!Number.isFinite(v) ? 'n/a' : v < lo ? 'below' : v > hi ? 'above' : 'within');

export interface GoalVerdict {
  goal: string;
  measured: string;
  met: boolean | undefined;
}

/** The issue's goals for the mesh, judged from the summaries (undefined: a policy needed was not run). */
export function goals(summaries: readonly PolicySummary[], tails: { service?: readonly ServiceTail[]; floors?: readonly ServiceTail[] } = {}): GoalVerdict[] {
  const by = new Map(summaries.map((s) => [s.policy, s]));
  const mesh = by.get('mesh');
  const reference = by.get('full-knowledge');
  const out: GoalVerdict[] = [];
  out.push({
    goal: 'median within 1.3x of the physical floor for 95% of users',
    // The floor is each request's best backend idle: how busy the fleet was, and what routing that knew everything reached, say how far that is from reach.
    measured: mesh
      ? `${pct(mesh.withinFloorShare)} of users${mesh.busy ? ` (its fleet's slots ${pct(mesh.busy.fleet)} busy)` : ''}${reference ? `; full knowledge (a reference): ${pct(reference.withinFloorShare)}` : ''}`
      : 'mesh not run',
    met: mesh ? mesh.withinFloorShare >= 0.95 : undefined,
  });
  out.push({
    goal: 'p99 under 2x the median (per model)',
    measured: mesh
      ? mesh.byModel
          .map((m) => {
            const alone = tails.service?.find((t) => t.model === m.model);
            const floor = tails.floors?.find((t) => t.model === m.model);
            const refs = [alone && `its service times alone: ${alone.ratio.toFixed(1)}x`, floor && `its floors: ${floor.ratio.toFixed(1)}x`].filter(Boolean);
            return `${m.model} ${(m.p99 / m.p50).toFixed(1)}x${refs.length ? ` (${refs.join('; ')})` : ''}`;
          })
          .join(', ')
      : 'mesh not run',
    met: mesh ? mesh.byModel.every((m) => m.p99 < 2 * m.p50) : undefined,
  });
  for (const baseline of ['cloud-nearest', 'cloud-us-east']) {
    const cloud = by.get(baseline);
    const far = (s: PolicySummary) => s.bands.filter((b) => b.label === '1000-3000 km' || b.label === '> 3000 km');
    if (!mesh || !cloud) {
      out.push({ goal: `users > 1000 km from a cloud region: median >= 40 ms better than ${baseline}`, measured: 'not run', met: undefined });
      continue;
    }
    const gains = far(mesh).map((b, i) => ({ label: b.label, gain: far(cloud)[i]!.p50 - b.p50 }));
    out.push({
      goal: `users > 1000 km from a cloud region: median >= 40 ms better than ${baseline}`,
      measured: gains.map((g) => `${g.label}: ${g.gain >= 0 ? '' : '+'}${Math.abs(g.gain).toFixed(0)} ms ${g.gain >= 0 ? 'better' : 'worse'}`).join('; '),
      met: gains.every((g) => g.gain >= 40),
    });
  }
  return out;
}

/** The header's note on the PoP's service book, when the run did not use the default exchange. */
function popBookNote(everyMs: number | undefined): string {
  if (everyMs === undefined) return '';
  return everyMs === 0 ? ' (no service book shared per PoP)' : ` (the PoP's service book exchanged every ${everyMs} ms)`;
}

export function simMarkdown(report: SimReport): string {
  const { summaries } = report;
  const lines: string[] = [];
  lines.push(
    `\`${report.command}\`: seed ${report.seed}, ${report.requestsPerPolicy.toLocaleString('en-US')} requests per policy at ${report.ratePerSecond.toLocaleString('en-US')} requests/s, ` +
      `${report.world.pops} PoPs${(report.world.isolatesPerPop ?? 1) > 1 ? ` (the mesh: ${report.world.isolatesPerPop} isolates each)` : ''}${popBookNote(report.world.popBookExchangeMs)}, users from ${report.world.cities.toLocaleString('en-US')} cities by population, ` +
      `${report.world.cloudBackends} cloud-region backends and ${report.world.sites} sites; models ${report.world.models}. Run time ${report.wallS.toFixed(0)} s.`,
    '',
  );
  lines.push('### Per policy, all users', '');
  lines.push(row(['policy', 'p50', 'p90', 'p99', 'p99 / p50', 'failed', 'cold starts', 'hedged', 'retried', 'cost / 1k requests', 'users within 1.3x of floor', 'sim run time']));
  lines.push(align(12));
  for (const s of summaries) {
    lines.push(
      row([
        s.label,
        ms(s.overall.p50),
        ms(s.overall.p90),
        ms(s.overall.p99),
        (s.overall.p99 / s.overall.p50).toFixed(1),
        pct(s.failedShare),
        pct(s.coldShare),
        pct(s.hedgedShare),
        pct(s.retriedShare),
        `$${s.costPer1k.toFixed(4)}`,
        pct(s.withinFloorShare),
        `${s.wallS.toFixed(1)} s`,
      ]),
    );
  }
  lines.push('');
  const models = summaries[0]?.byModel ?? [];
  lines.push('### Per model', '');
  lines.push('Each cell: p50 / p90 / p99.', '');
  lines.push(row(['policy', ...models.map((m) => m.model)]));
  lines.push(align(models.length + 1));
  for (const s of summaries) lines.push(row([s.label, ...s.byModel.map((m) => `${ms(m.p50)} / ${ms(m.p90)} / ${ms(m.p99)}`)]));
  lines.push('');
  const ran = summaries.filter((s) => s.executed.length > 0);
  if (ran.length) {
    lines.push('### Where each model ran', '');
    lines.push(
      'On the simulated backends (the centralized baselines run their own fleet, scaled to the load, with no queue): each kind\'s share of the model\'s requests, its mean batch, and the mean wait in the backend\'s queue; then the share of the fleet\'s slot time spent computing (a batch holds one slot).',
      '',
    );
    const names = ran[0]!.executed.map((e) => e.model);
    lines.push(row(['policy', ...names, 'slots busy']));
    lines.push(align(names.length + 2));
    const cell = (k: PolicySummary['executed'][number]['kinds'][number]) =>
      `${k.kind} ${pct(k.share)}${k.share > 0 ? ` (batch ${k.meanBatch.toFixed(2)}, wait ${ms(k.meanWaitMs)})` : ''}`;
    const busy = (b: PolicySummary['busy']) => (b ? `${pct(b.fleet)} (cloud ${pct(b.cloud)}, sites ${pct(b.site)})` : '-');
    for (const s of ran) lines.push(row([s.label, ...names.map((n) => (s.executed.find((e) => e.model === n)?.kinds ?? []).map(cell).join('; ')), busy(s.busy)]));
    lines.push('');
  }
  const scored = summaries.filter((s) => s.estimates.length > 0);
  if (scored.length) {
    lines.push('### How the score predicted', '');
    lines.push(
      'For the policies that score their candidates: the first attempts that answered (no retry, not the hedge), per kind of backend: how many, the mean time the score expected and the mean time the call took, from the PoP to the backend and back. A score well under what its calls take, for one kind, is load the routing does not see.',
      '',
    );
    const names = scored[0]!.estimates.map((e) => e.model);
    lines.push(row(['policy', ...names]));
    lines.push(align(names.length + 1));
    const cell = (k: PolicySummary['estimates'][number]['kinds'][number]) =>
      k.calls > 0 ? `${k.kind}: expected ${ms(k.meanExpectedMs)}, took ${ms(k.meanTookMs)}` : `${k.kind}: none`;
    for (const s of scored) lines.push(row([s.label, ...names.map((n) => (s.estimates.find((e) => e.model === n)?.kinds ?? []).map(cell).join('; '))]));
    lines.push('');
  }
  const bands = summaries[0]?.bands ?? [];
  lines.push('### By the user\'s distance to the nearest cloud region', '');
  lines.push(`Requests per band: ${bands.map((b) => `${b.label} ${pct(b.requests / (summaries[0]?.requests || 1))}`).join(', ')}. Each cell: p50 / p90 / p99 (failed, cold starts).`, '');
  lines.push(row(['policy', ...bands.map((b) => b.label)]));
  lines.push(align(bands.length + 1));
  for (const s of summaries) lines.push(row([s.label, ...s.bands.map((b) => `${ms(b.p50)} / ${ms(b.p90)} / ${ms(b.p99)} (${pct(b.failedShare)}, ${pct(b.coldShare)})`)]));
  lines.push('');
  if (bands.length) {
    lines.push(
      "The physical floor per band (the same arrivals for every policy; no queue, no jitter, no edge time), median: through the user's PoP to the best-placed backend with the model warm, straight to the nearest cloud region, and the difference: about the most any routing through the PoP gains on the nearest region at the median.",
      '',
    );
    lines.push(row(['floor', ...bands.map((b) => b.label)]));
    lines.push(align(bands.length + 1));
    lines.push(row(['through the PoP', ...bands.map((b) => ms(b.floorViaPopP50))]));
    lines.push(row(['straight to the nearest region', ...bands.map((b) => ms(b.floorDirectP50))]));
    lines.push(row(['difference', ...bands.map((b) => ms(b.floorDirectP50 - b.floorViaPopP50))]));
    lines.push('');
  }

  lines.push("### The essay's table beside the simulation", '');
  lines.push(row(['essay: kind', 'claimed median', 'claimed p99', 'claimed cold start', 'simulated policy', 'median', 'p99', 'cold start p50', 'verdict']));
  lines.push(align(9));
  const by = new Map(summaries.map((s) => [s.policy, s]));
  for (const e of ESSAY) {
    for (const name of e.policies) {
      const s = by.get(name);
      if (!s) continue;
      const verdict = `median ${within(s.overall.p50, e.median)}, p99 ${within(s.overall.p99, e.p99)}, cold ${within(s.coldP50 / 1000, e.coldS)}`;
      lines.push(
        row([e.kind, `${e.median[0]}-${e.median[1]} ms`, `${e.p99[0] >= 1000 ? `${e.p99[0] / 1000}-${e.p99[1] / 1000} s` : `${e.p99[0]}-${e.p99[1]} ms`}`, `${e.coldS[0] === 0 ? '< ' : `${e.coldS[0]}-`}${e.coldS[1]} s`, s.label, ms(s.overall.p50), ms(s.overall.p99), Number.isFinite(s.coldP50) ? ms(s.coldP50) : 'none', verdict]),
      );
    }
  }
  lines.push('');
  lines.push('### Goals for the mesh', '');
  lines.push(row(['goal', 'measured', 'met']));
  lines.push('| --- | --- | --- |');
  for (const g of goals(summaries, { ...(report.serviceTails ? { service: report.serviceTails } : {}), ...(report.floorTails ? { floors: report.floorTails } : {}) })) lines.push(row([g.goal, g.measured, g.met === undefined ? 'not judged' : g.met ? 'yes' : '**no**']));
  lines.push('');
  if (report.serviceTails?.length) {
    lines.push(
      "*Its service times alone*: p99 / p50 of one request's service time on a reference GPU with the world's stalls, and no network, queue, " +
        'batching or slower site (sim/tails.ts). No policy gets a model under it without a second execution (a hedge or a retry).',
      '',
    );
  }
  if (report.floorTails?.length) {
    lines.push(
      "*Its floors*: p99 / p50 of the model's requests' physical floors, each its best-placed backend idle with no jitter (sim/tails.ts): " +
        'where the users are and their last miles alone. A policy whose answers sit near their floors has about this ratio, however it routes.',
      '',
    );
  }
  if (report.pictures.length || report.picturesNote) {
    lines.push('### Pictures', '');
    for (const p of report.pictures) lines.push(`![${p.label}](${p.path})`, '');
    if (report.picturesNote) lines.push(report.picturesNote, '');
  }
  if (report.scale) {
    lines.push('### Scale: run time of the mesh policy', '');
    lines.push(row(['requests', 'backends', 'run time', 'us / request']));
    lines.push(align(4));
    for (const p of [...report.scale.byRequests, ...report.scale.byBackends]) {
      lines.push(row([p.requests.toLocaleString('en-US'), p.backends.toLocaleString('en-US'), `${p.wallS.toFixed(1)} s`, p.usPerRequest.toFixed(1)]));
    }
    lines.push('');
  }
  if (report.loads?.length) {
    lines.push('### The floor goal by load: the mesh at each arrival rate', '');
    lines.push(
      `The same world, seed and ${report.requestsPerPolicy.toLocaleString('en-US')} requests at each rate. The floor is each request's best backend, idle: the busier the fleet, the fewer requests get theirs. Slots busy: the share of the mesh fleet's slot time spent computing while requests arrived (cloud, sites).`,
      '',
    );
    const models = report.loads[0]!.summary.byModel.map((m) => m.model);
    const reference = report.loads.some((l) => l.fullKnowledgeWithinFloorShare !== undefined);
    lines.push(row(['requests/s', 'slots busy', 'p50 / p99', ...models.map((m) => `${m} p50 / p99`), 'users within 1.3x of the floor', ...(reference ? ['the same, full knowledge (a reference)'] : [])]));
    lines.push(align(models.length + 4 + (reference ? 1 : 0)));
    for (const { ratePerSecond, summary: s, fullKnowledgeWithinFloorShare: known } of report.loads) {
      const busy = s.busy ? `${pct(s.busy.fleet)} (${pct(s.busy.cloud)}, ${pct(s.busy.site)})` : '-';
      const model = (name: string) => {
        const m = s.byModel.find((x) => x.model === name);
        return m ? `${ms(m.p50)} / ${ms(m.p99)}` : '-';
      };
      lines.push(
        row([ratePerSecond.toLocaleString('en-US'), busy, `${ms(s.overall.p50)} / ${ms(s.overall.p99)}`, ...models.map(model), pct(s.withinFloorShare), ...(reference ? [known === undefined ? '-' : pct(known)] : [])]),
      );
    }
    lines.push('');
  }
  return `${lines.join('\n')}\n`;
}
