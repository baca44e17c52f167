/**
 * A key's account book (workers/account/book.ts) inside its KeyAccount
 * object, on an injected clock: what each grant may be, that the sum handed
 * out never passes a limit or a budget, that reports are idempotent, and the
 * UTC windows and periods (workers/account/calendar.ts).
 */

import { env, runInDurableObject } from 'cloudflare:test';
import { describe, expect, it } from 'vitest';
import { AccountBook, DEAD_LEASE_MS, grantFrom, sliceOf, type LeaseAsk, type LeaseGrant } from '../../../workers/account/book.ts';
import { periodOf, windowOf } from '../../../workers/account/calendar.ts';
import type { KeyAccount } from '../../../workers/account/KeyAccount.ts';
import { NO_SETTINGS, type KeySettings } from '../../../workers/account/settings.ts';
import { sqlOf } from '../../../workers/sql.ts';

const LEASE_MS = 10_000;
/** A minute start, so that a test's clock stays inside one window unless it moves on. */
const T0 = Date.UTC(2031, 0, 15, 12, 0, 0);
let n = 0;

/** Runs `fn` with the book of a fresh key account holding `settings`. */
async function withBook<T>(settings: Partial<KeySettings>, fn: (book: AccountBook) => T | Promise<T>): Promise<T> {
  const name = `book-${++n}-${crypto.randomUUID()}`;
  return runInDurableObject(env.KEY_ACCOUNT.getByName(name), async (_o: KeyAccount, state: DurableObjectState) => {
    const book = new AccountBook(sqlOf(state.storage), (f) => state.storage.transactionSync(f));
    book.open({ jti: name, sub: 'acme', expiresAt: T0 + 365 * 86_400_000, claim: true, settings: { ...NO_SETTINGS, ...settings } }, T0);
    return fn(book);
  });
}

function ask(lease: string, over: Partial<LeaseAsk> = {}, need: Partial<LeaseAsk['need']> = {}): LeaseAsk {
  return { lease, need: { requests: 0, tokens: 0, slots: 0, microUsd: 0, ...need }, topUp: false, keepSlots: 0, periods: [], ...over };
}

function granted(book: AccountBook, a: LeaseAsk, now = T0): LeaseGrant {
  const answer = book.lease(a, now, LEASE_MS);
  if (!answer.ok) throw new Error('no account');
  return answer;
}

describe('grant arithmetic', () => {
  it('grants the need or nothing, topped up to the slice within what is left', () => {
    expect(sliceOf(10)).toBe(2);
    expect(sliceOf(1)).toBe(1);
    expect(grantFrom(10, 1, 2)).toBe(2);
    expect(grantFrom(10, 5, 2)).toBe(5);
    expect(grantFrom(1, 1, 2)).toBe(1);
    expect(grantFrom(3, 4, 2)).toBe(-1);
    expect(grantFrom(-2, 0, 2)).toBe(0);
    expect(grantFrom(0, 0, 0)).toBe(0);
  });
});

