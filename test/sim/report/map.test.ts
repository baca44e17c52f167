/**
 * The world map: one circle per weighted point, sized by weight and coloured
 * by value on a clamped sequential scale, placed by the projection; a
 * well-formed, deterministic, escaped, small SVG; clear errors on bad points.
 */

import { describe, expect, it } from 'vitest';
import { worldMapSvg, type MapPoint } from '../../../sim/report/map.ts';
import { elements, expectWellFormed } from './svg-checks.ts';

/** Relative luminance of `#rrggbb`. */
function luminance(color: string): number {
  const n = Number.parseInt(color.slice(1), 16);
  return 0.2126 * ((n >> 16) & 255) + 0.7152 * ((n >> 8) & 255) + 0.0722 * (n & 255);
}

const circleOf = (svg: string, label: string) => {
  const found = elements(svg, 'circle', 'points').filter((c) => c.body!.includes(`${label}:`));
  expect(found, label).toHaveLength(1);
  return found[0]!;
};

const cities: MapPoint[] = [
  { lat: 51.5, lon: -0.1, value: 20, weight: 900, label: 'London' },
  { lat: 40.7, lon: -74, value: 35, weight: 1200, label: 'New York' },
  { lat: -33.9, lon: 151.2, value: 180, weight: 300, label: 'Sydney' },
  { lat: 1.3, lon: 103.8, value: 60, weight: 400, label: 'Singapore' },
  { lat: -23.5, lon: -46.6, value: 140, weight: 500, label: 'São Paulo' },
];

/** A deterministic spread of `n` points over the inhabited latitudes. */
function manyPoints(n: number): MapPoint[] {
  let seed = 42;
  const rnd = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
  return Array.from({ length: n }, (_, i) => ({
    lat: rnd() * 130 - 55,
    lon: rnd() * 360 - 180,
    value: 5 + rnd() ** 3 * 2000,
    weight: 1 + Math.floor(rnd() ** 2 * 10_000),
    label: `city ${i}`,
  }));
}

