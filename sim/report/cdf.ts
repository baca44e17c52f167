/**
 * The simulator's latency chart as an SVG string: the empirical CDF of each
 * series on one plot (log x axis by default, y from 0 to 1), 1-2-5 gridlines,
 * dashed guides at p50, p90 and p99 with each series' crossing marked, and a
 * legend with each series' quantiles. Long series are downsampled; the
 * quantiles are exact. Pure and deterministic; no DOM.
 */

import { coord, escapeXml, formatNumber, linearTicks, logTicks, niceCeil, niceFloor, niceStep, quantileIndex, svgDocument } from './svg.ts';

export interface CdfSeries {
  label: string;
  values: readonly number[];
}

export interface CdfOptions {
  title: string;
  xLabel: string;
  logX?: boolean /* default true */;
  width?: number; // default 960
  height?: number; // default 540
  /** The y axis' caption. Default: 'fraction at or below x'. */
  yLabel?: string;
}

interface Prepared {
  label: string;
  sorted: Float64Array;
  /** Exact nearest-rank quantiles, in the order of `GUIDES`. */
  quantiles: number[];
}

/** The quantiles that get a dashed guide. */
const GUIDES = [
  { p: 0.5, name: 'p50' },
  { p: 0.9, name: 'p90' },
  { p: 0.99, name: 'p99' },
] as const;

/** Okabe-Ito, ordered so that the first series get the strongest contrasts on white; yellow last. */
const PALETTE = ['#0072B2', '#D55E00', '#009E73', '#CC79A7', '#56B4E9', '#E69F00', '#000000', '#F0E442'] as const;
/** Past the palette, colours repeat with these dash patterns. */
const DASHES = ['', '6 3', '2 2', '8 3 2 3'] as const;

/** Points per series along the rank and along the x axis each; the curve drawn has at most about twice as many. */
const SAMPLES = 200;
/** Series with at most this many values are drawn as exact steps. */
const EXACT_STEPS = 200;

/** Approximate text widths, for laying out the legend without a font. */
const LABEL_CHAR = 7.4;
const STATS_CHAR = 6.2;

function prepare(series: readonly CdfSeries[]): Prepared[] {
  if (series.length === 0) throw new Error('cdfSvg: no series to draw');
  return series.map((s, i) => {
    const name = `series ${i} ("${s.label}")`;
    if (s.values.length === 0) throw new Error(`cdfSvg: ${name} has no values`);
    const sorted = new Float64Array(s.values.length);
    for (let k = 0; k < s.values.length; k++) {
      const v = s.values[k];
      if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`cdfSvg: ${name} has a non-finite value (${String(v)}) at index ${k}`);
      sorted[k] = v;
    }
    sorted.sort();
    return { label: s.label, sorted, quantiles: GUIDES.map(({ p }) => sorted[quantileIndex(sorted.length, p)]!) };
  });
}

/** An x scale from data to pixels, with its (nice) domain and its inverse in the transformed space. */
interface XScale {
  lo: number;
  hi: number;
  /** Data value to the transformed space (log10 or identity); values a log axis cannot show go to its low end. */
  t: (v: number) => number;
  fromT: (t: number) => number;
  px: (v: number) => number;
}

function xScale(data: Prepared[], logX: boolean, left: number, right: number): XScale {
  const min = Math.min(...data.map((d) => d.sorted[0]!));
  const max = Math.max(...data.map((d) => d.sorted[d.sorted.length - 1]!));
  let lo: number;
  let hi: number;
  let t: (v: number) => number;
  let fromT: (t: number) => number;
  if (logX) {
    // Values at or below zero sit on the axis' low end, at the smallest positive value's nice floor.
    const positive = data.flatMap((d) => {
      const k = d.sorted.findIndex((v) => v > 0);
      return k < 0 ? [] : [d.sorted[k]!];
    });
    const minPositive = positive.length > 0 ? Math.min(...positive) : 1;
    lo = niceFloor(minPositive);
    hi = Math.max(niceCeil(Math.max(max, lo)), lo * 10);
    const tlo = Math.log10(lo);
    t = (v) => (v > 0 ? Math.max(tlo, Math.log10(v)) : tlo);
    fromT = (x) => 10 ** x;
  } else {
    const lo0 = Math.min(0, min);
    const hi0 = max > lo0 ? max : lo0 + 1;
    const step = niceStep((hi0 - lo0) / 8);
    lo = Number((Math.floor(lo0 / step + 1e-9) * step).toPrecision(12));
    hi = Number((Math.ceil(hi0 / step - 1e-9) * step).toPrecision(12));
    t = (v) => v;
    fromT = (x) => x;
  }
  const t0 = t(lo);
  const t1 = t(hi);
  return { lo, hi, t, fromT, px: (v) => left + ((t(v) - t0) / (t1 - t0)) * (right - left) };
}

