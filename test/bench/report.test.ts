/**
 * The report of `npm run bench` (bench/lib/report.ts): the section between
 * the markers replaces only itself in the docs; each bench's table shows the
 * figures of its results; a failed bench shows as failed with its output's
 * last lines; results of another shape give a note, not an exception; the
 * sim's fragment nests under its subsection; the run's facts are stated.
 */

import { describe, expect, it } from 'vitest';
import {
  REPORT_END,
  REPORT_START,
  demoteHeadings,
  renderReport,
  replaceReport,
  sectionAnchors,
  slug,
  tail,
  type BenchOutcome,
  type RunInfo,
} from '../../bench/lib/report.ts';

const DOCS = [
  '# Benchmarks',
  '',
  'Intro.',
  '',
  'How to read them:',
  '',
  '- **Machine.** two cores.',
  '- **Results.** JSON in `bench/results/`.',
  '',
  '## Goals at a glance',
  '',
  '| bench | goal |',
  '| --- | --- |',
  '',
  '## `npm run bench:edge`: the edge\'s own cost',
  '',
  '### Findings',
  '',
  '## `npm run bench:routing`: one routing decision, by the size of the world (issue 15, part 4)',
  '',
  '### Findings',
  '',
  '## `npm run bench:gpu`: bench:backend on CUDA (issue 14, part 8; not run)',
  '',
].join('\n');

const RUN: RunInfo = {
  command: 'npm run bench -- --quick',
  date: '2026-12-03T18:31:07.123Z',
  commit: 'ecd98a1',
  dirty: true,
  machine: { cpu: 'AMD EPYC 7B13', cores: 2, memoryGiB: 24, node: 'v22.23.3', os: 'Ubuntu 24.04 (Linux 6.8.0 x64)' },
  quick: true,
  totalSeconds: 401,
};

const ROUTING = {
  node: 'v22.23.3',
  models: 8,
  measured: 256,
  pop: 'FRA',
  batches: 21,
  batchMs: 20,
  rows: [
    { backends: 10, candidatesPerRequest: 2, oldUs: 1.4, newUs: 0.92, ratio: 1.52, learningUs: 1.3, buildMs: 0.037, firstDecisionUs: 72.2 },
    { backends: 10000, candidatesPerRequest: 2507, oldUs: 4290.72, newUs: 35.35, ratio: 121.38, learningUs: 19.6, buildMs: 31.618, firstDecisionUs: 2587.1 },
  ],
};

const BACKEND = {
  settings: { model: 'embed', provider: 'cpu' },
  ceiling: { best: { batch: 32, rowsPerS: 1904.2 } },
  runs: [
    { batching: 'on', concurrency: 16, reqPerS: 773.4, p50Ms: 19.86, p99Ms: 37.23, meanBatch: 10.71 },
    { batching: 'off', concurrency: 16, reqPerS: 147.3, p50Ms: 105.24, p99Ms: 190.62, meanBatch: 1 },
  ],
  ratios: {
    servedVsCeiling: { value: 0.523, served: 1000, concurrency: 64, ceiling: 1934, goal: 0.85, met: false },
    batchingGain: { concurrency: 16, value: 5.25, p99OnMs: 37.2, p99OffMs: 190.6, p99NotWorse: true, goal: 3, met: true },
  },
};

