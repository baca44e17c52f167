/**
 * The report `npm run bench` writes (bench/all.ts runs the benches): from
 * each bench's outcome (its parsed results, or why it failed) and the run's
 * facts (command, commit, machine) to one markdown section, one small table
 * renderer per bench, and that section put between its markers in
 * docs/benchmarks.md with everything outside them left as it was. Pure: no
 * files, no processes.
 */

import { formatBytes } from './payload.ts';

// ---- types -------------------------------------------------------------------

/** Every bench `npm run bench` runs, in the order it runs them. */
export const BENCHES = ['backend', 'edge', 'settlement', 'tensors', 'main-thread', 'routing', 'sim'] as const;
export type BenchName = (typeof BENCHES)[number];

export interface Machine {
  cpu: string;
  cores: number;
  memoryGiB: number;
  node: string;
  os: string;
}

/** What one `npm run bench` run was. */
export interface RunInfo {
  /** The command as typed, e.g. `npm run bench -- --quick`. */
  command: string;
  /** When it started, ISO 8601. */
  date: string;
  /** `git rev-parse --short HEAD`. */
  commit: string;
  /** `git status --porcelain` was not empty. */
  dirty: boolean;
  machine: Machine;
  quick: boolean;
  totalSeconds: number;
}

/** One bench's run: its results when it succeeded, why not when it failed. */
export interface BenchOutcome {
  name: BenchName;
  /** The command it ran, with the knobs set for it. */
  command: string;
  seconds: number;
  /** The file its results came from, relative to the repository. */
  resultsFile?: string;
  /** The parsed results JSON; for the sim, the text of its markdown fragment. */
  results?: unknown;
  failure?: { reason: string; output: string };
}

/** Markdown anchors of the hand-written sections, by bench (`gpu` too). */
export type Anchors = Partial<Record<BenchName | 'gpu', string>>;

/** Renders one bench's results as markdown; throws (ShapeError) when they are not shaped as expected. */
type Renderer = (results: unknown) => string;

export const REPORT_START = '<!-- bench:report:start -->';
export const REPORT_END = '<!-- bench:report:end -->';

/** Where the section goes the first time: before this heading (after the "How to read them" list). */
const FIRST_PLACE = /^## Goals at a glance[ \t]*$/m;
/** Lines of a failed bench's output shown in the report. */
const TAIL_LINES = 30;

/** The npm script of each bench. */
export function scriptOf(name: BenchName | 'gpu'): string {
  return name === 'sim' ? 'sim' : `bench:${name}`;
}

/** How each bench's hand-written section in docs/benchmarks.md begins. */
const SECTION_PREFIX: Record<BenchName | 'gpu', string> = {
  backend: '`npm run bench:backend`',
  edge: '`npm run bench:edge`',
  settlement: '`npm run bench:settlement`',
  tensors: '`npm run bench:tensors`',
  'main-thread': '`npm run bench:main-thread`',
  routing: '`npm run bench:routing`',
  sim: '`npm run sim`',
  gpu: '`npm run bench:gpu`',
};

// ---- reading results ---------------------------------------------------------

/** Results not shaped as a renderer expects. */
export class ShapeError extends Error {}

/** The value at a dotted path (`ratios.servedVsCeiling.value`, `rows.0`); ShapeError when a step is missing. */
function get(root: unknown, path: string): unknown {
  let v = root;
  for (const key of path.split('.')) {
    if (v === null || typeof v !== 'object' || !(key in v)) throw new ShapeError(`no \`${path}\``);
    v = (v as Record<string, unknown>)[key];
  }
  return v;
}

/** The value at `path`, or undefined when a step is missing. */
function opt(root: unknown, path: string): unknown {
  try {
    return get(root, path);
  } catch {
    return undefined;
  }
}

/** A number, or null (results write non-finite numbers as null); `optional`: undefined when absent. */
function num(root: unknown, path: string): number | null;
function num(root: unknown, path: string, optional: 'optional'): number | null | undefined;
function num(root: unknown, path: string, optional?: 'optional'): number | null | undefined {
  const v = optional ? opt(root, path) : get(root, path);
  if (v === null || v === undefined) return v;
  if (typeof v !== 'number') throw new ShapeError(`\`${path}\` is not a number`);
  return v;
}

