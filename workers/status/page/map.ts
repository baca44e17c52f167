/**
 * The world map's live part: on each status, the regions with backends
 * (squares, labelled), where traffic goes (a line from each PoP to each
 * region that answered its requests, wider for more), the PoPs with traffic (diamonds sized by requests per
 * second, coloured by p50 latency) and the backends (circles coloured by
 * state, a dashed ring when the location is unverified, a dotted red one when
 * refuted), each with a `<title>`; the map's `aria-label` says the same in
 * a sentence. The land and the quiet PoPs are static, drawn by the build.
 */

import { BACKEND_STATES, type MeshStatus } from '../view.ts';
import { s, h } from './dom.ts';
import { latencyBand, latencyBandLabel, LATENCY_BANDS, ms, rps, summary } from './format.ts';
import { project, type MapFit } from './projection.ts';

const BACKEND_RADIUS = 6.5;
const RING_RADIUS = 10.5;
const REGION_HALF = 9;
/** A flow line's width, from the smallest to the largest flow on the map. */
const FLOW_MIN = 1;
const FLOW_MAX = 5;
/** A PoP diamond's half-diagonal, from the smallest to the busiest PoP on the map. */
const POP_MIN = 3.5;
const POP_MAX = 10;

/** Redraws the markers of `status` into `layer` and says what the map shows in `svg`'s label. */
export function drawMap(svg: SVGSVGElement, layer: SVGGElement, fit: MapFit, status: MeshStatus): void {
  const at = (lon: number, lat: number) => project(lon, lat, fit).map((v) => Math.round(v * 10) / 10) as [number, number];
  const nodes: SVGElement[] = [];

  for (const region of status.regions) {
    if (region.backends.total === 0) continue;
    const [x, y] = at(region.lon, region.lat);
    nodes.push(
      s('g', { class: 'region' },
        s('rect', { class: 'region-mark', x: x - REGION_HALF, y: y - REGION_HALF, width: 2 * REGION_HALF, height: 2 * REGION_HALF },
          s('title', {}, `Region ${region.name} (${region.id}): ${region.backends.total} backends`)),
        s('text', { class: 'region-label', x: x + REGION_HALF + 3, y: y - REGION_HALF - 2 }, region.id)),
    );
  }

  // Where traffic goes: under the PoPs and backends, so that the marks stay readable.
  const regionAt = new Map(status.regions.map((r) => [r.id, at(r.lon, r.lat)]));
  const largest = Math.max(0, ...status.pops.flatMap((p) => p.servedBy.map((f) => f.requests)));
  for (const pop of status.pops) {
    const [x1, y1] = at(pop.lon, pop.lat);
    for (const flow of pop.servedBy) {
      const to = regionAt.get(flow.region);
      if (!to) continue;
      const width = FLOW_MIN + (FLOW_MAX - FLOW_MIN) * Math.sqrt(flow.requests / Math.max(1, largest));
      nodes.push(
        s('line', { class: 'flow', x1, y1, x2: to[0], y2: to[1], 'stroke-width': Math.round(width * 10) / 10 },
          s('title', {}, `${pop.code} to ${flow.region}: ${flow.requests} requests`)),
      );
    }
  }

  const busiest = Math.max(0, ...status.pops.map((p) => p.traffic.rps));
  // Quiet PoPs first, so that the busy ones are drawn on top.
  for (const pop of [...status.pops].sort((a, b) => a.traffic.rps - b.traffic.rps)) {
    const band = latencyBand(pop.traffic.p50Ms);
    const r = busiest > 0 ? POP_MIN + (POP_MAX - POP_MIN) * Math.sqrt(pop.traffic.rps / busiest) : POP_MIN;
    const [x, y] = at(pop.lon, pop.lat);
    nodes.push(
      s('path', { class: `pop-mark ${band === undefined ? 'state-starting' : `lat-${band}`}`, d: `M${x},${y - r}L${x + r},${y}L${x},${y + r}L${x - r},${y}Z` },
        s('title', {}, `PoP ${pop.code}${pop.city ? ` (${pop.city})` : ''}: ${rps(pop.traffic.rps)} req/s, p50 ${ms(pop.traffic.p50Ms)}`)),
    );
  }

  // Most severe last, so that a down backend is not hidden under a warm one at the same place.
  const order = (state: string) => -BACKEND_STATES.indexOf(state as never);
  for (const b of [...status.backends].sort((a, c) => order(a.state) - order(c.state))) {
    const [x, y] = at(b.lon, b.lat);
    const title = `Backend ${b.id} (${b.provider}, ${b.region}): ${b.state}, location ${b.location}`;
    nodes.push(
      s('g', { class: 'backend' },
        b.location === 'verified' ? null : s('circle', { class: `ring-${b.location}`, cx: x, cy: y, r: RING_RADIUS }),
        s('circle', { class: `backend-mark state-${b.state}`, cx: x, cy: y, r: BACKEND_RADIUS }, s('title', {}, title))),
    );
  }

  layer.replaceChildren(...nodes);
  svg.setAttribute('aria-label', `World map. ${summary(status)}`);
}

function swatch(...children: SVGElement[]): SVGSVGElement {
  return s('svg', { viewBox: '-8 -8 16 16', 'aria-hidden': 'true', focusable: 'false' }, ...children);
}

/** The legend under the map: backend states, location rings, regions, and the PoPs' latency bands. */
export function renderLegend(list: HTMLUListElement): void {
  const diamond = (cls: string) => s('path', { class: `pop-mark ${cls}`, d: 'M0,-6L6,0L0,6L-6,0Z' });
  list.replaceChildren(
    h('li', { class: 'heading' }, 'Backends:'),
    ...BACKEND_STATES.map((state) => h('li', {}, swatch(s('circle', { class: `backend-mark state-${state}`, r: 5.5 })), state)),
    h('li', {}, swatch(s('circle', { class: 'ring-unverified', r: 6.5 })), 'location unverified'),
    h('li', {}, swatch(s('circle', { class: 'ring-refuted', r: 6.5 })), 'location refuted'),
    h('li', {}, swatch(s('rect', { class: 'region-mark', x: -6, y: -6, width: 12, height: 12 })), 'region'),
    h('li', {}, swatch(s('line', { class: 'flow', x1: -7, y1: 5, x2: 7, y2: -5, 'stroke-width': 2.5 })), 'traffic, PoP to region'),
    h('li', { class: 'heading' }, 'PoPs by p50 latency:'),
    ...[...LATENCY_BANDS, Infinity].map((_, band) => h('li', {}, swatch(diamond(`lat-${band}`)), latencyBandLabel(band))),
    h('li', {}, swatch(s('circle', { class: 'pop-dot', r: 2 })), 'PoP without traffic'),
  );
}
