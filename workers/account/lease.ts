/**
 * An isolate's lease on one key's account (design.md "Key accounts"): the
 * slices of the key's allowances this isolate holds, spent locally on the
 * request path with no call to the key's KeyAccount object. It is renewed in
 * the background (`waitUntil`) when half its life has passed or a slice runs
 * low, reports what its requests spent a moment after they end, and gives back
 * everything it holds once the key has been idle in this isolate for half a
 * lease. A request waits for a lease call only when the isolate holds no live
 * lease for the key (its first request, or after an idle give-back) or when
 * its slice cannot cover the request.
 *
 * Never beyond a grant: a request is admitted only from what the lease holds,
 * and the lease holds only what the object granted for the window or period
 * it names. Ends of windows, periods and the lease are taken from the time the
 * call was sent, so they are never later than the object's own.
 */

import { DEAD_LEASE_MS, sliceOf, type LeaseAnswer, type LeaseAsk, type Shortage } from './book.ts';
import { NO_SETTINGS, type KeySettings } from './settings.ts';

export interface Clock {
  now(): number;
  sleep(ms: number): Promise<void>;
}

export const realClock: Clock = { now: () => Date.now(), sleep: (ms) => scheduler.wait(ms) };

/** One call to the key's object (the request's own stub, so it runs in the caller's request). */
export type LeaseCall = (ask: LeaseAsk) => Promise<LeaseAnswer>;

export interface Background {
  waitUntil(p: Promise<unknown>): void;
}

/** A refusal from the object stands for this long in this isolate: no new call for the same need meanwhile. */
export const REFUSAL_MEMORY_MS = 500;
/** What requests spent is reported this long after one ends (shared by the requests that end meanwhile). */
export const REPORT_AFTER_MS = 1000;
/** A key without an account is looked up again after this long. */
const NO_ACCOUNT_MS = 10_000;
/** The longest one background task waits for the key to go idle (less than waitUntil's limit). */
const MAX_BACKGROUND_MS = 25_000;

/** What one request needs before it is dispatched: metered units and micro-USD, each an upper bound. */
export interface Need {
  tokens: number;
  microUsd: number;
}

/** What one admitted request took from the lease, to settle or give back when it ends. */
export interface Ticket {
  slot: boolean;
  window: number;
  tokens: number;
  /** The budget period it reserved in; -1 without a budget. */
  period: number;
  microUsd: number;
  settled: boolean;
  finished: boolean;
}

export interface Refusal {
  refused: Shortage;
  /** The request alone exceeds the limit (tokens) or the whole budget: no wait helps. */
  tooLarge: boolean;
  /** Seconds until a retry can succeed, when known. */
  retryAfterS?: number;
}

const ZERO = { requests: 0, tokens: 0, slots: 0, microUsd: 0 } as const;

export class KeyLease {
  /** This isolate's lease id at the key's object (a new one after a silence the object may have folded the old one away in). */
  id = crypto.randomUUID();
  readonly #clock: Clock;
  /** The key's settings as of the last answer; undefined before the first. */
  settings: KeySettings | undefined;
  #version = 0;
  #leaseMs = 0;
  #expiresAt = 0;
  #renewAt = 0;
  #lastSyncAt = -Infinity;
  /** When the last call that the object answered was sent. */
  #answeredAt = -Infinity;
  // The window's requests and tokens: free here, and given back (cumulative).
  #window = -1;
  #windowEnd = 0;
  #requests = 0;
  #tokens = 0;
  #requestsBack = 0;
  #tokensBack = 0;
  // Slots: held from the object, in use by requests, the most in use since the last call.
  #held = 0;
  #inUse = 0;
  #peak = 0;
  // The budget period: free here, and per period the cumulative given back and spent.
  #period = -1;
  #periodEnd: number | null = null;
  #microUsd = 0;
  readonly #books = new Map<number, { back: number; spent: number; told: number }>();
  #sync: Promise<void> | undefined;
  readonly #refusedUntil = new Map<Shortage, number>();
  /** Admissions waiting for a call because they lack a request or a slot: the next call asks for all of them. */
  #waiting = 0;
  #lastActivity = 0;
  /** Until when the background task running (reports, then the idle give-back) may wait; 0: none runs. */
  #backgroundUntil = 0;
  #dirty = false;
  /** Calls made to the object: what tests count. */
  calls = 0;

