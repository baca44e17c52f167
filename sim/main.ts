/**
 * `npm run sim`: runs the world simulator for each policy on the same
 * arrivals and writes bench/results/sim.json, bench/results/sim.md (the
 * report, included in docs/benchmarks.md by `npm run bench`) and the pictures
 * under docs/sim/ (a `--quick` run: under bench/results/sim/). `--quick` for
 * a few minutes; `--scale` also measures how the run time grows with
 * requests and with backends; `--rates a,b,...` runs the mesh policy and the
 * full-knowledge reference again at each arrival rate (the floor goal by load).
 */

import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { DEFAULT_CONFIG, type SimConfig } from './config.ts';
import { Network } from './network.ts';
import { createPolicy, isPolicyName, POLICY_NAMES, type PolicyName } from './policies/index.ts';
import { cdfSvg } from './report/cdf.ts';
import { worldMapSvg } from './report/map.ts';
import { simMarkdown, type ScalePoint, type SimReport } from './report/markdown.ts';
import { FAILED, popModelFloors, runPolicy, type RunRecord } from './run.ts';
import { summarise } from './stats.ts';
import { floorTails, serviceTails } from './tails.ts';
import { buildWorld, loadCities } from './world.ts';

const ROOT = path.resolve(import.meta.dirname, '..');
const USAGE = 'usage: npm run sim -- [--quick] [--requests N] [--rate R] [--seed S] [--sites N] [--isolates N] [--pop-book MS] [--policies a,b] [--scale] [--rates R1,R2,...]';
/** Most arrival rates one `--rates` may ask for (each is a run of the mesh policy and one of the reference). */
const MAX_RATES = 12;

function fail(message: string): never {
  console.error(`sim: ${message}\n${USAGE}`);
  process.exit(2);
}

function positive(name: string, raw: string | undefined, fallback: number, max: number): number {
  if (raw === undefined) return fallback;
  const n = Number(raw.replace(/_/g, ''));
  const real = name === 'rate' || name === 'rates';
  if (!Number.isFinite(n) || n <= 0 || n > max || (!real && !Number.isInteger(n))) fail(`--${name} must be a positive ${real ? 'number' : 'integer'} up to ${max}, got ${JSON.stringify(raw)}`);
  return n;
}

/** A progress line on stderr: redrawn in place on a terminal, every 10% otherwise. */
function progressBar(label: string): (done: number, total: number) => void {
  const started = performance.now();
  let lastTenth = -1;
  return (done, total) => {
    const share = done / total;
    const elapsed = (performance.now() - started) / 1000;
    const eta = share > 0 ? (elapsed / share) * (1 - share) : 0;
    if (process.stderr.isTTY) {
      const width = 30;
      const bar = '#'.repeat(Math.round(share * width)).padEnd(width, '.');
      process.stderr.write(`\r  ${label.padEnd(16)} [${bar}] ${(share * 100).toFixed(0).padStart(3)}%  ${elapsed.toFixed(0)} s, ~${eta.toFixed(0)} s left `);
      if (done === total) process.stderr.write('\n');
    } else {
      const tenth = Math.floor(share * 10);
      if (tenth !== lastTenth) {
        lastTenth = tenth;
        console.error(`  ${label}: ${(share * 100).toFixed(0)}% (${done.toLocaleString('en-US')} requests, ${elapsed.toFixed(0)} s)`);
      }
    }
  };
}

/** Runs the mesh policy at `config` and returns its run time. */
function timeRun(config: SimConfig): ScalePoint {
  const world = buildWorld(config);
  const network = new Network(config, world);
  const record = runPolicy(config, world, network, createPolicy('mesh'), progressBar(`${config.requests}/${world.backends.length}`));
  return { requests: config.requests, backends: world.backends.length, wallS: record.wallMs / 1000, usPerRequest: (record.wallMs * 1000) / config.requests };
}

const OPTIONS = {
  quick: { type: 'boolean' },
  requests: { type: 'string' },
  rate: { type: 'string' },
  seed: { type: 'string' },
  sites: { type: 'string' },
  isolates: { type: 'string' },
  'pop-book': { type: 'string' },
  policies: { type: 'string' },
  scale: { type: 'boolean' },
  rates: { type: 'string' },
  help: { type: 'boolean' },
} as const;

/** The command line, parsed; a bad option is a usage error (exit 2), not a stack trace. */
function parseOptions() {
  try {
    return parseArgs({ options: OPTIONS, strict: true });
  } catch (err) {
    return fail((err as Error).message.split('\n')[0]!);
  }
}

