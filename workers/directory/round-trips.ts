/**
 * A region's measured round trips, for proof of location (docs/api.md
 * section 3.2), in its RegionDirectory's SQLite (the `rtt` table): per
 * (backend, PoP) the lowest round trip and how many samples, for all samples
 * and for probes alone, merged from the isolates' reports (rtt-report.ts),
 * bounded per backend, pruned when idle, and judged against each backend's
 * claim by geo/location.ts.
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

type RttRow = {
  backend_id: string;
  pop: string;
  min_rtt: number;
  samples: number;
  probe_min_rtt: number | null;
  probe_samples: number;
};

/** A backend's round-trip rows as the location rule reads them (PoPs no longer in the table are skipped). */
function measuredOf(rtts: readonly RttRow[]): PopRtt[] {
  const measured: PopRtt[] = [];
  for (const m of rtts) {
    const at = popLocation(m.pop);
    if (!at) continue;
    measured.push({
      pop: m.pop,
      ...at,
      minRttMs: m.min_rtt,
      samples: m.samples,
      ...(m.probe_min_rtt !== null ? { probeMinRttMs: m.probe_min_rtt, probeSamples: m.probe_samples } : {}),
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

export class RoundTrips {
  readonly #sql: Sql;
  /**
   * Location verdicts per backend id, with the claim they judged: snapshots
   * ask every second from every isolate, round trips change less often. An
   * entry goes when its backend's round trips change (or all, when the alarm
   * prunes them); a changed claim is judged afresh.
   */
  readonly #verdicts = new Map<string, { lat: number; lon: number; verdict: LocationVerdict }>();

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
      this.#sql.run(
        `INSERT INTO rtt (backend_id, pop, min_rtt, samples, probe_min_rtt, probe_samples, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT(backend_id, pop) DO UPDATE SET
           min_rtt = MIN(min_rtt, excluded.min_rtt),
           samples = MIN(samples + excluded.samples, ?),
           probe_min_rtt = MIN(COALESCE(probe_min_rtt, excluded.probe_min_rtt), COALESCE(excluded.probe_min_rtt, probe_min_rtt)),
           probe_samples = MIN(probe_samples + excluded.probe_samples, ?),
           updated_at = excluded.updated_at`,
        s.backend,
        s.pop,
        s.minMs,
        s.count,
        s.probeMinMs ?? null,
        s.probeCount ?? 0,
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

  /** The location verdict on a backend's claim: the cached one while neither its round trips nor its claim changed. */
  verdictOf(r: { id: string; lat: number; lon: number }): LocationVerdict {
    const hit = this.#verdicts.get(r.id);
    if (hit && hit.lat === r.lat && hit.lon === r.lon) return hit.verdict;
    const rtts = this.#sql.all<RttRow>(
      'SELECT backend_id, pop, min_rtt, samples, probe_min_rtt, probe_samples FROM rtt WHERE backend_id = ?',
      r.id,
    );
    const verdict = locationVerdict(r, measuredOf(rtts));
    this.#verdicts.set(r.id, { lat: r.lat, lon: r.lon, verdict });
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
