import { describe, expect, it } from 'vitest';
import { createIsolateRouting, SERVICE_DECAY_MS } from '../../../workers/routing/isolate.ts';

describe('createIsolateRouting', () => {
  it('scores a backend it sends to often at the mean of its service times, not at the slowest recent one', () => {
    const clock = { t: 0 };
    const routing = createIsolateRouting(() => clock.t);
    const service = (now: number) => routing.latency.get('b1', 'embed')!.ewma.value(now, 10)!;
    // The PoP's best backend, answered every 20 ms: 8 and 12 ms in turn (mean 10), one in 50 stalled at 10x (mean 11.8).
    let highest = 0;
    for (let n = 0; clock.t < 20_000; clock.t += 20, n++) {
      routing.latency.observe('b1', 'embed', n % 50 === 49 ? 100 : n % 2 ? 12 : 8, clock.t);
      if (clock.t > 5_000) highest = Math.max(highest, service(clock.t));
    }
    // A peak would follow the top of its samples (12 ms) and every stall (100 ms); a farther backend at its p50 would win.
    expect(highest).toBeLessThan(14);
    expect(service(clock.t)).toBeGreaterThan(10);
  });

  it('scores a backend that has turned slow as slow within a few time constants, however often it answers', () => {
    for (const everyMs of [20, 500]) {
      const clock = { t: 0 };
      const routing = createIsolateRouting(() => clock.t);
      for (; clock.t < 5_000; clock.t += everyMs) routing.latency.observe('b1', 'embed', 10, clock.t);
      const slowFrom = clock.t;
      let last = slowFrom;
      for (; clock.t <= slowFrom + 3 * SERVICE_DECAY_MS; clock.t += everyMs) routing.latency.observe('b1', 'embed', 50, (last = clock.t));
      expect(routing.latency.get('b1', 'embed')!.ewma.value(last, 10)!).toBeGreaterThan(45);
    }
  });

  it('relaxes toward the heartbeat p50 while the isolate sends elsewhere', () => {
    const routing = createIsolateRouting(() => 0);
    routing.latency.observe('b1', 'embed', 40, 0);
    expect(routing.latency.get('b1', 'embed')!.ewma.value(3 * SERVICE_DECAY_MS, 10)!).toBeLessThan(12);
  });
});
