import { describe, expect, it } from 'vitest';
import { p2cPool, pickAttempts } from '../../../workers/routing/p2c.ts';
import type { Scored } from '../../../workers/routing/score.ts';
import { rankByScore } from '../../../workers/routing/rank.ts';
import type { BackendEntry } from '../../../workers/directory/backend.ts';
import { backend, ids, model, pop, seeded } from './fixtures.ts';

const from = pop('FRA');

/**
 * Many requests from one isolate with feedback: each pick adds a pending call
 * to the chosen backend, and the oldest of `concurrency` calls completes.
 */
function simulate(list: BackendEntry[], picks: number, concurrency: number, random: () => number): Map<string, number> {
  const pending = new Map<string, number>();
  const inFlight: string[] = [];
  const counts = new Map<string, number>(list.map((b) => [b.id, 0]));
  for (let i = 0; i < picks; i++) {
    const ranked = rankByScore(list, { model: 'embed', from }, { pending }, 0);
    const chosen = pickAttempts(ranked, random)[0]!.backend.id;
    counts.set(chosen, counts.get(chosen)! + 1);
    pending.set(chosen, (pending.get(chosen) ?? 0) + 1);
    inFlight.push(chosen);
    if (inFlight.length > concurrency) {
      const done = inFlight.shift()!;
      pending.set(done, pending.get(done)! - 1);
    }
  }
  return counts;
}

