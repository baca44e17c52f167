/**
 * The CDF chart: one curve per series and a legend in series order, exact
 * quantile guides placed on the x axis, downsampling that keeps the ends and
 * the quantiles, log and linear axes; a well-formed, deterministic, escaped
 * SVG; clear errors on empty or non-finite input.
 */

import { describe, expect, it } from 'vitest';
import { cdfSvg, type CdfSeries } from '../../../sim/report/cdf.ts';
import { elements, expectWellFormed } from './svg-checks.ts';

/** The vertices of path data made of M, L, H and V commands. */
function vertices(d: string): [number, number][] {
  const out: [number, number][] = [];
  let x = 0;
  let y = 0;
  for (const [, cmd, args] of d.matchAll(/([MLHV])([^MLHV]*)/g)) {
    const n = args!.split(',').map(Number);
    if (cmd === 'H') x = n[0]!;
    else if (cmd === 'V') y = n[0]!;
    else [x, y] = [n[0]!, n[1]!];
    out.push([x, y]);
  }
  return out;
}

/** The x position of the x axis' tick labelled `label`. */
const tickX = (svg: string, label: string) => {
  const tick = elements(svg, 'text', 'grid').find((t) => t.body === label && t['text-anchor'] === 'middle');
  expect(tick, `tick ${label}`).toBeDefined();
  return Number(tick!.x);
};

/** The y position of the y axis' tick labelled `label`. */
const tickY = (svg: string, label: string) => {
  const tick = elements(svg, 'text', 'grid').find((t) => t.body === label && t['text-anchor'] === 'end');
  expect(tick, `tick ${label}`).toBeDefined();
  return Number(tick!.y) - 4;
};

const marker = (svg: string, title: string) => {
  const found = elements(svg, 'circle', 'markers').filter((c) => c.body === `<title>${title}</title>`);
  expect(found, title).toHaveLength(1);
  return { x: Number(found[0]!.cx), y: Number(found[0]!.cy) };
};

const oneToHundred: CdfSeries = { label: 'one', values: Array.from({ length: 100 }, (_, i) => 100 - i) };

/** `n` deterministic log-normal-ish latencies around `median` ms. */
function latencies(n: number, median: number, seed: number): number[] {
  let s = seed;
  const rnd = () => (s = (s * 1103515245 + 12345) % 2147483648) / 2147483648;
  return Array.from({ length: n }, () => median * Math.exp((rnd() + rnd() + rnd() - 1.5) * 2));
}

const POLICIES = ['cloud us-east', 'nearest cloud region', 'random node', 'nearest node', 'mesh without hedging', 'mesh'];