describe('worldMapSvg', () => {
  it('is one well-formed SVG element with xmlns, a viewBox, the font and a white background', () => {
    const svg = worldMapSvg(cities, { title: 'p50 latency', subtitle: 'mesh', unit: 'ms' });
    expectWellFormed(svg);
    const root = elements(svg, 'svg')[0]!;
    expect(root.xmlns).toBe('http://www.w3.org/2000/svg');
    expect(root.viewBox).toBe(`0 0 ${root.width} ${root.height}`);
    expect(root.width).toBe('960');
    expect(root['font-family']).toBe('system-ui, sans-serif');
    expect(elements(svg, 'rect')[0]).toMatchObject({ x: '0', y: '0', width: root.width, height: root.height, fill: '#fff' });
  });

  it('draws the land from the atlas under the points', () => {
    const svg = worldMapSvg(cities, { title: 't', unit: 'ms' });
    const land = elements(svg, 'path').find((p) => p.fill === '#dddddd');
    expect(land?.d?.length).toBeGreaterThan(10_000);
    expect(svg.indexOf(land!.d!)).toBeLessThan(svg.indexOf('<g class="points"'));
  });

  it('draws one circle per point with weight, larger for more weight (area proportional)', () => {
    const points: MapPoint[] = [
      { lat: 0, lon: 0, value: 1, weight: 0, label: 'none' },
      { lat: 10, lon: 10, value: 1, weight: 1, label: 'one' },
      { lat: 20, lon: 20, value: 1, weight: 4, label: 'four' },
      { lat: 30, lon: 30, value: 1, weight: 100, label: 'hundred' },
    ];
    const svg = worldMapSvg(points, { title: 't', unit: 'ms', maxRadius: 20 });
    expect(elements(svg, 'circle', 'points')).toHaveLength(3);
    expect(svg).not.toContain('none:');
    const r = (label: string) => Number(circleOf(svg, label).r);
    expect(r('hundred')).toBe(20);
    expect(r('four')).toBeCloseTo(2 * r('one'), 1);
    expect(r('hundred')).toBeCloseTo(10 * r('one'), 1);
  });

  it('draws larger circles first, so that smaller ones stay on top', () => {
    const svg = worldMapSvg(cities, { title: 't', unit: 'ms' });
    const radii = elements(svg, 'circle', 'points').map((c) => Number(c.r));
    expect(radii).toEqual([...radii].sort((a, b) => b - a));
    expect(new Set(radii).size).toBe(cities.length);
  });

  it('makes circle sizes comparable across maps given the same maxWeight', () => {
    const a = worldMapSvg(cities, { title: 'a', unit: 'ms', maxWeight: 5000 });
    const b = worldMapSvg(cities.slice(0, 2), { title: 'b', unit: 'ms', maxWeight: 5000 });
    const c = worldMapSvg(cities.slice(0, 2), { title: 'c', unit: 'ms' });
    expect(circleOf(a, 'London').r).toBe(circleOf(b, 'London').r);
    expect(circleOf(c, 'London').r).not.toBe(circleOf(b, 'London').r);
  });

  it('places points by the projection: east to the right, north up, longitude 0 in the middle', () => {
    const points: MapPoint[] = [
      { lat: 0, lon: 0, value: 1, weight: 1, label: 'origin' },
      { lat: 0, lon: 90, value: 1, weight: 1, label: 'east' },
      { lat: 45, lon: 0, value: 1, weight: 1, label: 'north' },
    ];
    const svg = worldMapSvg(points, { title: 't', unit: 'ms', width: 800 });
    const at = (label: string) => ({ x: Number(circleOf(svg, label).cx), y: Number(circleOf(svg, label).cy) });
    expect(at('origin').x).toBeCloseTo(400, 0);
    expect(at('east').x).toBeGreaterThan(at('origin').x + 100);
    expect(at('east').y).toBeCloseTo(at('origin').y, 0);
    expect(at('north').y).toBeLessThan(at('origin').y - 50);
  });

  it('colours a higher value later in the scale (darker), clamping values outside the domain', () => {
    const points: MapPoint[] = [-50, 0, 50, 100, 150].map((value, i) => ({ lat: i * 10, lon: i * 10, value, weight: 1, label: `v${value}` }));
    const svg = worldMapSvg(points, { title: 't', unit: 'ms', domain: [0, 100] });
    const fill = (value: number) => circleOf(svg, `v${value}`).fill!;
    expect(luminance(fill(0))).toBeGreaterThan(luminance(fill(50)));
    expect(luminance(fill(50))).toBeGreaterThan(luminance(fill(100)));
    expect(fill(-50)).toBe(fill(0));
    expect(fill(150)).toBe(fill(100));
    expect(svg).toContain('≤ 0');
    expect(svg).toContain('≥ 100');
  });

  it('gives the same value the same colour in two maps given the same domain', () => {
    const other: MapPoint = { lat: 0, lon: 0, value: 5000, weight: 1, label: 'far' };
    const a = worldMapSvg(cities, { title: 'a', unit: 'ms', domain: [0, 200] });
    const b = worldMapSvg([...cities, other], { title: 'b', unit: 'ms', domain: [0, 200] });
    expect(circleOf(a, 'Sydney').fill).toBe(circleOf(b, 'Sydney').fill);
    expect(circleOf(a, 'London').fill).toBe(circleOf(b, 'London').fill);
    // Without one, each map spans its own values.
    const c = worldMapSvg(cities, { title: 'c', unit: 'ms' });
    const d = worldMapSvg([...cities, other], { title: 'd', unit: 'ms' });
    expect(circleOf(c, 'Sydney').fill).not.toBe(circleOf(d, 'Sydney').fill);
  });

  it('defaults the colour domain to the 5th..95th percentile of the values, shown in the legend', () => {
    const points: MapPoint[] = Array.from({ length: 100 }, (_, i) => ({ lat: 0, lon: -179 + i * 3, value: i + 1, weight: 1, label: `p${i + 1}` }));
    const svg = worldMapSvg(points, { title: 't', unit: 'ms' });
    const legend = elements(svg, 'text', 'color-legend').map((t) => t.body);
    expect(legend).toContain('≤ 5');
    expect(legend).toContain('≥ 95');
    expect(legend[0]).toBe('ms');
    expect(circleOf(svg, 'p1').fill).toBe(circleOf(svg, 'p5').fill);
    expect(circleOf(svg, 'p6').fill).not.toBe(circleOf(svg, 'p5').fill);
    expect(circleOf(svg, 'p100').fill).toBe(circleOf(svg, 'p95').fill);
    expect(circleOf(svg, 'p94').fill).not.toBe(circleOf(svg, 'p95').fill);
  });

  it('gives the same string for the same input', () => {
    const points = manyPoints(50);
    expect(worldMapSvg(points, { title: 't', unit: 'ms' })).toBe(worldMapSvg(structuredClone(points), { title: 't', unit: 'ms' }));
  });

  it('escapes the title, subtitle, unit and labels', () => {
    const svg = worldMapSvg([{ lat: 0, lon: 0, value: 1, weight: 1, label: `<script>"x" & 'y'` }], {
      title: 'A & B <c>',
      subtitle: '"quoted"',
      unit: "m's",
      valueLabel: '<v>',
    });
    expectWellFormed(svg);
    expect(svg).toContain('A &amp; B &lt;c&gt;');
    expect(svg).toContain('&quot;quoted&quot;');
    expect(svg).toContain('&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;');
    expect(svg).toContain('&lt;v&gt; (m&#39;s)');
    expect(svg).not.toContain('<script>');
  });

  it('stays well under 300 KB with 300 points, coordinates at one decimal', () => {
    const svg = worldMapSvg(manyPoints(300), { title: 'p50 latency', subtitle: '300 cities', unit: 'ms' });
    expectWellFormed(svg);
    expect(elements(svg, 'circle', 'points')).toHaveLength(300);
    expect(svg.length).toBeLessThan(200_000);
    const coordinates = [...elements(svg, 'path').map((p) => p.d!), ...elements(svg, 'circle').flatMap((c) => [c.cx!, c.cy!, c.r!])];
    expect(coordinates.join(' ')).toMatch(/\d\.\d/);
    expect(coordinates.join(' ')).not.toMatch(/\d\.\d\d/);
  });

  it('draws the map and says so when no point has weight', () => {
    const svg = worldMapSvg([{ lat: 0, lon: 0, value: 1, weight: 0 }], { title: 't', unit: 'ms' });
    expectWellFormed(svg);
    expect(elements(svg, 'circle', 'points')).toHaveLength(0);
    expect(svg).toContain('no weighted points');
    expect(worldMapSvg([], { title: 't', unit: 'ms', domain: [0, 1] })).toContain('class="color-legend"');
  });

  it('rejects bad points and options with an error naming the point', () => {
    const ok = { lat: 0, lon: 0, value: 1, weight: 1 };
    const map = (p: Partial<MapPoint>, label?: string) => () => worldMapSvg([ok, { ...ok, ...p, ...(label ? { label } : {}) }], { title: 't', unit: 'ms' });
    expect(map({ value: Number.NaN }, 'Paris')).toThrow(/point 1 \("Paris"\) has a non-finite value \(NaN\)/);
    expect(map({ weight: Number.POSITIVE_INFINITY })).toThrow(/point 1 has a non-finite weight/);
    expect(map({ lat: 95 })).toThrow(/latitude 95 outside/);
    expect(map({ lon: -200 })).toThrow(/longitude -200 outside/);
    expect(map({ weight: -1 })).toThrow(/negative weight/);
    expect(() => worldMapSvg([ok], { title: 't', unit: 'ms', domain: [5, 5] })).toThrow(/domain/);
    expect(() => worldMapSvg([ok], { title: 't', unit: 'ms', domain: [0, Number.NaN] })).toThrow(/domain/);
  });
});
