/**
 * Every request observed (docs/api.md section 2.12), in workerd: an
 * `x-request-id` on every response, errors included, never the client's;
 * one JSON log line per request with what the request path learnt (key id,
 * model, PoP, who answered, attempts and the backends tried, cache, receipt,
 * error code) and never a key, token or input; the same request id sent to
 * the backend; one data
 * point per request in the `MESH_ANALYTICS` dataset (Miniflare's local
 * binding, its `writeDataPoint` observed), and none of it failing a request
 * when the dataset is missing or throws. The backend is a FAKE answering
 * in-process (global fetch stubbed), as in hot-path.test.ts.
 */

import { env } from 'cloudflare:workers';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { decodePayload, type KeyClaims, type ReceiptClaims } from '../../shared/jwt.ts';
import type { Env } from '../../workers/env.ts';
import { dataPoint, type RequestRecord } from '../../workers/request-log.ts';
import { admitProvider, attestedEmbedAnswer, call, callWith, heartbeatBody, keyFor, sendHeartbeat } from './helpers.ts';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
/** Text of the consumer's input: it must never reach a log line. */
const SECRET_INPUT = 'the consumer input never logged';

afterEach(() => vi.restoreAllMocks());

/** Every line the edge writes to the console while `run` runs, each as printed. */
async function captured<T>(run: () => Promise<T>): Promise<{ result: T; lines: string[]; errors: string[] }> {
  const lines: string[] = [];
  const errors: string[] = [];
  const spies = [
    vi.spyOn(console, 'log').mockImplementation((...args: unknown[]) => void lines.push(args.map(String).join(' '))),
    vi.spyOn(console, 'error').mockImplementation((...args: unknown[]) => void errors.push(args.map(String).join(' '))),
    vi.spyOn(console, 'warn').mockImplementation(() => undefined),
  ];
  try {
    return { result: await run(), lines, errors };
  } finally {
    for (const spy of spies) spy.mockRestore();
  }
}

/** The request lines among `lines`, parsed. */
function requestLines(lines: string[]): RequestRecord[] {
  return lines.filter((l) => l.startsWith('{') && l.includes('"msg":"request"')).map((l) => JSON.parse(l) as RequestRecord);
}

/** The data points the real (Miniflare) dataset binding receives while `run` runs. */
async function points<T>(run: () => Promise<T>): Promise<{ result: T; written: AnalyticsEngineDataPoint[] }> {
  const written: AnalyticsEngineDataPoint[] = [];
  const spy = vi.spyOn(env.MESH_ANALYTICS, 'writeDataPoint').mockImplementation((p) => void written.push(p!));
  try {
    return { result: await run(), written };
  } finally {
    spy.mockRestore();
  }
}

describe('request ids', () => {
  it('sends a fresh x-request-id on every response, errors included, and ignores the client’s', async () => {
    const billing = await keyFor('billing');
    const responses = [
      await call('/v2/health/live'),
      await call('/no/such/route'),
      await call('/v1/settlement/batches'),
      await call('/v1/settlement/batches', { token: 'not-a-key' }),
      await call('/v1/settlement/batches?limit=x', { token: billing }),
      await call('/v1/settlement/batches', { token: billing, headers: { 'x-request-id': 'chosen-by-the-client' } }),
    ];
    expect(responses.map((r) => r.status)).toEqual([200, 404, 401, 401, 400, 200]);
    const ids = responses.map((r) => r.headers.get('x-request-id'));
    for (const id of ids) expect(id).toMatch(UUID);
    expect(new Set(ids).size).toBe(ids.length);
  });
});

