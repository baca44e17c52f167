/**
 * Round-trip time from a PoP to a backend: the geometric estimate
 * (great circle over light in fibre, times path inflation), replaced by an
 * EWMA of measured RTTs per (PoP, backend) once there are any, and never below
 * the physical floor (light in fibre: at most ~100 km of distance per ms of RTT).
 */

import { DEFAULT_PATH_INFLATION, FIBRE_KM_PER_MS, greatCircleKm, type LatLon } from '../geo/distance.ts';
import { regionById } from '../../shared/regions.ts';
import { popLocation } from '../geo/pops.ts';
import { ChangeLog } from './changes.ts';
import { RecencyList, type Recent } from './recency.ts';

/** Where a request entered the mesh; `code` (the PoP's IATA code) keys measured RTTs. */
export interface RttOrigin extends LatLon {
  code?: string;
}

/** The parts of a backend's directory entry the RTT estimate reads. */
export interface Located extends LatLon {
  id: string;
  region: string;
  /** Its proof-of-location verdict (geo/location.ts), when the directory has one. */
  location?: { state: string; evidence?: { pop: string; failed?: string } };
}

export interface RttTableOptions {
  /** Weight of each new sample in the EWMA (default 0.3). */
  alpha?: number;
  /** At most this many (PoP, backend) pairs are kept; least recently observed dropped first (default 4096). */
  maxEntries?: number;
  /** How many changes `RttTable.changes` holds (default 1024). */
  changeLogSize?: number;
}

export interface RttOptions<B extends Located = Located> {
  /** Path inflation over the great circle (default 2.0, the internet median). */
  inflation?: number;
  /** Where a backend is, for the geometric estimate (default: `backendLocation`). */
  locate?: (backend: B) => LatLon;
}

/** RTT ms per km of distance, at best: there and back at FIBRE_KM_PER_MS. */
const FLOOR_MS_PER_KM = 2 / FIBRE_KM_PER_MS;

/**
 * Where a backend is for routing: the coordinates it claims once proof of
 * location has verified them (round trips from PoPs near the claim confirm
 * it, geo/location.ts); until then its region's coordinates (what the
 * heartbeat validated), as an unchecked claim could be a lie to draw traffic;
 * the claim itself only when its region is unknown. A backend whose claim was
 * refuted by a round trip too short for it (`reach`) is placed at the PoP
 * that measured it: physics puts it near there, whatever it claims. (A claim
 * refuted by slowness says only where it is not; its measured round trips,
 * when this PoP has them, score it.)
 */
export function backendLocation(backend: Located): LatLon {
  const state = backend.location?.state;
  if (state === 'verified') return { lat: backend.lat, lon: backend.lon };
  const evidence = state === 'refuted' ? backend.location!.evidence : undefined;
  if (evidence?.failed === 'reach') {
    const measuredAt = popLocation(evidence.pop);
    if (measuredAt) return measuredAt;
  }
  return regionById(backend.region) ?? backend;
}

/** The lowest RTT physics allows over `km` of great circle (1 ms per 100 km). */
export function physicalFloorMs(km: number): number {
  return km * FLOOR_MS_PER_KM;
}

/** One (PoP, backend) pair of an `RttTable`, in its recency list. */
interface PairEntry extends Recent {
  readonly pop: string;
  readonly id: string;
}

/** One PoP's measured RTTs (by backend id) and its pairs' entries. */
interface PopRow {
  readonly ms: Map<string, number>;
  readonly entries: Map<string, PairEntry>;
}

/**
 * Measured RTTs per (PoP, backend): an EWMA each, bounded in number, the
 * least recently observed pair dropped first. Kept per PoP (`fromPop`), so
 * that a scorer reads a PoP's row once and then looks backends up by id,
 * building no key per candidate; an observation likewise, moving its pair to
 * the newest end of a linked recency list (recency.ts).
 */
export class RttTable {
  /** What changed, by PoP (every observation and eviction): a reader can follow the table without re-reading it. */
  readonly changes: ChangeLog;
  readonly #alpha: number;
  readonly #max: number;
  readonly #byPop = new Map<string, PopRow>();
  readonly #recency = new RecencyList<PairEntry>();

  constructor(options: RttTableOptions = {}) {
    this.#alpha = options.alpha ?? 0.3;
    this.#max = options.maxEntries ?? 4096;
    this.changes = new ChangeLog(options.changeLogSize);
  }

  /** Records one measured RTT from PoP `pop` to `backendId`. */
  observe(pop: string, backendId: string, rttMs: number): void {
    if (!Number.isFinite(rttMs) || rttMs < 0) return;
    let row = this.#byPop.get(pop);
    const entry = row?.entries.get(backendId);
    if (entry) {
      this.#recency.touch(entry);
      const prev = row!.ms.get(backendId)!;
      row!.ms.set(backendId, prev + this.#alpha * (rttMs - prev));
    } else {
      if (this.#recency.size >= this.#max) this.#evict();
      row = this.#byPop.get(pop); // eviction may have dropped the PoP's row
      if (!row) this.#byPop.set(pop, (row = { ms: new Map(), entries: new Map() }));
      const added: PairEntry = { pop, id: backendId, older: undefined, newer: undefined };
      row.entries.set(backendId, added);
      row.ms.set(backendId, rttMs);
      this.#recency.add(added);
    }
    this.changes.note(pop, backendId);
  }

  /** Drops the least recently observed pair. */
  #evict(): void {
    const entry = this.#recency.takeOldest();
    if (!entry) return;
    const row = this.#byPop.get(entry.pop)!;
    row.entries.delete(entry.id);
    row.ms.delete(entry.id);
    if (row.ms.size === 0) this.#byPop.delete(entry.pop);
    this.changes.note(entry.pop, entry.id);
  }

  /** The measured RTT EWMA, or undefined when none was measured. */
  measuredMs(pop: string, backendId: string): number | undefined {
    return this.#byPop.get(pop)?.ms.get(backendId);
  }

  /** PoP `pop`'s measured RTT EWMAs by backend id; undefined when none was measured from it. */
  fromPop(pop: string): ReadonlyMap<string, number> | undefined {
    return this.#byPop.get(pop)?.ms;
  }
}

/**
 * Estimated RTT in ms from `from` to `backend`: the measured EWMA for this
 * (PoP, backend) when `measured` has one, else great-circle distance x 2 /
 * 200 km/ms x inflation; either way at least the physical floor.
 *
 * @example
 * estimateRttMs(popLocation('FRA')!, backend)            // geometric
 * estimateRttMs({ code: 'FRA', ...fra }, backend, table) // measured when the table has FRA -> backend
 */
export function estimateRttMs<B extends Located>(from: RttOrigin, backend: B, measured?: RttTable, options: RttOptions<B> = {}): number {
  const km = greatCircleKm(from, (options.locate ?? backendLocation)(backend));
  const floor = physicalFloorMs(km);
  const sample = from.code === undefined ? undefined : measured?.measuredMs(from.code, backend.id);
  if (sample !== undefined) return Math.max(floor, sample);
  return Math.max(floor, floor * (options.inflation ?? DEFAULT_PATH_INFLATION));
}
