/**
 * What the simulator's SVG pictures share: escaping text for XML, formatting
 * numbers for labels and coordinates, the document wrapper (white background,
 * `viewBox`, one font), 1-2-5 tick steps and nearest-rank quantiles. Pure
 * functions on strings and numbers; no DOM.
 */

/** The font every picture uses. */
export const FONT_FAMILY = 'system-ui, sans-serif';

// Characters XML 1.0 does not allow anywhere in a document.
const INVALID_XML = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]/g;
const ENTITIES: Readonly<Record<string, string>> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/** Text made safe for element content and attribute values (quotes included); characters XML forbids are dropped. */
export function escapeXml(text: string): string {
  return text.replace(INVALID_XML, '').replace(/[&<>"']/g, (c) => ENTITIES[c]!);
}

/** A coordinate rounded to one decimal, without a trailing `.0` or a `-0`. */
export function coord(n: number): string {
  const r = Math.round(n * 10) / 10;
  return Object.is(r, -0) ? '0' : String(r);
}

/** Digits grouped by thousands with commas (the integer part of a non-negative decimal string). */
function group(digits: string): string {
  return digits.replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}

/**
 * A number for a label: whole numbers from 100 up (thousands grouped:
 * `30,000`), three significant digits below (`42.4`, `5.12`, `0.1`).
 */
export function formatNumber(n: number): string {
  if (!Number.isFinite(n)) return String(n);
  const sign = n < 0 ? '-' : '';
  const a = Math.abs(n);
  if (a >= 100) return sign + group(String(Math.round(a)));
  if (a === 0) return '0';
  const s = String(Number(a.toPrecision(3)));
  return s === '0' ? '0' : sign + s;
}

/** An SVG document: `xmlns`, size and `viewBox`, the font, a white background, then `body`. */
export function svgDocument(width: number, height: number, body: readonly string[]): string {
  const w = coord(width);
  const h = coord(height);
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}" font-family="${FONT_FAMILY}">`,
    `<rect x="0" y="0" width="${w}" height="${h}" fill="#fff"/>`,
    ...body,
    '</svg>',
  ].join('\n');
}

/** `m * 10^e` computed so that small steps print exactly (`0.2`, not `0.20000000000000004`). */
export function scaled(m: number, e: number): number {
  return e >= 0 ? m * 10 ** e : m / 10 ** -e;
}

/** The smallest step of the form 1, 2 or 5 times a power of ten that is at least `raw` (> 0). */
export function niceStep(raw: number): number {
  const e = Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) {
    const step = scaled(m, e);
    if (step >= raw * (1 - 1e-12)) return step;
  }
  return scaled(10, e);
}

/** Multiples of a 1-2-5 step from `lo` to `hi` (both included when they fall on the step), about `count` of them. */
export function linearTicks(lo: number, hi: number, count: number): number[] {
  if (!(hi > lo)) return [lo];
  const step = niceStep((hi - lo) / Math.max(1, count));
  const first = Math.ceil(lo / step - 1e-9);
  const last = Math.floor(hi / step + 1e-9);
  const ticks: number[] = [];
  for (let k = first; k <= last; k++) ticks.push(Number((k * step).toPrecision(12)));
  return ticks;
}

/** The values 1, 2 and 5 times a power of ten in [lo, hi] (lo > 0), ascending. */
export function logTicks(lo: number, hi: number): number[] {
  const ticks: number[] = [];
  for (let e = Math.floor(Math.log10(lo)) - 1; e <= Math.ceil(Math.log10(hi)); e++) {
    for (const m of [1, 2, 5]) {
      const v = scaled(m, e);
      if (v >= lo * (1 - 1e-9) && v <= hi * (1 + 1e-9)) ticks.push(v);
    }
  }
  return ticks;
}

/** The largest 1, 2 or 5 times a power of ten that is at most `v` (> 0). */
export function niceFloor(v: number): number {
  const e = Math.floor(Math.log10(v));
  for (const m of [5, 2, 1]) if (scaled(m, e) <= v * (1 + 1e-12)) return scaled(m, e);
  return scaled(5, e - 1);
}

/** The smallest 1, 2 or 5 times a power of ten that is at least `v` (> 0). */
export function niceCeil(v: number): number {
  return niceStep(v);
}

/** The nearest-rank `p`-quantile (0 < p <= 1) of ascending values: the smallest value with at least a fraction `p` of the values at or below it. */
export function quantileSorted(sorted: ArrayLike<number>, p: number): number {
  return sorted[quantileIndex(sorted.length, p)]!;
}

/** The index of the nearest-rank `p`-quantile among `n` ascending values. */
export function quantileIndex(n: number, p: number): number {
  return Math.min(n - 1, Math.max(0, Math.ceil(p * n - 1e-9) - 1));
}
