/** Demand per isolate (directory/demand.ts) and per region (RegionDirectory): counted, sent in the background, dated by the last request counted. */

import { env } from 'cloudflare:test';
import { describe, expect, it } from 'vitest';
import { flushDemand, noteDemand } from '../../../workers/directory/demand.ts';
import type { Env } from '../../../workers/env.ts';
import { popLocation } from '../../../workers/geo/pops.ts';

/** An env whose directories record what they are sent, and a context that collects background work. */
function fakes() {
  const sent: { region: string; counts: Record<string, number>; lastAt: Record<string, number> | undefined }[] = [];
  const fake = {
    REGION_DIRECTORY: {
      getByName: (region: string) => ({
        recordDemand: async (counts: Record<string, number>, lastAt?: Record<string, number>) => void sent.push({ region, counts, lastAt }),
      }),
    },
  } as unknown as Env;
  const background: Promise<unknown>[] = [];
  return { env: fake, sent, background, ctx: { waitUntil: (p: Promise<unknown>) => void background.push(p) } };
}

const fra = { code: 'FRA', ...popLocation('FRA')! };
const HOUR = 3_600_000;

describe('demand per isolate', () => {
  it("sends counts held back by a recent flush with the isolate's next request, dated by the last request they count", async () => {
    const { env: e, sent, background, ctx } = fakes();
    const start = Date.now() + 10 * HOUR; // after any flush another test of this isolate made
    noteDemand(fra, 'demand-a', start);
    flushDemand(e, ctx, start);
    await Promise.all(background);
    expect(sent).toEqual([{ region: 'eu-west', counts: { 'demand-a': 1 }, lastAt: { 'demand-a': start } }]);
    // Within the flush interval: held back until the next request, which comes an hour later.
    noteDemand(fra, 'demand-b', start + 1);
    noteDemand(fra, 'demand-b', start + 5);
    flushDemand(e, ctx, start + 5);
    expect(sent).toHaveLength(1);
    noteDemand(fra, 'demand-c', start + HOUR);
    flushDemand(e, ctx, start + HOUR);
    await Promise.all(background);
    expect(sent[1]).toEqual({ region: 'eu-west', counts: { 'demand-b': 2, 'demand-c': 1 }, lastAt: { 'demand-b': start + 5, 'demand-c': start + HOUR } });
  });
});

describe('demand per region', () => {
  it('dates a count by its last request, never later than its arrival, and never moves a later date back', async () => {
    const stub = env.REGION_DIRECTORY.getByName('sa-east');
    const now = Date.now();
    await stub.recordDemand({ 'late-model': 2 }, { 'late-model': now - HOUR });
    const late = (await stub.demand()).find((d) => d.model === 'late-model')!;
    expect(late).toMatchObject({ requests: 2, lastRequest: now - HOUR });
    // A date in the future counts as the arrival; an older report does not move the date back.
    await stub.recordDemand({ 'late-model': 1 }, { 'late-model': now + 10 * HOUR });
    const arrived = (await stub.demand()).find((d) => d.model === 'late-model')!;
    expect(arrived.requests).toBe(3);
    expect(arrived.lastRequest).toBeGreaterThanOrEqual(now);
    expect(arrived.lastRequest).toBeLessThan(now + HOUR);
    await stub.recordDemand({ 'late-model': 1 }, { 'late-model': now - 2 * HOUR });
    expect((await stub.demand()).find((d) => d.model === 'late-model')!.lastRequest).toBe(arrived.lastRequest);
    // Without dates (an older isolate's report), the arrival.
    await stub.recordDemand({ 'undated-model': 1 });
    expect((await stub.demand()).find((d) => d.model === 'undated-model')!.lastRequest).toBeGreaterThanOrEqual(now);
  });
});
