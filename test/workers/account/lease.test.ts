/**
 * Isolates' leases on one key's account (workers/account/lease.ts): several
 * `KeyLease`s, each standing for one isolate, hammer the same account book
 * inside its KeyAccount object on an injected clock. The sum admitted stays
 * within each limit (no overshoot), a budget is never overspent under
 * concurrent requests, spending reconciles with the book, calls to the
 * object stay few, and a change of settings takes effect within a lease.
 */

import { env, runInDurableObject } from 'cloudflare:test';
import { describe, expect, it } from 'vitest';
import { AccountBook, DEAD_LEASE_MS, sliceOf, type LeaseAnswer, type LeaseAsk } from '../../../workers/account/book.ts';
import { KeyLeases } from '../../../workers/account/isolate.ts';
import type { KeyAccount } from '../../../workers/account/KeyAccount.ts';
import type { Context } from 'hono';
import type { AppEnv } from '../../../workers/context.ts';
import { finishAccess } from '../../../workers/account/admission.ts';
import { base64url } from '../../../workers/keys.ts';
import { KeyLease, REFUSAL_MEMORY_MS, type Background, type Clock, type Refusal, type Ticket } from '../../../workers/account/lease.ts';
import { NO_SETTINGS, type KeySettings } from '../../../workers/account/settings.ts';
import { sqlOf } from '../../../workers/sql.ts';

const LEASE_MS = 4_000;
/** Mid-minute, so that a test stays in one window unless it moves on. */
const T0 = Date.UTC(2031, 4, 1, 9, 30, 10);

/** A clock that moves only when the test says; sleepers wake as it passes them. */
class FakeClock implements Clock {
  t = T0;
  #timers: { at: number; wake: () => void }[] = [];
  now = () => this.t;
  sleep = (ms: number) => new Promise<void>((wake) => this.#timers.push({ at: this.t + ms, wake }));
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    for (;;) {
      await settleDown();
      this.#timers.sort((a, b) => a.at - b.at);
      const next = this.#timers[0];
      if (!next || next.at > end) break;
      this.#timers.shift();
      this.t = Math.max(this.t, next.at);
      next.wake();
    }
    this.t = end;
    await settleDown();
  }
}

/** Lets every pending promise chain run (the object's answers, the leases' follow-ups). */
async function settleDown(): Promise<void> {
  for (let i = 0; i < 20; i++) await new Promise((r) => setTimeout(r, 0));
}

interface Rig {
  clock: FakeClock;
  book: AccountBook;
  /** One isolate: its lease and its background work. */
  isolate(): { lease: KeyLease; call: (ask: LeaseAsk) => Promise<LeaseAnswer>; bg: Background };
  calls: () => number;
}

let n = 0;
async function withRig(settings: Partial<KeySettings>, fn: (rig: Rig) => Promise<void>): Promise<void> {
  const name = `lease-${++n}-${crypto.randomUUID()}`;
  await runInDurableObject(env.KEY_ACCOUNT.getByName(name), async (_o: KeyAccount, state: DurableObjectState) => {
    const book = new AccountBook(sqlOf(state.storage), (f) => state.storage.transactionSync(f));
    const clock = new FakeClock();
    book.open({ jti: name, sub: 'acme', expiresAt: T0 + 86_400_000 * 30, claim: true, settings: { ...NO_SETTINGS, ...settings } }, T0);
    let calls = 0;
    // The object's answer comes back a turn later, as over RPC, copied as RPC copies it.
    const call = async (ask: LeaseAsk) => {
      calls++;
      await new Promise((r) => setTimeout(r, 0));
      const answer = structuredClone(book.lease(structuredClone(ask), clock.now(), LEASE_MS));
      await new Promise((r) => setTimeout(r, 0));
      return answer;
    };
    const isolate = () => {
      const pending: Promise<unknown>[] = [];
      return { lease: new KeyLease(clock), call, bg: { waitUntil: (p: Promise<unknown>) => void pending.push(p) } };
    };
    await fn({ clock, book, isolate, calls: () => calls });
  });
}

const isTicket = (r: Ticket | Refusal): r is Ticket => !('refused' in r);