/** Index of the last value at most `v` in ascending `sorted`, or -1. */
function lastAtMost(sorted: Float64Array, v: number): number {
  let a = 0;
  let b = sorted.length;
  while (a < b) {
    const m = (a + b) >>> 1;
    if (sorted[m]! <= v) a = m + 1;
    else b = m;
  }
  return a - 1;
}

/** The indices a long series is drawn through: evenly spaced in rank and along the x axis, the ends and the guides' quantiles. */
function sampleIndices(sorted: Float64Array, x: XScale): number[] {
  const n = sorted.length;
  const keep = new Set<number>([0, n - 1, ...GUIDES.map(({ p }) => quantileIndex(n, p))]);
  for (let k = 0; k < SAMPLES; k++) keep.add(Math.round((k * (n - 1)) / (SAMPLES - 1)));
  const t0 = x.t(x.lo);
  const t1 = x.t(x.hi);
  for (let k = 1; k < SAMPLES; k++) {
    const i = lastAtMost(sorted, x.fromT(t0 + ((t1 - t0) * k) / SAMPLES));
    if (i >= 0) keep.add(i);
  }
  return [...keep].sort((a, b) => a - b);
}

/** The series' CDF as path data: exact steps for short series, else a line through sampled points (value, rank / n). */
function curve(sorted: Float64Array, x: XScale, y: (f: number) => number): string {
  const n = sorted.length;
  const parts = [`M${coord(x.px(sorted[0]!))},${coord(y(0))}`];
  if (n <= EXACT_STEPS) {
    for (let i = 0; i < n; i++) {
      if (i > 0) parts.push(`H${coord(x.px(sorted[i]!))}`);
      parts.push(`V${coord(y((i + 1) / n))}`);
    }
  } else {
    for (const i of sampleIndices(sorted, x)) parts.push(`L${coord(x.px(sorted[i]!))},${coord(y((i + 1) / n))}`);
  }
  return parts.join('');
}

