import { describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG, type SimConfig } from '../../sim/config.ts';
import { floorTails, serviceTails } from '../../sim/tails.ts';

const Z99 = 2.3263478740408408;
const world = (faults: Partial<SimConfig['faults']>): SimConfig => ({ ...DEFAULT_CONFIG, faults: { ...DEFAULT_CONFIG.faults, ...faults } });

describe('serviceTails', () => {
  it("is a lognormal's exp(z99 sigma) with no stalls, at the model's median", () => {
    for (const t of serviceTails(world({ stallShare: 0 }), 100_000)) {
      const spec = DEFAULT_CONFIG.models.find((m) => m.name === t.model)!;
      expect(t.p50 / spec.serviceMs).toBeCloseTo(1, 1);
      expect(t.ratio / Math.exp(Z99 * spec.serviceSigma)).toBeGreaterThan(0.97);
      expect(t.ratio / Math.exp(Z99 * spec.serviceSigma)).toBeLessThan(1.03);
    }
  });

  it("grows with the world's stalls: at 1% of requests, the p99 sits in the gap below them", () => {
    const calm = serviceTails(world({ stallShare: 0 }), 100_000);
    const stalled = serviceTails(world({ stallShare: 0.01, stallFactor: 10 }), 100_000);
    stalled.forEach((t, i) => expect(t.ratio).toBeGreaterThan(calm[i]!.ratio));
    // Deterministic for a seed.
    expect(serviceTails(DEFAULT_CONFIG, 20_000)).toEqual(serviceTails(DEFAULT_CONFIG, 20_000));
  });
});

describe('floorTails', () => {
  it("is p50 and p99 of each model's requests' floors, nearest rank", () => {
    // 100 requests of embed with floors 1..100 ms, 10 of ocr at 50 ms, none of chat.
    const model = new Uint8Array(110);
    const floor = new Float32Array(110);
    for (let i = 0; i < 100; i++) floor[i] = 100 - i;
    for (let i = 100; i < 110; i++) {
      model[i] = 1;
      floor[i] = 50;
    }
    const [embed, ocr, chat] = floorTails({ requests: 110, model, floor }, DEFAULT_CONFIG);
    expect(embed).toEqual({ model: 'embed', p50: 50, p99: 99, ratio: 99 / 50 });
    expect(ocr).toEqual({ model: 'ocr', p50: 50, p99: 50, ratio: 1 });
    expect(chat!.model).toBe('chat');
    expect(chat!.ratio).toBeNaN();
  });
});
