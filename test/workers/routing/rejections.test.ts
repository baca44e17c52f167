import { describe, expect, it } from 'vitest';
import { RejectionBaseline } from '../../../workers/routing/rejections.ts';

function feed(b: RejectionBaseline, id: string, rejected: number, answered: number) {
  for (let i = 0; i < rejected; i++) b.record(id, true);
  for (let i = 0; i < answered; i++) b.record(id, false);
}

describe('rejection baseline', () => {
  it('suspects a backend that refuses far more than its peers', () => {
    const b = new RejectionBaseline();
    feed(b, 'honest-1', 1, 19);
    feed(b, 'honest-2', 2, 18);
    feed(b, 'refuser', 12, 0);
    expect(b.suspect('refuser')).toBe(true);
    expect(b.suspect('honest-1')).toBe(false);
    expect(b.suspect('honest-2')).toBe(false);
  });

  it('suspects nobody when everyone refuses alike (the consumers send bad requests)', () => {
    const b = new RejectionBaseline();
    feed(b, 'a', 10, 10);
    feed(b, 'b', 12, 8);
    expect(b.suspect('a')).toBe(false);
    expect(b.suspect('b')).toBe(false);
  });

  it('needs enough answers from the backend and from the others before it can tell', () => {
    const b = new RejectionBaseline();
    feed(b, 'lonely', 20, 0);
    expect(b.suspect('lonely')).toBe(false);
    feed(b, 'new', 9, 0);
    feed(b, 'peer', 0, 20);
    expect(b.suspect('new')).toBe(false);
    b.record('new', true);
    expect(b.suspect('new')).toBe(true);
  });

  it('forgets old answers: a backend that stops refusing is trusted again', () => {
    const b = new RejectionBaseline({ window: 20 });
    feed(b, 'peer', 0, 20);
    feed(b, 'flaky', 15, 0);
    expect(b.suspect('flaky')).toBe(true);
    feed(b, 'flaky', 0, 20);
    expect(b.suspect('flaky')).toBe(false);
  });

  it('keeps memory bounded, and any id is a safe key', () => {
    const b = new RejectionBaseline({ maxBackends: 2 });
    feed(b, '__proto__', 10, 0);
    feed(b, 'constructor', 0, 10);
    expect(b.suspect('__proto__')).toBe(true);
    feed(b, 'toString', 0, 10);
    // The oldest backend was forgotten.
    expect(b.suspect('__proto__')).toBe(false);
  });
});
