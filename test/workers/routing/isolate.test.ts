import { describe, expect, it } from 'vitest';
import { createIsolateRouting } from '../../../workers/routing/isolate.ts';

describe('createIsolateRouting', () => {
  it("scores a backend's stall at once and has forgotten it a few seconds later", () => {
    const clock = { t: 0 };
    const routing = createIsolateRouting(() => clock.t);
    const service = (now: number) => routing.latency.get('b1', 'embed')!.peak.value(now, 10)!;
    // 10 ms answers every 50 ms, then one stalled at 10x.
    for (; clock.t < 5_000; clock.t += 50) routing.latency.observe('b1', 'embed', 10, clock.t);
    routing.latency.observe('b1', 'embed', 100, clock.t);
    expect(service(clock.t)).toBe(100);
    // Answered by others since (the isolate sent elsewhere): 3 time constants later the estimate is back near the prior.
    expect(service(clock.t + 6_000)).toBeLessThan(15);
    // And sent to again meanwhile: its normal answers pull the estimate back as fast.
    for (let t = clock.t + 50; t <= clock.t + 6_000; t += 50) routing.latency.observe('b1', 'embed', 10, t);
    expect(service(clock.t + 6_000)).toBeLessThan(15);
  });
});
