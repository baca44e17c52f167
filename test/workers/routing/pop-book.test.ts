import { describe, expect, it } from 'vitest';
import { createIsolateRouting, SERVICE_DECAY_MS } from '../../../workers/routing/isolate.ts';
import { LatencyBook } from '../../../workers/routing/latency.ts';
import { MAX_POP_BOOK_CHARS, PopBook, ServiceOutbox, type OutboxEntry } from '../../../workers/routing/pop-book.ts';

const sample = (backend: string, sumMs: number, count: number, lastAt: number, model = 'embed'): OutboxEntry => ({ backend, model, sumMs, count, lastAt });

describe('ServiceOutbox', () => {
  it('sums what one isolate measured per (backend, model) until drained', () => {
    const out = new ServiceOutbox();
    out.note('b1', 'embed', 10, 100);
    out.note('b1', 'embed', 20, 300);
    out.note('b1', 'ocr', 60, 200);
    out.note('b2', 'embed', -1, 200);
    out.note('b2', 'embed', Number.NaN, 200);
    expect(out.size).toBe(2);
    const drained = out.drain().sort((a, b) => a.model.localeCompare(b.model));
    expect(drained).toEqual([sample('b1', 30, 2, 300), sample('b1', 60, 1, 200, 'ocr')]);
    expect(out.size).toBe(0);
    expect(out.drain()).toEqual([]);
  });

  it('keeps at most its bound of pairs, adding to those it holds', () => {
    const out = new ServiceOutbox({ maxEntries: 2 });
    out.note('b1', 'embed', 10, 0);
    out.note('b2', 'embed', 10, 0);
    out.note('b3', 'embed', 10, 0);
    out.note('b1', 'embed', 30, 5);
    expect(out.drain().map((e) => [e.backend, e.count])).toEqual([['b1', 2], ['b2', 1]]);
  });
});

describe('PopBook', () => {
  it('adds two isolates\' samples to the same mean and weight whatever order they arrive in', () => {
    const a = [sample('b1', 100, 10, 900)];
    const b = [sample('b1', 300, 10, 400)];
    const ab = new PopBook();
    ab.add(a, 1_000);
    ab.add(b, 1_010);
    const ba = new PopBook();
    ba.add(b, 1_000);
    ba.add(a, 1_010);
    expect(ab.mean('b1', 'embed')).toBeCloseTo(ba.mean('b1', 'embed')!, 9);
    expect(ab.weight('b1', 'embed', 2_000)).toBeCloseTo(ba.weight('b1', 'embed', 2_000), 9);
    // The older half weighs e^(-500 / 2000) of the newer: the mean leans to the newer 10 ms.
    const older = Math.exp(-500 / SERVICE_DECAY_MS);
    expect(ab.mean('b1', 'embed')).toBeCloseTo((100 + 300 * older) / (10 + 10 * older), 9);
  });

  it('weighs older samples down by the scoring EWMA\'s time constant, and forgets an entry no one measures', () => {
    const book = new PopBook();
    book.add([sample('b1', 10, 1, 0)], 0);
    book.add([sample('b1', 30, 1, SERVICE_DECAY_MS)], SERVICE_DECAY_MS);
    expect(book.mean('b1', 'embed')).toBeCloseTo((10 / Math.E + 30) / (1 / Math.E + 1), 9);
    expect(book.weight('b1', 'embed', 2 * SERVICE_DECAY_MS)).toBeCloseTo((1 / Math.E + 1) / Math.E, 9);
    book.add([sample('b2', 10, 1, 20 * SERVICE_DECAY_MS)], 20 * SERVICE_DECAY_MS);
    expect(book.mean('b1', 'embed')).toBeUndefined();
    expect(book.size).toBe(1);
  });

  it('keeps at most its bound of entries, the least recently measured going first', () => {
    const book = new PopBook({ maxEntries: 2 });
    book.add([sample('b1', 10, 1, 100), sample('b2', 10, 1, 300), sample('b3', 10, 1, 200)], 300);
    expect(book.size).toBe(2);
    expect(book.mean('b1', 'embed')).toBeUndefined();
    expect(book.mean('b2', 'embed')).toBe(10);
    expect(book.mean('b3', 'embed')).toBe(10);
  });

  it('gives an isolate the PoP\'s mean of what changed since its last exchange, and only that, as of its newest sample', () => {
    const book = new PopBook();
    book.add([sample('b1', 200, 10, 900)], 1_000);
    book.add([sample('b2', 50, 1, 1_400)], 1_500);
    const mine = new LatencyBook({ histogram: false, ewma: { decayMs: SERVICE_DECAY_MS, fastUp: false } });
    const changes = mine.changes.seq;
    expect(book.applyTo(mine, 1_000)).toBe(1);
    expect(mine.changes.seq).toBe(changes + 1);
    expect(mine.get('b1', 'embed')).toBeUndefined();
    expect(mine.get('b2', 'embed')!.ewma.value(1_400)).toBe(50);
    // As of 1,400 ms: by 3,400 it has relaxed toward the heartbeat's p50 (10 ms) by one time constant.
    expect(mine.get('b2', 'embed')!.ewma.value(1_400 + SERVICE_DECAY_MS, 10)).toBeCloseTo(10 + 40 / Math.E, 9);
    expect(book.applyTo(mine, Number.NEGATIVE_INFINITY)).toBe(2);
    expect(mine.get('b1', 'embed')!.ewma.value(900)).toBe(20);
  });

  it('leaves an isolate\'s estimate alone when its own sample is newer than the PoP\'s', () => {
    const book = new PopBook();
    book.add([sample('b1', 500, 10, 1_000)], 1_000);
    const mine = new LatencyBook({ histogram: false, ewma: { decayMs: SERVICE_DECAY_MS, fastUp: false } });
    mine.observe('b1', 'embed', 10, 1_001);
    expect(book.applyTo(mine, 0)).toBe(0);
    expect(mine.get('b1', 'embed')!.ewma.value(1_001)).toBe(10);
    // Its own next sample weighs in from the adopted estimate's time on.
    mine.observe('b1', 'embed', 30, 1_001 + SERVICE_DECAY_MS);
    expect(mine.get('b1', 'embed')!.ewma.value(1_001 + SERVICE_DECAY_MS)).toBeCloseTo(10 / Math.E + 30 * (1 - 1 / Math.E), 9);
  });

  it('reads back what it wrote', () => {
    const book = new PopBook();
    book.add([sample('b1', 30, 3, 100), sample('b1', 60, 1, 120, 'ocr')], 150);
    const back = PopBook.parse(book.serialize())!;
    expect(back.size).toBe(2);
    expect(back.mean('b1', 'embed')).toBe(10);
    expect(back.mean('b1', 'ocr')).toBe(60);
    expect(back.weight('b1', 'embed', 100)).toBe(3);
    const mine = new LatencyBook();
    expect(back.applyTo(mine, 149)).toBe(2);
  });

  it('refuses what is not a book, and drops the entries that do not hold up', () => {
    expect(PopBook.parse('not json')).toBeUndefined();
    expect(PopBook.parse('{"v":2,"entries":[]}')).toBeUndefined();
    expect(PopBook.parse('{"v":1}')).toBeUndefined();
    expect(PopBook.parse(`{"v":1,"entries":[],"pad":"${'x'.repeat(MAX_POP_BOOK_CHARS)}"}`)).toBeUndefined();
    const entries = [
      ['good', 'embed', 30, 3, 100, 100],
      ['good', 'embed', 90, 3, 100, 100], // the same pair again: the first stands
      ['x'.repeat(129), 'embed', 30, 3, 100, 100],
      ['nan', 'embed', null, 3, 100, 100],
      ['negative', 'embed', -30, 3, 100, 100],
      ['none', 'embed', 30, 0, 100, 100],
      ['short', 'embed', 30, 3, 100],
      'not a tuple',
    ];
    const book = PopBook.parse(JSON.stringify({ v: 1, entries }))!;
    expect(book.size).toBe(1);
    expect(book.mean('good', 'embed')).toBe(10);
    const bounded = PopBook.parse(JSON.stringify({ v: 1, entries: [entries[0], ['b2', 'embed', 1, 1, 1, 1]] }), { maxEntries: 1 })!;
    expect(bounded.size).toBe(1);
  });
});