const side = (reqPerS: number, p50Ms: number, p99Ms: number, runtimeCpuMs: number) => ({ reqPerS, p50Ms, p99Ms, runtimeCpuMs });
const EDGE = {
  goal: { p50Ms: 0.5, p99Ms: 1, verifyP50Ms: 0.05, extraWorkTolerance: 0.1 },
  summary: [
    {
      model: 'classifier',
      rows: {
        '1': { direct: side(351, 2.61, 6.33, 0), passthrough: side(116, 8.0, 16.5, 5.04), mesh: side(117, 7.9, 17.43, 5.51), 'mesh-none': side(103, 8.84, 17.81, 6.4) },
        '16': { direct: side(2546, 5.8, 14.62, 0), passthrough: side(375, 40.75, 72.35, 2.9), mesh: side(319, 47.43, 116.13, 3.5), 'mesh-none': side(316, 48.97, 105.84, 3.65) },
      },
      costs: [
        { concurrency: 1, p50Ms: 1.33, p99Ms: 3.87, met: false },
        { concurrency: 16, p50Ms: 7.67, p99Ms: 44.48, met: false },
      ],
      interleaved: { concurrency: 1, p50Ms: 0.9, p99Ms: 1.44, met: false, rounds: 5, verify: { p50Ms: 0.01, p99Ms: 0.165, met: true } },
    },
  ],
  verification: { rate: 0.05, sampledAnswers: 10399, extraWork: 549, share: 0.0528, met: true },
  ledger: { answered: 21485, receipts: 22050, consumerReceipts: 21485 },
};

const SETTLEMENT = {
  goals: { signUs: 100, closeSeconds: 10, closeSize: 1000000 },
  sign: { usPerReceipt: 28.43, perSecond: 35174, rounds: [28.4], met: true },
  queueSend: { usPerReceiptAlone: 950, usPerReceiptIn16: 55, rounds: [950] },
  appends: [
    { callers: 1, perS: 22012.4, ms: 1363 },
    { callers: 4, perS: 21000, ms: 1428 },
  ],
  merkle: [{ size: 1000000, leafHashMs: 2140, rootMs: 920, chunkedBuildMs: 921, chunkedProofUs: 1800, verifyUs: 19 }],
  ledger: [
    { size: 100000, close: { signMs: 530, archiveMs: 2500, ms: 3030 }, proofMs: 3.61, rpcFloorMs: 0.13 },
    { size: 1000000, close: { signMs: 5210, archiveMs: 32100, ms: 37310 }, proofMs: 3.6, rpcFloorMs: 0.13 },
  ],
  closeGoal: 'met: 5.21 s (then the archive, 32.1 s, in the alarm)',
};

const TENSORS = {
  goals: { binaryVsJson: 5, edgeVsBackend: 0.2 },
  cells: [
    { bytes: 1048576, path: 'backend', format: 'json', cpuMsPerReq: { backend: 100, runtime: null } },
    { bytes: 1048576, path: 'backend', format: 'binary', cpuMsPerReq: { backend: 5.155, runtime: null } },
    { bytes: 1048576, path: 'edge', format: 'json', cpuMsPerReq: { backend: 102.727, runtime: 66.061 } },
    { bytes: 1048576, path: 'edge', format: 'binary', cpuMsPerReq: { backend: 4.206, runtime: 11.003 } },
  ],
  perMb: {
    binaryVsJson: [
      { side: 'backend alone, (i)', json: 104.72, binary: 5.14, ratio: 20.37, met: true },
      { side: 'edge (workerd + wrangler), (ii)', json: 57.15, binary: 5.81, ratio: 9.84, met: true },
    ],
    edgeVsBackend: [{ format: 'binary', edge: 5.81, backend: 7.38, ratio: 0.787, met: false }],
  },
};

const MAIN_THREAD = {
  settings: { model: 'embed', httpThreads: '2', inferenceThread: 'worker' },
  goal: { mainThreadMsPerReq: 0.03 },
  phases: [{ round: 1, concurrency: 64, reqPerS: 1790.2, p50Ms: 33.88, p99Ms: 63.1, meanBatch: 30.28, mainMsPerReq: 0.0281, backendMsPerReq: 0.888 }],
  verdicts: [{ concurrency: 64, mainMsPerReq: 0.0276, capReqPerS: 36231.9, met: true }],
};

const ok = (name: BenchOutcome['name'], results: unknown, seconds = 7): BenchOutcome => ({
  name,
  command: `npm run bench:${name}`,
  seconds,
  resultsFile: `bench/results/${name}.json`,
  results,
});

