import { describe, expect, it } from 'vitest';
import { describeOutlierEvent } from '../../../workers/routing/isolate.ts';
import { OutlierDetector, type OutlierEvent } from '../../../workers/routing/outliers.ts';

const S = 1_000;

function setup(options = {}) {
  const clock = { t: 0 };
  const detector = new OutlierDetector({ now: () => clock.t, ...options });
  const fail = (id: string, times = 1, region = 'eu-west', size = 4) => {
    let ejected = false;
    for (let i = 0; i < times; i++) ejected = detector.recordFailure({ id, region }, size) || ejected;
    return ejected;
  };
  return { clock, detector, fail };
}

describe('OutlierDetector: ejection timeline on an injected clock', () => {
  it('ejects after 5 consecutive failures for 30 s, then 60 s, and caps the time', () => {
    const { clock, detector, fail } = setup();
    expect(fail('a', 4)).toBe(false);
    expect(detector.isEjected('a')).toBe(false);
    expect(fail('a')).toBe(true);
    expect(detector.isEjected('a')).toBe(true);
    clock.t = 30 * S - 1;
    expect(detector.isEjected('a')).toBe(true);
    clock.t = 30 * S;
    expect(detector.isEjected('a')).toBe(false); // back after 30 s
    // It fails again at once: the second ejection lasts twice as long.
    expect(fail('a', 5)).toBe(true);
    expect(detector.ejectedUntil('a')).toBe(30 * S + 60 * S);
    clock.t = 90 * S;
    fail('a', 5);
    expect(detector.ejectedUntil('a')! - clock.t).toBe(90 * S);
    // Many more: capped at 300 s.
    for (let i = 0; i < 10; i++) {
      clock.t = detector.ejectedUntil('a')!;
      fail('a', 5);
    }
    expect(detector.ejectedUntil('a')! - clock.t).toBe(300 * S);
  });

  it('starts counting again after a success, and ignores failures while ejected', () => {
    const { clock, detector, fail } = setup();
    fail('a', 4);
    detector.recordSuccess('a');
    expect(fail('a', 4)).toBe(false);
    expect(fail('a')).toBe(true);
    clock.t = 10 * S;
    expect(fail('a', 20)).toBe(false); // in-flight calls failing while ejected do not extend it
    expect(detector.ejectedUntil('a')).toBe(30 * S);
  });

  it('never ejects more than half a region at once, and ejects the rest once room frees', () => {
    const { clock, detector, fail } = setup();
    expect(fail('a', 5)).toBe(true);
    expect(fail('b', 5)).toBe(true);
    expect(fail('c', 5)).toBe(false); // 2 of 4 already out
    expect(fail('d', 9)).toBe(false);
    expect(detector.ejectedCount('eu-west')).toBe(2);
    // 'c' and 'd' are over the threshold but the share is taken: held back after each failure, for 5 s.
    expect(detector.isHeldBack('c')).toBe(true);
    expect(detector.isHeldBack('a')).toBe(false); // ejected, not held
    clock.t = 5 * S;
    expect(detector.isHeldBack('d')).toBe(false);
    expect(fail('d')).toBe(false);
    expect(detector.isHeldBack('d')).toBe(true);
    detector.recordSuccess('d');
    expect(detector.isHeldBack('d')).toBe(false);
    expect(fail('x', 5, 'us-east', 4)).toBe(true); // other regions have their own share
    clock.t = 30 * S;
    expect(detector.ejectedCount('eu-west')).toBe(0);
    expect(fail('c')).toBe(true); // it stayed at the threshold
    // A lone backend may be ejected (at least one always may), which sends its traffic elsewhere.
    expect(fail('solo', 5, 'af-south', 1)).toBe(true);
    // A share of 0 turns ejection off.
    expect(setup({ maxEjectedShare: 0 }).fail('a', 50)).toBe(false);
  });

  it('forgives one ejection per quiet minute after the last one ended', () => {
    const { clock, detector, fail } = setup();
    fail('a', 5); // 30 s
    clock.t = 30 * S;
    fail('a', 5); // 60 s, until 90 s
    clock.t = 90 * S + 60 * S; // one quiet minute: multiplier 2 -> 1
    detector.recordSuccess('a');
    fail('a', 5);
    expect(detector.ejectedUntil('a')! - clock.t).toBe(60 * S);
    clock.t = detector.ejectedUntil('a')! + 10 * 60 * S; // long quiet: back to the base
    fail('a', 5);
    expect(detector.ejectedUntil('a')! - clock.t).toBe(30 * S);
  });

  it('tells of each ejection and each hold, with the region share the cap saw, for the log', () => {
    const events: OutlierEvent[] = [];
    const { clock, fail } = setup({ onEvent: (e: OutlierEvent) => events.push(e) });
    fail('a', 4, 'eu-west', 2);
    expect(events).toEqual([]);
    fail('a', 1, 'eu-west', 2);
    expect(events).toEqual([{ kind: 'ejected', backendId: 'a', region: 'eu-west', untilMs: 30 * S, timesEjected: 1, regionEjected: 0, regionSize: 2 }]);
    clock.t = 1 * S;
    fail('b', 5, 'eu-west', 2);
    expect(events[1]).toEqual({ kind: 'held', backendId: 'b', region: 'eu-west', untilMs: 6 * S, timesEjected: 0, regionEjected: 1, regionSize: 2 });
    // Further failures extend the hold without a new event; one after it lapsed begins another.
    clock.t = 2 * S;
    fail('b', 3, 'eu-west', 2);
    expect(events).toHaveLength(2);
    clock.t = 8 * S;
    fail('b', 1, 'eu-west', 2);
    expect(events.map((e) => [e.kind, e.backendId, e.untilMs])).toEqual([['ejected', 'a', 30 * S], ['held', 'b', 6 * S], ['held', 'b', 13 * S]]);
    expect(describeOutlierEvent(events[0]!, 0)).toBe('routing: backend a ejected for 30 s (ejection 1; 0 of 2 in eu-west ejected before it)');
    expect(describeOutlierEvent(events[1]!, 1 * S)).toBe('routing: backend b held back (tried last) for 5 s after each failure, not ejected (1 of 2 in eu-west ejected, the most allowed)');
  });
});
