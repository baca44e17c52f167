/**
 * One small table renderer per bench for `npm run bench`'s report
 * (report.ts): from a bench's results JSON to its markdown tables, with the
 * accessors that turn an unexpected shape into a `ShapeError` the report
 * shows instead of throwing. Pure.
 */

import { formatBytes } from './payload.ts';

/** Renders one bench's results as markdown; throws ShapeError when they are not shaped as expected. */
export type Renderer = (results: unknown) => string;

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

export function table(head: readonly string[], align: readonly ('l' | 'r')[], rows: readonly (readonly string[])[]): string {
  return [`| ${head.join(' | ')} |`, `| ${align.map((a) => (a === 'r' ? '---:' : '---')).join(' | ')} |`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
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
    fmt(num(row, 'learningUs')),
    fmt(num(row, 'buildMs'), 3),
    fmt(num(row, 'firstDecisionUs'), 1),
  ]);
  return [
    `${fmt(num(r, 'models'), 0)} models, ${fmt(num(r, 'measured'), 0)} backends measured by the isolate, PoP ${str(r, 'pop')}; median of ${fmt(num(r, 'batches'), 0)} batches per path.`,
    '',
    table(
      ['backends', 'candidates / request', 'old (scan + sort) us / decision', 'new (index, top 8) us / decision', 'old / new', 'new, learning after each decision us', 'index build ms', 'first decision after a build us'],
      ['r', 'r', 'r', 'r', 'r', 'r', 'r', 'r'],
      rows,
    ),
    ...popBookLine(r),
  ].join('\n');
}

/** bench:routing's line on the PoP's service book, when its results have one (older ones do not). */
function popBookLine(r: unknown): string[] {
  const book = (r as { popBook?: unknown }).popBook;
  if (!Array.isArray(book) || book.length === 0) return [];
  const parts = book.map((e) => `${fmt(num(e, 'entries'), 0)} entries (${fmt(num(e, 'chars'), 0)} characters): ${fmt(num(e, 'exchangeUs'), 0)} us`);
  return ['', `One exchange with the PoP's service book (read back, one isolate's 64 pairs added, written out, what changed taken; once a second per isolate, after a response): ${parts.join('; ')}.`];
}

/** The renderers of the benches whose results are JSON (the sim's fragment is markdown: report.ts). */
export const TABLE_RENDERERS = {
  backend: renderBackend,
  edge: renderEdge,
  settlement: renderSettlement,
  tensors: renderTensors,
  'main-thread': renderMainThread,
  routing: renderRouting,
} satisfies Record<string, Renderer>;
