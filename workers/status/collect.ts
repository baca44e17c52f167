/**
 * The mesh's status (docs/api.md section 2.15) from what the edge already
 * keeps: each region directory's backends (live and recently departed) and
 * recent traffic, the isolate's snapshot of quarantined providers and its
 * own outlier ejections, and the ledger shards' newest batches. `meshStatus`
 * is the pure part: states, per-region sums, percentiles, and what a
 * provider may see (its own backends, traffic and payouts only).
 */

import type { Region } from '../../shared/regions.ts';
import type { DirectoryStatus } from '../directory/RegionDirectory.ts';
import type { TrafficCell } from '../directory/traffic-report.ts';
import { POPS } from '../geo/pops.ts';
import { mergeInto, quantile, type Histogram } from './latency-histogram.ts';
import type { BackendState, BackendStatus, BatchStatus, MeshStatus, PopStatus, RegionStatus, StatusViewer, TrafficStatus } from './view.ts';

/** The traffic window the status reports, seconds. */
export const STATUS_WINDOW_SECONDS = 60;
/** A backend silent this long is `down`: two heartbeats missed at the backend's default interval (2 s), plus slack. */
export const DOWN_AFTER_MS = 5_000;
/** Newest batches shown. */
export const STATUS_BATCHES = 10;

type Entry = DirectoryStatus['backends'][number];

/** Everything `meshStatus` reads, gathered by the route. */
export interface StatusSources {
  now: number;
  pop: string;
  viewer: StatusViewer;
  /** Per region, its directory's answer; undefined when it did not answer. */
  directories: { region: Region; status: DirectoryStatus | undefined }[];
  quarantined: ReadonlySet<string>;
  isEjected: (backendId: string) => boolean;
  /** The shards' newest batches (any order); undefined when the ledger did not answer. */
  batches: BatchStatus[] | undefined;
}

/** A backend's state, most severe first (view.ts `BackendState`). */
export function backendState(b: Entry, departed: boolean, src: Pick<StatusSources, 'now' | 'quarantined' | 'isEjected'>): BackendState {
  if (departed || src.now - b.lastSeen > DOWN_AFTER_MS) return 'down';
  if (src.quarantined.has(b.provider)) return 'quarantined';
  if (src.isEjected(b.id)) return 'ejected';
  if (!b.ready) return 'starting';
  return b.models.some((m) => m.warm) ? 'warm' : 'cold';
}

function backendStatus(b: Entry, state: BackendState): BackendStatus {
  return {
    id: b.id,
    provider: b.provider,
    region: b.region,
    lat: b.lat,
    lon: b.lon,
    state,
    location: b.location?.state ?? 'unverified',
    executionProvider: b.executionProvider,
    models: b.models.map((m) => ({ name: m.name, version: m.version, warm: m.warm })),
    capacity: { slots: b.capacity.slots, inFlight: b.capacity.inFlight, queued: b.capacity.queued },
    lastSeen: b.lastSeen,
    ...(b.heartbeatColo !== undefined ? { heartbeatColo: b.heartbeatColo } : {}),
  };
}

/** Sums of cells, as the page shows them. */
function traffic(cells: readonly TrafficCell[], seconds: number): TrafficStatus {
  let requests = 0;
  let errors = 0;
  const hist: Histogram = {};
  for (const c of cells) {
    requests += c.requests;
    errors += c.errors;
    mergeInto(hist, c.hist);
  }
  return {
    requests,
    rps: seconds > 0 ? Math.round((requests / seconds) * 100) / 100 : 0,
    errors,
    p50Ms: quantile(hist, 0.5),
    p90Ms: quantile(hist, 0.9),
    p99Ms: quantile(hist, 0.99),
  };
}