describe('replaceReport', () => {
  it('inserts the markers the first time after the "How to read them" list, before "## Goals at a glance", and keeps every other byte', () => {
    const out = replaceReport(DOCS, '## Latest report\n\nbody');
    const start = out.indexOf(REPORT_START);
    const end = out.indexOf(REPORT_END) + REPORT_END.length;
    expect(out.slice(start, end)).toBe(`${REPORT_START}\n## Latest report\n\nbody\n${REPORT_END}`);
    expect(out.slice(0, start)).toBe(DOCS.slice(0, DOCS.indexOf('## Goals at a glance')));
    expect(out.slice(0, start).endsWith('- **Results.** JSON in `bench/results/`.\n\n')).toBe(true);
    expect(out.slice(end)).toBe(`\n\n${DOCS.slice(DOCS.indexOf('## Goals at a glance'))}`);
  });

  it('afterwards replaces only what is between the markers', () => {
    const once = replaceReport(DOCS, 'first run');
    const edited = once.replace('Intro.', 'Intro, edited by hand.') + '\nA hand-written line at the end.\n';
    const twice = replaceReport(edited, 'second run\nwith two lines');
    const [before, rest] = edited.split(REPORT_START) as [string, string];
    const after = rest.slice(rest.indexOf(REPORT_END) + REPORT_END.length);
    expect(twice).toBe(`${before}${REPORT_START}\nsecond run\nwith two lines\n${REPORT_END}${after}`);
    expect(twice).not.toContain('first run');
    expect(replaceReport(twice, 'second run\nwith two lines')).toBe(twice);
  });

  it('refuses a document with one marker only, rather than losing what follows it', () => {
    expect(() => replaceReport(`${DOCS}\n${REPORT_START}\nhalf\n`, 'x')).toThrow(/markers/);
    expect(() => replaceReport(`${REPORT_END}\n${DOCS}\n${REPORT_START}\n`, 'x')).toThrow(/markers/);
  });

  it('looks for "## Goals at a glance" itself, not the first level-2 heading', () => {
    const docs = DOCS.replace('How to read them:', '## Overview\n\nHow to read them:');
    const out = replaceReport(docs, 'r');
    expect(out.indexOf(REPORT_START)).toBe(docs.indexOf('## Goals at a glance'));
  });

  it('goes before the first level-2 heading when there is no "Goals at a glance"', () => {
    const docs = '# T\n\nintro\n\n## First\n\ntext\n';
    expect(replaceReport(docs, 'r')).toBe(`# T\n\nintro\n\n${REPORT_START}\nr\n${REPORT_END}\n\n## First\n\ntext\n`);
  });
});