describe('the request log line', () => {
  it('is one JSON line per request, with the key id and the route, never the key', async () => {
    const billing = await keyFor('billing', 'billing-log');
    const { result: res, lines } = await captured(() => call('/v1/settlement/batches?limit=1', { token: billing }));
    expect(res.status).toBe(200);
    const records = requestLines(lines);
    expect(records).toHaveLength(1);
    const keyClaims = decodePayload<KeyClaims>(billing)!;
    expect(records[0]).toMatchObject({
      level: 'info',
      msg: 'request',
      request_id: res.headers.get('x-request-id'),
      method: 'GET',
      route: '/v1/settlement/batches',
      status: 200,
      key_id: keyClaims.jti,
      sub: 'billing-log',
      pop: 'unknown',
    });
    expect(typeof records[0]!.latency_ms).toBe('number');
    for (const line of lines) expect(line).not.toContain(billing.split('.')[2]);
  });

  it('names the error code of an error answer, and a route nobody matched', async () => {
    const { result, lines } = await captured(async () => [await call('/v1/settlement/batches'), await call('/v2/nothing', { colo: 'SIN' })]);
    expect(result.map((r) => r.status)).toEqual([401, 404]);
    const [unauthorized, missing] = requestLines(lines);
    expect(unauthorized).toMatchObject({ status: 401, error: 'unauthorized', route: '/v1/settlement/batches' });
    expect(unauthorized!.key_id).toBeUndefined();
    expect(missing).toMatchObject({ status: 404, error: 'not_found', pop: 'SIN' });
    expect(missing!.route).toBeUndefined();
  });

  it('names the route that answered, or the middleware that refused', async () => {
    const admin = await keyFor('admin');
    const { result, lines } = await captured(async () => [
      // Its handler comes before the admin routes' `/admin/*` middleware in the app.
      await call('/admin/settlement/close', { method: 'POST', token: admin }),
      await call('/admin/providers', { token: admin }),
      await call('/admin/providers'),
      await call('/admin/nothing-here', { token: admin }),
    ]);
    expect(result.map((r) => r.status)).toEqual([200, 200, 401, 404]);
    expect(requestLines(lines).map((l) => [l.route, l.error])).toEqual([
      ['/admin/settlement/close', undefined],
      ['/admin/providers', undefined],
      ['/admin/*', 'unauthorized'],
      ['/admin/*', 'not_found'],
    ]);
  });
});

describe('the data point', () => {
  it('stays within Analytics Engine limits whatever the strings', () => {
    const base: RequestRecord = { level: 'info', msg: 'request', request_id: crypto.randomUUID(), method: 'POST', status: 404, latency_ms: 1, pop: 'FRA' };
    for (const model of ['m'.repeat(500), '模型'.repeat(200), '😀'.repeat(200)]) {
      const point = dataPoint({ ...base, model, route: '/v2/models/:model/infer' });
      expect(new TextEncoder().encode(point.indexes![0] as string).byteLength).toBeLessThanOrEqual(96);
      for (const blob of point.blobs!) expect((blob as string).length).toBeLessThanOrEqual(256);
      expect(point.blobs).toHaveLength(12);
      expect(point.doubles).toEqual([404, 1, 0]);
    }
    expect(dataPoint(base).indexes).toEqual(['POST']);
  });
});

