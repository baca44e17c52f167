/**
 * The status page's entry: asks for a token when the tab holds none, polls
 * `GET /v1/mesh/status` every 2 s while the tab is visible, and redraws the
 * summary, the map and the tables from each answer. A failed poll keeps the
 * last good data on screen and says so; a refused token (401, 403) is
 * forgotten and asked for again with the server's message. The polite live
 * region announces only changes (live, failing, signed out); the "updated
 * N s ago" line next to it ticks every second without being announced.
 */

import type { MeshStatus } from '../view.ts';
import { fetchStatus } from './api.ts';
import { byId } from './dom.ts';
import { age, summary, utc } from './format.ts';
import { drawMap, renderLegend } from './map.ts';
import { parseFit } from './projection.ts';
import { renderBackends, renderBatches, renderPops, renderRegions } from './tables.ts';
import { forgetToken, keepToken, readToken } from './token.ts';

const POLL_MS = 2_000;

const ui = {
  main: byId('main'),
  signin: byId('signin'),
  form: byId<HTMLFormElement>('token-form'),
  input: byId<HTMLInputElement>('token'),
  tokenError: byId('token-error'),
  forget: byId<HTMLButtonElement>('forget'),
  dashboard: byId('dashboard'),
  summary: byId('summary'),
  age: byId('age'),
  live: byId('live'),
  warnings: byId('warnings'),
  map: byId<SVGSVGElement>('map'),
  markers: byId<SVGGElement>('map-markers'),
  legend: byId<HTMLUListElement>('legend'),
  regions: byId<HTMLTableElement>('regions'),
  regionsNote: byId('regions-empty'),
  backends: byId<HTMLTableElement>('backends'),
  pops: byId<HTMLTableElement>('pops'),
  batches: byId<HTMLTableElement>('batches'),
};
const fit = parseFit(ui.map.dataset['fit']);

let token = readToken();
/** The last status that arrived, and when (this browser's clock). */
let last: { status: MeshStatus; receivedAt: number } | undefined;
/** Why the latest poll failed; undefined while polls succeed. */
let failure: string | undefined;
let timer: ReturnType<typeof setTimeout> | undefined;
/** Bumped on sign-out: a poll in flight from before then is ignored. */
let generation = 0;
let polling = false;
/** Move focus to the status once it first arrives after the form was sent. */
let focusOnData = false;

function setText(el: HTMLElement, text: string): void {
  if (el.textContent !== text) el.textContent = text;
}

function render(status: MeshStatus): void {
  setText(ui.summary, summary(status));
  const missing = status.unavailable;
  ui.warnings.hidden = missing.length === 0;
  setText(ui.warnings, missing.length ? `Not answering this time, so missing from the page (not zero): ${missing.join(', ')}.` : '');
  if (fit) drawMap(ui.map, ui.markers, fit, status);
  renderRegions(ui.regions, ui.regionsNote, status);
  renderBackends(ui.backends, status);
  renderPops(ui.pops, status);
  renderBatches(ui.batches, status);
  ui.dashboard.hidden = false;
}

function showFreshness(): void {
  const now = Date.now();
  setText(ui.age, last ? `Updated ${age(now - last.receivedAt)} ago.` : '');
  const text = !token
    ? 'Signed out: the status needs a token.'
    : failure
      ? `The last update failed (${failure}); ${last ? `showing the data of ${utc(last.receivedAt)}` : 'no data yet'}.`
      : last
        ? `Live, updating every ${POLL_MS / 1000} s.`
        : 'Loading…';
  setText(ui.live, text);
  ui.live.parentElement?.classList.toggle('stale', failure !== undefined);
}

function schedule(): void {
  clearTimeout(timer);
  timer = token && !document.hidden ? setTimeout(() => void poll(), POLL_MS) : undefined;
}

async function poll(): Promise<void> {
  if (!token || polling) return;
  clearTimeout(timer);
  polling = true;
  const asked = generation;
  const result = await fetchStatus(token);
  polling = false;
  if (asked !== generation) return;
  if (result.kind === 'refused') {
    signOut(result.message);
    return;
  }
  if (result.kind === 'ok') {
    last = { status: result.status, receivedAt: Date.now() };
    failure = undefined;
    render(result.status);
    if (focusOnData) {
      focusOnData = false;
      ui.main.focus();
    }
  } else {
    failure = result.message;
  }
  showFreshness();
  schedule();
}

/** Forgets the token and the data, and asks for a token (with why, when the server refused the last one). */
function signOut(message?: string): void {
  generation++;
  clearTimeout(timer);
  forgetToken();
  token = undefined;
  last = undefined;
  failure = undefined;
  ui.dashboard.hidden = true;
  ui.forget.hidden = true;
  ui.signin.hidden = false;
  setText(ui.summary, '');
  setText(ui.tokenError, message ? `The token was refused: ${message}` : '');
  if (message) ui.input.setAttribute('aria-invalid', 'true');
  else ui.input.removeAttribute('aria-invalid');
  showFreshness();
  // The dashboard that had focus is gone: the form is where to go next.
  if (message) ui.input.focus();
}

function signIn(value: string): void {
  token = value;
  keepToken(value);
  ui.signin.hidden = true;
  ui.forget.hidden = false;
  ui.input.value = '';
  ui.input.removeAttribute('aria-invalid');
  setText(ui.tokenError, '');
  showFreshness();
  void poll();
}

ui.form.addEventListener('submit', (event) => {
  event.preventDefault();
  const value = ui.input.value.trim();
  if (!value) {
    setText(ui.tokenError, 'Enter a token.');
    ui.input.setAttribute('aria-invalid', 'true');
    ui.input.focus();
    return;
  }
  focusOnData = true;
  signIn(value);
});

ui.forget.addEventListener('click', () => {
  signOut();
  ui.input.focus();
});

document.addEventListener('visibilitychange', () => {
  if (!document.hidden) void poll();
  else schedule();
});

renderLegend(ui.legend);
setInterval(showFreshness, 1_000);
if (token) signIn(token);
else signOut();
