/**
 * Round trips for proof of location (docs/api.md section 3.2), gathered in
 * each isolate and sent to the RegionDirectory objects in the background: per
 * (backend, PoP) the lowest round trip measured since the last flush and how
 * many samples it is the minimum of, for all samples and for probes alone.
 * Probes (directory/probes.ts) are timed end to end by the edge, so a backend
 * cannot make one look shorter than the path; a dispatch's share of network
 * time is the answer's time minus the service time the backend itself states
 * (`server-timing`), so a dishonest backend could shrink it: the rule
 * (geo/location.ts) lets those refute a claim but never verify one. A flush
 * happens in `ctx.waitUntil`, at most every RTT_FLUSH_MS, like demand reports
 * (demand.ts): no request waits on a Durable Object for it.
 */

import { regionById } from '../../shared/regions.ts';
import type { Env } from '../env.ts';
import { popLocation } from '../geo/pops.ts';

/** A flush happens at most this often per isolate. */
export const RTT_FLUSH_MS = 2_000;
/** At most this many (backend, PoP) pairs wait for a flush; samples for new pairs beyond it are dropped. */
export const RTT_MAX_PENDING = 4096;

/** Where a round trip was measured: a probe the edge timed end to end, or a dispatch less the backend's stated service time. */
export type RttKind = 'probe' | 'dispatch';

/** What one isolate reports for one (backend, PoP) pair since its last flush (`RegionDirectory.recordRtt`). */
export interface RttSample {
  backend: string;
  /** The PoP's IATA code (workers/geo/pops.ts). */
  pop: string;
  /** The lowest round trip measured, of either kind, ms. */
  minMs: number;
  /** How many round trips were measured, of either kind. */
  count: number;
  /** The lowest round trip a probe measured, ms; absent when no probe did. */
  probeMinMs?: number;
  /** How many of `count` were probes. */
  probeCount?: number;
}

interface Pending extends RttSample {
  region: string;
}

/** The minima one isolate has not sent yet; the module below keeps one per isolate. */
export class RttReport {
  readonly #pending = new Map<string, Pending>();
  readonly #max: number;
  #lastFlush = 0;

  constructor(options: { maxPending?: number } = {}) {
    this.#max = options.maxPending ?? RTT_MAX_PENDING;
  }

  /** Counts one round trip of `rttMs` from `popCode` to `backend`; a PoP not in the table or a bad number counts nothing. */
  note(popCode: string, backend: { id: string; region: string }, rttMs: number, kind: RttKind = 'probe'): void {
    if (!Number.isFinite(rttMs) || rttMs < 0 || popLocation(popCode) === undefined || regionById(backend.region) === undefined) return;
    const pop = popCode.toUpperCase();
    const key = `${backend.id}\u0000${pop}`;
    let seen = this.#pending.get(key);
    if (!seen) {
      if (this.#pending.size >= this.#max) return;
      this.#pending.set(key, (seen = { backend: backend.id, region: backend.region, pop, minMs: rttMs, count: 0 }));
    }
    seen.minMs = Math.min(seen.minMs, rttMs);
    seen.count++;
    if (kind === 'probe') {
      seen.probeMinMs = Math.min(seen.probeMinMs ?? rttMs, rttMs);
      seen.probeCount = (seen.probeCount ?? 0) + 1;
    }
  }

  /** Pairs waiting for a flush. */
  get size(): number {
    return this.#pending.size;
  }

  /**
   * The samples per region, and the pending ones cleared, when there are some
   * and the last flush is at least RTT_FLUSH_MS old; else undefined.
   */
  take(now: number): Map<string, RttSample[]> | undefined {
    if (this.#pending.size === 0 || now - this.#lastFlush < RTT_FLUSH_MS) return undefined;
    this.#lastFlush = now;
    const byRegion = new Map<string, RttSample[]>();
    for (const { region, ...sample } of this.#pending.values()) {
      let list = byRegion.get(region);
      if (!list) byRegion.set(region, (list = []));
      list.push(sample);
    }
    this.#pending.clear();
    return byRegion;
  }

  /** Sends what `take` gives to each region's directory in `ctx.waitUntil`. */
  flush(env: Env, ctx: { waitUntil(p: Promise<unknown>): void }, now = Date.now()): void {
    const batch = this.take(now);
    if (!batch) return;
    ctx.waitUntil(
      Promise.allSettled(
        [...batch].map(([region, samples]) =>
          env.REGION_DIRECTORY.getByName(region, { locationHint: regionById(region)!.locationHint }).recordRtt(samples),
        ),
      ),
    );
  }
}

/** This isolate's report. */
export const isolateRttReport = new RttReport();

/**
 * Counts one round trip of `rttMs` ms measured at `popCode` to `backend`: a
 * probe's, timed by the edge from request to answer, unless `kind` says it is
 * a dispatch's (its time less the backend's stated service time).
 */
export function noteRtt(popCode: string, backend: { id: string; region: string }, rttMs: number, kind: RttKind = 'probe'): void {
  isolateRttReport.note(popCode, backend, rttMs, kind);
}

/** Sends this isolate's minima to the directories in the background, when the last flush is old enough. */
export function flushRtt(env: Env, ctx: { waitUntil(p: Promise<unknown>): void }, now = Date.now()): void {
  isolateRttReport.flush(env, ctx, now);
}