/** Empirical CDFs of each series on one chart (log x axis by default, y 0..1), a legend, gridlines at 1-2-5 steps, dashed guides at p50, p90 and p99. Each series is downsampled to at most ~400 points (keep min, max and the exact p50/p90/p99). Deterministic. */
export function cdfSvg(series: readonly CdfSeries[], options: CdfOptions): string {
  const data = prepare(series);
  const logX = options.logX ?? true;
  const width = options.width ?? 960;
  let height = options.height ?? 540;
  if (!Number.isFinite(width) || width < 300) throw new Error(`cdfSvg: width must be at least 300 (got ${width})`);
  if (!Number.isFinite(height) || height < 200) throw new Error(`cdfSvg: height must be at least 200 (got ${height})`);

  // Layout: title on top, plot on the left, legend on the right.
  const stats = data.map((d) => GUIDES.map(({ name }, k) => `${name} ${formatNumber(d.quantiles[k]!)}`).join(' · '));
  const textWidth = Math.max(...data.map((d, i) => Math.max(d.label.length * LABEL_CHAR, stats[i]!.length * STATS_CHAR)));
  const legendWidth = 32 + Math.min(textWidth, width * 0.35);
  const left = 64;
  const right = width - legendWidth - 44;
  const top = 56;
  const entryHeight = 36;
  const legendBottom = top + data.length * entryHeight;
  height = Math.max(height, legendBottom + 16);
  const bottom = height - 56;
  const x = xScale(data, logX, left, right);
  const y = (f: number) => bottom - f * (bottom - top);

  const body: string[] = [];
  body.push(`<text x="16" y="34" font-size="20" font-weight="600" fill="#111">${escapeXml(options.title)}</text>`);

  // Gridlines and axes: 1-2-5 steps on both; on a log axis decades are stronger and, when crowded, alone labelled.
  body.push(`<g class="grid" font-size="11" fill="#444">`);
  const perDecade = logX ? (right - left) / (Math.log10(x.hi) - Math.log10(x.lo)) : Infinity;
  const xTicks = logX ? logTicks(x.lo, x.hi) : linearTicks(x.lo, x.hi, Math.max(2, Math.floor((right - left) / 90)));
  const isDecade = (v: number) => Math.abs(Math.log10(v) - Math.round(Math.log10(v))) < 1e-9;
  const decadeStride = perDecade >= 40 ? 1 : Math.ceil(40 / perDecade);
  for (const v of xTicks) {
    const strong = !logX || isDecade(v);
    if (logX && !strong && perDecade < 40) continue;
    const px = coord(x.px(v));
    body.push(`<line x1="${px}" x2="${px}" y1="${coord(top)}" y2="${coord(bottom)}" stroke="${strong ? '#d0d0d0' : '#ececec'}" stroke-width="1"/>`);
    const labelled = !logX || (perDecade >= 160 ? true : isDecade(v) && Math.round(Math.log10(v)) % decadeStride === 0);
    if (labelled) body.push(`<text x="${px}" y="${coord(bottom + 16)}" text-anchor="middle">${escapeXml(formatNumber(v))}</text>`);
  }
  for (const f of linearTicks(0, 1, 10)) {
    const py = coord(y(f));
    body.push(`<line x1="${coord(left)}" x2="${coord(right)}" y1="${py}" y2="${py}" stroke="${f === 0 || f === 1 ? '#d0d0d0' : '#ececec'}" stroke-width="1"/>`);
    body.push(`<text x="${coord(left - 6)}" y="${coord(y(f) + 4)}" text-anchor="end">${formatNumber(f)}</text>`);
  }
  body.push('</g>');
  body.push(`<line x1="${coord(left)}" x2="${coord(right)}" y1="${coord(bottom)}" y2="${coord(bottom)}" stroke="#888"/>`);
  body.push(`<line x1="${coord(left)}" x2="${coord(left)}" y1="${coord(top)}" y2="${coord(bottom)}" stroke="#888"/>`);
  body.push(`<text x="${coord((left + right) / 2)}" y="${coord(height - 16)}" font-size="13" fill="#222" text-anchor="middle">${escapeXml(options.xLabel)}</text>`);
  body.push(`<text transform="translate(18 ${coord((top + bottom) / 2)}) rotate(-90)" font-size="13" fill="#222" text-anchor="middle">${escapeXml(options.yLabel ?? 'fraction at or below x')}</text>`);

  // Guides at the quantiles, named just right of the plot.
  body.push(`<g class="guides" stroke="#777" stroke-dasharray="4 4" stroke-width="1">`);
  for (const { p, name } of GUIDES) {
    const py = coord(y(p));
    body.push(`<line x1="${coord(left)}" x2="${coord(right)}" y1="${py}" y2="${py}"><title>${name}</title></line>`);
  }
  body.push('</g>');
  body.push(`<g class="guide-labels" font-size="10" fill="#555">`);
  for (const { p, name } of GUIDES) body.push(`<text x="${coord(right + 4)}" y="${coord(y(p) + 3.5)}">${name}</text>`);
  body.push('</g>');

  // Curves, then where each crosses the guides (exact quantiles).
  const style = (i: number) => {
    const dash = DASHES[Math.floor(i / PALETTE.length) % DASHES.length]!;
    return `stroke="${PALETTE[i % PALETTE.length]}"${dash ? ` stroke-dasharray="${dash}"` : ''}`;
  };
  body.push(`<g class="series" fill="none" stroke-width="2" stroke-linejoin="round">`);
  data.forEach((d, i) => {
    body.push(`<path d="${curve(d.sorted, x, y)}" ${style(i)}><title>${escapeXml(d.label)}</title></path>`);
  });
  body.push('</g>');
  body.push(`<g class="markers" stroke="#fff" stroke-width="1">`);
  data.forEach((d, i) => {
    GUIDES.forEach(({ p, name }, k) => {
      const q = d.quantiles[k]!;
      const title = `${d.label} ${name}: ${formatNumber(q)}`;
      body.push(`<circle cx="${coord(x.px(q))}" cy="${coord(y(p))}" r="3.5" fill="${PALETTE[i % PALETTE.length]}"><title>${escapeXml(title)}</title></circle>`);
    });
  });
  body.push('</g>');

  // Legend, in series order.
  const lx = right + 44;
  body.push(`<g class="legend">`);
  data.forEach((d, i) => {
    const ly = top + i * entryHeight + 10;
    body.push(`<line x1="${coord(lx)}" x2="${coord(lx + 22)}" y1="${coord(ly - 4)}" y2="${coord(ly - 4)}" stroke-width="3" ${style(i)}/>`);
    body.push(`<text x="${coord(lx + 30)}" y="${coord(ly)}" font-size="13" fill="#111">${escapeXml(d.label)}</text>`);
    body.push(`<text x="${coord(lx + 30)}" y="${coord(ly + 15)}" font-size="11" fill="#666">${escapeXml(stats[i]!)}</text>`);
  });
  body.push('</g>');
  return svgDocument(width, height, body);
}