describe('two isolates, one key', () => {
  it('admit at most requestsPerMinute in a window between them, and say when the window frees', async () => {
    await withRig({ limits: { requestsPerMinute: 20 } }, async ({ isolate }) => {
      const [a, b] = [isolate(), isolate()];
      const all = await Promise.all(
        Array.from({ length: 120 }, (_, i) => {
          const it = i % 2 ? a : b;
          return it.lease.admit(it.call, it.bg, { tokens: 0, microUsd: 0 });
        }),
      );
      const admitted = all.filter(isTicket).length;
      const refused = all.filter((r): r is Refusal => !isTicket(r));
      // No overshoot; under-use at most the slice each isolate may still hold.
      expect(admitted).toBeLessThanOrEqual(20);
      expect(admitted).toBeGreaterThanOrEqual(20 - 2 * sliceOf(20));
      expect(refused.every((r) => r.refused === 'requests' && r.retryAfterS === 50)).toBe(true);
    });
  });

  it('hold at most `concurrent` requests in flight between them; ended ones free their slots', async () => {
    await withRig({ limits: { concurrent: 3 } }, async ({ clock, book, isolate }) => {
      const [a, b] = [isolate(), isolate()];
      const pick = (i: number) => (i % 2 ? a : b);
      const first = await Promise.all(Array.from({ length: 10 }, (_, i) => pick(i).lease.admit(pick(i).call, pick(i).bg, { tokens: 0, microUsd: 0 })));
      expect(first.filter(isTicket).length).toBe(3);
      expect(a.lease.inFlight + b.lease.inFlight).toBe(3);
      expect(first.filter((r) => !isTicket(r))).toEqual(Array(7).fill({ refused: 'slots', tooLarge: false, retryAfterS: 1 }));
      // While they run, neither isolate admits another, however often asked.
      await clock.advance(REFUSAL_MEMORY_MS);
      for (const it of [a, b, a, b]) expect(await it.lease.admit(it.call, it.bg, { tokens: 0, microUsd: 0 })).toMatchObject({ refused: 'slots' });
      // They end; once idle the isolates give their slots back, and either can have all three.
      first.forEach((r, i) => isTicket(r) && pick(i).lease.finish(r, pick(i).call, pick(i).bg));
      await clock.advance(LEASE_MS);
      expect(book.usage(clock.now())!.concurrent).toBe(0);
      const second = await Promise.all(Array.from({ length: 8 }, () => a.lease.admit(a.call, a.bg, { tokens: 0, microUsd: 0 })));
      expect(second.filter(isTicket).length).toBe(3);
      expect(book.usage(clock.now())!.concurrent).toBe(3);
    });
  });

  it('never overspend a budget under concurrent requests, and the book reconciles with what was settled', async () => {
    const budget = 100;
    await withRig({ budget: { microUsd: budget, period: 'day' } }, async ({ clock, book, isolate }) => {
      const isolates = [isolate(), isolate()];
      let settled = 0;
      let reservedNow = 0;
      let peakReserved = 0;
      let refusedBudget = 0;
      // Rounds of concurrent requests, each reserving its bound (7 µUSD) and costing less (5) or failing (no receipt, no charge).
      for (let round = 0; round < 6; round++) {
        await Promise.all(
          Array.from({ length: 16 }, async (_, i) => {
            const it = isolates[i % 2]!;
            const r = await it.lease.admit(it.call, it.bg, { tokens: 0, microUsd: 7 });
            if (!isTicket(r)) {
              expect(r.refused).toBe('budget');
              refusedBudget++;
              return;
            }
            reservedNow += 7;
            peakReserved = Math.max(peakReserved, reservedNow + settled);
            await new Promise((done) => setTimeout(done, i % 3));
            if (i % 4 !== 3) {
              it.lease.settle(r, 0, 5);
              settled += 5;
            }
            reservedNow -= 7;
            it.lease.finish(r, it.call, it.bg);
          }),
        );
        await clock.advance(REFUSAL_MEMORY_MS);
      }
      expect(peakReserved).toBeLessThanOrEqual(budget);
      expect(settled).toBeLessThanOrEqual(budget);
      expect(refusedBudget).toBeGreaterThan(0);
      // The spending reaches the book a moment after the requests end; idle leases give back what they hold.
      await clock.advance(LEASE_MS);
      const usage = book.usage(clock.now())!;
      expect(usage.budget).toMatchObject({ spentMicroUsd: settled, heldMicroUsd: 0, remainingMicroUsd: budget - settled });
      // Under-use: what is left cannot pay for another request of the bound.
      expect(budget - settled).toBeLessThan(7 + 2 * sliceOf(budget));
    });
  });

  it('keep tokens per minute to the limit, reserving each bound and settling the units metered', async () => {
    await withRig({ limits: { tokensPerMinute: 1000 } }, async ({ isolate, book, clock }) => {
      const [a, b] = [isolate(), isolate()];
      let units = 0;
      const results = await Promise.all(
        Array.from({ length: 60 }, async (_, i) => {
          const it = i % 2 ? a : b;
          const r = await it.lease.admit(it.call, it.bg, { tokens: 40, microUsd: 0 });
          if (isTicket(r)) {
            // The answer meters fewer units than the bound; the rest comes back to the slice.
            it.lease.settle(r, 30, 0);
            units += 30;
            it.lease.finish(r, it.call, it.bg);
          }
          return r;
        }),
      );
      expect(units).toBeLessThanOrEqual(1000);
      // Under-use: at most what each isolate holds unused, a slice and a request's bound.
      expect(results.filter(isTicket).length * 40).toBeGreaterThanOrEqual(1000 - 2 * (sliceOf(1000) + 40));
      const tooBig = await a.lease.admit(a.call, a.bg, { tokens: 1001, microUsd: 0 });
      expect(tooBig).toEqual({ refused: 'tokens', tooLarge: true });
      await clock.advance(LEASE_MS);
      expect(book.usage(clock.now())!.window.tokens).toBeLessThanOrEqual(1000);
    });
  });
});