  constructor(clock: Clock = realClock) {
    this.#clock = clock;
  }

  /** Requests of this key in flight in this isolate. */
  get inFlight(): number {
    return this.#inUse;
  }

  /** True while a call is in flight or the lease holds anything the object counts. */
  get holding(): boolean {
    return this.#sync !== undefined || this.#inUse > 0 || this.#held > 0 || this.#requests > 0 || this.#tokens > 0 || this.#microUsd > 0 || this.#dirty;
  }

  /**
   * Makes sure the lease is live: waits for a call only when it has none
   * (asking for a slot then, when `slot`); renews in the background past
   * half its life. Throws when the object cannot be reached and no live lease is held.
   */
  async ready(call: LeaseCall, bg: Background, slot: boolean): Promise<void> {
    const now = this.#clock.now();
    if (this.settings !== undefined && now < this.#expiresAt) {
      if (now >= this.#renewAt) this.#renew(call, bg);
      return;
    }
    while (this.#sync) await this.#sync.catch(() => undefined);
    if (this.settings !== undefined && this.#clock.now() < this.#expiresAt) return;
    await this.#call(call, { ...ZERO, slots: slot && this.#inUse >= this.#held ? 1 : 0 }, true, false);
  }

  /**
   * Admits one request needing `need`: from what the lease holds, or after
   * one call that asks for the shortfall. A refusal names what is short.
   */
  async admit(call: LeaseCall, bg: Background, need: Need): Promise<Ticket | Refusal> {
    for (let round = 0; ; round++) {
      const now = this.#clock.now();
      const s = this.settings ?? NO_SETTINGS;
      if (s.limits?.tokensPerMinute !== undefined && need.tokens > s.limits.tokensPerMinute) return { refused: 'tokens', tooLarge: true };
      if (s.budget && need.microUsd > s.budget.microUsd) return { refused: 'budget', tooLarge: true };
      let short: Shortage[] = [];
      if (this.settings !== undefined && now < this.#expiresAt) {
        const taken = this.#take(need, now);
        if (!Array.isArray(taken)) {
          this.#lastActivity = now;
          if (now >= this.#renewAt || (this.#low() && now - this.#lastSyncAt >= REFUSAL_MEMORY_MS)) this.#renew(call, bg);
          return taken;
        }
        short = taken;
        const known = short.find((k) => (this.#refusedUntil.get(k) ?? 0) > now);
        if (known) return this.#refusal(known, now);
        if (round >= 4) return this.#refusal(short[0]!, now);
      }
      this.#waiting++;
      try {
        if (this.#sync) await this.#sync.catch(() => undefined);
        else await this.#call(call, this.#shortfall(short, need, now), true, false);
      } finally {
        this.#waiting--;
      }
    }
  }

  /** Settles an admitted request from its receipt: `units` metered (input and output), `microUsd` charged. */
  settle(ticket: Ticket, units: number, microUsd: number): void {
    if (ticket.settled || ticket.finished) return;
    ticket.settled = true;
    if (ticket.tokens > 0 && ticket.window === this.#window) this.#tokens += ticket.tokens - units;
    if (ticket.period >= 0) {
      this.#bookOf(ticket.period).spent += microUsd;
      if (ticket.period === this.#period) this.#microUsd += ticket.microUsd - microUsd;
      this.#dirty = true;
    }
  }

  /**
   * Ends an admitted request: its slot is free again here, and what it
   * reserved comes back unless it was settled. Spending is reported and, once
   * the key is idle here, everything held given back, in the background.
   */
  finish(ticket: Ticket, call: LeaseCall, bg: Background): void {
    if (ticket.finished) return;
    ticket.finished = true;
    if (ticket.slot) this.#inUse--;
    if (!ticket.settled) {
      if (ticket.tokens > 0 && ticket.window === this.#window) this.#tokens += ticket.tokens;
      if (ticket.period >= 0 && ticket.period === this.#period) this.#microUsd += ticket.microUsd;
    }
    const now = this.#clock.now();
    this.#lastActivity = now;
    // The task running covers this request too, unless it must stop (MAX_BACKGROUND_MS) before the key can have been idle for long enough.
    if (now + this.#idleMs() <= this.#backgroundUntil) return;
    const until = now + MAX_BACKGROUND_MS;
    this.#backgroundUntil = until;
    bg.waitUntil(
      this.#afterwards(call).finally(() => {
        if (this.#backgroundUntil === until) this.#backgroundUntil = 0;
      }),
    );
  }

  /** Takes what `need` needs from the lease, or says what is short. Synchronous: nothing interleaves. */
  #take(need: Need, now: number): Ticket | Shortage[] {
    const s = this.settings!;
    const limits = s.limits ?? {};
    const short: Shortage[] = [];
    const windowLive = this.#window >= 0 && now < this.#windowEnd;
    if (limits.concurrent !== undefined && this.#inUse >= this.#held) short.push('slots');
    if (limits.requestsPerMinute !== undefined && !(windowLive && this.#requests >= 1)) short.push('requests');
    const tokens = limits.tokensPerMinute !== undefined ? need.tokens : 0;
    if (tokens > 0 && !(windowLive && this.#tokens >= tokens)) short.push('tokens');
    const periodLive = this.#period >= 0 && (this.#periodEnd === null || now < this.#periodEnd);
    const microUsd = s.budget ? need.microUsd : 0;
    if (microUsd > 0 && !(periodLive && this.#microUsd >= microUsd)) short.push('budget');
    if (short.length > 0) return short;
    const slot = limits.concurrent !== undefined;
    if (slot) {
      this.#inUse++;
      this.#peak = Math.max(this.#peak, this.#inUse);
    }
    if (limits.requestsPerMinute !== undefined) this.#requests--;
    this.#tokens -= tokens;
    this.#microUsd -= microUsd;
    return { slot, window: this.#window, tokens, period: s.budget && periodLive ? this.#period : -1, microUsd, settled: false, finished: false };
  }

  /** What to ask for when `short`: the part of `need` the lease does not hold. */
  #shortfall(short: Shortage[], need: Need, now: number): LeaseAsk['need'] {
    const windowLive = this.#window >= 0 && now < this.#windowEnd;
    const periodLive = this.#period >= 0 && (this.#periodEnd === null || now < this.#periodEnd);
    const all = this.settings === undefined;
    return {
      requests: short.includes('requests') || all ? this.#waiting : 0,
      tokens: short.includes('tokens') || all ? Math.max(0, need.tokens - (windowLive ? Math.max(0, this.#tokens) : 0)) : 0,
      slots: short.includes('slots') || all ? Math.max(1, this.#waiting - (this.#held - this.#inUse)) : 0,
      microUsd: short.includes('budget') || all ? Math.max(0, need.microUsd - (periodLive ? Math.max(0, this.#microUsd) : 0)) : 0,
    };
  }

  /** True when a slice the lease holds has run below half. */
  #low(): boolean {
    const s = this.settings;
    if (!s) return false;
    const l = s.limits ?? {};
    return (
      (l.requestsPerMinute !== undefined && this.#requests < sliceOf(l.requestsPerMinute) / 2) ||
      (l.tokensPerMinute !== undefined && this.#tokens < sliceOf(l.tokensPerMinute) / 2) ||
      (s.budget !== null && this.#microUsd < sliceOf(s.budget.microUsd) / 2)
    );
  }

  #refusal(kind: Shortage, now: number): Refusal {
    if (kind === 'requests' || kind === 'tokens') {
      const left = this.#window >= 0 && now < this.#windowEnd ? this.#windowEnd - now : 1000;
      return { refused: kind, tooLarge: false, retryAfterS: Math.max(1, Math.ceil(left / 1000)) };
    }
    if (kind === 'slots') return { refused: kind, tooLarge: false, retryAfterS: 1 };
    return { refused: kind, tooLarge: false };
  }

  #renew(call: LeaseCall, bg: Background): void {
    if (this.#sync) return;
    bg.waitUntil(
      this.#call(call, ZERO, true, false).catch((err: unknown) => console.warn(`key lease: background renewal failed: ${String(err)}`)),
    );
  }

  /** Reports, then gives back once the key has been idle here for half a lease; ends early when requests are in flight (their end schedules it again). */
  async #afterwards(call: LeaseCall): Promise<void> {
    const started = this.#clock.now();
    await this.#clock.sleep(REPORT_AFTER_MS);
    const idleMs = this.#idleMs();
    for (;;) {
      while (this.#sync) await this.#sync.catch(() => undefined);
      const now = this.#clock.now();
      const idle = this.#inUse === 0 && now - this.#lastActivity >= idleMs;
      const holds = this.#held > 0 || this.#requests > 0 || this.#tokens > 0 || this.#microUsd > 0;
      if (this.#dirty || (idle && holds)) {
        try {
          await this.#call(call, ZERO, false, idle);
        } catch (err) {
          console.warn(`key lease: report failed: ${String(err)}`);
          return;
        }
      }
      if (idle || this.#inUse > 0) return;
      const wait = Math.max(1, idleMs - (this.#clock.now() - this.#lastActivity));
      if (this.#clock.now() - started + wait > MAX_BACKGROUND_MS) return;
      await this.#clock.sleep(wait);
    }
  }

  /**
   * How long the key must go unused here before what the lease holds is given
   * back: half a lease, short enough that a task started by a request's end
   * covers the requests that end within the next second (one task a second at most).
   */
  #idleMs(): number {
    return Math.min(Math.max(REPORT_AFTER_MS, this.#leaseMs / 2), MAX_BACKGROUND_MS - REPORT_AFTER_MS);
  }

  /** One call to the object, the only one in flight for this lease. */
  #call(call: LeaseCall, need: LeaseAsk['need'], topUp: boolean, giveBack: boolean): Promise<void> {
    const run = async () => {
      const sentAt = this.#clock.now();
      if (sentAt - this.#answeredAt >= DEAD_LEASE_MS / 2 && this.#answeredAt > -Infinity) this.#afresh();
      this.#lastSyncAt = sentAt;
      const ask = this.#ask(need, topUp, giveBack, sentAt);
      this.calls++;
      const answer = await call(ask);
      this.#answeredAt = sentAt;
      for (const p of ask.periods) {
        const b = this.#books.get(p.start);
        if (b) b.told = Math.max(b.told, p.spent);
      }
      this.#apply(answer, sentAt);
    };
    const p = run().finally(() => {
      if (this.#sync === p) this.#sync = undefined;
    });
    this.#sync = p;
    return p;
  }

  /**
   * Leases afresh under a new id after the object has not answered for half
   * of DEAD_LEASE_MS: it folds a lease it has not seen for a day away, and the
   * old id's cumulative reports would then count its spending again. What
   * the object was not told yet is carried over; nothing is held any more.
   */
  #afresh(): void {
    this.id = crypto.randomUUID();
    this.#window = -1;
    this.#requests = this.#tokens = this.#requestsBack = this.#tokensBack = 0;
    this.#held = this.#peak = this.#inUse;
    this.#period = -1;
    this.#microUsd = 0;
    for (const [start, b] of this.#books) {
      b.spent -= b.told;
      b.back = b.told = 0;
      if (b.spent <= 0) this.#books.delete(start);
    }
  }

  /** Moves what is free here to the cumulative give-backs (the next call reports them). */
  #giveBack(now: number): void {
    if (this.#window >= 0 && now < this.#windowEnd) {
      this.#requestsBack += Math.max(0, this.#requests);
      this.#tokensBack += Math.max(0, this.#tokens);
    }
    this.#requests = 0;
    this.#tokens = Math.min(0, this.#tokens);
    if (this.#period >= 0 && this.#microUsd > 0) this.#bookOf(this.#period).back += this.#microUsd;
    this.#microUsd = Math.min(0, this.#microUsd);
    this.#dirty = true;
  }

  #ask(need: LeaseAsk['need'], topUp: boolean, giveBack: boolean, now: number): LeaseAsk {
    if (giveBack) this.#giveBack(now);
    // Slots not in use and not used lately are given back before the object is told: it may grant them elsewhere at once.
    const keep = giveBack ? this.#inUse : Math.max(this.#inUse, Math.min(this.#held, this.#peak));
    this.#held = keep;
    this.#peak = this.#inUse;
    this.#dirty = false;
    return {
      lease: this.id,
      need,
      topUp,
      keepSlots: keep,
      ...(this.#window >= 0
        ? {
            window: {
              start: this.#window,
              requestsBack: this.#requestsBack,
              tokensBack: this.#tokensBack,
              requestsFree: Math.max(0, this.#requests),
              tokensFree: Math.max(0, this.#tokens),
            },
          }
        : {}),
      periods: [...this.#books].map(([start, b]) => ({ start, back: b.back, spent: b.spent, ...(start === this.#period ? { free: Math.max(0, this.#microUsd) } : {}) })),
    };
  }

  #apply(answer: LeaseAnswer, sentAt: number): void {
    if (!answer.ok) {
      // No account (the registry's list was stale): nothing to enforce; looked up again later.
      this.settings = NO_SETTINGS;
      this.#expiresAt = sentAt + NO_ACCOUNT_MS;
      this.#renewAt = this.#expiresAt;
      return;
    }
    const g = answer;
    // New settings: what this lease holds was granted under the old ones. Give it back; grants from now follow the new.
    if (this.settings !== undefined && g.version !== this.#version) this.#giveBack(sentAt);
    this.settings = g.settings;
    this.#version = g.version;
    this.#leaseMs = g.leaseMs;
    this.#expiresAt = sentAt + g.leaseMs;
    this.#renewAt = sentAt + g.leaseMs / 2;
    if (g.window.start !== this.#window) {
      this.#window = g.window.start;
      this.#requests = 0;
      this.#tokens = 0;
      this.#requestsBack = 0;
      this.#tokensBack = 0;
    }
    this.#windowEnd = sentAt + g.window.endsInMs;
    this.#requests += g.window.requests;
    this.#tokens += g.window.tokens;
    this.#held = g.slots;
    if (g.budget) {
      if (g.budget.start !== this.#period) {
        this.#period = g.budget.start;
        this.#microUsd = 0;
      }
      this.#periodEnd = g.budget.endsInMs === null ? null : sentAt + g.budget.endsInMs;
      this.#microUsd += g.budget.microUsd;
      this.#bookOf(g.budget.start);
    }
    const now = this.#clock.now();
    for (const kind of ['requests', 'tokens', 'slots', 'budget'] as const) {
      if (g.refused.includes(kind)) this.#refusedUntil.set(kind, now + REFUSAL_MEMORY_MS);
      else this.#refusedUntil.delete(kind);
    }
  }

  /** The cumulative book of `period` (the last four periods are kept and reported). */
  #bookOf(period: number): { back: number; spent: number } {
    let b = this.#books.get(period);
    if (!b) {
      b = { back: 0, spent: 0, told: 0 };
      this.#books.set(period, b);
      if (this.#books.size > 4) this.#books.delete(this.#books.keys().next().value!);
    }
    return b;
  }
}
