/**
 * The simulator's world map as an SVG string: land and borders from
 * world-atlas (countries-110m) in the Equal Earth projection, one circle per
 * weighted point (area proportional to weight, colour by value on a
 * sequential scale where low is good), a colour legend, a size legend and the
 * title. Pure and deterministic; no DOM.
 */

import { geoEqualEarth, geoPath, type GeoPermissibleObjects } from 'd3-geo';
import { createRequire } from 'node:module';
import { feature, mesh } from 'topojson-client';
import { coord, escapeXml, formatNumber, linearTicks, niceFloor, quantileSorted, svgDocument } from './svg.ts';

export interface MapPoint {
  lat: number;
  lon: number;
  value: number;
  weight: number;
  label?: string;
}

export interface MapOptions {
  title: string;
  subtitle?: string;
  /** Unit shown in the legend, e.g. 'ms'. */
  unit: string;
  /** Colour scale domain [low, high]; values outside are clamped. Pass the same domain to two maps to make them comparable. Default: the 5th..95th percentile of the values. */
  domain?: readonly [number, number];
  width?: number; // default 960
  /** What the values are, shown before the unit in the colour legend, e.g. 'p50 latency'. Default: none (the unit alone). */
  valueLabel?: string;
  /** The weight drawn with `maxRadius`. Pass the same one to two maps to make their circle sizes comparable. Default: the largest weight. */
  maxWeight?: number;
  /** Radius in px of a circle of weight `maxWeight`. Default: width / 48. */
  maxRadius?: number;
  /** What the weights count, shown in the size legend, e.g. 'requests'. Default: 'weight'. */
  weightLabel?: string;
}

type Topology = Parameters<typeof feature>[0];

interface Drawn {
  cx: number;
  cy: number;
  r: number;
  fill: string;
  title: string;
  weight: number;
  index: number;
}

/** ColorBrewer YlOrRd without its two palest classes (they vanish on the land): yellow for low values, dark red for high. */
const SCALE = ['#fed976', '#feb24c', '#fd8d3c', '#fc4e2a', '#e31a1c', '#bd0026', '#800026'] as const;
const OCEAN = '#f3f6f9';
const LAND = '#dddddd';
const PAD = 16;
/** Circles are never drawn smaller than this, so that every weighted point stays visible. */
const MIN_RADIUS = 1;

const sphere: GeoPermissibleObjects = { type: 'Sphere' };

let atlas: { land: GeoPermissibleObjects; borders: GeoPermissibleObjects } | undefined;

/** Land and the borders between countries, read once. */
function loadAtlas(): { land: GeoPermissibleObjects; borders: GeoPermissibleObjects } {
  if (!atlas) {
    const topology = createRequire(import.meta.url)('world-atlas/countries-110m.json') as Topology;
    const objects = topology.objects as Record<string, Parameters<typeof mesh>[1]>;
    const countries = objects['countries']!;
    const land = objects['land'] ? feature(topology, objects['land']) : mesh(topology, countries);
    atlas = { land, borders: mesh(topology, countries, (a, b) => a !== b) };
  }
  return atlas;
}

function hex(rgb: readonly number[]): string {
  return '#' + rgb.map((c) => Math.round(c).toString(16).padStart(2, '0')).join('');
}

