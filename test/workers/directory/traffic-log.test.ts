/** The RegionDirectory's side of the status page: recent traffic from isolates' reports, and departed backends kept to be shown as down. */

import { env, runDurableObjectAlarm } from 'cloudflare:test';
import { describe, expect, it } from 'vitest';
import { DEPARTED_KEEP_MS } from '../../../workers/directory/RegionDirectory.ts';
import { TRAFFIC_BUCKET_MS } from '../../../workers/directory/traffic-log.ts';
import { bucketOf } from '../../../workers/status/latency-histogram.ts';
import { heartbeatBody, nextSeq } from '../helpers.ts';

const REGION = 'af-south';
const directory = () => env.REGION_DIRECTORY.getByName(REGION);
const token = () => ({ seq: nextSeq(), expiresAt: Date.now() + 60_000 });
const good = (over: Record<string, unknown> = {}) => ({ pop: 'JNB', region: REGION, provider: 'p1', requests: 2, errors: 1, hist: { [bucketOf(20)]: 2 }, ...over });

describe('traffic in a region directory', () => {
  it('sums reports per (PoP, region, provider) over the window', async () => {
    await directory().recordTraffic([good(), good({ requests: 1, errors: 0, hist: { [bucketOf(300)]: 1 } }), good({ provider: 'p2' })]);
    const { traffic } = await directory().status(60_000);
    expect(traffic.since).toBeLessThanOrEqual(Date.now() - 60_000);
    expect(traffic.since).toBeGreaterThan(Date.now() - 60_000 - TRAFFIC_BUCKET_MS - 1000);
    const p1 = traffic.cells.find((c) => c.provider === 'p1');
    expect(p1).toEqual({ pop: 'JNB', region: REGION, provider: 'p1', requests: 3, errors: 1, hist: { [bucketOf(20)]: 2, [bucketOf(300)]: 1 } });
    expect(traffic.cells.find((c) => c.provider === 'p2')!.requests).toBe(2);
  });

  it('ignores malformed cells and reports that are not lists', async () => {
    const region = 'sa-east';
    const d = env.REGION_DIRECTORY.getByName(region);
    const ok = good({ region, pop: 'GRU' });
    await d.recordTraffic({ not: 'a list' });
    await d.recordTraffic([
      good({ region, pop: 'XXX' }), // not a PoP
      good({ region: 'mars', pop: 'GRU' }),
      good({ region, pop: 'GRU', provider: '../etc' }),
      good({ region, pop: 'GRU', requests: 0 }),
      good({ region, pop: 'GRU', errors: 3 }), // more errors than requests
      good({ region, pop: 'GRU', hist: { [bucketOf(20)]: 3 } }), // more latencies than requests
      good({ region, pop: 'GRU', hist: { 999: 2 } }),
      null,
      ok,
    ]);
    const { traffic } = await d.status(60_000);
    expect(traffic.cells).toEqual([{ ...ok, pop: 'GRU' }]);
  });
});

describe('departed backends', () => {
  it('are kept after they expire, never routed to, and shown by status() until DEPARTED_KEEP_MS', async () => {
    const region = 'ap-south';
    const d = env.REGION_DIRECTORY.getByName(region);
    expect(await d.heartbeat('p-dep', {}, heartbeatBody('dep-1', region), token(), 40)).toMatchObject({ ok: true });
    expect(await d.heartbeat('p-dep', {}, heartbeatBody('dep-2', region), token(), 60_000)).toMatchObject({ ok: true });
    await new Promise((r) => setTimeout(r, 60));
    await runDurableObjectAlarm(d);
    expect((await d.backends()).map((b) => b.id)).toEqual(['dep-2']);
    const status = await d.status(60_000);
    expect(status.backends.map((b) => b.id)).toEqual(['dep-2']);
    expect(status.departed.map((b) => b.id)).toEqual(['dep-1']);
    expect(status.departed[0]).not.toHaveProperty('providerKey');
    // The next alarm is the live backend's expiry; the departed one is dropped DEPARTED_KEEP_MS after its own.
    const departedAt = status.departed[0]!.expiresAt;
    expect(DEPARTED_KEEP_MS).toBeGreaterThan(60_000);
    // A heartbeat brings it back as live, and it is no longer departed.
    expect(await d.heartbeat('p-dep', {}, heartbeatBody('dep-1', region), token(), 60_000)).toMatchObject({ ok: true, created: true });
    expect((await d.status(60_000)).departed).toEqual([]);
    expect(departedAt).toBeLessThan(Date.now());
  });

  it('go with their provider when the operator removes it', async () => {
    const region = 'ap-northeast';
    const d = env.REGION_DIRECTORY.getByName(region);
    expect(await d.heartbeat('p-rm', {}, heartbeatBody('rm-1', region), token(), 30)).toMatchObject({ ok: true });
    await new Promise((r) => setTimeout(r, 50));
    expect((await d.status(60_000)).departed.map((b) => b.id)).toEqual(['rm-1']);
    await d.removeProvider('p-rm', Date.now() + 1000);
    expect((await d.status(60_000)).departed).toEqual([]);
  });
});