describe('cdfSvg', () => {
  it('is one well-formed SVG element with xmlns, a viewBox, the font and a white background', () => {
    const svg = cdfSvg([oneToHundred], { title: 'latency', xLabel: 'ms' });
    expectWellFormed(svg);
    const root = elements(svg, 'svg')[0]!;
    expect(root.xmlns).toBe('http://www.w3.org/2000/svg');
    expect(root.viewBox).toBe('0 0 960 540');
    expect(root['font-family']).toBe('system-ui, sans-serif');
    expect(elements(svg, 'rect')[0]).toMatchObject({ width: '960', height: '540', fill: '#fff' });
  });

  it('draws one path per series, in distinct colours, and the legend entries in series order', () => {
    const series = POLICIES.map((label, i) => ({ label, values: latencies(500, 20 * (i + 1), i + 1) }));
    const svg = cdfSvg(series, { title: 't', xLabel: 'ms' });
    const paths = elements(svg, 'path', 'series');
    expect(paths.map((p) => p.body)).toEqual(POLICIES.map((l) => `<title>${l}</title>`));
    expect(new Set(paths.map((p) => p.stroke)).size).toBe(POLICIES.length);
    const legend = elements(svg, 'text', 'legend').filter((t) => t['font-size'] === '13');
    expect(legend.map((t) => t.body)).toEqual(POLICIES);
    expect(legend.map((t) => Number(t.y))).toEqual(legend.map((t) => Number(t.y)).sort((a, b) => a - b));
  });

  it('keeps series apart past the palette with dash patterns', () => {
    const series = Array.from({ length: 12 }, (_, i) => ({ label: `s${i}`, values: [1 + i, 2 + i] }));
    const styles = elements(cdfSvg(series, { title: 't', xLabel: 'ms' }), 'path', 'series').map((p) => `${p.stroke} ${p['stroke-dasharray'] ?? ''}`);
    expect(new Set(styles).size).toBe(12);
  });

  it('puts the p50, p90 and p99 guides and markers at the exact nearest-rank quantiles (1..100: 50, 90, 99)', () => {
    const svg = cdfSvg([oneToHundred], { title: 't', xLabel: 'ms' });
    const x10 = tickX(svg, '10');
    const x100 = tickX(svg, '100');
    const x = (v: number) => x10 + (x100 - x10) * (Math.log10(v) - 1);
    const y0 = tickY(svg, '0');
    const y1 = tickY(svg, '1');
    const y = (f: number) => y0 + (y1 - y0) * f;
    for (const [name, p, q] of [
      ['p50', 0.5, 50],
      ['p90', 0.9, 90],
      ['p99', 0.99, 99],
    ] as const) {
      const m = marker(svg, `one ${name}: ${q}`);
      expect(m.x).toBeCloseTo(x(q), 0);
      expect(m.y).toBeCloseTo(y(p), 0);
    }
    const guides = elements(svg, 'line', 'guides');
    expect(guides.map((g) => g.body)).toEqual(['<title>p50</title>', '<title>p90</title>', '<title>p99</title>']);
    expect(Number(guides[0]!.y1)).toBeCloseTo(y(0.5), 0);
    expect(svg).toContain('stroke-dasharray="4 4"');
    expect(elements(svg, 'text', 'legend').map((t) => t.body)).toContain('p50 50 · p90 90 · p99 99');
  });

  it('draws a short series as exact steps through every value', () => {
    const svg = cdfSvg([{ label: 's', values: [30, 10, 20, 40] }], { title: 't', xLabel: 'ms' });
    const pts = vertices(elements(svg, 'path', 'series')[0]!.d!);
    const y = (f: number) => tickY(svg, '0') + (tickY(svg, '1') - tickY(svg, '0')) * f;
    const x = (v: number) => tickX(svg, '10') + (tickX(svg, '100') - tickX(svg, '10')) * (Math.log10(v) - 1);
    const expected = [
      [10, 0],
      [10, 0.25],
      [20, 0.25],
      [20, 0.5],
      [30, 0.5],
      [30, 0.75],
      [40, 0.75],
      [40, 1],
    ];
    expect(pts).toHaveLength(expected.length);
    pts.forEach(([px, py], i) => {
      expect(px).toBeCloseTo(x(expected[i]![0]!), 0);
      expect(py).toBeCloseTo(y(expected[i]![1]!), 0);
    });
  });

  it('downsamples a long series to about 400 points, keeping min, max and the exact quantiles', () => {
    const values = latencies(100_000, 80, 3);
    const sorted = [...values].sort((a, b) => a - b);
    const svg = cdfSvg([{ label: 'long', values }], { title: 't', xLabel: 'ms' });
    const pts = vertices(elements(svg, 'path', 'series')[0]!.d!);
    expect(pts.length).toBeLessThanOrEqual(410);
    expect(pts.length).toBeGreaterThan(200);
    const x = (v: number) => tickX(svg, '10') + (tickX(svg, '100') - tickX(svg, '10')) * (Math.log10(v) - 1);
    expect(pts[0]![0]).toBeCloseTo(x(sorted[0]!), 0);
    expect(pts.at(-1)![0]).toBeCloseTo(x(sorted.at(-1)!), 0);
    expect(pts.at(-1)![1]).toBeCloseTo(tickY(svg, '1'), 0);
    for (const [name, rank] of [
      ['p50', 50_000],
      ['p90', 90_000],
      ['p99', 99_000],
    ] as const) {
      const found = elements(svg, 'circle', 'markers').filter((c) => c.body!.startsWith(`<title>long ${name}: `));
      expect(found, name).toHaveLength(1);
      const m = { x: Number(found[0]!.cx), y: Number(found[0]!.cy) };
      expect(m.x).toBeCloseTo(x(sorted[rank - 1]!), 0);
      expect(pts.some(([px, py]) => px === m.x && py === m.y), name).toBe(true);
    }
    // The x order of the vertices follows the values.
    expect(pts.map(([px]) => px)).toEqual(pts.map(([px]) => px).sort((a, b) => a - b));
  });

  it('gives the same string for the same samples in any order', () => {
    const values = latencies(5000, 50, 9);
    const a = cdfSvg([{ label: 'x', values }], { title: 't', xLabel: 'ms' });
    const b = cdfSvg([{ label: 'x', values: [...values].reverse() }], { title: 't', xLabel: 'ms' });
    expect(a).toBe(b);
  });

  it('handles values down to 0.1 on the log axis, and zero at its low end, without infinities', () => {
    const svg = cdfSvg([{ label: 'small', values: [0.1, 0.3, 1, 10, 0] }], { title: 't', xLabel: 'ms' });
    expectWellFormed(svg);
    expect(svg).not.toMatch(/NaN|Infinity/);
    const x01 = tickX(svg, '0.1');
    const first = vertices(elements(svg, 'path', 'series')[0]!.d!)[0]!;
    expect(first[0]).toBeCloseTo(x01, 0);
  });

  it('draws a linear x axis when asked, with evenly spaced 1-2-5 ticks from zero', () => {
    const svg = cdfSvg([oneToHundred], { title: 't', xLabel: 'ms', logX: false });
    const ticks = elements(svg, 'text', 'grid').filter((t) => t['text-anchor'] === 'middle');
    expect(ticks[0]!.body).toBe('0');
    const values = ticks.map((t) => Number(t.body));
    const step = values[1]! - values[0]!;
    expect([1, 2, 5].some((m) => Number.isInteger(Math.log10(step / m)))).toBe(true);
    const xs = ticks.map((t) => Number(t.x));
    xs.slice(1).forEach((v, i) => expect(v - xs[i]!).toBeCloseTo(xs[1]! - xs[0]!, 0));
    const m = marker(svg, 'one p50: 50');
    expect(m.x).toBeCloseTo(tickX(svg, '0') + ((tickX(svg, '100') - tickX(svg, '0')) * 50) / 100, 0);
  });

  it('escapes the title, axis label and series labels', () => {
    const svg = cdfSvg([{ label: `<b>"mesh" & 'co'`, values: [1, 2] }], { title: 'A & B', xLabel: '<ms>' });
    expectWellFormed(svg);
    expect(svg).toContain('A &amp; B');
    expect(svg).toContain('&lt;ms&gt;');
    expect(svg).toContain('&lt;b&gt;&quot;mesh&quot; &amp; &#39;co&#39;');
    expect(svg).not.toContain('<b>');
  });

  it('rejects an empty series list, an empty series and non-finite values with a clear error', () => {
    const opts = { title: 't', xLabel: 'ms' };
    expect(() => cdfSvg([], opts)).toThrow(/no series/);
    expect(() => cdfSvg([oneToHundred, { label: 'mesh', values: [] }], opts)).toThrow(/series 1 \("mesh"\) has no values/);
    expect(() => cdfSvg([{ label: 'mesh', values: [1, Number.NaN] }], opts)).toThrow(/"mesh".*non-finite value \(NaN\) at index 1/);
    expect(() => cdfSvg([{ label: 'nearest node', values: [Number.POSITIVE_INFINITY] }], opts)).toThrow(/"nearest node".*Infinity/);
  });

  it('renders six series of 100k samples each into a small SVG', () => {
    const series = POLICIES.map((label, i) => ({ label, values: latencies(100_000, 15 * (i + 1), i + 11) }));
    const svg = cdfSvg(series, { title: 'latency', xLabel: 'ms' });
    expect(svg.length).toBeLessThan(60_000);
    expect(elements(svg, 'path', 'series')).toHaveLength(6);
  });
});

