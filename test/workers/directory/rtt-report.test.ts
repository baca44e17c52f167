import { describe, expect, it } from 'vitest';
import { RTT_FLUSH_MS, RttReport, type RttSample } from '../../../workers/directory/rtt-report.ts';
import type { Env } from '../../../workers/env.ts';

const fra = { id: 'fra-1', region: 'eu-west' };
const sin = { id: 'sin-1', region: 'ap-southeast' };

/** An env whose directories record what they are sent, and a context that collects background work. */
function fakes() {
  const sent: { region: string; samples: RttSample[] }[] = [];
  const env = {
    REGION_DIRECTORY: {
      getByName: (region: string) => ({
        recordRtt: async (samples: RttSample[]) => void sent.push({ region, samples }),
      }),
    },
  } as unknown as Env;
  const background: Promise<unknown>[] = [];
  return { env, sent, background, ctx: { waitUntil: (p: Promise<unknown>) => void background.push(p) } };
}

describe('round trips per isolate', () => {
  it('keeps the minimum and the count per (backend, PoP), probes apart', () => {
    const report = new RttReport();
    report.note('FRA', fra, 12, 'dispatch');
    report.note('FRA', fra, 7, 'dispatch');
    report.note('fra', fra, 9, 'probe');
    report.note('FRA', fra, 11);
    report.note('AMS', fra, 15, 'dispatch');
    report.note('SIN', sin, 2);
    const byRegion = report.take(10_000)!;
    expect(byRegion.get('eu-west')).toEqual([
      { backend: 'fra-1', pop: 'FRA', minMs: 7, count: 4, probeMinMs: 9, probeCount: 2 },
      { backend: 'fra-1', pop: 'AMS', minMs: 15, count: 1 },
    ]);
    expect(byRegion.get('ap-southeast')).toEqual([{ backend: 'sin-1', pop: 'SIN', minMs: 2, count: 1, probeMinMs: 2, probeCount: 1 }]);
    expect(report.size).toBe(0);
  });

  it('counts nothing for an unknown PoP, an unknown region or a bad number', () => {
    const report = new RttReport();
    report.note('unknown', fra, 5);
    report.note('XXX', fra, 5);
    report.note('FRA', { id: 'x', region: 'nowhere' }, 5);
    report.note('FRA', fra, Number.NaN);
    report.note('FRA', fra, -1);
    report.note('FRA', fra, Infinity);
    expect(report.size).toBe(0);
  });

  it('is bounded: new pairs beyond the limit are dropped, known ones still merge', () => {
    const report = new RttReport({ maxPending: 2 });
    report.note('FRA', fra, 10);
    report.note('AMS', fra, 10);
    report.note('CDG', fra, 10);
    report.note('FRA', fra, 4);
    expect(report.size).toBe(2);
    expect(report.take(10_000)!.get('eu-west')!.map((s) => [s.pop, s.minMs])).toEqual([
      ['FRA', 4],
      ['AMS', 10],
    ]);
  });

  it('flushes in the background, at most every RTT_FLUSH_MS, to each backend\'s region', async () => {
    const report = new RttReport();
    const { env, ctx, sent, background } = fakes();
    report.flush(env, ctx, 10_000);
    expect(background).toEqual([]); // nothing to send
    report.note('FRA', fra, 8, 'dispatch');
    report.note('SIN', sin, 3);
    report.flush(env, ctx, 10_000);
    // The directory call runs in waitUntil: flush itself returns at once.
    expect(background).toHaveLength(1);
    await Promise.all(background);
    expect(sent.map((s) => s.region).sort()).toEqual(['ap-southeast', 'eu-west']);
    expect(sent.find((s) => s.region === 'eu-west')!.samples).toEqual([{ backend: 'fra-1', pop: 'FRA', minMs: 8, count: 1 }]);

    report.note('FRA', fra, 6, 'dispatch');
    report.flush(env, ctx, 10_000 + RTT_FLUSH_MS - 1);
    expect(background).toHaveLength(1); // too soon: kept for the next flush
    report.note('FRA', fra, 9, 'dispatch');
    report.flush(env, ctx, 10_000 + RTT_FLUSH_MS);
    expect(background).toHaveLength(2);
    await Promise.all(background);
    expect(sent.at(-1)).toEqual({ region: 'eu-west', samples: [{ backend: 'fra-1', pop: 'FRA', minMs: 6, count: 2 }] });
  });

  it('does not fail the request when a directory call fails', async () => {
    const report = new RttReport();
    const background: Promise<unknown>[] = [];
    const env = { REGION_DIRECTORY: { getByName: () => ({ recordRtt: () => Promise.reject(new Error('down')) }) } } as unknown as Env;
    report.note('FRA', fra, 8);
    report.flush(env, { waitUntil: (p) => void background.push(p) }, 10_000);
    await expect(Promise.all(background)).resolves.toBeDefined();
  });
});