describe('an inference, observed', () => {
  const providers = new Map<string, Awaited<ReturnType<typeof admitProvider>>>();

  /**
   * Fake backends (`http://<id>.test`, each its own provider): metadata, and
   * an attested answer, or `status` for every inference. Returns the
   * inference requests they receive.
   */
  async function fakeBackend(id: string, status = 200) {
    if (!providers.has(id)) {
      const admitted = await admitProvider(`prov-${id}`);
      providers.set(id, admitted);
      expect((await sendHeartbeat(admitted, heartbeatBody(id, 'eu-west', { url: `http://${id}.test` }))).status).toBe(200);
    }
    const seen: Request[] = [];
    vi.spyOn(globalThis, 'fetch').mockImplementation(async (input: RequestInfo | URL, init?: RequestInit) => {
      const req = new Request(input, init);
      if (req.method === 'GET') {
        return Response.json({
          name: 'embed',
          versions: ['1'],
          platform: 'onnxruntime_onnx',
          inputs: [{ name: 'text', datatype: 'BYTES', shape: [-1] }],
          outputs: [{ name: 'embedding', datatype: 'FP32', shape: [-1, 2] }],
        });
      }
      seen.push(req);
      const backendId = new URL(req.url).hostname.replace(/\.test$/, '');
      const provider = providers.get(backendId)!;
      if (status !== 200) return Response.json({ error: { code: 'internal', message: 'fake failure' } }, { status });
      return attestedEmbedAnswer(req, provider, backendId);
    });
    return seen;
  }

  const inferBody = JSON.stringify({ inputs: [{ name: 'text', shape: [1], datatype: 'BYTES', data: [SECRET_INPUT] }] });

  it('logs who answered and the receipt, sends the request id to the backend, and writes one data point', async () => {
    const seen = await fakeBackend('obs-ok');
    const consumer = await keyFor('consumer', 'obs-consumer');
    const infer = () => call('/v2/models/embed/infer', { method: 'POST', token: consumer, colo: 'FRA', headers: { 'x-mesh-verify': 'none' }, body: inferBody });
    const { result, written } = await points(() => captured(infer));
    const { result: res, lines } = result;
    expect(res.status, await res.clone().text()).toBe(200);
    const requestId = res.headers.get('x-request-id')!;
    expect(requestId).toMatch(UUID);
    expect(seen.at(-1)!.headers.get('x-request-id')).toBe(requestId);

    const receipt = decodePayload<ReceiptClaims>(res.headers.get('x-mesh-receipt')!)!;
    const [record, ...more] = requestLines(lines);
    expect(more).toEqual([]);
    expect(record).toEqual({
      level: 'info',
      msg: 'request',
      request_id: requestId,
      method: 'POST',
      route: '/v2/models/:model/infer',
      status: 200,
      latency_ms: record!.latency_ms,
      pop: 'FRA',
      key_id: decodePayload<KeyClaims>(consumer)!.jti,
      sub: 'obs-consumer',
      model: 'embed',
      region: 'eu-west',
      backend: 'obs-ok',
      provider: 'prov-obs-ok',
      attempts: 1,
      tried: ['obs-ok'],
      cache: 'miss',
      receipt: receipt.jti,
    });
    for (const line of lines) {
      expect(line).not.toContain(SECRET_INPUT);
      expect(line).not.toContain(consumer.split('.')[2]);
      expect(line).not.toContain(res.headers.get('x-mesh-receipt')!.split('.')[2]);
    }

    // The data point, in the documented layout.
    expect(written).toHaveLength(1);
    expect(written[0]).toEqual({
      indexes: ['embed'],
      blobs: [
        'POST /v2/models/:model/infer',
        'embed',
        'FRA',
        'eu-west',
        'obs-ok',
        'prov-obs-ok',
        '',
        'miss',
        'obs-consumer',
        record!.key_id,
        requestId,
        receipt.jti,
      ],
      doubles: [200, record!.latency_ms, 1],
    });
    expect(written[0]).toEqual(dataPoint(record!));
  });

  it('answers as usual when the dataset throws or is not bound', async () => {
    await fakeBackend('obs-nodata');
    const consumer = await keyFor('consumer');
    const throwing = { writeDataPoint: () => { throw new Error('dataset down'); } };
    for (const dataset of [throwing, undefined]) {
      const e = { ...env, MESH_ANALYTICS: dataset } as unknown as Env;
      const { result: res } = await captured(() =>
        callWith(e, '/v2/models/embed/infer', { method: 'POST', token: consumer, headers: { 'x-mesh-dev-colo': 'FRA', 'x-mesh-verify': 'none' }, body: inferBody }),
      );
      expect(res.status, await res.clone().text()).toBe(200);
      expect(res.headers.get('x-request-id')).toMatch(UUID);
      expect(res.headers.get('x-mesh-receipt')).toBeTruthy();
    }
  });

  it('logs a failed inference at error level, with its code and every attempt', async () => {
    const seen = await fakeBackend('obs-fail', 500);
    const consumer = await keyFor('consumer');
    // no-store: the answer the tests above got is in embed's answer cache (docs/api.md section 2.13); this one must reach the backend.
    const headers = { 'x-mesh-verify': 'none', 'cache-control': 'no-store' };
    const { result, written } = await points(() =>
      captured(() => call('/v2/models/embed/infer', { method: 'POST', token: consumer, colo: 'FRA', headers, body: inferBody })),
    );
    const { result: res, lines, errors } = result;
    expect(res.status).toBeGreaterThanOrEqual(500);
    const { error } = (await res.json()) as { error: { code: string } };
    expect(requestLines(lines)).toEqual([]);
    const [record] = requestLines(errors);
    expect(record).toMatchObject({ level: 'error', status: res.status, error: error.code, model: 'embed', pop: 'FRA', attempts: seen.length });
    expect(seen.length).toBeGreaterThanOrEqual(1);
    // Every backend called (the fake answers for all of them), named in the order they were called.
    expect(record!.tried).toEqual(seen.map((r) => new URL(r.url).hostname.replace(/\.test$/, '')));
    expect(record!.receipt).toBeUndefined();
    expect(written).toHaveLength(1);
    expect(written[0]!.doubles).toEqual([res.status, record!.latency_ms, seen.length]);
    expect(written[0]!.blobs![6]).toBe(error.code);
  });

  it('names both backends of a redundant pair, in the order they were sent to', async () => {
    await fakeBackend('obs-pair-a');
    const seen = await fakeBackend('obs-pair-b');
    const consumer = await keyFor('consumer');
    const { result: res, lines } = await captured(() =>
      call('/v2/models/embed/infer', { method: 'POST', token: consumer, colo: 'FRA', headers: { 'x-mesh-verify': 'redundant' }, body: inferBody }),
    );
    expect(res.status, await res.clone().text()).toBe(200);
    const [record] = requestLines(lines);
    const called = seen.map((r) => new URL(r.url).hostname.replace(/\.test$/, ''));
    expect(called).toHaveLength(2);
    expect(record).toMatchObject({ attempts: 2, tried: called });
    expect(called).toContain(record!.backend);
  });
});