function list(root: unknown, path: string): unknown[] {
  const v = get(root, path);
  if (!Array.isArray(v)) throw new ShapeError(`\`${path}\` is not a list`);
  return v;
}

function str(root: unknown, path: string): string {
  const v = get(root, path);
  if (typeof v !== 'string') throw new ShapeError(`\`${path}\` is not a string`);
  return v;
}

function bool(root: unknown, path: string): boolean {
  const v = get(root, path);
  if (typeof v !== 'boolean') throw new ShapeError(`\`${path}\` is not true or false`);
  return v;
}

// ---- formatting --------------------------------------------------------------

const finite = (v: number | null | undefined): v is number => typeof v === 'number' && Number.isFinite(v);

/** `v` with `digits` decimals and thousands separators; n/a when missing or not finite. */
function fmt(v: number | null | undefined, digits = 2): string {
  return finite(v) ? v.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits }) : 'n/a';
}

const signed = (v: number | null | undefined, digits = 2) => (finite(v) ? `${v >= 0 ? '+' : ''}${fmt(v, digits)}` : 'n/a');
const times = (v: number | null | undefined, digits = 1) => (finite(v) ? `${fmt(v, digits)}x` : 'n/a');
const yesNo = (met: boolean) => (met ? 'yes' : 'no');

function table(head: readonly string[], align: readonly ('l' | 'r')[], rows: readonly (readonly string[])[]): string {
  return [`| ${head.join(' | ')} |`, `| ${align.map((a) => (a === 'r' ? '---:' : '---')).join(' | ')} |`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

/** 41 s, 6 min 41 s. */
export function duration(seconds: number): string {
  const s = Math.round(seconds);
  return s < 60 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`;
}

/** The last `lines` lines of a process's output, terminal colours removed. */
export function tail(output: string, lines = TAIL_LINES): string {
  const clean = output.replace(/\u001b\[[0-9;?]*[A-Za-z]/g, '').replace(/\r(?!\n)/g, '\n');
  return clean.trimEnd().split('\n').slice(-lines).join('\n').replace(/^(\s*\n)+/, '');
}

/** A fenced block that `text` cannot close early. */
function fenced(text: string): string {
  const longest = Math.max(2, ...[...text.matchAll(/`+|~+/g)].map((m) => m[0].length));
  const fence = '~'.repeat(longest + 1);
  return `${fence}text\n${text}\n${fence}`;
}

// ---- the renderers -----------------------------------------------------------

function renderBackend(r: unknown): string {
  const runs = list(r, 'runs').map((run) => [
    str(run, 'batching'),
    fmt(num(run, 'concurrency'), 0),
    fmt(num(run, 'reqPerS'), 0),
    fmt(num(run, 'p50Ms')),
    fmt(num(run, 'p99Ms')),
    fmt(num(run, 'meanBatch')),
  ]);
  const s = 'ratios.servedVsCeiling';
  const g = 'ratios.batchingGain';
  const gainGoal = num(r, `${g}.goal`, 'optional');
  const served = num(r, `${s}.served`, 'optional');
  return [
    `Model \`${str(r, 'settings.model')}\` on ${str(r, 'settings.provider')}; ceiling ${fmt(num(r, 'ceiling.best.rowsPerS'), 0)} rows/s at batch ${fmt(num(r, 'ceiling.best.batch'), 0)}.`,
    '',
    table(['batching', 'concurrency', 'req/s', 'p50 ms', 'p99 ms', 'mean batch'], ['l', 'r', 'r', 'r', 'r', 'r'], runs),
    '',
    table(
      ['ratio', 'measured', 'goal', 'met'],
      ['l', 'l', 'l', 'l'],
      [
        [
          'served / ceiling at saturation',
          `**${fmt(num(r, `${s}.value`))}**${finite(served) ? ` (${fmt(served, 0)} req/s at concurrency ${fmt(num(r, `${s}.concurrency`), 0)} / ${fmt(num(r, `${s}.ceiling`), 0)} rows/s)` : ''}`,
          `>= ${fmt(num(r, `${s}.goal`))}`,
          yesNo(bool(r, `${s}.met`)),
        ],
        [
          `batching on / off at concurrency ${fmt(num(r, `${g}.concurrency`), 0)}`,
          `**${times(num(r, `${g}.value`), 2)}**, p99 ${fmt(num(r, `${g}.p99OnMs`, 'optional'), 1)} vs ${fmt(num(r, `${g}.p99OffMs`, 'optional'), 1)} ms`,
          finite(gainGoal) ? `>= ${fmt(gainGoal, 0)}x, p99 not worse` : '- (reported)',
          finite(gainGoal) ? yesNo(bool(r, `${g}.met`)) : '-',
        ],
      ],
    ),
  ].join('\n');
}

