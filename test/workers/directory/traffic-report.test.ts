import { describe, expect, it } from 'vitest';
import { TRAFFIC_FLUSH_MS, TrafficReport, type TrafficCell } from '../../../workers/directory/traffic-report.ts';
import type { Env } from '../../../workers/env.ts';
import { bucketOf } from '../../../workers/status/latency-histogram.ts';

/** An env whose directories record what they are sent, and a context that collects background work. */
function fakes() {
  const sent: { region: string; cells: TrafficCell[] }[] = [];
  const env = {
    REGION_DIRECTORY: {
      getByName: (region: string) => ({ recordTraffic: async (cells: TrafficCell[]) => void sent.push({ region, cells }) }),
    },
  } as unknown as Env;
  const background: Promise<unknown>[] = [];
  return { env, sent, background, ctx: { waitUntil: (p: Promise<unknown>) => void background.push(p) } };
}

describe('traffic per isolate', () => {
  it('counts requests, 5xx and latencies per (PoP, answering region, provider)', () => {
    const report = new TrafficReport();
    report.note({ pop: 'fra', region: 'eu-west', provider: 'p1', status: 200, latencyMs: 12 });
    report.note({ pop: 'FRA', region: 'eu-west', provider: 'p1', status: 502, latencyMs: 400 });
    report.note({ pop: 'FRA', region: 'eu-west', provider: 'p2', status: 200, latencyMs: 12 });
    const byRegion = report.take(10_000)!;
    expect(byRegion.get('eu-west')).toEqual([
      { pop: 'FRA', region: 'eu-west', provider: 'p1', requests: 2, errors: 1, hist: { [bucketOf(12)]: 1, [bucketOf(400)]: 1 } },
      { pop: 'FRA', region: 'eu-west', provider: 'p2', requests: 1, errors: 0, hist: { [bucketOf(12)]: 1 } },
    ]);
    expect(report.size).toBe(0);
  });

  it("sends a request no backend answered to the directory nearest its PoP", () => {
    const report = new TrafficReport();
    report.note({ pop: 'SIN', status: 200, latencyMs: 3 }); // a cache hit
    report.note({ pop: 'NRT', region: 'nowhere', status: 503, latencyMs: 3 }); // not a region: none answered
    const byRegion = report.take(10_000)!;
    expect(byRegion.get('ap-southeast')).toEqual([{ pop: 'SIN', region: '', provider: '', requests: 1, errors: 0, hist: { [bucketOf(3)]: 1 } }]);
    expect(byRegion.get('ap-northeast')).toEqual([{ pop: 'NRT', region: '', provider: '', requests: 1, errors: 1, hist: { [bucketOf(3)]: 1 } }]);
  });

  it('counts nothing for an unknown PoP or a bad latency, and is bounded', () => {
    const report = new TrafficReport({ maxPending: 2 });
    report.note({ pop: 'unknown', status: 200, latencyMs: 1 });
    report.note({ pop: 'FRA', status: 200, latencyMs: Number.NaN });
    expect(report.size).toBe(0);
    report.note({ pop: 'FRA', status: 200, latencyMs: 1 });
    report.note({ pop: 'AMS', status: 200, latencyMs: 1 });
    report.note({ pop: 'CDG', status: 200, latencyMs: 1 });
    report.note({ pop: 'FRA', status: 200, latencyMs: 1 });
    expect(report.size).toBe(2);
    expect(report.take(10_000)!.get('eu-west')!.map((c) => [c.pop, c.requests])).toEqual([
      ['FRA', 2],
      ['AMS', 1],
    ]);
  });

  it('flushes at most every TRAFFIC_FLUSH_MS, in the background', async () => {
    const { env, sent, background, ctx } = fakes();
    const report = new TrafficReport();
    report.note({ pop: 'FRA', region: 'eu-west', provider: 'p1', status: 200, latencyMs: 5 });
    report.flush(env, ctx, 100_000);
    expect(background).toHaveLength(1);
    await background[0];
    expect(sent).toEqual([{ region: 'eu-west', cells: [expect.objectContaining({ requests: 1 })] }]);
    // Too soon: nothing is sent now (a timer waits for the interval, below).
    report.note({ pop: 'FRA', region: 'eu-west', provider: 'p1', status: 200, latencyMs: 5 });
    report.flush(env, ctx, 100_000 + TRAFFIC_FLUSH_MS - 1);
    await Promise.resolve();
    expect(sent).toHaveLength(1);
    expect(report.size).toBe(1);
  });

  it("sends a quiet isolate's last counts when they are due, with no later request", async () => {
    const { env, sent, background, ctx } = fakes();
    const report = new TrafficReport();
    const start = Date.now();
    report.note({ pop: 'FRA', region: 'eu-west', provider: 'p1', status: 200, latencyMs: 5 });
    report.flush(env, ctx, start);
    report.note({ pop: 'AMS', region: 'eu-west', provider: 'p1', status: 200, latencyMs: 5 });
    report.flush(env, ctx, start + 1);
    report.note({ pop: 'CDG', region: 'eu-west', provider: 'p1', status: 200, latencyMs: 5 });
    report.flush(env, ctx, start + 2); // one timer, not two
    expect(background).toHaveLength(2);
    await Promise.all(background);
    expect(Date.now() - start).toBeGreaterThanOrEqual(TRAFFIC_FLUSH_MS - 50);
    expect(sent.map((s) => s.cells.map((c) => c.pop))).toEqual([['FRA'], ['AMS', 'CDG']]);
    expect(report.size).toBe(0);
  });
});
