import { describe, expect, it } from 'vitest';
import { EventQueue } from '../../sim/events.ts';
import { Random } from '../../sim/random.ts';

describe('the event queue', () => {
  it('runs events in time order, and those at the same time in the order they were scheduled', () => {
    const q = new EventQueue();
    const seen: string[] = [];
    q.at(5, () => seen.push('b'));
    q.at(1, () => seen.push('a'));
    q.at(5, () => seen.push('c'));
    q.at(3, () => q.after(2, () => seen.push('d'))); // scheduled later for t=5: after b and c
    while (q.step()) {
      /* run */
    }
    expect(seen).toEqual(['a', 'b', 'c', 'd']);
    expect(q.now).toBe(5);
  });

  it('never runs an event in the past, and stops at runUntil', () => {
    const q = new EventQueue();
    const at: number[] = [];
    q.at(10, () => q.at(2, () => at.push(q.now)));
    q.at(50, () => at.push(q.now));
    q.runUntil(20);
    expect(at).toEqual([10]);
    expect(q.now).toBe(20);
    expect(q.size).toBe(1);
  });

  it('orders many random events exactly as a sort would', () => {
    const q = new EventQueue();
    const random = new Random(7);
    const times = Array.from({ length: 5_000 }, () => Math.floor(random.unit() * 1_000));
    const seen: number[] = [];
    times.forEach((t, i) => q.at(t, () => seen.push(i)));
    while (q.step()) {
      /* run */
    }
    const expected = times.map((t, i) => [t, i] as const).sort((a, b) => a[0] - b[0] || a[1] - b[1]).map(([, i]) => i);
    expect(seen).toEqual(expected);
  });
});