const EDGE_PATHS: Record<string, string> = {
  direct: '(a) direct',
  passthrough: '(b) pass-through Worker',
  mesh: '(c) mesh edge',
  'mesh-none': '(d) mesh edge, no verification',
};

function renderEdge(r: unknown): string {
  const goalP50 = num(r, 'goal.p50Ms');
  const goalP99 = num(r, 'goal.p99Ms');
  const goalVerify = num(r, 'goal.verifyP50Ms');
  const out: string[] = [];
  for (const model of list(r, 'summary')) {
    const rows = get(model, 'rows');
    if (rows === null || typeof rows !== 'object') throw new ShapeError('`summary.rows` is not an object');
    const latency: string[][] = [];
    for (const c of Object.keys(rows)) {
      for (const [p, label] of Object.entries(EDGE_PATHS)) {
        const a = opt(rows, `${c}.${p}`);
        if (a === undefined) continue;
        latency.push([label, c, fmt(num(a, 'reqPerS'), 0), fmt(num(a, 'p50Ms')), fmt(num(a, 'p99Ms')), p === 'direct' ? '-' : fmt(num(a, 'runtimeCpuMs'), 3)]);
      }
    }
    const costs: string[][] = [];
    const goal = `< ${fmt(goalP50, 1)} ms p50, < ${fmt(goalP99, 0)} ms p99`;
    const inter = opt(model, 'interleaved');
    if (inter !== undefined) {
      costs.push([
        `**mesh's own cost, (c) - (b)**, concurrency 1, interleaved (${fmt(num(inter, 'rounds'), 0)} rounds)`,
        `**${signed(num(inter, 'p50Ms'))}**`,
        `**${signed(num(inter, 'p99Ms'))}**`,
        `${goal}: ${yesNo(bool(inter, 'met'))}`,
      ]);
    }
    for (const c of list(model, 'costs')) {
      costs.push([
        `mesh's own cost, (c) - (b), concurrency ${fmt(num(c, 'concurrency'), 0)}, separate phases`,
        signed(num(c, 'p50Ms')),
        signed(num(c, 'p99Ms')),
        inter !== undefined && num(c, 'concurrency') === 1 ? '(for reference)' : `${goal}: ${yesNo(bool(c, 'met'))}`,
      ]);
    }
    if (inter !== undefined) {
      costs.push([
        "sampled verification on the answer's path, (c) - (d), concurrency 1, interleaved",
        signed(num(inter, 'verify.p50Ms'), 3),
        signed(num(inter, 'verify.p99Ms'), 3),
        `< ${fmt(goalVerify)} ms p50: ${yesNo(bool(inter, 'verify.met'))}`,
      ]);
    }
    out.push(
      `\`${str(model, 'model')}\`:`,
      '',
      table(['path', 'concurrency', 'req/s', 'p50 ms', 'p99 ms', 'runtime CPU ms/req'], ['l', 'r', 'r', 'r', 'r', 'r'], latency),
      '',
      table(['difference (median over rounds of the difference within a round)', 'p50 ms', 'p99 ms', 'goal: met'], ['l', 'r', 'r', 'l'], costs),
      '',
    );
  }
  const v = 'verification';
  out.push(
    `Verification's extra backend work: ${fmt(num(r, `${v}.share`), 4)} per answer at sample rate ${fmt(num(r, `${v}.rate`))} ` +
      `(${fmt(num(r, `${v}.extraWork`), 0)} / ${fmt(num(r, `${v}.sampledAnswers`), 0)}; goal: the rate within 10%: ${yesNo(bool(r, `${v}.met`))}). ` +
      `Receipts: ${fmt(num(r, 'ledger.consumerReceipts', 'optional') ?? num(r, 'ledger.receipts'), 0)} in the ledger for ${fmt(num(r, 'ledger.answered'), 0)} answers through the edge.`,
  );
  return out.join('\n');
}