describe('one isolate', () => {
  it('calls the object a few times over many requests, not once per request', async () => {
    await withRig({ limits: { requestsPerMinute: 100_000, concurrent: 50 }, budget: { microUsd: 1_000_000, period: 'month' } }, async ({ clock, isolate, calls }) => {
      const it = isolate();
      for (let i = 0; i < 200; i++) {
        const r = await it.lease.admit(it.call, it.bg, { tokens: 0, microUsd: 10 });
        expect(isTicket(r)).toBe(true);
        it.lease.settle(r as Ticket, 0, 10);
        it.lease.finish(r as Ticket, it.call, it.bg);
        if (i % 10 === 9) await clock.advance(100);
      }
      expect(it.lease.calls).toBe(calls());
      // The first lease, renewals at half-life, and reports about once a second: a few calls for 200 requests.
      expect(calls()).toBeLessThanOrEqual(12);
    });
  }, 20_000);

  it('applies a change of settings within one lease, and gives back what it held under the old ones', async () => {
    await withRig({ limits: { requestsPerMinute: 1000 } }, async ({ clock, book, isolate }) => {
      const it = isolate();
      for (let i = 0; i < 5; i++) expect(isTicket(await it.lease.admit(it.call, it.bg, { tokens: 0, microUsd: 0 }))).toBe(true);
      book.update({ limits: { requestsPerMinute: 1000, concurrent: 1 } }, clock.now());
      // Before the lease's half-life it still admits from what it holds; by its end it follows the new settings.
      await clock.advance(LEASE_MS);
      const first = await it.lease.admit(it.call, it.bg, { tokens: 0, microUsd: 0 });
      expect(isTicket(first)).toBe(true);
      expect(await it.lease.admit(it.call, it.bg, { tokens: 0, microUsd: 0 })).toMatchObject({ refused: 'slots' });
      expect(it.lease.settings?.limits).toEqual({ requestsPerMinute: 1000, concurrent: 1 });
      // What the old lease held came back: the window counts only the admitted requests and the new slice.
      it.lease.finish(first as Ticket, it.call, it.bg);
      await clock.advance(LEASE_MS);
      expect(book.usage(clock.now())!.window.requests).toBe(6);
      expect(book.usage(clock.now())!.concurrent).toBe(0);
    });
  });

  it('charges the receipt, not the bound; a request without a receipt costs nothing', async () => {
    await withRig({ budget: { microUsd: 50, period: 'total' } }, async ({ clock, book, isolate }) => {
      const it = isolate();
      const paid = (await it.lease.admit(it.call, it.bg, { tokens: 0, microUsd: 20 })) as Ticket;
      const failed = (await it.lease.admit(it.call, it.bg, { tokens: 0, microUsd: 20 })) as Ticket;
      expect(await it.lease.admit(it.call, it.bg, { tokens: 0, microUsd: 20 })).toEqual({ refused: 'budget', tooLarge: false });
      it.lease.settle(paid, 0, 12);
      it.lease.finish(paid, it.call, it.bg);
      it.lease.finish(failed, it.call, it.bg);
      expect(await it.lease.admit(it.call, it.bg, { tokens: 0, microUsd: 51 })).toEqual({ refused: 'budget', tooLarge: true });
      await clock.advance(LEASE_MS);
      expect(book.usage(clock.now())!.budget).toMatchObject({ spentMicroUsd: 12, heldMicroUsd: 0, remainingMicroUsd: 38 });
    });
  });

  it('settles a receipt signed where settle was not called (a cache hit) from the x-mesh-receipt its response carries', async () => {
    await withRig({ budget: { microUsd: 100, period: 'total' } }, async ({ clock, book, isolate }) => {
      const it = isolate();
      const ticket = (await it.lease.admit(it.call, it.bg, { tokens: 0, microUsd: 20 })) as Ticket;
      const access = { jti: 'hit', lease: it.lease, ticket };
      const c = { get: () => access, env: { KEY_ACCOUNT: { getByName: () => ({ lease: it.call }) } }, executionCtx: it.bg } as unknown as Context<AppEnv>;
      const claims = base64url(new TextEncoder().encode(JSON.stringify({ amount: 3, units: { input: 30, output: 1 } })));
      finishAccess(c, new Response('{}', { headers: { 'x-mesh-receipt': `e30.${claims}.sig` } }));
      expect(ticket).toMatchObject({ settled: true, finished: true });
      await clock.advance(LEASE_MS);
      expect(book.usage(clock.now())!.budget).toMatchObject({ spentMicroUsd: 3, heldMicroUsd: 0 });
    });
  });
});

