/**
 * One isolate's routing memory, shared by every request it serves: measured
 * latencies and RTTs, its own calls in flight, ejected backends, the retry
 * budget and the backends' rejection baseline. Nothing here is persisted, and each isolate learns on its
 * own, as Envoy and Finagle clients do, but for one thing: the service times, which the isolates of a PoP
 * also exchange through the PoP's book (pop-book.ts).
 */

import { ChangeLog } from './changes.ts';
import { RatioBook } from './hedge.ts';
import { LatencyBook } from './latency.ts';
import { OutlierDetector, type OutlierEvent } from './outliers.ts';
import { RejectionBaseline } from './rejections.ts';
import { RetryBudget } from './retry-budget.ts';
import { RttTable } from './rtt.ts';
import type { RoutingStats } from './score.ts';

export interface IsolateRouting extends RoutingStats {
  /**
   * Service time per (backend, model), as backends report it: what scoring
   * uses. A plain EWMA with a time constant of SERVICE_DECAY_MS, not
   * Finagle's peak (fast up, 10 s down): a peak follows the slowest recent
   * answer, so the more often an isolate sends to a backend the slower that
   * backend looked (the top of many samples, and any stall among them), and
   * each PoP's traffic was pushed off its best backend. The mean is the same
   * however often a backend is measured; a stall moves it by its share
   * (docs/benchmarks.md, "A mean, not a peak").
   */
  latency: LatencyBook;
  /** Time to an answer per (backend, model), as the edge waited for it: what hedging waits on. */
  answer: LatencyBook;
  /** Per model, answer times over the expected times they were ranked by: hedging's fallback for backends with few samples. */
  ratios: RatioBook;
  rtt: RttTable;
  pending: PendingCalls;
  ejected: OutlierDetector;
  /** Retries after a failed attempt. */
  budget: RetryBudget;
  /**
   * Hedges, apart from retries so that hedging never starves a retry: 10% of
   * requests plus 1 a second, twice what hedging at the p95 sends when every
   * backend behaves (Tail at Scale: about 5%), so that the hedges a stalling
   * backend needs still fit.
   */
  hedges: RetryBudget;
  /** Each backend's 4xx verdicts against the others': a backend far above them is failing. */
  rejections: RejectionBaseline;
}

/** Hedges allowed per original request (see `IsolateRouting.hedges`). */
export const HEDGE_BUDGET_RATIO = 0.1;

/** Time constant of the service times' EWMA that scoring reads, ms (docs/design.md "Score"; docs/benchmarks.md, "How long a slow answer counts"). */
export const SERVICE_DECAY_MS = 2_000;

export function createIsolateRouting(now: () => number = Date.now, onOutlier?: (event: OutlierEvent) => void): IsolateRouting {
  return {
    latency: new LatencyBook({ histogram: false, ewma: { decayMs: SERVICE_DECAY_MS, fastUp: false } }), // scoring reads its EWMA only
    answer: new LatencyBook(),
    ratios: new RatioBook(),
    rtt: new RttTable(),
    pending: new PendingCalls(),
    ejected: new OutlierDetector({ now, onEvent: onOutlier }),
    budget: new RetryBudget({ now }),
    hedges: new RetryBudget({ now, ratio: HEDGE_BUDGET_RATIO, minPerSecond: 1 }),
    rejections: new RejectionBaseline(),
  };
}

/** Calls in flight per backend id; every change noted in `changes` (scope ''), as the books note theirs. */
export class PendingCalls extends Map<string, number> {
  readonly changes = new ChangeLog();

  override set(backendId: string, calls: number): this {
    // Map's constructor calls set before the field exists; nothing is tracked then.
    this.changes?.note('', backendId);
    return super.set(backendId, calls);
  }

  override delete(backendId: string): boolean {
    this.changes.note('', backendId);
    return super.delete(backendId);
  }

  override clear(): void {
    for (const id of this.keys()) this.changes.note('', id);
    super.clear();
  }
}

/** The log line of an ejection or a hold: operators see why a backend stopped getting traffic. */
export function describeOutlierEvent(e: OutlierEvent, now: number = Date.now()): string {
  const s = Math.round((e.untilMs - now) / 1000);
  const cap = `${e.regionEjected} of ${e.regionSize} in ${e.region} ejected`;
  return e.kind === 'ejected'
    ? `routing: backend ${e.backendId} ejected for ${s} s (ejection ${e.timesEjected}; ${cap} before it)`
    : `routing: backend ${e.backendId} held back (tried last) for ${s} s after each failure, not ejected (${cap}, the most allowed)`;
}

/** The routing memory of this isolate. */
export const isolateRouting: IsolateRouting = createIsolateRouting(Date.now, (e) => console.warn(describeOutlierEvent(e)));

/** Counts a call to `backendId` in flight until the returned function is called. */
export function trackPending(state: Pick<IsolateRouting, 'pending'>, backendId: string): () => void {
  state.pending.set(backendId, (state.pending.get(backendId) ?? 0) + 1);
  let done = false;
  return () => {
    if (done) return;
    done = true;
    const left = (state.pending.get(backendId) ?? 1) - 1;
    if (left <= 0) state.pending.delete(backendId);
    else state.pending.set(backendId, left);
  };
}
