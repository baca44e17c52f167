/**
 * A key's account book (docs/api.md section 2.14, design.md "Key accounts"):
 * the key's settings and what its KeyAccount object has handed out, in the
 * object's SQLite storage, with the arithmetic of every grant. Isolates hold
 * leases: slices of the current minute window's requests and tokens, slots
 * for concurrent requests, and slices of the period's budget. The book never
 * grants beyond what is left:
 *
 * - requests and tokens: the sum over leases of (granted - given back) in a
 *   window never exceeds the limit;
 * - slots: the sum of the slots held by unexpired leases never exceeds the
 *   limit (a lease keeps the slots its requests use; they expire with it);
 * - budget: spent (reported from receipts) plus held (granted, not given
 *   back, not spent) in a period never exceeds the budget.
 *
 * Give-backs and spending come as cumulative totals per lease, so a repeated
 * report changes nothing. A grant covers what the lease needs now (tokens
 * and micro-USD: one request's bound, all or nothing; requests and slots: as
 * many of those asked as are free) and tops up to a slice (an eighth of the
 * limit) when asked. Time is a parameter: the object passes its clock, tests
 * their own.
 */

import type { Sql } from '../sql.ts';
import { periodOf, windowOf, type Span } from './calendar.ts';
import { applyPatch, checkSettings, hasSettings, parseSettingsFields, type BudgetPeriod, type KeySettings, type SettingsPatch } from './settings.ts';

/** A grant tops a lease up to this share of a limit: small enough to spread a limit over isolates, large enough to spare the object. */
export const SLICES = 8;
/** A lease not seen for this long belongs to a dead isolate: its rows are folded away. */
export const DEAD_LEASE_MS = 24 * 3600_000;
/** How often the book folds dead leases. */
const PRUNE_EVERY_MS = 3600_000;
const MAX_LEASE_ID = 64;
const MAX_PERIODS_REPORTED = 4;
const MAX_AMOUNT = Number.MAX_SAFE_INTEGER;

export const MIGRATIONS = [
  [
    `CREATE TABLE account (
       id INTEGER PRIMARY KEY CHECK (id = 1),
       jti TEXT NOT NULL,
       sub TEXT NOT NULL,
       expires_at INTEGER NOT NULL,
       claim INTEGER NOT NULL,
       settings TEXT NOT NULL,
       version INTEGER NOT NULL,
       created_at INTEGER NOT NULL,
       updated_at INTEGER NOT NULL)`,
    'CREATE TABLE leases (id TEXT PRIMARY KEY, slots INTEGER NOT NULL, expires_at INTEGER NOT NULL, seen_at INTEGER NOT NULL)',
    `CREATE TABLE lease_windows (
       lease TEXT NOT NULL, start INTEGER NOT NULL,
       requests INTEGER NOT NULL, requests_back INTEGER NOT NULL,
       tokens INTEGER NOT NULL, tokens_back INTEGER NOT NULL,
       PRIMARY KEY (lease, start))`,
    'CREATE INDEX lease_windows_start ON lease_windows (start)',
    `CREATE TABLE lease_periods (
       lease TEXT NOT NULL, start INTEGER NOT NULL,
       granted INTEGER NOT NULL, back INTEGER NOT NULL, spent INTEGER NOT NULL,
       PRIMARY KEY (lease, start))`,
    'CREATE INDEX lease_periods_start ON lease_periods (start)',
    // What dead leases spent, per period, once their rows are folded away.
    'CREATE TABLE periods (start INTEGER PRIMARY KEY, spent INTEGER NOT NULL)',
  ],
  [
    // The budget period the count belongs to, and when it began: a change of budget.period starts a new count, from then
    // (its start differs from the calendar start an earlier count of another kind may have used, such as a month's and its 1st day's).
    'ALTER TABLE account ADD COLUMN budget_period TEXT',
    'ALTER TABLE account ADD COLUMN budget_since INTEGER NOT NULL DEFAULT 0',
    "UPDATE account SET budget_period = json_extract(settings, '$.budget.period')",
  ],
] as const;