describe('requests per minute', () => {
  it('never hands out more than the limit in a window, over any number of leases', async () => {
    await withBook({ limits: { requestsPerMinute: 10 } }, (book) => {
      let total = 0;
      for (let i = 0; i < 30; i++) {
        const g = granted(book, ask(`l${i % 3}`, { topUp: true }, { requests: 1 }));
        total += g.window.requests;
        if (g.window.requests === 0) expect(g.refused).toEqual(['requests']);
      }
      expect(total).toBe(10);
      expect(book.usage(T0)!.window.requests).toBe(10);
    });
  });

  it('takes back what a lease gives back, once: reports are cumulative', async () => {
    await withBook({ limits: { requestsPerMinute: 4 } }, (book) => {
      const w = windowOf(T0).start;
      expect(granted(book, ask('a', { topUp: true }, { requests: 4 })).window.requests).toBe(4);
      expect(granted(book, ask('b', {}, { requests: 1 })).refused).toEqual(['requests']);
      // a gives back 3 of its 4, twice (a repeated call): counted once.
      granted(book, ask('a', { window: { start: w, requestsBack: 3, tokensBack: 0 } }));
      granted(book, ask('a', { window: { start: w, requestsBack: 3, tokensBack: 0 } }));
      expect(book.usage(T0)!.window.requests).toBe(1);
      // A give-back cannot exceed what was granted.
      granted(book, ask('a', { window: { start: w, requestsBack: 99, tokensBack: 0 } }));
      expect(book.usage(T0)!.window.requests).toBe(0);
      expect(granted(book, ask('b', { topUp: true }, { requests: 4 })).window.requests).toBe(4);
    });
  });

  it('starts afresh each UTC minute; a give-back for a past window changes nothing', async () => {
    await withBook({ limits: { requestsPerMinute: 3 } }, (book) => {
      const g = granted(book, ask('a', { topUp: true }, { requests: 3 }));
      expect(g.window).toMatchObject({ start: T0, endsInMs: 60_000, requests: 3 });
      expect(granted(book, ask('a', {}, { requests: 1 }), T0 + 59_999).refused).toEqual(['requests']);
      const next = granted(book, ask('a', { window: { start: T0, requestsBack: 3, tokensBack: 0 } }, { requests: 1 }), T0 + 60_000);
      expect(next.window).toMatchObject({ start: T0 + 60_000, endsInMs: 60_000, requests: 1 });
      expect(book.usage(T0 + 60_000)!.window.requests).toBe(1);
    });
  });
});

describe('tokens per minute', () => {
  it('grants a request its whole bound or nothing', async () => {
    await withBook({ limits: { tokensPerMinute: 100 } }, (book) => {
      expect(granted(book, ask('a', { topUp: true }, { tokens: 60 })).window.tokens).toBe(60);
      const short = granted(book, ask('b', { topUp: true }, { tokens: 50 }));
      expect(short.refused).toEqual(['tokens']);
      expect(short.window.tokens).toBe(0);
      // Within what is left: the need, topped up to the slice (13) as far as it goes.
      expect(granted(book, ask('b', { topUp: true }, { tokens: 10 })).window.tokens).toBe(13);
      expect(book.usage(T0)!.window.tokens).toBe(73);
    });
  });
});

describe('concurrent requests', () => {
  it('holds slots per live lease, frees them when kept fewer or when the lease expires', async () => {
    await withBook({ limits: { concurrent: 2 } }, (book) => {
      expect(granted(book, ask('a', {}, { slots: 1 })).slots).toBe(1);
      expect(granted(book, ask('b', {}, { slots: 1 })).slots).toBe(1);
      const c = granted(book, ask('c', {}, { slots: 1 }));
      expect(c.slots).toBe(0);
      expect(c.refused).toEqual(['slots']);
      // a keeps none: its slot is free for c.
      expect(granted(book, ask('a', { keepSlots: 0 })).slots).toBe(0);
      expect(granted(book, ask('c', {}, { slots: 1 })).slots).toBe(1);
      expect(book.usage(T0)!.concurrent).toBe(2);
      // b dies: its lease expires after LEASE_MS and its slot is free again.
      expect(granted(book, ask('d', {}, { slots: 1 }), T0 + LEASE_MS - 1).refused).toEqual(['slots']);
      expect(granted(book, ask('c', { keepSlots: 1 }), T0 + LEASE_MS - 1).slots).toBe(1);
      expect(granted(book, ask('d', {}, { slots: 1 }), T0 + LEASE_MS).slots).toBe(1);
    });
  });

  it('keeps what a lease has in flight even past a lowered limit, and grants no more', async () => {
    await withBook({ limits: { concurrent: 3 } }, (book) => {
      expect(granted(book, ask('a', {}, { slots: 3 })).slots).toBe(3);
      book.update({ limits: { concurrent: 1 } }, T0 + 1);
      const g = granted(book, ask('a', { keepSlots: 3 }, { slots: 1 }), T0 + 2);
      expect(g.slots).toBe(3);
      expect(g.refused).toEqual(['slots']);
      expect(granted(book, ask('a', { keepSlots: 0 }, { slots: 1 }), T0 + 3).slots).toBe(1);
    });
  });
});