describe('power of two choices', () => {
  it('spreads load roughly evenly over equal backends', () => {
    const list = ['a', 'b', 'c', 'd'].map((id) => backend(id, 'eu-west'));
    const counts = simulate(list, 4_000, 16, seeded(1));
    for (const n of counts.values()) {
      expect(n / 4_000).toBeGreaterThan(0.2);
      expect(n / 4_000).toBeLessThan(0.3);
    }
  });

  it('gives a much slower backend a small share', () => {
    const list = [
      ...['a', 'b', 'c'].map((id) => backend(id, 'eu-west')),
      backend('slow', 'eu-west', { models: [model({ p50Ms: 60 })] }),
    ];
    const counts = simulate(list, 4_000, 24, seeded(2));
    const slow = counts.get('slow')! / 4_000;
    expect(slow).toBeLessThan(0.1);
    for (const id of ['a', 'b', 'c']) expect(counts.get(id)! / 4_000).toBeGreaterThan(0.28);
  });

  it('keeps isolates with the same snapshot from herding onto one backend', () => {
    const list = ['a', 'b', 'c', 'd'].map((id) => backend(id, 'eu-west'));
    const ranked = rankByScore(list, { model: 'embed', from }, {}, 0);
    // The deterministic order puts every request of every isolate on one backend...
    expect(new Set(Array.from({ length: 50 }, () => ranked[0]!.backend.id)).size).toBe(1);
    // ...two isolates with their own randomness mostly disagree...
    const one = seeded(11);
    const two = seeded(22);
    let same = 0;
    for (let i = 0; i < 400; i++) if (pickAttempts(ranked, one)[0] === pickAttempts(ranked, two)[0]) same++;
    expect(same / 400).toBeLessThan(0.4); // ~1/4 by chance
    // ...and the first picks of 200 fresh isolates cover every backend.
    const firsts = new Map<string, number>();
    for (let s = 0; s < 200; s++) {
      const id = pickAttempts(ranked, seeded(1_000 + s))[0]!.backend.id;
      firsts.set(id, (firsts.get(id) ?? 0) + 1);
    }
    expect(firsts.size).toBe(4);
    for (const n of firsts.values()) expect(n).toBeLessThan(100);
  });

  it('takes the cheaper of the two drawn, then the rest in score order', () => {
    const c = (id: string, expectedMs: number) => ({ backend: { id }, expectedMs });
    const ranked = [c('a', 10), c('b', 12), c('c', 14), c('far', 200)];
    // Draws index 2 ('c'), then index 1 of the other two ('b'): 'b' is cheaper.
    const draws = [0.7, 0.6];
    const attempts = pickAttempts(ranked, () => draws.shift()!);
    expect(ids(attempts)).toEqual(['b', 'a', 'c', 'far']);
    // The far region is outside the band of the best and never drawn.
    expect(ids(p2cPool(ranked))).toEqual(['a', 'b', 'c']);
    expect(ids(pickAttempts([c('only', 10), c('far', 200)], () => 0.99))).toEqual(['only', 'far']);
    expect(pickAttempts([] as Scored[], Math.random)).toEqual([]);
  });

  it('takes the best without a draw when one more request ahead of it could not cost it the lead', () => {
    const c = (id: string, expectedMs: number, crowdMs?: number) => ({ backend: { id }, expectedMs, ...(crowdMs === undefined ? {} : { crowdMs }) });
    // Draws that would pick 'b' (index 1 of three, then index 1 of the other two: 'c'; 'b' is cheaper).
    const draws = () => {
      const d = [0.5, 0.6];
      return () => d.shift()!;
    };
    // 'a' leads 'b' by 10 ms; one more request on 'a' adds 3 ms: 'a' stays the better after a collision, so it is taken.
    expect(ids(pickAttempts([c('a', 10, 3), c('b', 20), c('c', 21)], draws()))).toEqual(['a', 'b', 'c']);
    // One more request on 'a' would add 15 ms (a slow model on few slots): a collision could cost it the lead, so P2C draws.
    expect(ids(pickAttempts([c('a', 10, 15), c('b', 20), c('c', 21)], draws()))).toEqual(['b', 'a', 'c']);
    // A lead of exactly the collision's cost is drawn too; without crowdMs, always drawn.
    expect(ids(pickAttempts([c('a', 10, 10), c('b', 20), c('c', 21)], draws()))).toEqual(['b', 'a', 'c']);
    expect(ids(pickAttempts([c('a', 10), c('b', 20), c('c', 21)], draws()))).toEqual(['b', 'a', 'c']);
    // A held-back best is still never first.
    expect(ids(pickAttempts([c('dead', 1, 0.1), c('a', 10, 3), c('b', 20)], draws(), {}, (x) => x.backend.id === 'dead'))[0]).not.toBe('dead');
  });

  it('scores what one more request ahead would add: the service time over the slots, times the penalty', () => {
    const list = [
      backend('small', 'eu-west', { provider: 'penalised', capacity: { slots: 2, inFlight: 0, queued: 0 } }),
      backend('large', 'eu-west', { capacity: { slots: 16, inFlight: 3, queued: 5 } }),
    ];
    const ranked = rankByScore(list, { model: 'embed', from }, {}, 0, { penalties: new Map([['penalised', 2]]) });
    const of = (id: string) => ranked.find((x) => x.backend.id === id)!;
    // The load already there does not change it: the next request's cost is one service time shared by the slots.
    expect(of('large').crowdMs).toBeCloseTo(of('large').serviceMs / 16, 9);
    expect(of('small').crowdMs).toBeCloseTo((of('small').serviceMs / 2) * 2, 9);
  });

  it('tries held-back candidates after every other, never first, unless all are held back', () => {
    const c = (id: string, expectedMs: number) => ({ backend: { id }, expectedMs });
    const ranked = [c('dead', 9), c('a', 10), c('b', 12), c('far', 200)];
    const held = (x: { backend: { id: string } }) => x.backend.id === 'dead';
    for (const draw of [0, 0.3, 0.6, 0.99]) {
      const attempts = pickAttempts(ranked, () => draw, {}, held);
      expect(ids(attempts).at(-1)).toBe('dead');
      expect(ids(attempts).sort()).toEqual(['a', 'b', 'dead', 'far']);
    }
    // All held back: drawn as usual.
    expect(ids(pickAttempts([c('x', 10), c('y', 11)], () => 0, {}, () => true)).sort()).toEqual(['x', 'y']);
  });
});