/** What an isolate asks of a key's account: one call renews its lease, reports and gives back. */
export interface LeaseAsk {
  /** The isolate's lease on this key (one per isolate and key). */
  lease: string;
  /** What the lease needs now, all or nothing: requests, tokens (metered units), slots, micro-USD. */
  need: { requests: number; tokens: number; slots: number; microUsd: number };
  /** Also top the lease up to a slice of each limit, as far as what is left allows. */
  topUp: boolean;
  /** Slots the lease keeps (its requests in flight, and what it expects to use); the rest are given back. */
  keepSlots: number;
  /** Cumulative give-backs in the window the lease holds (ignored when that window is over), and what it holds unused there now (a top-up fills that to a slice). */
  window?: { start: number; requestsBack: number; tokensBack: number; requestsFree?: number; tokensFree?: number };
  /** Cumulative give-backs and spending per budget period the lease holds, and what it holds unused of it now (a top-up fills that to a slice). */
  periods: { start: number; back: number; spent: number; free?: number }[];
}

export type Shortage = 'requests' | 'tokens' | 'slots' | 'budget';

export interface LeaseGrant {
  ok: true;
  version: number;
  settings: KeySettings;
  /** How long the lease (its slots) lives from this answer. */
  leaseMs: number;
  /** Granted now in the current window, in addition to what the lease holds. */
  window: { start: number; endsInMs: number; requests: number; tokens: number };
  /** Slots the lease holds from now (kept and granted). */
  slots: number;
  /** Granted now in the current period; null without a budget. */
  budget: { start: number; endsInMs: number | null; microUsd: number } | null;
  /** What the ask needed and was not granted. */
  refused: Shortage[];
}

export type LeaseAnswer = LeaseGrant | { ok: false; code: 'no_account' };

export interface AccountRecord {
  jti: string;
  sub: string;
  /** The key's own `exp`, ms. */
  expiresAt: number;
  /** The key carries the `acct` claim: isolates lease for it without the registry's list. */
  claim: boolean;
  settings: KeySettings;
  /** Raised by every change: isolates that see a new one give back what they hold and lease afresh. */
  version: number;
  createdAt: number;
  updatedAt: number;
}

export interface Usage {
  /** Handed out in the current window: admitted requests plus slices isolates still hold. */
  window: { start: number; end: number; requests: number; tokens: number };
  /** Slots held by live leases: requests in flight plus slots isolates keep. */
  concurrent: number;
  budget: { periodStart: number; periodEnd: number | null; spentMicroUsd: number; heldMicroUsd: number; remainingMicroUsd: number } | null;
}

interface AccountRow extends Record<string, string | number | null> {
  jti: string;
  sub: string;
  expires_at: number;
  claim: number;
  settings: string;
  version: number;
  created_at: number;
  updated_at: number;
}

/** The slice a grant tops up to. */
export function sliceOf(limit: number): number {
  return Math.max(1, Math.ceil(limit / SLICES));
}

/** What to grant from `left`: `need` or nothing; beyond it, up to `top`. Negative: refused. */
export function grantFrom(left: number, need: number, top: number): number {
  const free = Math.max(0, left);
  if (need > free) return -1;
  return Math.min(free, Math.max(need, top));
}

/** The same for a count of requests or slots, where each one is a need of its own: as many as are free, refused when none is. */
export function grantCount(left: number, need: number, top: number): number {
  const free = Math.max(0, left);
  if (need > 0 && free === 0) return -1;
  return Math.min(free, Math.max(need, top));
}

const isCount = (v: unknown, max = MAX_AMOUNT): v is number => Number.isSafeInteger(v) && (v as number) >= 0 && (v as number) <= max;