describe('budget', () => {
  it('never lets spent plus held pass the budget, and counts spending once', async () => {
    await withBook({ budget: { microUsd: 100, period: 'total' } }, (book) => {
      const a = granted(book, ask('a', {}, { microUsd: 30 }));
      expect(a.budget).toEqual({ start: 0, endsInMs: null, microUsd: 30 });
      expect(granted(book, ask('b', {}, { microUsd: 50 })).budget!.microUsd).toBe(50);
      expect(granted(book, ask('c', {}, { microUsd: 30 })).refused).toEqual(['budget']);
      // a spent 10 of its 30 and gives back the 20 left: 40 are free. Repeated, nothing changes.
      for (let i = 0; i < 2; i++) granted(book, ask('a', { periods: [{ start: 0, back: 20, spent: 10 }] }));
      expect(book.usage(T0)!.budget).toMatchObject({ spentMicroUsd: 10, heldMicroUsd: 50, remainingMicroUsd: 40 });
      expect(granted(book, ask('c', { topUp: true }, { microUsd: 30 })).budget!.microUsd).toBe(30);
      expect(granted(book, ask('c', { topUp: true }, { microUsd: 11 })).refused).toEqual(['budget']);
      // b spends all of its 50.
      granted(book, ask('b', { periods: [{ start: 0, back: 0, spent: 50 }] }));
      expect(book.usage(T0)!.budget).toMatchObject({ spentMicroUsd: 60, heldMicroUsd: 30, remainingMicroUsd: 10 });
    });
  });

  it('renews at each UTC day; a report for the day before counts there', async () => {
    await withBook({ budget: { microUsd: 10, period: 'day' } }, (book) => {
      const day = periodOf('day', T0);
      const g = granted(book, ask('a', {}, { microUsd: 10 }));
      expect(g.budget).toEqual({ start: day.start, endsInMs: day.end! - T0, microUsd: 10 });
      expect(granted(book, ask('a', {}, { microUsd: 1 }), day.end! - 1).refused).toEqual(['budget']);
      const next = granted(book, ask('a', { periods: [{ start: day.start, back: 0, spent: 9 }] }, { microUsd: 10 }), day.end!);
      expect(next.budget).toMatchObject({ start: day.end, microUsd: 10 });
      expect(book.usage(day.end!)!.budget).toMatchObject({ spentMicroUsd: 0, heldMicroUsd: 10 });
      expect(book.usage(day.end! - 1)!.budget).toMatchObject({ spentMicroUsd: 9, heldMicroUsd: 1 });
    });
  });

  it('starts a new count when budget.period changes, even where the new period starts when an old one did', async () => {
    // A day budget spent on the 1st of a month; on the 15th it becomes a month budget: the month's count starts afresh, not from the 1st's spending.
    const first = Date.UTC(2031, 4, 1, 10);
    const mid = Date.UTC(2031, 4, 15, 10);
    await withBook({ budget: { microUsd: 100, period: 'day' } }, (book) => {
      const day = periodOf('day', first).start;
      granted(book, ask('a', {}, { microUsd: 40 }), first);
      granted(book, ask('a', { periods: [{ start: day, back: 0, spent: 40 }] }), first + 1);
      book.update({ budget: { microUsd: 100, period: 'month' } }, mid);
      expect(book.usage(mid + 1)!.budget).toMatchObject({ spentMicroUsd: 0, heldMicroUsd: 0, remainingMicroUsd: 100 });
      expect(granted(book, ask('b', {}, { microUsd: 100 }), mid + 2).budget!.microUsd).toBe(100);
    });
    // A month budget becomes a day budget on the 1st: the day's count starts afresh too.
    await withBook({ budget: { microUsd: 100, period: 'month' } }, (book) => {
      const month = periodOf('month', first).start;
      granted(book, ask('a', {}, { microUsd: 70 }), first);
      granted(book, ask('a', { periods: [{ start: month, back: 0, spent: 70 }] }), first + 1);
      book.update({ budget: { microUsd: 100, period: 'day' } }, first + 2);
      expect(book.usage(first + 3)!.budget).toMatchObject({ spentMicroUsd: 0, remainingMicroUsd: 100 });
      // And the day after, the calendar day counts again.
      expect(book.usage(Date.UTC(2031, 4, 2, 1))!.budget).toMatchObject({ periodStart: Date.UTC(2031, 4, 2), spentMicroUsd: 0 });
    });
  });

  it('folds the spending of a lease not seen for a day and releases what it held', async () => {
    await withBook({ budget: { microUsd: 100, period: 'total' } }, (book) => {
      granted(book, ask('dead', { periods: [] }, { microUsd: 60 }));
      granted(book, ask('dead', { periods: [{ start: 0, back: 0, spent: 25 }] }));
      expect(book.usage(T0)!.budget).toMatchObject({ spentMicroUsd: 25, heldMicroUsd: 35 });
      const later = T0 + DEAD_LEASE_MS + 3_600_000;
      granted(book, ask('alive'), later);
      expect(book.usage(later)!.budget).toMatchObject({ spentMicroUsd: 25, heldMicroUsd: 0, remainingMicroUsd: 75 });
    });
  });
});

