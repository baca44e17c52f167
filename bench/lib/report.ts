/**
 * The report `npm run bench` writes (bench/all.ts runs the benches): from
 * each bench's outcome (its parsed results, or why it failed) and the run's
 * facts (command, commit, machine) to one markdown section (each bench's
 * tables: report-tables.ts), and that section put between its markers in
 * docs/benchmarks.md with everything outside them left as it was. Pure: no
 * files, no processes.
 */

import { ShapeError, TABLE_RENDERERS, table, type Renderer } from './report-tables.ts';

export { ShapeError };

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

/** The sim's own fragment, its headings nested under the sim's subsection. */
function renderSim(r: unknown): string {
  if (typeof r !== 'string') throw new ShapeError('the sim fragment is not text');
  return demoteHeadings(r.trim(), 4);
}

const RENDERERS: Record<BenchName, Renderer> = { ...TABLE_RENDERERS, sim: renderSim };

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
  rows.push(['`bench:gpu`', 'not run here: it needs a GPU', '-', `\`npm run bench:gpu\` on a GPU host (CUDA or WebGPU)${anchors.gpu ? ` ([its section](#${anchors.gpu}))` : ''}`]);
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
