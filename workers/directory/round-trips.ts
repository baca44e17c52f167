/**
 * A region's measured round trips, for proof of location (docs/api.md
 * section 3.2), in its RegionDirectory's SQLite (the `rtt` table): per
 * (backend, PoP) the lowest round trip and how many samples, for all samples
 * and for probes alone, merged from the isolates' reports (rtt-report.ts),
 * bounded per backend, pruned when idle, and judged against each backend's
 * claim by geo/location.ts.
 *
 * Minima are kept per window of RTT_WINDOW_MS, the current one and the one
 * before: a verdict reads at most the last two windows, so evidence is never
 * older than 2 x RTT_WINDOW_MS. A minimum over all time could only fall: a
 * backend verified once, then moved far from its claim, would have stayed
 * verified for as long as it kept being measured.
 */

import { locationVerdict, type LocationVerdict, type PopRtt } from '../geo/location.ts';
import { popLocation } from '../geo/pops.ts';
import type { Sql } from '../sql.ts';
import type { RttSample } from './rtt-report.ts';

/** RTT reports are bounded: this many samples per call; a round trip above RTT_MAX_MS or a count above RTT_MAX_COUNT is capped. */
const RTT_MAX_SAMPLES = 4096;
const RTT_MAX_MS = 60_000;
const RTT_MAX_COUNT = 1_000_000_000;
/** At most this many PoPs are kept per backend: a new one evicts the one with the fewest samples. */
export const RTT_MAX_POPS = 64;
/** A (backend, PoP) minimum not reported for this long is dropped. */
export const RTT_IDLE_MS = 24 * 60 * 60_000;
/** Minima are kept per window this long; a verdict reads the current window and the one before. */
export const RTT_WINDOW_MS = 15 * 60_000;

type RttRow = {
  backend_id: string;
  pop: string;
  /** The current window's minima and counts. */
  min_rtt: number;
  samples: number;
  probe_min_rtt: number | null;
  probe_samples: number;
  /** When the current window began, ms. */
  window_start: number;
  /** The window before it (none: null and 0). */
  prev_min_rtt: number | null;
  prev_samples: number;
  prev_probe_min_rtt: number | null;
  prev_probe_samples: number;
};

const minOf = (a: number | null, b: number | null) => (a === null ? b : b === null ? a : Math.min(a, b));

/**
 * A backend's round-trip rows as the location rule reads them at `now`: the
 * last two windows' minima and counts (PoPs no longer in the table, and rows
 * whose windows have both passed, are skipped).
 */
function measuredOf(rtts: readonly RttRow[], now: number): PopRtt[] {
  const measured: PopRtt[] = [];
  for (const m of rtts) {
    const at = popLocation(m.pop);
    const age = now - m.window_start;
    if (!at || age >= 2 * RTT_WINDOW_MS) continue;
    // Past one window, the current one is the one before, and the one before that is too old.
    const prev = age < RTT_WINDOW_MS;
    const probeMin = prev ? minOf(m.probe_min_rtt, m.prev_probe_min_rtt) : m.probe_min_rtt;
    measured.push({
      pop: m.pop,
      ...at,
      minRttMs: prev ? minOf(m.min_rtt, m.prev_min_rtt)! : m.min_rtt,
      samples: m.samples + (prev ? m.prev_samples : 0),
      ...(probeMin !== null
        ? { probeMinRttMs: probeMin, probeSamples: m.probe_samples + (prev ? m.prev_probe_samples : 0), windowProbeSamples: prev ? m.probe_samples : 0 }
        : {}),
    });
  }
  return measured;
}

/** A reported sample, checked: what `recordRtt` stores, or undefined to ignore it. */
function checkedSample(s: unknown): RttSample | undefined {
  if (typeof s !== 'object' || s === null) return undefined;
  const { backend, pop, minMs, count, probeMinMs, probeCount } = s as Partial<RttSample>;
  if (typeof backend !== 'string' || typeof pop !== 'string' || pop.length > 8 || popLocation(pop) === undefined) return undefined;
  const ms = (x: unknown) => typeof x === 'number' && Number.isFinite(x) && x >= 0;
  const n = (x: unknown) => typeof x === 'number' && Number.isInteger(x) && x >= 1;
  if (!ms(minMs) || !n(count)) return undefined;
  const probes = probeCount !== undefined && n(probeCount) && ms(probeMinMs) && probeMinMs! >= minMs! && probeCount <= count!;
  return {
    backend,
    pop: pop.toUpperCase(),
    minMs: Math.min(minMs!, RTT_MAX_MS),
    count: Math.min(count!, RTT_MAX_COUNT),
    ...(probes ? { probeMinMs: Math.min(probeMinMs!, RTT_MAX_MS), probeCount: Math.min(probeCount!, RTT_MAX_COUNT) } : {}),
  };
}

/** In the upsert: the report starts the next window, or one after it (`excluded.window_start` is the report's time). */
const NEXT = `excluded.window_start - window_start >= ${RTT_WINDOW_MS}`;
const OLDER = `excluded.window_start - window_start >= ${2 * RTT_WINDOW_MS}`;

export class RoundTrips {
  readonly #sql: Sql;
  /**
   * Location verdicts per backend id, with the claim they judged: snapshots
   * ask every second from every isolate, round trips change less often. An
   * entry goes when its backend's round trips change (or all, when the alarm
   * prunes them); a changed claim is judged afresh.
   */
  readonly #verdicts = new Map<string, { lat: number; lon: number; verdict: LocationVerdict; until: number }>();