describe('settings', () => {
  it('raise the version on every change; grants follow the new settings at once', async () => {
    await withBook({ limits: { requestsPerMinute: 100 } }, (book) => {
      expect(granted(book, ask('a', { topUp: true }, { requests: 1 })).version).toBe(1);
      const after = book.update({ limits: { requestsPerMinute: 5 } }, T0 + 1)!;
      expect(after.version).toBe(2);
      expect(after.settings.limits).toEqual({ requestsPerMinute: 5 });
      // 13 were handed out in this window already: nothing is left under the new limit.
      const g = granted(book, ask('b', { topUp: true }, { requests: 1 }), T0 + 2);
      expect(g).toMatchObject({ version: 2, refused: ['requests'] });
      expect(book.update({ limits: null, cors: { origins: ['*'] } }, T0 + 3)!.settings).toEqual({ limits: null, budget: null, cors: { origins: ['*'] } });
    });
  });

  it('answer no_account for a key without an account, and refuse malformed asks', async () => {
    await runInDurableObject(env.KEY_ACCOUNT.getByName('book-none'), (_o: KeyAccount, state: DurableObjectState) => {
      const book = new AccountBook(sqlOf(state.storage));
      expect(book.lease(ask('a'), T0, LEASE_MS)).toEqual({ ok: false, code: 'no_account' });
      expect(book.usage(T0)).toBeNull();
      expect(book.update({ limits: null }, T0)).toBeNull();
      expect(() => book.lease(ask(''), T0, LEASE_MS)).toThrow(/lease must be/);
      expect(() => book.lease(ask('a', {}, { requests: -1 }), T0, LEASE_MS)).toThrow(/need/);
      expect(() => book.lease(ask('a', { periods: Array(5).fill({ start: 0, back: 0, spent: 0 }) }), T0, LEASE_MS)).toThrow(/periods/);
      expect(() => book.lease({ ...ask('a'), topUp: 'yes' as unknown as boolean }, T0, LEASE_MS)).toThrow(/topUp/);
    });
  });
});

describe('UTC calendar', () => {
  it('cuts days, months and minutes at UTC boundaries', () => {
    const leap = Date.UTC(2028, 1, 29, 23, 59, 59, 999);
    expect(periodOf('day', leap)).toEqual({ start: Date.UTC(2028, 1, 29), end: Date.UTC(2028, 2, 1) });
    expect(periodOf('month', leap)).toEqual({ start: Date.UTC(2028, 1, 1), end: Date.UTC(2028, 2, 1) });
    expect(periodOf('month', Date.UTC(2030, 11, 31, 23))).toEqual({ start: Date.UTC(2030, 11, 1), end: Date.UTC(2031, 0, 1) });
    expect(periodOf('total', leap)).toEqual({ start: 0, end: null });
    expect(windowOf(Date.UTC(2030, 0, 1, 0, 0, 59, 999))).toEqual({ start: Date.UTC(2030, 0, 1), end: Date.UTC(2030, 0, 1, 0, 1) });
  });
});
