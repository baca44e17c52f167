/**
 * Proof of location on the request path: receipts carry the answering
 * backend's verdict, restricted requests avoid a refuted backend, and a
 * dispatch's round trip is reported to the directory in the background only
 * (no Durable Object call between flushes). The backends are FAKES answering
 * in-process (global fetch stubbed); real ones are the integration tests'.
 */

import { env } from 'cloudflare:test';
import { decodeJwt } from 'jose';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { type ReceiptClaims } from '../../../shared/jwt.ts';
import { app } from '../../../workers/app.ts';
import { RTT_FLUSH_MS } from '../../../workers/directory/rtt-report.ts';
import { refreshSnapshot } from '../../../workers/directory/snapshot.ts';
import type { Env } from '../../../workers/env.ts';
import { admitProvider, attestedEmbedAnswer, BASE, envWith, heartbeatBody, keyFor, sendHeartbeat } from '../helpers.ts';

type Provider = Awaited<ReturnType<typeof admitProvider>>;
const providers = new Map<string, Provider>();

/** Fake backends: each checks the dispatch token like a real one and attests its answer; anything else (metadata aside) is 404. */
function stubBackends() {
  vi.spyOn(globalThis, 'fetch').mockImplementation(async (input: RequestInfo | URL, init?: RequestInit) => {
    const req = new Request(input, init);
    const url = new URL(req.url);
    if (req.method === 'GET' && url.pathname.endsWith('/v2/models/embed')) {
      return Response.json({
        name: 'embed',
        versions: ['1'],
        platform: 'onnxruntime_onnx',
        inputs: [{ name: 'input_ids', datatype: 'INT64', shape: [-1, -1] }],
        outputs: [{ name: 'embedding', datatype: 'FP32', shape: [-1, 2] }],
      });
    }
    if (!url.pathname.endsWith('/infer')) return new Response('not here', { status: 404 });
    const backendId = url.pathname.split('/')[1]!;
    return attestedEmbedAnswer(req, providers.get(backendId)!, backendId, { audience: backendId, units: { input: 3, output: 1 } });
  });
}

async function register(id: string, region: string) {
  const provider = await admitProvider(`prov-${id}`);
  providers.set(id, provider);
  expect((await sendHeartbeat(provider, heartbeatBody(id, region, { url: `http://fake-backend.test/${id}` }))).status).toBe(200);
}

/** Awaits everything handed to waitUntil, including what that work hands to waitUntil in turn. */
async function settle(background: Promise<unknown>[]): Promise<void> {
  for (let seen = -1; seen < background.length; ) {
    seen = background.length;
    await Promise.all(background);
  }
}

/** One inference, dispatched to a backend: `no-store` keeps embed's answer cache out of it (docs/api.md section 2.13). */
async function infer(e: Env, headers: Record<string, string>, background: Promise<unknown>[] = [], key?: string) {
  const consumer = key ?? (await keyFor('consumer', 'location-consumer'));
  const ctx = { waitUntil: (p: Promise<unknown>) => void background.push(p), passThroughOnException() {}, props: {} } as unknown as ExecutionContext;
  return app.fetch(
    new Request(`${BASE}/v2/models/embed/infer`, {
      method: 'POST',
      headers: { authorization: `Bearer ${consumer}`, 'cache-control': 'no-store', ...headers },
      body: JSON.stringify({ inputs: [{ name: 'input_ids', shape: [1, 3], datatype: 'INT64', data: [1, 2, 3] }] }),
    }),
    e,
    ctx,
  );
}

const receiptOf = (res: Response) => decodeJwt<ReceiptClaims>(res.headers.get('x-mesh-receipt')!);
const ROUND_TRIPS_PROBED = { minMs: 2, count: 5, probeMinMs: 2, probeCount: 5 };

beforeEach(stubBackends);
afterEach(() => vi.restoreAllMocks());