async function main(): Promise<void> {
  const { values } = parseOptions();
  if (values.help) {
    console.log(USAGE);
    return;
  }
  const started = performance.now();
  const quick = values.quick ?? false;
  const config: SimConfig = {
    ...DEFAULT_CONFIG,
    seed: positive('seed', values.seed, DEFAULT_CONFIG.seed, 2 ** 31),
    requests: positive('requests', values.requests, quick ? 200_000 : DEFAULT_CONFIG.requests, 1e8),
    ratePerSecond: positive('rate', values.rate, DEFAULT_CONFIG.ratePerSecond, 1e7),
    sites: { ...DEFAULT_CONFIG.sites, count: positive('sites', values.sites, DEFAULT_CONFIG.sites.count, 100_000) },
    edge: {
      ...DEFAULT_CONFIG.edge,
      isolatesPerPop: positive('isolates', values.isolates, DEFAULT_CONFIG.edge.isolatesPerPop, 64),
      // 0: the isolates of a PoP share nothing (the comparison in docs/benchmarks.md, "One service book per PoP").
      popBookExchangeMs: values['pop-book'] === '0' ? 0 : positive('pop-book', values['pop-book'], DEFAULT_CONFIG.edge.popBookExchangeMs, 60_000),
    },
  };
  const rates = values.rates === undefined ? undefined : values.rates.split(',').map((r) => positive('rates', r.trim(), 0, 1e7));
  if (rates && (rates.length === 0 || rates.length > MAX_RATES)) fail(`--rates takes 1 to ${MAX_RATES} rates, got ${rates.length}`);
  const names = (values.policies?.split(',').map((s) => s.trim()).filter(Boolean) ?? [...POLICY_NAMES]).map((name) => {
    if (!isPolicyName(name)) fail(`unknown policy "${name}"; policies: ${POLICY_NAMES.join(', ')}`);
    return name as PolicyName;
  });

  console.error(`sim: seed ${config.seed}, ${config.requests.toLocaleString('en-US')} requests per policy at ${config.ratePerSecond} requests/s; policies ${names.join(', ')}${config.edge.isolatesPerPop > 1 ? `; ${config.edge.isolatesPerPop} isolates per PoP` : ''}`);
  const world = buildWorld(config, loadCities());
  const network = new Network(config, world);
  const floors = popModelFloors(config, world, network);
  const records: RunRecord[] = [];
  for (const name of names) {
    const record = runPolicy(config, world, network, createPolicy(name), progressBar(name), floors);
    records.push(record);
    console.error(`  ${name}: ${(record.wallMs / 1000).toFixed(1)} s for ${(record.simulatedMs / 1000).toFixed(0)} simulated s`);
  }
  const summaries = records.map((r) => summarise(r, world, config));

  // Pictures: the map of median latency per PoP for the mesh and for the centralized baseline, on one scale; the CDFs.
  // A full run writes them to docs/sim/ (the committed ones); a quick run to bench/results/sim/, leaving those alone.
  const pictures: SimReport['pictures'] = [];
  const docsSim = quick ? path.join(ROOT, 'bench', 'results', 'sim') : path.join(ROOT, 'docs', 'sim');
  await mkdir(docsSim, { recursive: true });
  const mapped = summaries.filter((s) => s.policy === 'mesh' || s.policy === 'cloud-us-east' || s.policy === 'cloud-nearest');
  const all = mapped.flatMap((s) => s.perPop.map((p) => p.p50)).sort((a, b) => a - b);
  const domain = all.length ? ([all[Math.floor(all.length * 0.05)]!, all[Math.floor(all.length * 0.95)]!] as const) : undefined;
  const maxWeight = Math.max(1, ...mapped.flatMap((s) => s.perPop.map((p) => p.requests)));
  for (const s of mapped) {
    const file = `map-${s.policy}.svg`;
    const svg = worldMapSvg(
      s.perPop.map((p) => ({ lat: p.lat, lon: p.lon, value: p.p50, weight: p.requests, label: p.code })),
      { title: `Median latency per PoP: ${s.label}`, subtitle: `${config.requests.toLocaleString('en-US')} simulated requests, seed ${config.seed}`, unit: 'ms', valueLabel: 'p50 latency', weightLabel: 'requests', ...(domain ? { domain } : {}), maxWeight },
    );
    await writeFile(path.join(docsSim, file), svg);
    pictures.push({ label: `Median latency per PoP, ${s.label}`, path: `sim/${file}` });
  }
  if (records.length) {
    const series = records.map((r) => {
      const values: number[] = [];
      for (let i = 0; i < r.requests; i++) if (!(r.flags[i]! & FAILED)) values.push(r.latency[i]!);
      return { label: r.label, values };
    });
    await writeFile(path.join(docsSim, 'cdf.svg'), cdfSvg(series, { title: 'Latency as users see it, per policy (answered requests)', xLabel: 'latency (ms, log scale)' }));
    pictures.push({ label: 'Latency CDF per policy', path: 'sim/cdf.svg' });
  }

  let scale: SimReport['scale'];
  if (values.scale) {
    console.error('sim: scale, the mesh policy at 3 request counts and 3 world sizes');
    // The run above is the largest request count when it ran the mesh; smaller ones are timed here.
    const cloudBackends = config.cloud.regions.length * config.cloud.backendsPerRegion;
    const main = records.find((r) => r.policy === 'mesh');
    const sizes = main ? [config.requests / 10, (config.requests * 3) / 10] : [config.requests / 10, (config.requests * 3) / 10, config.requests];
    const byRequests = sizes.map((requests) => timeRun({ ...config, requests: Math.round(requests) }));
    if (main) byRequests.push({ requests: main.requests, backends: world.backends.length, wallS: main.wallMs / 1000, usPerRequest: (main.wallMs * 1000) / main.requests });
    const byBackends = [250, 1000, 4000].map((total) =>
      timeRun({ ...config, requests: Math.round(config.requests / 10), sites: { ...config.sites, count: total - cloudBackends } }),
    );
    scale = { byRequests, byBackends };
  }

  let loads: SimReport['loads'];
  if (rates) {
    console.error(`sim: the floor goal by load, the mesh policy at ${rates.join(', ')} requests/s`);
    loads = rates.map((ratePerSecond) => {
      const at = { ...config, ratePerSecond };
      const s = summarise(runPolicy(at, world, network, createPolicy('mesh'), progressBar(`mesh @ ${ratePerSecond}/s`), floors), world, at);
      const known = summarise(runPolicy(at, world, network, createPolicy('full-knowledge'), progressBar(`reference @ ${ratePerSecond}/s`), floors), world, at);
      return {
        ratePerSecond,
        summary: { overall: s.overall, byModel: s.byModel, withinFloorShare: s.withinFloorShare, ...(s.busy ? { busy: s.busy } : {}) },
        fullKnowledgeWithinFloorShare: known.withinFloorShare,
      };
    });
  }

  const argv = process.argv.slice(2).join(' ');
  const report: SimReport = {
    command: `npm run sim${argv ? ` -- ${argv}` : ''}`,
    seed: config.seed,
    requestsPerPolicy: config.requests,
    ratePerSecond: config.ratePerSecond,
    world: {
      pops: world.pops.length,
      cities: world.cities.length,
      cloudBackends: world.backends.filter((b) => b.kind === 'cloud').length,
      sites: world.backends.filter((b) => b.kind === 'site').length,
      models: config.models.map((m) => `${m.name} (${Math.round(m.share * 100)}%, ${m.serviceMs} ms)`).join(', '),
      ...(config.edge.isolatesPerPop > 1 ? { isolatesPerPop: config.edge.isolatesPerPop } : {}),
      ...(config.edge.popBookExchangeMs !== DEFAULT_CONFIG.edge.popBookExchangeMs ? { popBookExchangeMs: config.edge.popBookExchangeMs } : {}),
    },
    summaries,
    serviceTails: serviceTails(config),
    ...(records.length ? { floorTails: floorTails(records[0]!, config) } : {}),
    pictures: quick ? [] : pictures,
    ...(quick ? { picturesNote: 'A quick run draws its pictures in bench/results/sim/ and leaves the committed ones in docs/sim/ (the last full run\'s) alone.' } : {}),
    ...(scale ? { scale } : {}),
    ...(loads ? { loads } : {}),
    wallS: (performance.now() - started) / 1000,
  };
  const resultsDir = path.join(ROOT, 'bench', 'results');
  await mkdir(resultsDir, { recursive: true });
  await writeFile(path.join(resultsDir, 'sim.json'), `${JSON.stringify({ config, report }, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 2)}\n`);
  const markdown = simMarkdown(report);
  await writeFile(path.join(resultsDir, 'sim.md'), markdown);
  console.log(markdown);
  console.error(`sim: wrote bench/results/sim.json, bench/results/sim.md and docs/sim/*.svg in ${report.wallS.toFixed(0)} s`);
}

await main();
