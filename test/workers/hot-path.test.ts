/**
 * The per-request path performs no Durable Object call: once an isolate has
 * its snapshot, inference requests are routed, dispatched and receipted from
 * memory; directory reads and demand reports happen in the background, at
 * most every SNAPSHOT_REFRESH_MS / 2 s (the status page's counts too, every
 * STATUS_FLUSH_MS, 100 ms in these tests: left out of the count); an answer
 * from the PoP's cache calls none either. The backend here is a FAKE answering
 * in-process (global fetch stubbed): real backends are the integration tests'.
 */

import { afterEach, describe, expect, it, vi } from 'vitest';
import { app } from '../../workers/app.ts';
import { admitProvider, attestedEmbedAnswer, BASE, envWith, heartbeatBody, keyFor, sendHeartbeat } from './helpers.ts';

afterEach(() => vi.restoreAllMocks());

describe('the per-request path', () => {
  it('makes no Durable Object call once the snapshot is in memory', async () => {
    const provider = await admitProvider('prov-hot');
    expect((await sendHeartbeat(provider, heartbeatBody('hot-1', 'eu-west', { url: 'http://fake-backend.test' }))).status).toBe(200);

    // The fake backend: checks the dispatch token like a real one and attests its answer.
    vi.spyOn(globalThis, 'fetch').mockImplementation(async (input: RequestInfo | URL, init?: RequestInit) => {
      const req = new Request(input, init);
      // The model's metadata, which the edge fetches once and keeps for a minute.
      if (req.method === 'GET') {
        return Response.json({
          name: 'embed',
          versions: ['1'],
          platform: 'onnxruntime_onnx',
          inputs: [{ name: 'input_ids', datatype: 'INT64', shape: [-1, -1] }],
          outputs: [{ name: 'embedding', datatype: 'FP32', shape: [-1, 2] }],
        });
      }
      return attestedEmbedAnswer(req, provider, 'hot-1', { audience: 'hot-1', units: { input: 3, output: 1 } });
    });

    const calls: string[] = [];
    // Long enough that no background refresh is due during the test.
    const counted = envWith({ SNAPSHOT_REFRESH_MS: '600000' }, calls);
    const consumer = await keyFor('consumer', 'hot-consumer');
    const waitUntil: Promise<unknown>[] = [];
    const ctx = { waitUntil: (p: Promise<unknown>) => void waitUntil.push(p), passThroughOnException() {}, props: {} } as unknown as ExecutionContext;
    const infer = (headers: Record<string, string> = {}) =>
      app.fetch(
        new Request(`${BASE}/v2/models/embed/infer`, {
          method: 'POST',
          headers: { authorization: `Bearer ${consumer}`, 'x-mesh-dev-colo': 'FRA', ...headers },
          body: JSON.stringify({ inputs: [{ name: 'input_ids', shape: [1, 3], datatype: 'INT64', data: [1, 2, 3] }] }),
        }),
        counted,
        ctx,
      );

    // Warm-up: the snapshot may be fetched, the first demand report may be sent.
    const first = await infer();
    expect(first.status, await first.clone().text()).toBe(200);
    await Promise.all(waitUntil);
    calls.length = 0;

    // Computed answers (embed's answers are cached: no-store asks for a computed one each time).
    for (let i = 0; i < 20; i++) {
      const res = await infer({ 'cache-control': 'no-store' });
      expect(res.status).toBe(200);
      expect(res.headers.get('x-mesh-receipt')).toBeTruthy();
      expect(res.headers.get('x-mesh-backend')).toBe('hot-1');
    }
    // And answers from the PoP's cache, which the warm-up's answer went into.
    for (let i = 0; i < 5; i++) {
      const res = await infer();
      expect(res.status).toBe(200);
      expect(res.headers.get('x-mesh-cache')).toBe('hit');
      expect(res.headers.get('x-mesh-receipt')).toBeTruthy();
    }
    expect(calls.filter((c) => !c.endsWith('.recordTraffic'))).toEqual([]);
  });
});
