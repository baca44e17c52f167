/**
 * Recent traffic for the status page (docs/api.md section 2.15), counted in
 * each isolate and sent to the RegionDirectory objects in the background:
 * per (PoP the request entered at, region and provider that answered) the
 * inference requests answered, the 5xx among them and a latency histogram
 * (the edge's time from arrival to response). A flush happens in
 * `ctx.waitUntil` at most every `STATUS_FLUSH_MS` (default
 * TRAFFIC_FLUSH_MS), like demand and round-trip reports: no request waits
 * on a Durable Object for it. A request counted too soon after a flush arms
 * one timer (in its `waitUntil`) for the next, so that a quiet isolate's
 * last requests still reach the status page within that interval. A cell goes to its
 * answering region's directory, or to the directory nearest its PoP when no
 * backend answered (a cache hit, the fallback, an error).
 */

import { regionById } from '../../shared/regions.ts';
import type { Env } from '../env.ts';
import { popLocation } from '../geo/pops.ts';
import { nearestRegion } from '../geo/regions.ts';
import { observe, type Histogram } from '../status/latency-histogram.ts';

/** A flush happens at most this often per isolate, by default (`STATUS_FLUSH_MS`). */
export const TRAFFIC_FLUSH_MS = 2_000;
/** At most this many cells wait for a flush; requests for new cells beyond it are not counted. */
export const TRAFFIC_MAX_PENDING = 1024;

/** What one isolate reports for one (PoP, region, provider) since its last flush (`RegionDirectory.recordTraffic`). */
export interface TrafficCell {
  /** The PoP's IATA code. */
  pop: string;
  /** The answering backend's region; '' when no backend answered. */
  region: string;
  /** The answering provider; '' when none did (a cache hit, an error). */
  provider: string;
  requests: number;
  /** Answers with a 5xx status. */
  errors: number;
  hist: Histogram;
}

/** One request as the request log saw it. */
export interface TrafficSample {
  pop: string;
  region?: string;
  provider?: string;
  status: number;
  latencyMs: number;
}

/** The cells one isolate has not sent yet; the module below keeps one per isolate. */
export class TrafficReport {
  readonly #pending = new Map<string, TrafficCell>();
  readonly #max: number;
  #lastFlush = 0;
  /** Whether a timer will flush what is pending. */
  #armed = false;

  constructor(options: { maxPending?: number } = {}) {
    this.#max = options.maxPending ?? TRAFFIC_MAX_PENDING;
  }

  /** Counts one request; one that entered at a PoP not in the table counts nothing. */
  note(s: TrafficSample): void {
    const pop = s.pop.toUpperCase();
    if (popLocation(pop) === undefined || !Number.isFinite(s.latencyMs)) return;
    const region = s.region !== undefined && regionById(s.region) ? s.region : '';
    const provider = s.provider ?? '';
    const key = `${pop}\u0000${region}\u0000${provider}`;
    let cell = this.#pending.get(key);
    if (!cell) {
      if (this.#pending.size >= this.#max) return;
      this.#pending.set(key, (cell = { pop, region, provider, requests: 0, errors: 0, hist: {} }));
    }
    cell.requests++;
    if (s.status >= 500) cell.errors++;
    observe(cell.hist, s.latencyMs);
  }

  /** Cells waiting for a flush. */
  get size(): number {
    return this.#pending.size;
  }

  /**
   * The cells per directory, and the pending ones cleared, when there are some
   * and the last flush is at least `intervalMs` old; else undefined.
   */
  take(now: number, intervalMs = TRAFFIC_FLUSH_MS): Map<string, TrafficCell[]> | undefined {
    if (this.#pending.size === 0 || now - this.#lastFlush < intervalMs) return undefined;
    this.#lastFlush = now;
    const byRegion = new Map<string, TrafficCell[]>();
    for (const cell of this.#pending.values()) {
      const region = cell.region || nearestRegion(popLocation(cell.pop)!).id;
      let list = byRegion.get(region);
      if (!list) byRegion.set(region, (list = []));
      list.push(cell);
    }
    this.#pending.clear();
    return byRegion;
  }

  /**
   * Sends what `take` gives to each region's directory in `ctx.waitUntil`;
   * when the last flush is too recent, arms a timer (once) that sends it
   * when it is due.
   */
  flush(env: Env, ctx: { waitUntil(p: Promise<unknown>): void }, now = Date.now(), intervalMs = TRAFFIC_FLUSH_MS): void {
    if (this.#pending.size === 0) return;
    const batch = this.take(now, intervalMs);
    if (batch) {
      ctx.waitUntil(send(env, batch));
      return;
    }
    if (this.#armed) return;
    this.#armed = true;
    const wait = Math.max(0, intervalMs - (now - this.#lastFlush));
    ctx.waitUntil(
      new Promise((resolve) => setTimeout(resolve, wait)).then(() => {
        this.#armed = false;
        const due = this.take(Math.max(Date.now(), this.#lastFlush + intervalMs), intervalMs);
        return due && send(env, due);
      }),
    );
  }
}

function send(env: Env, batch: Map<string, TrafficCell[]>): Promise<unknown> {
  return Promise.allSettled(
    [...batch].map(([region, cells]) => env.REGION_DIRECTORY.getByName(region, { locationHint: regionById(region)!.locationHint }).recordTraffic(cells)),
  );
}

/** This isolate's report. */
export const isolateTrafficReport = new TrafficReport();
