/**
 * How the status page writes numbers, money, latencies, ages and times, and
 * the latency bands that colour the PoPs. Pure (no DOM), so the node tests
 * check it; times are UTC so that every reader sees the same text.
 */

import { BACKEND_STATES, type MeshStatus, type RegionStatus } from '../view.ts';

const DASH = '–';

/** An integer count with thousands separators: `12,345`. */
export function count(n: number): string {
  return n.toLocaleString('en-US');
}

/**
 * Micro-USD as US dollars, exact to the micro-dollar and no longer than it
 * needs: `usd(300)` is `$0.0003`, `usd(12_345_000)` is `$12.345`,
 * `usd(5_000_000)` is `$5.00`; undefined (not shown to this viewer) is a dash.
 */
export function usd(micro: number | undefined): string {
  if (micro === undefined) return DASH;
  return (micro / 1e6).toLocaleString('en-US', { style: 'currency', currency: 'USD', minimumFractionDigits: 2, maximumFractionDigits: 6 });
}

/** A latency: `12 ms`, `1.25 s`; null (no request in the window) is a dash. */
export function ms(v: number | null | undefined): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return DASH;
  return v < 1000 ? `${Math.round(v)} ms` : `${(v / 1000).toFixed(2)} s`;
}

/** Requests per second: two decimals below 10, one above. */
export function rps(v: number): string {
  return v.toFixed(v < 10 ? 2 : 1);
}

/** A duration in the past, rounded down: `0 s`, `59 s`, `3 min`, `2 h`, `4 d`. */
export function age(elapsedMs: number): string {
  const s = Math.max(0, Math.floor(elapsedMs / 1000));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86_400) return `${Math.floor(s / 3600)} h`;
  return `${Math.floor(s / 86_400)} d`;
}

/** A moment as `2026-11-20 14:02:03 UTC`. */
export function utc(atMs: number): string {
  return `${new Date(atMs).toISOString().slice(0, 19).replace('T', ' ')} UTC`;
}

/** Backends by state, most severe first, states with none left out: `1 down, 2 warm`. */
export function stateCounts(backends: Pick<RegionStatus['backends'], (typeof BACKEND_STATES)[number]>): string {
  const parts = BACKEND_STATES.filter((s) => backends[s] > 0).map((s) => `${backends[s]} ${s}`);
  return parts.length ? parts.join(', ') : 'none';
}

/** The status in one sentence (the page's summary line and the map's label). */
export function summary(status: MeshStatus): string {
  const byState = Object.fromEntries(BACKEND_STATES.map((s) => [s, 0])) as Record<(typeof BACKEND_STATES)[number], number>;
  for (const b of status.backends) byState[b.state]++;
  const regions = status.regions.filter((r) => r.backends.total > 0).length;
  const n = status.backends.length;
  const pops = status.pops.length;
  return (
    `${regions} ${regions === 1 ? 'region' : 'regions'} with backends; ` +
    `${n} ${n === 1 ? 'backend' : 'backends'}${n ? `: ${stateCounts(byState)}` : ''}; ` +
    `${pops} ${pops === 1 ? 'PoP' : 'PoPs'} with traffic in the last ${status.windowSeconds} s.`
  );
}

/** Upper bounds (ms, exclusive) of the latency bands PoPs are coloured by; the last band is open. */
export const LATENCY_BANDS = [50, 100, 200, 400] as const;

/** The band (0 fastest .. LATENCY_BANDS.length slowest) of a p50 latency; undefined without one. */
export function latencyBand(p50Ms: number | null): number | undefined {
  if (p50Ms === null || !Number.isFinite(p50Ms)) return undefined;
  const i = LATENCY_BANDS.findIndex((bound) => p50Ms < bound);
  return i < 0 ? LATENCY_BANDS.length : i;
}

/** The legend's label of a band: `< 50 ms`, `50–100 ms`, `≥ 400 ms`. */
export function latencyBandLabel(band: number): string {
  const lo = LATENCY_BANDS[band - 1];
  const hi = LATENCY_BANDS[band];
  if (lo === undefined) return `< ${hi} ms`;
  if (hi === undefined) return `≥ ${lo} ms`;
  return `${lo}–${hi} ms`;
}