function renderSettlement(r: unknown): string {
  const closeSize = num(r, 'goals.closeSize');
  const closeGoalS = num(r, 'goals.closeSeconds');
  const s = (ms: number | null) => `${fmt(finite(ms) ? ms / 1000 : ms)} s`;
  const rows: string[][] = [
    ['receipt signing in workerd', `**${fmt(num(r, 'sign.usPerReceipt'), 1)} us** per receipt`, `< ${fmt(num(r, 'goals.signUs'), 0)} us: ${yesNo(bool(r, 'sign.met'))}`],
    [
      "queue send per receipt (Miniflare's local queue): alone / 16 per sendBatch",
      `${fmt((num(r, 'queueSend.usPerReceiptAlone') ?? Number.NaN) / 1000)} ms / ${fmt((num(r, 'queueSend.usPerReceiptIn16') ?? Number.NaN) / 1000, 3)} ms`,
      '-',
    ],
  ];
  for (const a of list(r, 'appends')) {
    rows.push([`appends into one shard, ${fmt(num(a, 'callers'), 0)} caller(s)`, `${fmt(num(a, 'perS'), 0)} receipts/s`, '-']);
  }
  for (const m of list(r, 'merkle')) {
    rows.push([`Merkle in Node, ${fmt(num(m, 'size'), 0)} receipts: tree head (chunked build)`, s(num(m, 'chunkedBuildMs')), '-']);
  }
  for (const l of list(r, 'ledger')) {
    const size = num(l, 'size');
    const n = fmt(size, 0);
    const error = opt(l, 'close.error');
    rows.push([
      `ledger ${n}: **close** (seal, tree, totals, sign)`,
      typeof error === 'string' ? `**failed**: ${error.split('\n')[0]}` : `**${s(num(l, 'close.signMs'))}**`,
      size === closeSize ? `< ${fmt(closeGoalS, 0)} s: ${yesNo(typeof error !== 'string' && (num(l, 'close.signMs') ?? Infinity) < (closeGoalS ?? 0) * 1000)}` : '-',
    ]);
    rows.push([`ledger ${n}: archive to R2 after close`, s(num(l, 'close.archiveMs')), '-']);
    rows.push([`ledger ${n}: one proof through the Durable Object`, `${fmt(num(l, 'proofMs'))} ms (a bare RPC: ${fmt(num(l, 'rpcFloorMs'))} ms)`, '-']);
  }
  return [table(['measure', 'value', 'goal: met'], ['l', 'l', 'l'], rows), '', `Close goal (${fmt(closeSize, 0)} receipts in under ${fmt(closeGoalS, 0)} s): ${str(r, 'closeGoal')}.`].join('\n');
}

const TENSOR_SIDES: readonly [string, string, 'backend' | 'runtime'][] = [
  ['backend', '(i) backend alone', 'backend'],
  ['edge', '(ii) edge', 'runtime'],
  ['edge', '(ii) backend behind the edge', 'backend'],
  ['passthrough', '(iii) pass-through Worker', 'runtime'],
];

