import { describe, expect, it } from 'vitest';
import { AttemptPlan, MAX_ATTEMPTS } from '../../../workers/routing/attempts.ts';
import { createIsolateRouting } from '../../../workers/routing/isolate.ts';
import type { Scored } from '../../../workers/routing/score.ts';
import { backend, model } from './fixtures.ts';

const candidate = (id: string): Scored => ({
  backend: backend(id, 'eu-west'),
  model: model(),
  warm: true,
  distanceKm: 0,
  rttMs: 1,
  queueMs: 0,
  serviceMs: 20,
  coldMs: 0,
  expectedMs: 21,
  crowdMs: 20,
});

function setup(ids: string[], options: { hedging?: boolean } = {}) {
  let now = 0;
  const routing = createIsolateRouting(() => now);
  const plan = new AttemptPlan(ids.map(candidate), routing, { model: 'embed', now: () => now, ...options });
  return { routing, plan, advance: (ms: number) => (now += ms), at: () => now };
}

describe('attempts of one request', () => {
  it('sends to the first candidate and counts it pending until it settles', () => {
    const { routing, plan } = setup(['a', 'b']);
    const first = plan.start()!;
    expect(first.candidate.backend.id).toBe('a');
    expect(routing.pending.get('a')).toBe(1);
    expect(plan.won(first)).toEqual([]);
    expect(routing.pending.has('a')).toBe(false);
  });

  it('retries the next candidate after a failure, at most MAX_ATTEMPTS in all, then says why', () => {
    const { plan } = setup(['a', 'b', 'c', 'd']);
    let a = plan.start();
    const tried: string[] = [];
    while (a) {
      tried.push(a.candidate.backend.id);
      a = plan.failed(a, true);
    }
    expect(tried).toEqual(['a', 'b', 'c', 'd'].slice(0, MAX_ATTEMPTS));
    expect(plan.outcome).toBe('timeout');
  });

  it('stops retrying when the retry budget is spent, and says so', () => {
    const { routing, plan } = setup(['a', 'b']);
    while (routing.budget.tryRetry()) {
      /* spend the budget */
    }
    expect(plan.failed(plan.start()!, false)).toBeUndefined();
    expect(plan.outcome).toBe('budget');
  });

  it('hedges at the prior before any sample, then at the first backend\'s p95 once it has enough answer samples', () => {
    const { routing, plan } = setup(['a', 'b']);
    const first = plan.start()!;
    // Nothing learnt yet: 3x its expected time (hedge.ts HEDGE_DEFAULTS.priorRatio).
    expect(plan.hedgeAfterMs()).toBe(first.candidate.expectedMs * 3);
    for (let i = 1; i <= 100; i++) routing.answer.observe('a', 'embed', i, 0);
    const after = plan.hedgeAfterMs()!;
    expect(after).toBeGreaterThan(85);
    expect(after).toBeLessThan(110);
    const hedge = plan.hedge()!;
    expect(hedge.hedge).toBe(true);
    expect(hedge.candidate.backend.id).toBe('b');
    expect(plan.hedgeAfterMs()).toBeUndefined(); // at most one hedge
  });

  it("hedges a backend with too few samples of its own at its expected time x the model's p95 of actual / expected", () => {
    const { routing, plan } = setup(['a', 'b']);
    for (let i = 0; i < 100; i++) routing.ratios.observe('embed', 21 * (1 + i / 100), 21, 0); // up to 2x expected
    const first = plan.start()!;
    const after = plan.hedgeAfterMs()!;
    expect(after).toBeGreaterThan(21 * 1.8);
    expect(after).toBeLessThan(21 * 2.1);
    // What an answer teaches: its time against the candidate's expected time, for the model.
    plan.learn(first, 210);
    expect(routing.ratios.quantile('embed', 1, 0)!.ratio).toBeGreaterThan(9);
  });

  it('does not hedge with hedging off, or once the first call has started answering', () => {
    const off = setup(['a', 'b'], { hedging: false });
    for (let i = 1; i <= 100; i++) off.routing.answer.observe('a', 'embed', i, 0);
    off.plan.start();
    expect(off.plan.hedgeAfterMs()).toBeUndefined();

    const on = setup(['a', 'b']);
    for (let i = 1; i <= 100; i++) on.routing.answer.observe('a', 'embed', i, 0);
    on.plan.start()!.answered = true;
    expect(on.plan.hedge()).toBeUndefined();
  });

  it('counts a loser that had not started answering as a failure toward its ejection', () => {
    const { routing, plan } = setup(['a', 'b']);
    for (let i = 1; i <= 100; i++) routing.answer.observe('a', 'embed', i, 0);
    for (let round = 0; round < 5; round++) {
      const p = new AttemptPlan([candidate('a'), candidate('b')], routing, { model: 'embed', now: () => 0 });
      p.start();
      const hedge = p.hedge()!;
      expect(p.won(hedge).map((l) => l.candidate.backend.id)).toEqual(['a']);
    }
    expect(routing.ejected.isEjected('a', 0)).toBe(true);
    expect(routing.pending.size).toBe(0);
    expect(plan.sent).toBe(0);
  });

  it('never counts a hedge that lost to the first attempt: it was sent later, so losing says nothing of its backend', () => {
    // An edge that stalls fires its hedge timers late, and each hedge then loses to a first attempt
    // whose answer was already there: a burst of such losses would eject a healthy backend.
    const { routing } = setup(['a', 'b']);
    for (let i = 1; i <= 100; i++) routing.answer.observe('a', 'embed', i, 0);
    for (let round = 0; round < 8; round++) {
      const p = new AttemptPlan([candidate('a'), candidate('b')], routing, { model: 'embed', now: () => 0 });
      const first = p.start()!;
      expect(p.hedge()).toBeDefined(); // within the hedge budget's floor (10 in the window)
      expect(p.won(first).map((l) => l.candidate.backend.id)).toEqual(['b']);
    }
    expect(routing.ejected.isEjected('b', 0)).toBe(false);
    expect(routing.ejected.isHeldBack('b', 0)).toBe(false);
    expect(routing.pending.size).toBe(0);
  });
});