  constructor(sql: Sql) {
    this.#sql = sql;
  }

  /**
   * Merges round-trip minima measured by isolates (sent in batches, in the
   * background): per (backend, PoP) the lower minimum and the summed counts,
   * for all samples and for probes. Samples for a backend not in `live`, for
   * an unknown PoP, or malformed are ignored. A backend keeps at most
   * RTT_MAX_POPS PoPs: a new one evicts the one with the fewest samples.
   */
  record(samples: unknown, live: ReadonlySet<string>): void {
    if (!Array.isArray(samples)) return;
    const now = Date.now();
    for (const raw of samples.slice(0, RTT_MAX_SAMPLES)) {
      const s = checkedSample(raw);
      if (!s || !live.has(s.backend)) continue;
      const known = this.#sql.one('SELECT 1 AS x FROM rtt WHERE backend_id = ? AND pop = ?', s.backend, s.pop) !== undefined;
      if (!known) {
        const pops = this.#sql.one<{ n: number }>('SELECT COUNT(*) AS n FROM rtt WHERE backend_id = ?', s.backend)?.n ?? 0;
        if (pops >= RTT_MAX_POPS) {
          this.#sql.run(
            `DELETE FROM rtt WHERE backend_id = ? AND pop = (
               SELECT pop FROM rtt WHERE backend_id = ? ORDER BY samples, updated_at LIMIT 1)`,
            s.backend,
            s.backend,
          );
        }
      }
      // A report after the current window ended starts the next one; the current becomes the one
      // before, or, two windows on, nothing is kept (SET reads the row as it was).
      this.#sql.run(
        `INSERT INTO rtt (backend_id, pop, min_rtt, samples, probe_min_rtt, probe_samples, updated_at, window_start) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT(backend_id, pop) DO UPDATE SET
           prev_min_rtt = CASE WHEN ${OLDER} THEN NULL WHEN ${NEXT} THEN min_rtt ELSE prev_min_rtt END,
           prev_samples = CASE WHEN ${OLDER} THEN 0 WHEN ${NEXT} THEN samples ELSE prev_samples END,
           prev_probe_min_rtt = CASE WHEN ${OLDER} THEN NULL WHEN ${NEXT} THEN probe_min_rtt ELSE prev_probe_min_rtt END,
           prev_probe_samples = CASE WHEN ${OLDER} THEN 0 WHEN ${NEXT} THEN probe_samples ELSE prev_probe_samples END,
           min_rtt = CASE WHEN ${NEXT} THEN excluded.min_rtt ELSE MIN(min_rtt, excluded.min_rtt) END,
           samples = CASE WHEN ${NEXT} THEN excluded.samples ELSE MIN(samples + excluded.samples, ?) END,
           probe_min_rtt = CASE WHEN ${NEXT} THEN excluded.probe_min_rtt
             ELSE MIN(COALESCE(probe_min_rtt, excluded.probe_min_rtt), COALESCE(excluded.probe_min_rtt, probe_min_rtt)) END,
           probe_samples = CASE WHEN ${NEXT} THEN excluded.probe_samples ELSE MIN(probe_samples + excluded.probe_samples, ?) END,
           window_start = CASE WHEN ${NEXT} THEN excluded.window_start ELSE window_start END,
           updated_at = excluded.updated_at`,
        s.backend,
        s.pop,
        s.minMs,
        s.count,
        s.probeMinMs ?? null,
        s.probeCount ?? 0,
        now,
        now,
        RTT_MAX_COUNT,
        RTT_MAX_COUNT,
      );
      this.#verdicts.delete(s.backend);
    }
  }

  /** Drops a backend's round trips, and its verdict with them. */
  forget(backendId: string): void {
    this.#sql.run('DELETE FROM rtt WHERE backend_id = ?', backendId);
    this.#verdicts.delete(backendId);
  }

  /** The location verdict on a backend's claim: the cached one while neither its round trips, its claim nor its windows changed. */
  verdictOf(r: { id: string; lat: number; lon: number }): LocationVerdict {
    const now = Date.now();
    const hit = this.#verdicts.get(r.id);
    if (hit && hit.lat === r.lat && hit.lon === r.lon && now < hit.until) return hit.verdict;
    const rtts = this.#sql.all<RttRow>('SELECT * FROM rtt WHERE backend_id = ?', r.id);
    const verdict = locationVerdict(r, measuredOf(rtts, now));
    // Good until a window it read passes.
    let until = Infinity;
    for (const m of rtts) until = Math.min(until, m.window_start + (now - m.window_start < RTT_WINDOW_MS ? 1 : 2) * RTT_WINDOW_MS);
    this.#verdicts.set(r.id, { lat: r.lat, lon: r.lon, verdict, until });
    return verdict;
  }

  /** Drops the round trips of every backend of `provider` here (the operator removed it). */
  forgetProvider(provider: string): void {
    this.#sql.run('DELETE FROM rtt WHERE backend_id IN (SELECT id FROM backends WHERE provider = ?)', provider);
    this.#verdicts.clear();
  }

  /** Drops round trips idle for RTT_IDLE_MS and those of backends no longer live here. */
  prune(now: number): void {
    this.#sql.run('DELETE FROM rtt WHERE updated_at <= ? OR backend_id NOT IN (SELECT id FROM backends WHERE expires_at > ?)', now - RTT_IDLE_MS, now);
    this.#verdicts.clear();
  }
}