function renderTensors(r: unknown): string {
  const cells = list(r, 'cells');
  const keys = [...new Set(cells.map((c) => `${num(c, 'bytes')}/${str(c, 'format')}`))];
  const sides = TENSOR_SIDES.filter(([p]) => cells.some((c) => str(c, 'path') === p));
  const perRequest = keys.map((key) => {
    const [bytes, format] = key.split('/') as [string, string];
    const cellOf = (p: string) => cells.find((c) => str(c, 'path') === p && `${num(c, 'bytes')}/${str(c, 'format')}` === key);
    return [
      formatBytes(Number(bytes)),
      format,
      ...sides.map(([p, , side]) => {
        const c = cellOf(p);
        return c ? fmt(num(c, `cpuMsPerReq.${side}`), 3) : '-';
      }),
    ];
  });
  const perMb = list(r, 'perMb.binaryVsJson').map((g) => [str(g, 'side'), fmt(num(g, 'json')), fmt(num(g, 'binary')), `**${times(num(g, 'ratio'))}**`]);
  const edge = list(r, 'perMb.edgeVsBackend').map((g) => [str(g, 'format'), fmt(num(g, 'edge')), fmt(num(g, 'backend')), `**${fmt(num(g, 'ratio'))}**`, yesNo(bool(g, 'met'))]);
  const judged = list(r, 'perMb.binaryVsJson').filter((g) => !/workerd alone|pass-through/.test(str(g, 'side')));
  const out = [
    'CPU ms per request, by side:',
    '',
    table(['payload', 'format', ...sides.map(([, label]) => label)], ['r', 'l', ...sides.map(() => 'r' as const)], perRequest),
    '',
    `CPU ms per payload MB (slope over the sizes): binary against JSON; goal: binary at least ${fmt(num(r, 'goals.binaryVsJson'), 0)}x cheaper on each side: ` +
      `${judged.some((g) => finite(num(g, 'ratio'))) ? yesNo(judged.every((g) => bool(g, 'met'))) : 'not measured (a slope needs two sizes or more)'}.`,
    '',
    table(['side', 'JSON ms/MB', 'binary ms/MB', 'JSON / binary'], ['l', 'r', 'r', 'r'], perMb),
  ];
  if (edge.length > 0) {
    out.push(
      '',
      `The edge's cost per MB against the backend's behind it; goal: at most ${fmt(num(r, 'goals.edgeVsBackend'))}:`,
      '',
      table(['format', 'edge ms/MB', 'backend ms/MB', 'edge / backend', 'met'], ['l', 'r', 'r', 'r', 'l'], edge),
    );
  }
  return out.join('\n');
}

function renderMainThread(r: unknown): string {
  const phases = list(r, 'phases').map((p) => [
    fmt(num(p, 'round'), 0),
    fmt(num(p, 'concurrency'), 0),
    fmt(num(p, 'reqPerS'), 0),
    fmt(num(p, 'p50Ms')),
    fmt(num(p, 'p99Ms')),
    fmt(num(p, 'meanBatch', 'optional')),
    `**${fmt((num(p, 'mainMsPerReq') ?? Number.NaN) * 1000, 1)}**`,
    fmt(num(p, 'backendMsPerReq'), 3),
  ]);
  const goalUs = (num(r, 'goal.mainThreadMsPerReq') ?? Number.NaN) * 1000;
  const verdicts = list(r, 'verdicts').map((v) => [
    fmt(num(v, 'concurrency'), 0),
    `**${fmt((num(v, 'mainMsPerReq') ?? Number.NaN) * 1000, 1)}**`,
    fmt(num(v, 'capReqPerS'), 0),
    yesNo(bool(v, 'met')),
  ]);
  return [
    `Model \`${str(r, 'settings.model')}\`, HTTP_THREADS=${str(r, 'settings.httpThreads')}, INFERENCE_THREAD=${str(r, 'settings.inferenceThread')}.`,
    '',
    table(['round', 'concurrency', 'req/s', 'p50 ms', 'p99 ms', 'mean batch', 'main thread us/req', 'backend CPU ms/req'], ['r', 'r', 'r', 'r', 'r', 'r', 'r', 'r'], phases),
    '',
    table(['concurrency', 'main thread us/req (median of rounds)', 'req/s the main thread allows', `goal < ${fmt(goalUs, 0)} us: met`], ['r', 'r', 'r', 'l'], verdicts),
  ].join('\n');
}

function renderRouting(r: unknown): string {
  const rows = list(r, 'rows').map((row) => [
    fmt(num(row, 'backends'), 0),
    fmt(num(row, 'candidatesPerRequest'), 0),
    fmt(num(row, 'oldUs')),
    fmt(num(row, 'newUs')),
    `**${times(num(row, 'ratio'))}**`,
    fmt(num(row, 'buildMs'), 3),
    fmt(num(row, 'firstDecisionUs'), 1),
  ]);
  return [
    `${fmt(num(r, 'models'), 0)} models, ${fmt(num(r, 'measured'), 0)} backends measured by the isolate, PoP ${str(r, 'pop')}; median of ${fmt(num(r, 'batches'), 0)} batches per path.`,
    '',
    table(
      ['backends', 'candidates / request', 'old (scan + sort) us / decision', 'new (index, top 8) us / decision', 'old / new', 'index build ms', 'first decision after a build us'],
      ['r', 'r', 'r', 'r', 'r', 'r', 'r'],
      rows,
    ),
  ].join('\n');
}

