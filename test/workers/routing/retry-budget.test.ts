import { describe, expect, it } from 'vitest';
import { RetryBudget } from '../../../workers/routing/retry-budget.ts';

const MAX_ATTEMPTS = 3;

/** `n` requests, `stepMs` apart, every attempt failing; returns the retries the budget let through. */
function outage(budget: RetryBudget, clock: { t: number }, n: number, stepMs: number): number {
  let retries = 0;
  for (let i = 0; i < n; i++) {
    budget.recordRequest();
    for (let attempt = 1; attempt < MAX_ATTEMPTS; attempt++) {
      if (!budget.tryRetry()) break;
      retries++;
    }
    const { requests, retries: r } = budget.totals();
    expect(r).toBeLessThanOrEqual(0.2 * requests + 30); // holds at every moment, over the window
    clock.t += stepMs;
  }
  return retries;
}

describe('RetryBudget', () => {
  it('holds retries to 20% of requests plus the floor under a total outage', () => {
    const clock = { t: 0 };
    const budget = new RetryBudget({ now: () => clock.t });
    const retries = outage(budget, clock, 1_000, 1); // 1000 requests in one second
    expect(retries).toBeLessThanOrEqual(0.2 * 1_000 + 30);
    expect(retries).toBeGreaterThanOrEqual(0.2 * 1_000 + 30 - 2); // and does spend what it may
    expect(budget.canRetry()).toBe(false);
  });

  it('holds over a long outage, window after window', () => {
    const clock = { t: 0 };
    const budget = new RetryBudget({ now: () => clock.t });
    const retries = outage(budget, clock, 20_000, 5); // 100 s at 200 requests/s
    expect(retries).toBeLessThanOrEqual(0.2 * 20_000 + 30 * 11);
    expect(retries / 20_000).toBeLessThan(0.25); // not x3
  });

  it('lets low traffic retry on the floor, and refills once the window has passed', () => {
    const clock = { t: 0 };
    const budget = new RetryBudget({ now: () => clock.t });
    expect(outage(budget, clock, 20, 1_000)).toBe(40); // 1 request/s: every retry allowed
    outage(budget, clock, 1_000, 1);
    const spent = budget.totals();
    expect(spent.retries).toBeGreaterThan(0.2 * spent.requests + 30 - 3); // the window's budget is spent
    clock.t += 10_000;
    expect(budget.totals()).toEqual({ requests: 0, retries: 0 });
    expect(budget.canRetry()).toBe(true);
  });
});