describe('after time passes', () => {
  it('tops a busy lease up to a slice at each renewal, not a slice beyond what it holds', async () => {
    await withRig({ limits: { requestsPerMinute: 800, tokensPerMinute: 8_000 }, budget: { microUsd: 8_000, period: 'month' } }, async ({ clock, book, isolate }) => {
      const [a, b] = [isolate(), isolate()];
      // A steady trickle of requests that end without a receipt (nothing to report): the lease renews at each half-life.
      for (let i = 0; i < 24; i++) {
        const r = (await a.lease.admit(a.call, a.bg, { tokens: 1, microUsd: 1 })) as Ticket;
        expect(isTicket(r)).toBe(true);
        a.lease.finish(r, a.call, a.bg);
        await clock.advance(LEASE_MS / 4);
      }
      // It holds about a slice of each, not a slice more per renewal.
      const usage = book.usage(clock.now())!;
      expect(usage.window.requests).toBeLessThanOrEqual(24 + sliceOf(800));
      expect(usage.window.tokens).toBeLessThanOrEqual(sliceOf(8_000) + 1);
      expect(usage.budget!.heldMicroUsd).toBeLessThanOrEqual(sliceOf(8_000) + 1);
      // So another isolate is not refused while nearly all of the budget is unspent.
      expect(isTicket(await b.lease.admit(b.call, b.bg, { tokens: 0, microUsd: 2 * sliceOf(8_000) }))).toBe(true);
    });
  });

  it('counts spending once when a key comes back to an isolate after the account folded its idle lease away (a day)', async () => {
    await withRig({ budget: { microUsd: 100, period: 'total' } }, async ({ clock, book, isolate }) => {
      const leases = new KeyLeases(clock);
      const it = isolate();
      const first = (await leases.get('k').admit(it.call, it.bg, { tokens: 0, microUsd: 20 })) as Ticket;
      leases.get('k').settle(first, 0, 12);
      leases.get('k').finish(first, it.call, it.bg);
      await clock.advance(LEASE_MS);
      expect(book.usage(clock.now())!.budget).toMatchObject({ spentMicroUsd: 12, heldMicroUsd: 0 });
      // The isolate lives on; the key is not used there for more than a day, and the account folds its lease away.
      await clock.advance(DEAD_LEASE_MS + 3_600_000);
      const again = (await leases.get('k').admit(it.call, it.bg, { tokens: 0, microUsd: 20 })) as Ticket;
      expect(isTicket(again)).toBe(true);
      leases.get('k').settle(again, 0, 5);
      leases.get('k').finish(again, it.call, it.bg);
      await clock.advance(LEASE_MS);
      expect(book.usage(clock.now())!.budget).toMatchObject({ spentMicroUsd: 17, heldMicroUsd: 0, remainingMicroUsd: 83 });
    });
  });

  it.each([24, 25, 26])('gives back what it holds once the key goes idle after more than 25 s of steady traffic (%i s)', async (seconds) => {
    await withRig({ budget: { microUsd: 8_000, period: 'month' } }, async ({ clock, book, isolate }) => {
      const it = isolate();
      // One request a second for 40 s, each ending with a receipt; then none.
      for (let i = 0; i < seconds; i++) {
        const r = (await it.lease.admit(it.call, it.bg, { tokens: 0, microUsd: 10 })) as Ticket;
        expect(isTicket(r)).toBe(true);
        it.lease.settle(r, 0, 1);
        it.lease.finish(r, it.call, it.bg);
        await clock.advance(1_000);
      }
      await clock.advance(2 * LEASE_MS);
      expect(book.usage(clock.now())!.budget).toMatchObject({ spentMicroUsd: seconds, heldMicroUsd: 0 });
    });
  });
});