describe('receipts and routing', () => {
  it("carry the answering backend's location, and keep restricted requests off a refuted backend", async () => {
    await register('rcpt-sin', 'ap-southeast');
    const sin = env.REGION_DIRECTORY.getByName('ap-southeast');
    await sin.recordRtt([{ backend: 'rcpt-sin', pop: 'SIN', ...ROUND_TRIPS_PROBED }]);
    await refreshSnapshot(env);
    const pinned = { 'x-mesh-dev-colo': 'SIN', 'x-mesh-region': 'ap-southeast' };

    const verified = await infer(env, pinned);
    expect(verified.status, await verified.clone().text()).toBe(200);
    expect(receiptOf(verified)).toMatchObject({ backend: 'rcpt-sin', location: 'verified' });

    // Frankfurt reaches it in 3 ms: it is not in Singapore.
    await sin.recordRtt([{ backend: 'rcpt-sin', pop: 'FRA', minMs: 3, count: 5 }]);
    await refreshSnapshot(env);
    const refused = await infer(env, pinned);
    expect(refused.status).toBe(503);
    expect(await refused.json()).toMatchObject({ error: { code: 'no_capacity' } });
    // A key whose data must stay in ap-southeast: refused the same way.
    const resident = await keyFor('consumer', 'location-resident', { regions: ['ap-southeast'] });
    expect((await infer(env, { 'x-mesh-dev-colo': 'SIN' }, [], resident)).status).toBe(503);
    // Unrestricted, it still serves, and the receipt says what the mesh knows.
    const unpinned = await infer(env, { 'x-mesh-dev-colo': 'SIN' });
    expect(unpinned.status, await unpinned.clone().text()).toBe(200);
    expect(receiptOf(unpinned)).toMatchObject({ backend: 'rcpt-sin', location: 'refuted' });
  });
});

describe('round trips from dispatches', () => {
  it('are not reported from a simulated PoP unless LOCATION_SIMULATED_POPS is 1', async () => {
    await register('rtt-off', 'ap-northeast');
    await refreshSnapshot(env);
    const calls: string[] = [];
    const background: Promise<unknown>[] = [];
    const res = await infer(envWith({ SNAPSHOT_REFRESH_MS: '600000' }, calls), { 'x-mesh-dev-colo': 'NRT', 'x-mesh-region': 'ap-northeast' }, background);
    expect(res.status, await res.clone().text()).toBe(200);
    expect(receiptOf(res)).toMatchObject({ backend: 'rtt-off', location: 'unverified' });
    await settle(background);
    expect(calls.filter((c) => c.endsWith('.recordRtt'))).toEqual([]);
  });

  it('are reported in the background, at most every RTT_FLUSH_MS, never on the request path', async () => {
    await register('rtt-on', 'ap-south');
    await refreshSnapshot(env);
    const calls: string[] = [];
    const e = envWith({ SNAPSHOT_REFRESH_MS: '600000', LOCATION_SIMULATED_POPS: '1' }, calls);
    const from = { 'x-mesh-dev-colo': 'BOM', 'x-mesh-region': 'ap-south' };
    const rows = () =>
      env.REGION_DIRECTORY.getByName('ap-south')
        .backends()
        .then((list) => list.find((b) => b.id === 'rtt-on')?.location?.evidence);

    // The first round trip goes out at once (nothing was flushed yet), in waitUntil.
    const background: Promise<unknown>[] = [];
    expect((await infer(e, from, background)).status).toBe(200);
    await settle(background);
    expect(calls).toContain('RegionDirectory(ap-south).recordRtt');
    expect(await rows()).toMatchObject({ pop: 'BOM', samples: 1 });
    expect((await rows())!.probeSamples).toBeUndefined(); // a dispatch's, not a probe's

    // Within RTT_FLUSH_MS: no Durable Object call at all; the samples wait in the isolate.
    calls.length = 0;
    const started = Date.now();
    for (let i = 0; i < 10; i++) expect((await infer(e, from)).status).toBe(200);
    expect(Date.now() - started).toBeLessThan(RTT_FLUSH_MS);
    // The status page's counts go in the background too, on their own interval (STATUS_FLUSH_MS, 100 ms in these tests).
    expect(calls.filter((c) => !c.endsWith('.recordTraffic'))).toEqual([]);
    expect(await rows()).toMatchObject({ samples: 1 });

    // After it, the next request hands them to waitUntil, after its response: that came without waiting on the directory.
    await new Promise((r) => setTimeout(r, RTT_FLUSH_MS - (Date.now() - started) + 50));
    const later: Promise<unknown>[] = [];
    expect((await infer(e, from, later)).status).toBe(200);
    expect(calls).not.toContain('RegionDirectory(ap-south).recordRtt');
    await settle(later);
    expect(calls).toContain('RegionDirectory(ap-south).recordRtt');
    expect(await rows()).toMatchObject({ pop: 'BOM', samples: 12 });
  });
});