function rgb(color: string): [number, number, number] {
  const n = Number.parseInt(color.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

/** The scale's colour at `t` in [0, 1] (clamped), interpolated in RGB between the palette's classes. */
function colorAt(t: number): string {
  const x = Math.min(1, Math.max(0, t)) * (SCALE.length - 1);
  const i = Math.min(SCALE.length - 2, Math.floor(x));
  const a = rgb(SCALE[i]!);
  const b = rgb(SCALE[i + 1]!);
  const f = x - i;
  return hex(a.map((c, k) => c + (b[k]! - c) * f));
}

function checkPoint(p: MapPoint, i: number): void {
  const name = p.label === undefined ? `point ${i}` : `point ${i} ("${p.label}")`;
  for (const key of ['lat', 'lon', 'value', 'weight'] as const) {
    if (typeof p[key] !== 'number' || !Number.isFinite(p[key])) throw new Error(`worldMapSvg: ${name} has a non-finite ${key} (${String(p[key])})`);
  }
  if (p.lat < -90 || p.lat > 90) throw new Error(`worldMapSvg: ${name} has latitude ${p.lat} outside -90..90`);
  if (p.lon < -180 || p.lon > 180) throw new Error(`worldMapSvg: ${name} has longitude ${p.lon} outside -180..180`);
  if (p.weight < 0) throw new Error(`worldMapSvg: ${name} has a negative weight (${p.weight})`);
}

/** The colour domain: the one given (checked), else the 5th..95th percentile of the values, widened when they are all equal. */
function colorDomain(values: readonly number[], given: MapOptions['domain']): [number, number] | undefined {
  if (given) {
    const [lo, hi] = given;
    if (!Number.isFinite(lo) || !Number.isFinite(hi) || !(hi > lo)) throw new Error(`worldMapSvg: domain must be two finite numbers, low < high (got [${lo}, ${hi}])`);
    return [lo, hi];
  }
  if (values.length === 0) return undefined;
  const sorted = Float64Array.from(values).sort();
  const lo = quantileSorted(sorted, 0.05);
  const hi = quantileSorted(sorted, 0.95);
  return hi > lo ? [lo, hi] : [lo, lo + Math.max(1, Math.abs(lo) * 0.1)];
}

/** The colour legend: a bar of the scale over the domain, 1-2-5 ticks, markers for clamped ends, the unit. */
function colorLegend(x: number, y: number, width: number, domain: [number, number], clamped: { low: boolean; high: boolean }, caption: string): string[] {
  const [lo, hi] = domain;
  const steps = 64;
  const barH = 12;
  const at = (v: number) => x + ((v - lo) / (hi - lo)) * width;
  const out = [`<g class="color-legend">`, `<text x="${coord(x)}" y="${coord(y)}" font-size="12" fill="#333">${escapeXml(caption)}</text>`];
  const top = y + 8;
  for (let k = 0; k < steps; k++) {
    const x0 = x + (k / steps) * width;
    out.push(`<rect x="${coord(x0)}" y="${coord(top)}" width="${coord(width / steps + 0.5)}" height="${barH}" fill="${colorAt((k + 0.5) / steps)}"/>`);
  }
  out.push(`<rect x="${coord(x)}" y="${coord(top)}" width="${coord(width)}" height="${barH}" fill="none" stroke="#999" stroke-width="0.5"/>`);
  const ticks = linearTicks(lo, hi, Math.max(2, Math.floor(width / 60)));
  const labels = new Map<number, string>(ticks.map((t) => [t, formatNumber(t)]));
  // The ends are always labelled, and say when values beyond them were clamped onto them.
  labels.set(lo, clamped.low ? `≤ ${formatNumber(lo)}` : formatNumber(lo));
  labels.set(hi, clamped.high ? `≥ ${formatNumber(hi)}` : formatNumber(hi));
  const minGap = 44;
  const placed: number[] = [];
  for (const v of [lo, hi, ...ticks.filter((t) => t !== lo && t !== hi)]) {
    const px = at(v);
    if (placed.some((q) => Math.abs(q - px) < minGap)) continue;
    placed.push(px);
    const anchor = v === lo && px - x < 20 ? 'start' : v === hi && x + width - px < 20 ? 'end' : 'middle';
    out.push(`<line x1="${coord(px)}" x2="${coord(px)}" y1="${coord(top + barH)}" y2="${coord(top + barH + 4)}" stroke="#666"/>`);
    out.push(`<text x="${coord(px)}" y="${coord(top + barH + 16)}" font-size="11" fill="#333" text-anchor="${anchor}">${escapeXml(labels.get(v)!)}</text>`);
  }
  out.push('</g>');
  return out;
}

/** The size legend: reference circles for a round weight near the largest and a tenth of it. */
function sizeLegend(x: number, y: number, maxWeight: number, radius: (w: number) => number, caption: string): string[] {
  const out = [`<g class="size-legend">`, `<text x="${coord(x)}" y="${coord(y)}" font-size="12" fill="#333">${escapeXml(caption)}</text>`];
  const big = niceFloor(maxWeight);
  const weights = radius(big / 10) >= 2 ? [big / 10, big] : [big];
  let cx = x;
  const base = y + 8 + 2 * radius(big);
  for (const w of weights) {
    const r = radius(w);
    cx += r;
    out.push(`<circle cx="${coord(cx)}" cy="${coord(base - r)}" r="${coord(r)}" fill="none" stroke="#666"/>`);
    const label = formatNumber(w);
    out.push(`<text x="${coord(cx + r + 4)}" y="${coord(base - r + 4)}" font-size="11" fill="#333">${escapeXml(label)}</text>`);
    cx += r + 12 + label.length * 6.5;
  }
  out.push('</g>');
  return out;
}

/** A world map (Equal Earth projection, land from world-atlas countries-110m) with one circle per point: area proportional to weight, colour by value on a sequential scale (low = good), with a colour legend and the title. Deterministic: the same input gives the same string. */
export function worldMapSvg(points: readonly MapPoint[], options: MapOptions): string {
  points.forEach(checkPoint);
  const width = options.width ?? 960;
  if (!Number.isFinite(width) || width < 200) throw new Error(`worldMapSvg: width must be at least 200 (got ${width})`);
  const shown = points.map((p, index) => ({ p, index })).filter(({ p }) => p.weight > 0);
  const domain = colorDomain(
    shown.map(({ p }) => p.value),
    options.domain,
  );
  const maxWeight = options.maxWeight ?? Math.max(0, ...shown.map(({ p }) => p.weight));
  if (options.maxWeight !== undefined && !(Number.isFinite(maxWeight) && maxWeight > 0)) throw new Error(`worldMapSvg: maxWeight must be a positive number (got ${maxWeight})`);
  const maxRadius = options.maxRadius ?? width / 48;
  if (!(Number.isFinite(maxRadius) && maxRadius > 0)) throw new Error(`worldMapSvg: maxRadius must be a positive number (got ${maxRadius})`);
  const radius = (w: number) => Math.max(MIN_RADIUS, maxRadius * Math.sqrt(w / maxWeight));

  // Header, map, legends, top to bottom.
  const body: string[] = [];
  let y = PAD + 18;
  body.push(`<text x="${PAD}" y="${y}" font-size="20" font-weight="600" fill="#111">${escapeXml(options.title)}</text>`);
  if (options.subtitle !== undefined) {
    y += 22;
    body.push(`<text x="${PAD}" y="${y}" font-size="14" fill="#555">${escapeXml(options.subtitle)}</text>`);
  }
  const mapTop = y + 14;
  const mapWidth = width - 2 * PAD;
  const projection = geoEqualEarth().fitWidth(mapWidth, sphere);
  const [[, sy0], [, sy1]] = geoPath(projection).bounds(sphere);
  const mapHeight = Math.ceil(sy1 - sy0);
  projection.fitExtent(
    [
      [PAD, mapTop],
      [PAD + mapWidth, mapTop + mapHeight],
    ],
    sphere,
  );
  const path = geoPath(projection).digits(1);
  const { land, borders } = loadAtlas();
  body.push(`<path d="${path(sphere)}" fill="${OCEAN}" stroke="#c8d0d8" stroke-width="0.75"/>`);
  body.push(`<path d="${path(land)}" fill="${LAND}"/>`);
  body.push(`<path d="${path(borders)}" fill="none" stroke="#fff" stroke-width="0.5"/>`);

  // Circles: largest first so that smaller ones stay on top; ties in input order.
  const unit = options.unit;
  const drawn: Drawn[] = shown.map(({ p, index }) => {
    const [cx, cy] = projection([p.lon, p.lat])!;
    const t = domain ? (p.value - domain[0]) / (domain[1] - domain[0]) : 0;
    const name = p.label === undefined ? '' : `${p.label}: `;
    const title = `${name}${formatNumber(p.value)} ${unit}, ${options.weightLabel ?? 'weight'} ${formatNumber(p.weight)}`;
    return { cx, cy, r: radius(p.weight), fill: colorAt(t), title, weight: p.weight, index };
  });
  drawn.sort((a, b) => b.weight - a.weight || a.index - b.index);
  body.push(`<g class="points" fill-opacity="0.85" stroke="#333" stroke-width="0.5">`);
  for (const d of drawn) {
    body.push(`<circle cx="${coord(d.cx)}" cy="${coord(d.cy)}" r="${coord(d.r)}" fill="${d.fill}"><title>${escapeXml(d.title)}</title></circle>`);
  }
  body.push('</g>');

  const legendTop = mapTop + mapHeight + 24;
  const colorWidth = Math.min(320, mapWidth / 2.5);
  const sizeX = domain ? PAD + colorWidth + 48 : PAD;
  let legendHeight = 40;
  if (domain) {
    const values = shown.map(({ p }) => p.value);
    const clamped = { low: values.some((v) => v < domain[0]), high: values.some((v) => v > domain[1]) };
    const caption = options.valueLabel === undefined ? unit : `${options.valueLabel} (${unit})`;
    body.push(...colorLegend(PAD, legendTop, colorWidth, domain, clamped, caption));
  }
  if (maxWeight > 0) {
    const caption = `circle area ∝ ${options.weightLabel ?? 'weight'}`;
    body.push(...sizeLegend(sizeX, legendTop, maxWeight, radius, caption));
    legendHeight = Math.max(legendHeight, 8 + 2 * radius(niceFloor(maxWeight)) + 4);
  } else {
    body.push(`<text x="${coord(sizeX)}" y="${coord(legendTop)}" font-size="12" fill="#555">no weighted points</text>`);
  }
  return svgDocument(width, legendTop + legendHeight + PAD, body);
}
