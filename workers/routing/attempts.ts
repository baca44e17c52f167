/**
 * The attempts of one request, as decisions: which candidate to send to next
 * (the first, a retry after a failure, one hedge), when to hedge, and what a
 * failure or a win does to the isolate's memory (pending calls, ejection).
 * No I/O, no timers, no clock of its own: the edge (inference/run.ts) drives
 * it with dispatches and a timer, the world simulator (sim/) with events on
 * its virtual clock, so both run the same decisions.
 *
 * Retries spend the isolate's retry budget, hedges a budget of their own, so
 * hedging never starves a retry; at most MAX_ATTEMPTS candidates are tried.
 */

import { hedgeDelayMs, modelHedgeDelayMs, type HedgeOptions } from './hedge.ts';
import { trackPending, type IsolateRouting } from './isolate.ts';
import type { Scored } from './score.ts';

/** At most this many backends are tried for one request. */
export const MAX_ATTEMPTS = 3;

/** The parts of the isolate's routing memory that attempts read and write. */
export type AttemptRouting = Pick<IsolateRouting, 'budget' | 'hedges' | 'ejected' | 'answer' | 'pending'> & Partial<Pick<IsolateRouting, 'ratios'>>;

/** One call to one candidate; `T` is what the driver attaches (a dispatch's controller, a simulated completion). */
export interface Attempt<T = unknown> {
  candidate: Scored;
  /** Sent as a hedge (not after a failure). */
  hedge: boolean;
  /** The backend started answering (its response head arrived): a first attempt overtaken by its hedge before it had counts as failed (`AttemptPlan.won`). */
  answered: boolean;
  /** The driver's own data for this call. */
  driver?: T;
  /** Ends the call's count in the isolate's pending calls; the driver calls it when the call is over (idempotent). */
  release: () => void;
}

/** Why a request ended with no answer. */
export type NoAnswer = 'budget' | 'timeout' | 'failed';

export interface AttemptPlanOptions {
  /** The model asked for (hedging reads its answer times per backend). */
  model: string;
  /** Backends in a region, for ejection's cap on a region's share (default 1). */
  regionSize?: (candidate: Scored) => number;
  /** Hedge at all (default true). */
  hedging?: boolean;
  hedge?: HedgeOptions;
  now: () => number;
}

export class AttemptPlan<T = unknown> {
  /** Calls sent and not yet settled. */
  readonly running = new Set<Attempt<T>>();
  private next = 0;
  private hedged = false;
  private budgetSpent = false;
  private lastTimeout = false;

  private readonly candidates: readonly Scored[];
  private readonly routing: AttemptRouting;
  private readonly options: AttemptPlanOptions;

  constructor(candidates: readonly Scored[], routing: AttemptRouting, options: AttemptPlanOptions) {
    this.candidates = candidates;
    this.routing = routing;
    this.options = options;
  }

  /** Attempts sent so far, hedges included. */
  get sent(): number {
    return this.next;
  }

  /** The first attempt; undefined when there is no candidate. */
  start(): Attempt<T> | undefined {
    return this.launch(false);
  }

  /**
   * When to hedge, ms after the first attempt was sent: that backend's p95
   * time to answer as this isolate waited for it; while it has too few
   * samples, its expected time times the model's p95 of actual / expected,
   * or times the prior while the model has too few as well (hedge.ts);
   * undefined when no hedge is due (hedging off, already hedged or retried,
   * no second candidate).
   */
  hedgeAfterMs(): number | undefined {
    const first = this.candidates[0];
    if (this.options.hedging === false || this.hedged || this.next !== 1 || this.running.size !== 1 || !first || !this.candidates[1]) return undefined;
    const now = this.options.now();
    const { model, hedge } = this.options;
    return hedgeDelayMs(this.routing.answer.get(first.backend.id, model), now, hedge) ?? modelHedgeDelayMs(this.routing.ratios, model, first.expectedMs, now, hedge);
  }

  /** Records what an answer took against what its candidate was expected to take (the model's ratios, for hedging). */
  learn(attempt: Attempt<T>, actualMs: number): void {
    this.routing.ratios?.observe(this.options.model, actualMs, attempt.candidate.expectedMs, this.options.now());
  }

  /** The hedge timer fired: the hedge to send, if the first call has not started answering and the hedge budget allows. */
  hedge(): Attempt<T> | undefined {
    if (this.hedged || this.next !== 1) return undefined;
    this.hedged = true;
    const [first] = this.running;
    if (!first || first.answered || this.running.size !== 1) return undefined;
    return this.launch(true);
  }

  /**
   * `attempt` failed (an error, a timeout, an answer that did not check out):
   * it counts toward its backend's ejection; the retry to send when nothing
   * else is still running and the budget allows.
   */
  failed(attempt: Attempt<T>, timeout: boolean): Attempt<T> | undefined {
    this.settle(attempt);
    this.routing.ejected.recordFailure(attempt.candidate.backend, this.regionSize(attempt.candidate));
    this.lastTimeout = timeout;
    return this.running.size === 0 ? this.launch(false) : undefined;
  }

  /**
   * `attempt` answered: the others lost. Returns them, for the driver to
   * cancel. A first attempt overtaken by its hedge counts as a failure when
   * it had not started answering, so a hung backend is ejected even while
   * hedges hide it; a hedge that lost never does: it was sent later, and an
   * edge that stalled sends hedges that lose at once, in bursts.
   */
  won(attempt: Attempt<T>): Attempt<T>[] {
    this.settle(attempt);
    const losers = [...this.running];
    for (const loser of losers) {
      this.settle(loser);
      if (!loser.answered && !loser.hedge) this.routing.ejected.recordFailure(loser.candidate.backend, this.regionSize(loser.candidate));
    }
    return losers;
  }

  private settle(attempt: Attempt<T>): void {
    this.running.delete(attempt);
    attempt.release();
  }

  /** Why the request got no answer, once nothing is running: the budget stopped a retry, the last failure was a timeout, or all failed. */
  get outcome(): NoAnswer {
    return this.budgetSpent ? 'budget' : this.lastTimeout ? 'timeout' : 'failed';
  }

  private regionSize(candidate: Scored): number {
    return this.options.regionSize?.(candidate) ?? 1;
  }

  private launch(hedge: boolean): Attempt<T> | undefined {
    const candidate = this.candidates[this.next];
    if (!candidate || this.next >= MAX_ATTEMPTS) return undefined;
    if (hedge ? !this.routing.hedges.tryRetry() : this.next > 0 && !this.routing.budget.tryRetry()) {
      if (!hedge) this.budgetSpent = true;
      return undefined;
    }
    this.next++;
    const attempt: Attempt<T> = { candidate, hedge, answered: false, release: trackPending(this.routing, candidate.backend.id) };
    this.running.add(attempt);
    return attempt;
  }
}