describe('renderReport', () => {
  it('states the command, date, commit with uncommitted changes, machine, mode and total time', () => {
    const md = renderReport(RUN, [ok('routing', ROUTING)], {});
    expect(md.startsWith('## Latest `npm run bench` report\n')).toBe(true);
    expect(md).toContain('`npm run bench -- --quick`');
    expect(md).toContain('2026-12-03 18:31 UTC');
    expect(md).toContain('`ecd98a1` + uncommitted changes');
    expect(md).toContain('AMD EPYC 7B13, 2 cores, 24 GiB memory; Node v22.23.3; Ubuntu 24.04 (Linux 6.8.0 x64)');
    expect(md).toContain('quick:');
    expect(md).toContain('6 min 41 s');
    expect(md).toMatch(/ratios and differences measured within one run/);
    const clean = renderReport({ ...RUN, dirty: false, quick: false }, [ok('routing', ROUTING)], {});
    expect(clean).toContain('`ecd98a1`\n');
    expect(clean).not.toContain('uncommitted');
    expect(clean).toContain("full: each bench's default settings");
  });

  it('adds bench:routing\'s line on the PoP\'s service book when its results have one, and nothing when older ones do not', () => {
    const popBook = [
      { entries: 100, chars: 4609, exchangeUs: 56.2 },
      { entries: 1024, chars: 48061, exchangeUs: 413.4 },
    ];
    const md = renderReport(RUN, [ok('routing', { ...ROUTING, popBook })], {});
    expect(md).toContain("One exchange with the PoP's service book");
    expect(md).toContain('100 entries (4,609 characters): 56 us; 1,024 entries (48,061 characters): 413 us.');
    expect(renderReport(RUN, [ok('routing', ROUTING)], {})).not.toContain("PoP's service book");
  });

  it('renders each bench\'s table with the figures of its results', () => {
    const md = renderReport(RUN, [ok('backend', BACKEND), ok('edge', EDGE), ok('routing', ROUTING)], {});
    expect(md).toContain('| 10,000 | 2,507 | 4,290.72 | 35.35 | **121.4x** | 19.60 | 31.618 | 2,587.1 |');
    expect(md).toContain('| on | 16 | 773 | 19.86 | 37.23 | 10.71 |');
    expect(md).toMatch(/served \/ ceiling at saturation \| \*\*0\.52\*\* \(1,000 req\/s at concurrency 64 \/ 1,934 rows\/s\) \| >= 0\.85 \| no \|/);
    expect(md).toMatch(/batching on \/ off at concurrency 16 \| \*\*5\.25x\*\*, p99 37\.2 vs 190\.6 ms \| >= 3x, p99 not worse \| yes \|/);
    expect(md).toMatch(/mesh's own cost, \(c\) - \(b\)\*\*, concurrency 1, interleaved \(5 rounds\) \| \*\*\+0\.90\*\* \| \*\*\+1\.44\*\* \|/);
    expect(md).toContain('| (b) pass-through Worker | 16 | 375 | 40.75 | 72.35 | 2.900 |');
    expect(md).toContain('0.0528 per answer at sample rate 0.05');
  });

  it('renders settlement, tensors and main-thread tables with the figures of their results', () => {
    const md = renderReport(RUN, [ok('settlement', SETTLEMENT), ok('tensors', TENSORS), ok('main-thread', MAIN_THREAD)], {});
    expect(md).toContain('| receipt signing in workerd | **28.4 us** per receipt | < 100 us: yes |');
    expect(md).toContain('| appends into one shard, 1 caller(s) | 22,012 receipts/s | - |');
    expect(md).toContain('| ledger 1,000,000: **close** (seal, tree, totals, sign) | **5.21 s** | < 10 s: yes |');
    expect(md).toContain('| ledger 100,000: **close** (seal, tree, totals, sign) | **0.53 s** | - |');
    expect(md).toContain('0.95 ms / 0.055 ms');
    expect(md).toContain('| 1 MB | binary | 5.155 | 11.003 | 4.206 |');
    expect(md).toContain('| backend alone, (i) | 104.72 | 5.14 | **20.4x** |');
    expect(md).toContain('| binary | 5.81 | 7.38 | **0.79** | no |');
    expect(md).toContain('binary at least 5x cheaper on each side: yes.');
    expect(md).toContain('| 1 | 64 | 1,790 | 33.88 | 63.10 | 30.28 | **28.1** | 0.888 |');
    expect(md).toContain('| 64 | **27.6** | 36,232 | yes |');
  });

  it('shows a failed bench as failed, with the last lines of its output and no terminal colours', () => {
    const output = Array.from({ length: 50 }, (_, i) => `line ${i + 1}`).join('\n') + '\n\u001b[31mError: wrangler dev exited (1)\u001b[0m\n';
    const failed: BenchOutcome = { name: 'edge', command: 'npm run bench:edge', seconds: 41, failure: { reason: 'exit code 1.', output } };
    const md = renderReport(RUN, [failed, ok('routing', ROUTING)], {});
    expect(md).toMatch(/\| `bench:edge` \| \*\*failed\*\* \| 41 s \|/);
    expect(md).toContain('**Failed:** exit code 1.');
    expect(md).toContain('line 50\nError: wrangler dev exited (1)\n');
    expect(md).not.toContain('line 20\n');
    expect(md).not.toContain('\u001b');
    expect(md).toContain('1 of 2 benches ok, **1 failed**');
  });

  it('says when the sim script does not exist, as a failure with its reason', () => {
    const missing: BenchOutcome = { name: 'sim', command: 'npm run sim -- --quick', seconds: 0, failure: { reason: '`npm run sim` does not exist: package.json has no "sim" script.', output: '' } };
    const md = renderReport(RUN, [missing], {});
    expect(md).toContain('### World simulator: `npm run sim`');
    expect(md).toContain('**Failed:** `npm run sim` does not exist');
    expect(md).not.toContain('The last lines of its output');
  });

  it('writes a note instead of throwing when results are not shaped as expected', () => {
    const odd = [ok('routing', { rows: 'none' }), ok('backend', null), ok('edge', { summary: [{ model: 'classifier', rows: 3 }] }), ok('settlement', 42), ok('tensors', {}), ok('main-thread', []), ok('sim', { not: 'text' })];
    let md = '';
    expect(() => (md = renderReport(RUN, odd, {}))).not.toThrow();
    expect(md).toContain('Its results (`bench/results/routing.json`) are not shaped as this report expects (`rows` is not a list)');
    expect(md.match(/are not shaped as this report expects/g)).toHaveLength(odd.length);
  });

  it('nests the sim fragment under its subsection, headings demoted and the rest verbatim', () => {
    const fragment = '## World simulator\n\n![map](sim/map-mesh.svg)\n\n### Latency\n\n| a | b |\n| --- | ---: |\n| x | 1 |\n\n```sh\n# a comment, not a heading\n```\n';
    const md = renderReport(RUN, [{ name: 'sim', command: 'npm run sim -- --quick', seconds: 60, resultsFile: 'bench/results/sim.md', results: fragment }], {});
    expect(md).toContain('#### World simulator\n\n![map](sim/map-mesh.svg)\n\n##### Latency\n\n| a | b |\n| --- | ---: |\n| x | 1 |\n\n```sh\n# a comment, not a heading\n```');
    expect(md).not.toMatch(/^## World simulator/m);
  });

  it('links each bench to its hand-written section and says bench:gpu needs a GPU', () => {
    const anchors = sectionAnchors(DOCS);
    expect(anchors.routing).toBe('npm-run-benchrouting-one-routing-decision-by-the-size-of-the-world-issue-15-part-4');
    expect(anchors.gpu).toBe('npm-run-benchgpu-benchbackend-on-cuda-issue-14-part-8-not-run');
    const md = renderReport(RUN, [ok('routing', ROUTING)], anchors);
    expect(md).toContain('[its section](#npm-run-benchrouting-one-routing-decision-by-the-size-of-the-world-issue-15-part-4)');
    expect(md).toMatch(/\| `bench:gpu` \| not run here: it needs a GPU \| - \| `npm run bench:gpu` on a GPU host \(CUDA or WebGPU\) \(\[its section\]\(#npm-run-benchgpu-/);
    expect(md).toContain('| `bench:edge` | not run (left out by `--only`) |');
    expect(md).toContain(`[below](#${slug('`bench:routing`')})`);
  });
});

describe('helpers', () => {
  it('demotes headings so the highest lands at the level asked, never past 6', () => {
    expect(demoteHeadings('# A\n## B\n###### C\nnot # a heading', 4)).toBe('#### A\n##### B\n###### C\nnot # a heading');
    expect(demoteHeadings('#### already deep', 3)).toBe('#### already deep');
  });

  it('counts repeated headings the way GitHub does when finding a section', () => {
    const docs = '## `npm run bench:edge`: x\n\n## `npm run bench:edge`: x\n';
    expect(sectionAnchors(docs).edge).toBe('npm-run-benchedge-x');
    expect(sectionAnchors(`### \`npm run bench:edge\`: x\n\n${docs}`).edge).toBe('npm-run-benchedge-x-1');
  });

  it('keeps the last lines of an output', () => {
    expect(tail('a\nb\nc\n', 2)).toBe('b\nc');
  });
});
