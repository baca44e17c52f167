/**
 * The page's tables, rebuilt from each status: regions (backends by state,
 * location verdicts, capacity, warm models, traffic), backends (every
 * backend's state as text, which is what a screen reader and the browser
 * test read), PoPs with traffic, and the newest settlement batches (micro-USD
 * shown as USD). The column headers are static in status.html.
 */

import type { BackendStatus, BatchStatus, MeshStatus, PopStatus, RegionStatus } from '../view.ts';
import { h } from './dom.ts';
import { age, count, ms, rps, stateCounts, usd, utc } from './format.ts';

function num(value: string | number, title?: string): HTMLTableCellElement {
  return h('td', { class: 'num', title }, typeof value === 'number' ? count(value) : value);
}

function fillBody(table: HTMLTableElement, rows: HTMLTableRowElement[], columns: number, empty: string): void {
  const body = table.tBodies[0] ?? table.createTBody();
  body.replaceChildren(...(rows.length ? rows : [h('tr', { class: 'empty' }, h('td', { colspan: columns }, empty))]));
}

function setCaption(table: HTMLTableElement, text: string): void {
  if (table.caption) table.caption.textContent = text;
}

function stateCell(state: BackendStatus['state']): HTMLTableCellElement {
  return h('td', { 'data-state': state }, h('span', { class: `state state-${state}` }, h('span', {}, state)));
}

function regionRow(r: RegionStatus): HTMLTableRowElement {
  return h('tr', { 'data-region': r.id },
    h('th', { scope: 'row' }, `${r.name} `, h('code', {}, r.id)),
    h('td', { title: `${r.backends.total} in all` }, stateCounts(r.backends)),
    num(r.backends.unverified),
    num(r.backends.refuted),
    num(r.capacity.slots),
    num(r.capacity.inFlight),
    num(r.capacity.queued),
    h('td', { class: 'wrap' }, r.warmModels.length ? r.warmModels.join(', ') : 'none'),
    num(rps(r.traffic.rps), `${count(r.traffic.requests)} requests, ${count(r.traffic.errors)} errors`),
    num(ms(r.traffic.p50Ms)),
    num(ms(r.traffic.p90Ms)),
    num(ms(r.traffic.p99Ms)),
  );
}

/** Regions with at least one backend; the others are named in `note`. */
export function renderRegions(table: HTMLTableElement, note: HTMLElement, status: MeshStatus): void {
  const shown = status.regions.filter((r) => r.backends.total > 0);
  const empty = status.regions.filter((r) => r.backends.total === 0 && !status.unavailable.includes(r.id));
  setCaption(table, `${shown.length} ${shown.length === 1 ? 'region' : 'regions'} with backends; traffic over the last ${status.windowSeconds} s; ejections as PoP ${status.pop} sees them`);
  fillBody(table, shown.map(regionRow), 12, 'No region has a backend.');
  note.textContent = empty.length ? `No backends in ${empty.map((r) => r.id).join(', ')}.` : '';
}

function backendRow(b: BackendStatus, now: number): HTMLTableRowElement {
  const warm = b.models.filter((m) => m.warm).map((m) => `${m.name}@${m.version}`);
  return h('tr', { 'data-backend': b.id },
    h('th', { scope: 'row' }, h('code', {}, b.id)),
    h('td', {}, b.provider),
    h('td', {}, b.region),
    stateCell(b.state),
    h('td', { 'data-location': b.location, title: `claimed ${b.lat.toFixed(2)}, ${b.lon.toFixed(2)}` }, b.location),
    h('td', { class: 'wrap' }, warm.length ? warm.join(', ') : 'none', b.models.length > warm.length ? ` (of ${b.models.length})` : ''),
    num(`${count(b.capacity.inFlight)} / ${count(b.capacity.slots)}`),
    num(b.capacity.queued),
    h('td', {}, b.executionProvider.toUpperCase()),
    num(`${age(now - b.lastSeen)} ago`, `${utc(b.lastSeen)}${b.heartbeatColo ? ` via ${b.heartbeatColo}` : ''}`),
  );
}

/** Every backend the viewer may see, ordered as the status lists them. */
export function renderBackends(table: HTMLTableElement, status: MeshStatus): void {
  const down = status.backends.filter((b) => b.state === 'down').length;
  setCaption(table, `${status.backends.length} ${status.backends.length === 1 ? 'backend' : 'backends'}, ${down} down${status.viewer.role === 'provider' ? ` (provider ${status.viewer.provider ?? ''}'s own)` : ''}`);
  fillBody(table, status.backends.map((b) => backendRow(b, status.at)), 10, 'No backend has sent a heartbeat.');
}

function popRow(p: PopStatus): HTMLTableRowElement {
  return h('tr', { 'data-pop': p.code },
    h('th', { scope: 'row' }, h('code', {}, p.code), p.city ? ` ${p.city}` : ''),
    num(p.traffic.requests),
    num(rps(p.traffic.rps)),
    num(p.traffic.errors),
    num(ms(p.traffic.p50Ms)),
    num(ms(p.traffic.p90Ms)),
    num(ms(p.traffic.p99Ms)),
    h('td', { 'data-served': '' }, servedBy(p)),
  );
}

/** Where a PoP's requests went: `eu-west 5, us-east 2`, and how many no backend answered. */
function servedBy(p: PopStatus): string {
  const parts = p.servedBy.map((s) => `${s.region} ${count(s.requests)}`);
  const rest = p.traffic.requests - p.servedBy.reduce((n, s) => n + s.requests, 0);
  if (rest > 0) parts.push(`no backend ${count(rest)}`);
  return parts.join(', ');
}

/** PoPs where requests entered in the window, busiest first. */
export function renderPops(table: HTMLTableElement, status: MeshStatus): void {
  setCaption(table, `Requests by the PoP they entered at, and the regions that answered them, over the last ${status.windowSeconds} s`);
  fillBody(table, status.pops.map(popRow), 8, `No request in the last ${status.windowSeconds} s.`);
}

function batchRow(b: BatchStatus): HTMLTableRowElement {
  const money = (micro: number | undefined) => num(usd(micro), micro === undefined ? undefined : `${count(micro)} micro-USD`);
  return h('tr', { 'data-batch': b.id },
    h('th', { scope: 'row' }, h('code', {}, b.id)),
    num(b.shard),
    h('td', {}, h('time', { datetime: new Date(b.closedAt).toISOString() }, utc(b.closedAt))),
    num(b.count),
    money(b.charged),
    money(b.paid),
    money(b.withheld),
    num(b.disputed === undefined ? '–' : count(b.disputed)),
  );
}

/** The newest closed batches, newest first. */
export function renderBatches(table: HTMLTableElement, status: MeshStatus): void {
  const provider = status.viewer.role === 'provider';
  setCaption(table, `The ${status.batches.length} newest closed batches${provider ? ' (paid to and withheld from you)' : ''}`);
  const missing = status.unavailable.includes('settlement');
  fillBody(table, status.batches.map(batchRow), 8, missing ? 'The ledger did not answer this time.' : 'No batch has closed yet.');
}