/** Throws a plain Error naming the first thing wrong with an ask (the object trusts no caller). */
export function checkAsk(ask: LeaseAsk): void {
  const bad = (what: string): never => {
    throw new Error(`lease: ${what}.`);
  };
  if (typeof ask !== 'object' || ask === null) bad('the ask must be an object');
  if (typeof ask.lease !== 'string' || ask.lease.length === 0 || ask.lease.length > MAX_LEASE_ID) bad('lease must be an id of 1 to 64 characters');
  const n = ask.need;
  if (typeof n !== 'object' || n === null || !isCount(n.requests) || !isCount(n.tokens) || !isCount(n.slots) || !isCount(n.microUsd)) {
    bad('need must hold non-negative integer requests, tokens, slots and microUsd');
  }
  if (typeof ask.topUp !== 'boolean') bad('topUp must be a boolean');
  if (!isCount(ask.keepSlots)) bad('keepSlots must be a non-negative integer');
  const w = ask.window;
  if (
    w !== undefined &&
    (typeof w !== 'object' ||
      w === null ||
      !isCount(w.start) ||
      !isCount(w.requestsBack) ||
      !isCount(w.tokensBack) ||
      (w.requestsFree !== undefined && !isCount(w.requestsFree)) ||
      (w.tokensFree !== undefined && !isCount(w.tokensFree)))
  ) {
    bad('window must hold non-negative integer start, requestsBack and tokensBack (and requestsFree, tokensFree)');
  }
  if (!Array.isArray(ask.periods) || ask.periods.length > MAX_PERIODS_REPORTED) bad(`periods must be a list of at most ${MAX_PERIODS_REPORTED}`);
  for (const p of ask.periods) {
    if (typeof p !== 'object' || p === null || !isCount(p.start) || !isCount(p.back) || !isCount(p.spent) || (p.free !== undefined && !isCount(p.free))) {
      bad('each period must hold non-negative integer start, back and spent (and free)');
    }
  }
}

export class AccountBook {
  readonly #sql: Sql;
  readonly #transaction: <T>(fn: () => T) => T;
  #prunedAt = 0;

  constructor(sql: Sql, transaction: <T>(fn: () => T) => T = (fn) => fn()) {
    this.#sql = sql;
    this.#transaction = transaction;
  }

  /** The account, or null when the key was issued without one (before accounts existed, or not a consumer key). */
  account(): AccountRecord | null {
    const row = this.#sql.one<AccountRow>('SELECT * FROM account WHERE id = 1');
    if (!row) return null;
    return {
      jti: row.jti,
      sub: row.sub,
      expiresAt: row.expires_at,
      claim: row.claim === 1,
      settings: checkSettings(JSON.parse(row.settings)),
      version: row.version,
      createdAt: row.created_at,
      updatedAt: row.updated_at,
    };
  }