/** The sim's own fragment, its headings nested under the sim's subsection. */
function renderSim(r: unknown): string {
  if (typeof r !== 'string') throw new ShapeError('the sim fragment is not text');
  return demoteHeadings(r.trim(), 4);
}

const RENDERERS: Record<BenchName, Renderer> = {
  backend: renderBackend,
  edge: renderEdge,
  settlement: renderSettlement,
  tensors: renderTensors,
  'main-thread': renderMainThread,
  routing: renderRouting,
  sim: renderSim,
};

// ---- markdown structure --------------------------------------------------------

/**
 * `markdown` with its ATX headings moved down so that the highest becomes
 * level `top` (at most level 6); fenced code is left alone.
 */
export function demoteHeadings(markdown: string, top: number): string {
  const lines = markdown.split('\n');
  let fence: string | undefined;
  const heading = (line: string) => (fence === undefined ? /^(#{1,6})(\s|$)/.exec(line) : null);
  let highest = 7;
  const visit = (onHeading: (line: string, level: number) => string) =>
    lines.map((line) => {
      const f = /^\s{0,3}(`{3,}|~{3,})/.exec(line)?.[1];
      if (f && (fence === undefined || (f[0] === fence[0] && f.length >= fence.length))) {
        fence = fence === undefined ? f : undefined;
        return line;
      }
      const h = heading(line);
      return h ? onHeading(line, h[1]!.length) : line;
    });
  visit((line, level) => ((highest = Math.min(highest, level)), line));
  fence = undefined;
  const shift = Math.max(0, top - highest);
  return visit((line, level) => '#'.repeat(Math.min(6, level + shift)) + line.slice(level)).join('\n');
}

/** GitHub's anchor for a heading's text. */
export function slug(text: string): string {
  return text
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s_-]/gu, '')
    .replace(/\s/g, '-');
}

/** The anchors of the benches' hand-written sections (level-2 headings) in `docs`, the generated section left out. */
export function sectionAnchors(docs: string): Anchors {
  const start = docs.indexOf(REPORT_START);
  const end = docs.indexOf(REPORT_END);
  const hand = start >= 0 && end > start ? docs.slice(0, start) + docs.slice(end + REPORT_END.length) : docs;
  const seen = new Map<string, number>();
  const anchors: Anchors = {};
  let inFence = false;
  for (const line of hand.split('\n')) {
    if (/^\s{0,3}(`{3,}|~{3,})/.test(line)) inFence = !inFence;
    const h = inFence ? null : /^(#{1,6})\s+(.*?)\s*#*\s*$/.exec(line);
    if (!h) continue;
    const base = slug(h[2]!);
    const count = seen.get(base) ?? 0;
    seen.set(base, count + 1);
    if (h[1] !== '##') continue;
    for (const [name, prefix] of Object.entries(SECTION_PREFIX) as [BenchName | 'gpu', string][]) {
      if (anchors[name] === undefined && h[2]!.startsWith(prefix)) anchors[name] = count === 0 ? base : `${base}-${count}`;
    }
  }
  return anchors;
}

/**
 * `docs` with `section` between the report markers: only what is between
 * them is replaced; the first time, the markers and the section go before
 * "## Goals at a glance" (else before the first level-2 heading, else at the
 * end). Throws when only one marker is there, or they are out of order.
 */
export function replaceReport(docs: string, section: string): string {
  const block = `${REPORT_START}\n${section.trim()}\n${REPORT_END}`;
  const start = docs.indexOf(REPORT_START);
  const end = docs.indexOf(REPORT_END);
  if (start >= 0 || end >= 0) {
    if (start < 0 || end < start || docs.indexOf(REPORT_START, start + 1) >= 0 || docs.indexOf(REPORT_END, end + 1) >= 0) {
      throw new Error(`the document must hold ${REPORT_START} once, then ${REPORT_END} once; fix the markers by hand`);
    }
    return docs.slice(0, start) + block + docs.slice(end + REPORT_END.length);
  }
  const at = FIRST_PLACE.exec(docs)?.index ?? /^## /m.exec(docs)?.index;
  if (at === undefined) return `${docs.trimEnd()}\n\n${block}\n`;
  return `${docs.slice(0, at)}${block}\n\n${docs.slice(at)}`;
}

// ---- the report ----------------------------------------------------------------

/** The heading text of a bench's subsection in the report. */
function titleOf(name: BenchName): string {
  return name === 'sim' ? `World simulator: \`npm run ${scriptOf(name)}\`` : `\`${scriptOf(name)}\``;
}

function benchSection(o: BenchOutcome, anchors: Anchors): string {
  const title = `### ${titleOf(o.name)}`;
  const link = anchors[o.name] ? ` Method, goals and findings: [its section](#${anchors[o.name]}).` : '';
  const out = [title, '', `\`${o.command}\`, ${duration(o.seconds)}.${link}`, ''];
  if (o.failure) {
    out.push(`**Failed:** ${o.failure.reason}`, '');
    const lines = tail(o.failure.output);
    if (lines.trim()) out.push('The last lines of its output:', '', fenced(lines), '');
    return out.join('\n');
  }
  try {
    out.push(RENDERERS[o.name](o.results), '');
  } catch (err) {
    const why = err instanceof ShapeError ? err.message : `the renderer failed: ${(err as Error).message}`;
    out.push(`> Its results${o.resultsFile ? ` (\`${o.resultsFile}\`)` : ''} are not shaped as this report expects (${why}); see bench/lib/report.ts.`, '');
  }
  return out.join('\n');
}

function statusOf(o: BenchOutcome | undefined): string {
  if (!o) return 'not run (left out by `--only`)';
  return o.failure ? '**failed**' : 'ok';
}

/** The whole generated section, from its heading on. */
export function renderReport(run: RunInfo, outcomes: readonly BenchOutcome[], anchors: Anchors): string {
  const m = run.machine;
  const failed = outcomes.filter((o) => o.failure).length;
  const when = run.date.replace('T', ' ').replace(/:\d{2}(\.\d+)?Z$/, ' UTC');
  const rows = BENCHES.map((name) => {
    const o = outcomes.find((x) => x.name === name);
    const links = [
      ...(o ? [`[below](#${slug(titleOf(name))})`] : []),
      ...(anchors[name] ? [`[method and goals](#${anchors[name]})`] : []),
    ];
    return [`\`${scriptOf(name)}\``, statusOf(o), o ? duration(o.seconds) : '-', links.join(', ') || '-'];
  });
  rows.push(['`bench:gpu`', 'not run: it needs a GPU', '-', `\`npm run bench:gpu\` on a CUDA host${anchors.gpu ? ` ([its section](#${anchors.gpu}))` : ''}`]);
  const out = [
    '## Latest `npm run bench` report',
    '',
    'Generated by `npm run bench` (bench/all.ts), which rewrites only this section, between its markers; the sections after it are written by hand.',
    '',
    `- **Command:** \`${run.command}\``,
    `- **Date:** ${when}`,
    `- **Commit:** \`${run.commit}\`${run.dirty ? ' + uncommitted changes' : ''}`,
    `- **Machine:** ${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB memory; Node ${m.node}; ${m.os}`,
    `- **Mode:** ${run.quick ? "quick: every bench with small settings (each one's command below), for a quick look, not for the goals" : "full: each bench's default settings"}`,
    `- **Total:** ${duration(run.totalSeconds)}; ${outcomes.length - failed} of ${outcomes.length} benches ok${failed > 0 ? `, **${failed} failed**` : ''}`,
    '',
    'Absolute times depend on the machine and what else ran on it; the ratios and differences measured within one run are what to compare.',
    '',
    table(['bench', 'result', 'time', 'tables'], ['l', 'l', 'r', 'l'], rows),
    '',
    ...outcomes.map((o) => benchSection(o, anchors)),
  ];
  return out.join('\n').trimEnd();
}