describe('a PoP of many isolates', () => {
  /** Deterministic stand-in for a backend's service times: mean 10 ms, one in 50 stalled at 10x. */
  function* serviceTimes(): Generator<number> {
    let x = 12345;
    for (;;) {
      x = (x * 1103515245 + 12345) % 2 ** 31;
      const u = x / 2 ** 31;
      yield u < 0.02 ? 100 : 6 + 8 * u;
    }
  }

  it('scores a backend the PoP calls 50 times a second nearer its mean in an isolate that sees a sixteenth of the calls', () => {
    const errors = (share: boolean): number => {
      const isolates = Array.from({ length: 16 }, () => createIsolateRouting(() => 0));
      const book = new PopBook();
      const outboxes = isolates.map(() => new ServiceOutbox());
      const exchanged = isolates.map(() => Number.NEGATIVE_INFINITY);
      const times = serviceTimes();
      const trueMean = 0.98 * 10 + 0.02 * 100;
      let squared = 0;
      let n = 0;
      for (let t = 0, call = 0; t < 60_000; t += 20, call++) {
        const i = call % 16;
        const ms = times.next().value as number;
        isolates[i]!.latency.observe('b1', 'embed', ms, t);
        outboxes[i]!.note('b1', 'embed', ms, t);
        if (share && t - exchanged[i]! >= 1_000) {
          book.add(outboxes[i]!.drain(), t);
          book.applyTo(isolates[i]!.latency, exchanged[i]!);
          exchanged[i] = t;
        }
        if (t > 10_000) {
          // Isolate 0's estimate, with the heartbeat's p50 (10 ms) as its prior, as scoring reads it.
          const e = isolates[0]!.latency.get('b1', 'embed')!.ewma.value(t, 10)! - trueMean;
          squared += e * e;
          n++;
        }
      }
      return Math.sqrt(squared / n);
    };
    const alone = errors(false);
    const shared = errors(true);
    expect(shared).toBeLessThan(0.9 * alone);
  });
});