function regionStatus(region: Region, backends: readonly BackendStatus[], cells: readonly TrafficCell[], seconds: number): RegionStatus {
  const counts = { total: 0, down: 0, quarantined: 0, ejected: 0, starting: 0, cold: 0, warm: 0, unverified: 0, refuted: 0 };
  const capacity = { slots: 0, inFlight: 0, queued: 0 };
  const warm = new Set<string>();
  for (const b of backends) {
    counts.total++;
    counts[b.state]++;
    if (b.location !== 'verified') counts[b.location]++;
    // Capacity is what routing can use: warm and cold backends, not those down, starting, ejected or quarantined.
    if (b.state !== 'warm' && b.state !== 'cold') continue;
    capacity.slots += b.capacity.slots;
    capacity.inFlight += b.capacity.inFlight;
    capacity.queued += b.capacity.queued;
    for (const m of b.models) if (m.warm) warm.add(m.name);
  }
  return {
    id: region.id,
    name: region.name,
    lat: region.lat,
    lon: region.lon,
    backends: counts,
    capacity,
    warmModels: [...warm].sort(),
    traffic: traffic(cells, seconds),
  };
}

/** The status a viewer gets from the gathered sources. */
export function meshStatus(src: StatusSources): MeshStatus {
  const { viewer, now } = src;
  const mine = (provider: string) => viewer.role !== 'provider' || provider === viewer.provider;
  const unavailable: string[] = [];
  const live = new Set<string>();
  for (const { status } of src.directories) for (const b of status?.backends ?? []) live.add(b.id);
  // The traffic window: from the oldest bucket any directory answered for.
  let since = now - STATUS_WINDOW_SECONDS * 1000;
  for (const { status } of src.directories) if (status) since = Math.min(since, status.traffic.since);
  const seconds = (now - since) / 1000;

  const regions: RegionStatus[] = [];
  const backends: BackendStatus[] = [];
  const allCells: TrafficCell[] = [];
  const cellsByRegion = new Map<string, TrafficCell[]>();
  for (const { status } of src.directories) {
    for (const cell of status?.traffic.cells ?? []) {
      if (viewer.role === 'provider' && cell.provider !== viewer.provider) continue;
      allCells.push(cell);
      if (!cell.region) continue;
      let list = cellsByRegion.get(cell.region);
      if (!list) cellsByRegion.set(cell.region, (list = []));
      list.push(cell);
    }
  }
  for (const { region, status } of src.directories) {
    if (!status) unavailable.push(region.id);
    const here: BackendStatus[] = [];
    for (const b of status?.backends ?? []) if (mine(b.provider)) here.push(backendStatus(b, backendState(b, false, src)));
    // A departed backend that is live again (here or in another region) is shown once, live.
    for (const b of status?.departed ?? []) if (mine(b.provider) && !live.has(b.id)) here.push(backendStatus(b, 'down'));
    here.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    backends.push(...here);
    regions.push(regionStatus(region, here, cellsByRegion.get(region.id) ?? [], seconds));
  }

  const cellsByPop = new Map<string, TrafficCell[]>();
  for (const cell of allCells) {
    let list = cellsByPop.get(cell.pop);
    if (!list) cellsByPop.set(cell.pop, (list = []));
    list.push(cell);
  }
  const pops: PopStatus[] = [];
  for (const [code, cells] of cellsByPop) {
    const entry = POPS[code];
    if (!entry) continue;
    const served = new Map<string, number>();
    for (const c of cells) if (c.region) served.set(c.region, (served.get(c.region) ?? 0) + c.requests);
    const servedBy = [...served].map(([region, requests]) => ({ region, requests })).sort((a, b) => b.requests - a.requests || (a.region < b.region ? -1 : 1));
    pops.push({ code, city: entry[2], lat: entry[0], lon: entry[1], traffic: traffic(cells, seconds), servedBy });
  }
  pops.sort((a, b) => b.traffic.requests - a.traffic.requests || (a.code < b.code ? -1 : 1));

  if (!src.batches) unavailable.push('settlement');
  const batches = [...(src.batches ?? [])]
    .sort((a, b) => b.closedAt - a.closedAt || (a.id < b.id ? 1 : -1))
    .slice(0, STATUS_BATCHES);

  return { at: now, pop: src.pop, viewer, windowSeconds: Math.round(seconds), regions, backends, pops, batches, unavailable };
}
