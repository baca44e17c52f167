/**
 * A region directory's recent traffic (docs/api.md section 2.15): the cells
 * isolates report (traffic-report.ts) summed into TRAFFIC_BUCKET_MS buckets
 * and kept TRAFFIC_KEEP_MS, in the directory's SQLite. Reports are untrusted
 * input from the mesh's own isolates and bounded anyway: cells per call,
 * counts, PoP codes, ids, histogram buckets.
 */

import { isRegionId } from '../../shared/regions.ts';
import { popLocation } from '../geo/pops.ts';
import { mergeInto, parseHistogram, type Histogram } from '../status/latency-histogram.ts';
import type { Sql } from '../sql.ts';
import type { TrafficCell } from './traffic-report.ts';

export const TRAFFIC_BUCKET_MS = 10_000;
/** Buckets older than this are dropped. */
export const TRAFFIC_KEEP_MS = 5 * 60_000;
/** Cells read per report; the rest is ignored. */
const MAX_CELLS = 4096;
const MAX_REQUESTS = 1_000_000_000;
const PROVIDER = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;

/** The table, created by RegionDirectory's migrations. */
export const TRAFFIC_TABLE = `CREATE TABLE traffic (
  bucket INTEGER NOT NULL,
  pop TEXT NOT NULL,
  region TEXT NOT NULL,
  provider TEXT NOT NULL,
  requests INTEGER NOT NULL,
  errors INTEGER NOT NULL,
  hist TEXT NOT NULL,
  PRIMARY KEY (bucket, pop, region, provider))`;

type Row = { bucket: number; pop: string; region: string; provider: string; requests: number; errors: number; hist: string };

/** The cells of a window, summed per (PoP, region, provider), and when the window's first bucket started (ms). */
export interface TrafficWindow {
  since: number;
  cells: TrafficCell[];
}

/** A cell from an untrusted report, or undefined when anything in it is malformed. */
function parseCell(v: unknown): TrafficCell | undefined {
  if (typeof v !== 'object' || v === null) return undefined;
  const { pop, region, provider, requests, errors, hist } = v as Record<string, unknown>;
  if (typeof pop !== 'string' || pop.length > 8 || popLocation(pop) === undefined) return undefined;
  if (region !== '' && !isRegionId(region)) return undefined;
  if (provider !== '' && !(typeof provider === 'string' && PROVIDER.test(provider))) return undefined;
  if (!Number.isSafeInteger(requests) || (requests as number) < 1 || (requests as number) > MAX_REQUESTS) return undefined;
  if (!Number.isSafeInteger(errors) || (errors as number) < 0 || (errors as number) > (requests as number)) return undefined;
  const parsed = parseHistogram(hist, requests as number);
  if (!parsed) return undefined;
  return { pop: pop.toUpperCase(), region: region as string, provider: provider as string, requests: requests as number, errors: errors as number, hist: parsed };
}

export class TrafficLog {
  readonly #sql: Sql;

  constructor(sql: Sql) {
    this.#sql = sql;
  }

  /** Adds a report's cells to the current bucket (malformed ones are ignored) and drops buckets past TRAFFIC_KEEP_MS. */
  record(cells: unknown, now: number): void {
    if (!Array.isArray(cells)) return;
    const bucket = Math.floor(now / TRAFFIC_BUCKET_MS) * TRAFFIC_BUCKET_MS;
    for (const raw of cells.slice(0, MAX_CELLS)) {
      const cell = parseCell(raw);
      if (!cell) continue;
      const old = this.#sql.one<Row>(
        'SELECT * FROM traffic WHERE bucket = ? AND pop = ? AND region = ? AND provider = ?',
        bucket,
        cell.pop,
        cell.region,
        cell.provider,
      );
      const hist: Histogram = old ? (JSON.parse(old.hist) as Histogram) : {};
      mergeInto(hist, cell.hist);
      this.#sql.run(
        `INSERT INTO traffic (bucket, pop, region, provider, requests, errors, hist) VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT(bucket, pop, region, provider) DO UPDATE SET requests = excluded.requests, errors = excluded.errors, hist = excluded.hist`,
        bucket,
        cell.pop,
        cell.region,
        cell.provider,
        Math.min(MAX_REQUESTS, (old?.requests ?? 0) + cell.requests),
        Math.min(MAX_REQUESTS, (old?.errors ?? 0) + cell.errors),
        JSON.stringify(hist),
      );
    }
    this.#sql.run('DELETE FROM traffic WHERE bucket < ?', now - TRAFFIC_KEEP_MS);
  }

  /** The buckets that overlap the last `windowMs`, summed per (PoP, region, provider). */
  window(now: number, windowMs: number): TrafficWindow {
    const since = Math.floor((now - windowMs) / TRAFFIC_BUCKET_MS) * TRAFFIC_BUCKET_MS;
    const sums = new Map<string, TrafficCell>();
    for (const r of this.#sql.all<Row>('SELECT * FROM traffic WHERE bucket >= ?', since)) {
      const key = `${r.pop}\u0000${r.region}\u0000${r.provider}`;
      let cell = sums.get(key);
      if (!cell) sums.set(key, (cell = { pop: r.pop, region: r.region, provider: r.provider, requests: 0, errors: 0, hist: {} }));
      cell.requests += r.requests;
      cell.errors += r.errors;
      mergeInto(cell.hist, JSON.parse(r.hist) as Histogram);
    }
    return { since, cells: [...sums.values()] };
  }
}