  /** Creates the account of a key at issue. Opening an existing one changes nothing. */
  open(init: { jti: string; sub: string; expiresAt: number; claim: boolean; settings: KeySettings }, now: number): { created: boolean; account: AccountRecord } {
    const settings = checkSettings(init.settings);
    if (typeof init.jti !== 'string' || init.jti.length === 0 || init.jti.length > 256) throw new Error('open: jti must be 1 to 256 characters.');
    if (typeof init.sub !== 'string' || init.sub.length === 0 || init.sub.length > 256) throw new Error('open: sub must be 1 to 256 characters.');
    if (!isCount(init.expiresAt)) throw new Error('open: expiresAt must be a time in ms.');
    if (init.claim && !hasSettings(settings)) throw new Error('open: a key that claims an account must have a setting.');
    const written = this.#sql.run(
      `INSERT INTO account (id, jti, sub, expires_at, claim, settings, version, created_at, updated_at, budget_period)
       VALUES (1, ?, ?, ?, ?, ?, 1, ?, ?, ?) ON CONFLICT(id) DO NOTHING`,
      init.jti,
      init.sub,
      init.expiresAt,
      init.claim ? 1 : 0,
      JSON.stringify(settings),
      now,
      now,
      settings.budget?.period ?? null,
    );
    return { created: written > 0, account: this.account()! };
  }

  /** Applies a change; null when there is no account. */
  update(patch: SettingsPatch, now: number): AccountRecord | null {
    const current = this.account();
    if (!current) return null;
    const checked = parseSettingsFields(patch as Record<string, unknown>);
    const settings = applyPatch(current.settings, checked);
    this.#sql.run('UPDATE account SET settings = ?, version = version + 1, updated_at = ? WHERE id = 1', JSON.stringify(settings), now);
    const period = settings.budget?.period;
    if (period !== undefined && period !== this.#sql.one<{ p: string | null }>('SELECT budget_period AS p FROM account WHERE id = 1')!.p) {
      this.#sql.run('UPDATE account SET budget_period = ?, budget_since = ? WHERE id = 1', period, now);
    }
    return this.account();
  }

  /** What the account has handed out and spent now. */
  usage(now: number): Usage | null {
    const account = this.account();
    if (!account) return null;
    const w = windowOf(now);
    const used = this.#windowUsed(w.start);
    const concurrent = this.#sql.one<{ n: number }>('SELECT COALESCE(SUM(slots), 0) AS n FROM leases WHERE expires_at > ?', now)!.n;
    let budget: Usage['budget'] = null;
    const b = account.settings.budget;
    if (b) {
      const p = this.#periodOf(b.period, now);
      const { spent, held } = this.#periodUsed(p.start);
      budget = { periodStart: p.start, periodEnd: p.end, spentMicroUsd: spent, heldMicroUsd: held, remainingMicroUsd: Math.max(0, b.microUsd - spent - held) };
    }
    return { window: { start: w.start, end: w.end, requests: used.requests, tokens: used.tokens }, concurrent, budget };
  }

  /**
   * Renews `ask.lease`: records its give-backs and spending, sets the slots
   * it keeps, and grants what it needs (and, with `topUp`, up to a slice of
   * each limit) from what is left. One synchronous transaction.
   */
  lease(ask: LeaseAsk, now: number, leaseMs: number): LeaseAnswer {
    checkAsk(ask);
    return this.#transaction(() => {
      const account = this.account();
      if (!account) return { ok: false, code: 'no_account' } as const;
      this.#prune(now);
      const { settings } = account;
      const limits = settings.limits ?? {};
      const refused: Shortage[] = [];
      const w = windowOf(now);

      this.#sql.run(
        'INSERT INTO leases (id, slots, expires_at, seen_at) VALUES (?, 0, 0, ?) ON CONFLICT(id) DO UPDATE SET seen_at = excluded.seen_at',
        ask.lease,
        now,
      );
      if (ask.window && ask.window.start === w.start) {
        this.#sql.run(
          `UPDATE lease_windows SET requests_back = MAX(requests_back, MIN(requests, ?)), tokens_back = MAX(tokens_back, MIN(tokens, ?))
           WHERE lease = ? AND start = ?`,
          ask.window.requestsBack,
          ask.window.tokensBack,
          ask.lease,
          w.start,
        );
      }
      for (const p of ask.periods) {
        this.#sql.run(
          `INSERT INTO lease_periods (lease, start, granted, back, spent) VALUES (?, ?, 0, 0, ?)
           ON CONFLICT(lease, start) DO UPDATE SET back = MAX(back, MIN(granted, ?)), spent = MAX(spent, excluded.spent)`,
          ask.lease,
          p.start,
          p.spent,
          p.back,
        );
      }

      // Slots: what the lease keeps (its requests in flight), plus what it needs if that fits beside the other live leases.
      let slots = 0;
      if (limits.concurrent !== undefined) {
        const others = this.#sql.one<{ n: number }>(
          'SELECT COALESCE(SUM(slots), 0) AS n FROM leases WHERE id != ? AND expires_at > ?',
          ask.lease,
          now,
        )!.n;
        slots = ask.keepSlots;
        const g = grantCount(limits.concurrent - others - slots, ask.need.slots, 0);
        if (g < 0) refused.push('slots');
        else slots += g;
      }
      this.#sql.run('UPDATE leases SET slots = ?, expires_at = ? WHERE id = ?', slots, now + leaseMs, ask.lease);

      // A top-up fills what the lease holds unused up to a slice (not a slice beyond it, at every renewal).
      const topUp = (limit: number, free = 0) => (ask.topUp ? Math.max(0, sliceOf(limit) - free) : 0);
      const windowFree = ask.window?.start === w.start ? ask.window : undefined;

      // Requests and tokens of this window.
      let requests = 0;
      let tokens = 0;
      if (limits.requestsPerMinute !== undefined || limits.tokensPerMinute !== undefined) {
        const used = this.#windowUsed(w.start);
        if (limits.requestsPerMinute !== undefined) {
          const g = grantCount(limits.requestsPerMinute - used.requests, ask.need.requests, topUp(limits.requestsPerMinute, windowFree?.requestsFree));
          if (g < 0) refused.push('requests');
          else requests = g;
        }
        if (limits.tokensPerMinute !== undefined) {
          const g = grantFrom(limits.tokensPerMinute - used.tokens, ask.need.tokens, topUp(limits.tokensPerMinute, windowFree?.tokensFree));
          if (g < 0) refused.push('tokens');
          else tokens = g;
        }
        if (requests > 0 || tokens > 0) {
          this.#sql.run(
            `INSERT INTO lease_windows (lease, start, requests, requests_back, tokens, tokens_back) VALUES (?, ?, ?, 0, ?, 0)
             ON CONFLICT(lease, start) DO UPDATE SET requests = requests + excluded.requests, tokens = tokens + excluded.tokens`,
            ask.lease,
            w.start,
            requests,
            tokens,
          );
        }
      }

      // The budget of this period.
      let budget: LeaseGrant['budget'] = null;
      if (settings.budget) {
        const p = this.#periodOf(settings.budget.period, now);
        const { spent, held } = this.#periodUsed(p.start);
        const free = ask.periods.find((x) => x.start === p.start)?.free;
        let g = grantFrom(settings.budget.microUsd - spent - held, ask.need.microUsd, topUp(settings.budget.microUsd, free));
        if (g < 0) {
          refused.push('budget');
          g = 0;
        }
        if (g > 0) {
          this.#sql.run(
            `INSERT INTO lease_periods (lease, start, granted, back, spent) VALUES (?, ?, ?, 0, 0)
             ON CONFLICT(lease, start) DO UPDATE SET granted = granted + excluded.granted`,
            ask.lease,
            p.start,
            g,
          );
        }
        budget = { start: p.start, endsInMs: p.end === null ? null : p.end - now, microUsd: g };
      }

      return {
        ok: true,
        version: account.version,
        settings,
        leaseMs,
        window: { start: w.start, endsInMs: w.end - now, requests, tokens },
        slots,
        budget,
        refused,
      } satisfies LeaseGrant;
    });
  }

  /** The budget period holding `now`, begun no earlier than the last change of budget.period (a new count). */
  #periodOf(period: BudgetPeriod, now: number): Span {
    const span = periodOf(period, now);
    const since = this.#sql.one<{ since: number }>('SELECT budget_since AS since FROM account WHERE id = 1')?.since ?? 0;
    return since > span.start ? { start: since, end: span.end } : span;
  }

  /** Handed out in window `start`: granted minus given back, over every lease. */
  #windowUsed(start: number): { requests: number; tokens: number } {
    return this.#sql.one<{ requests: number; tokens: number }>(
      'SELECT COALESCE(SUM(requests - requests_back), 0) AS requests, COALESCE(SUM(tokens - tokens_back), 0) AS tokens FROM lease_windows WHERE start = ?',
      start,
    )!;
  }

  /** Spent (reported, and folded from dead leases) and held (granted, not given back or spent) in period `start`. */
  #periodUsed(start: number): { spent: number; held: number } {
    const live = this.#sql.one<{ spent: number; held: number }>(
      'SELECT COALESCE(SUM(spent), 0) AS spent, COALESCE(SUM(MAX(0, granted - back - spent)), 0) AS held FROM lease_periods WHERE start = ?',
      start,
    )!;
    const folded = this.#sql.one<{ spent: number }>('SELECT spent FROM periods WHERE start = ?', start)?.spent ?? 0;
    return { spent: live.spent + folded, held: live.held };
  }

  /**
   * Drops windows that are over, and, at most hourly, folds leases not seen
   * for DEAD_LEASE_MS: their spending stays in `periods`, what they held
   * unspent is released.
   */
  #prune(now: number): void {
    this.#sql.run('DELETE FROM lease_windows WHERE start < ?', windowOf(now).start);
    if (now - this.#prunedAt < PRUNE_EVERY_MS) return;
    this.#prunedAt = now;
    const dead = now - DEAD_LEASE_MS;
    this.#sql.run(
      `INSERT INTO periods (start, spent)
         SELECT start, SUM(spent) FROM lease_periods WHERE lease IN (SELECT id FROM leases WHERE seen_at < ?) GROUP BY start
       ON CONFLICT(start) DO UPDATE SET spent = spent + excluded.spent`,
      dead,
    );
    this.#sql.run('DELETE FROM lease_periods WHERE lease IN (SELECT id FROM leases WHERE seen_at < ?)', dead);
    this.#sql.run('DELETE FROM leases WHERE seen_at < ?', dead);
  }
}

