/**
 * Keys with accounts on the request path (docs/api.md section 2.14), through
 * the whole app with a FAKE backend answering in-process (global fetch
 * stubbed; real backends are the integration test's): 429 `rate_limited`,
 * 429 `concurrency_limited` and 402 `budget_exhausted` with their headers,
 * spending that reconciles with the receipts, no call to the key's object
 * per request once its lease is held (none at all for a key without
 * settings), 503 when the object cannot be reached, and CORS.
 */

import { createExecutionContext, env, waitOnExecutionContext } from 'cloudflare:test';
import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { decodePayload, type ReceiptClaims } from '../../../shared/jwt.ts';
import { app } from '../../../workers/app.ts';
import type { Env } from '../../../workers/env.ts';
import { admitProvider, attestedEmbedAnswer, BASE, call, heartbeatBody, keyFor, sendHeartbeat, wrapStubs } from '../helpers.ts';

const BACKEND = 'acct-fake-1';
let provider: Awaited<ReturnType<typeof admitProvider>>;
/** While set, the fake backend holds each answer until it resolves. */
let gate: Promise<void> | undefined;

beforeAll(async () => {
  provider = await admitProvider('prov-acct');
  expect((await sendHeartbeat(provider, heartbeatBody(BACKEND, 'eu-west', { url: `http://${BACKEND}.test` }))).status).toBe(200);
});

afterEach(() => {
  vi.restoreAllMocks();
  gate = undefined;
});

/** The fake backend: metadata, and an attested answer metered as the mesh meters it. */
async function fakeBackend() {
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
    if (gate) await gate;
    return attestedEmbedAnswer(req, provider, BACKEND);
  });
}

let texts = 0;
/** A request body no earlier request sent: never an answer-cache hit. */
const body = () => JSON.stringify({ inputs: [{ name: 'text', shape: [1], datatype: 'BYTES', data: [`admission text ${++texts} ${crypto.randomUUID()}`] }] });

function infer(key: string, headers: Record<string, string> = {}) {
  return call('/v2/models/embed/infer', { method: 'POST', token: key, colo: 'FRA', headers: { 'x-mesh-verify': 'none', ...headers }, body: body() });
}

async function issue(settings: Record<string, unknown>): Promise<{ key: string; jti: string }> {
  const res = await call('/admin/keys', { method: 'POST', token: await keyFor('admin'), body: JSON.stringify({ sub: `acct-${crypto.randomUUID()}`, ...settings }) });
  expect(res.status).toBe(201);
  return (await res.json()) as { key: string; jti: string };
}

async function accountOf(jti: string) {
  return (await (await call(`/admin/keys/${jti}`, { token: await keyFor('admin') })).json()) as {
    usage: { window: { requests: number }; concurrent: number; budget: { spentMicroUsd: number; heldMicroUsd: number } | null };
  };
}

async function errorOf(res: Response) {
  return ((await res.json()) as { error: { code: string; message: string } }).error;
}

describe('limits on the request path', () => {
  it('answers 429 rate_limited with retry-after once the minute is used', async () => {
    await fakeBackend();
    const { key } = await issue({ limits: { requestsPerMinute: 3 } });
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++) {
      const res = await infer(key);
      statuses.push(res.status);
      if (res.status === 429) {
        expect(Number(res.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
        expect(Number(res.headers.get('retry-after'))).toBeLessThanOrEqual(60);
        const error = await errorOf(res);
        expect(error.code).toBe('rate_limited');
        expect(error.message).toContain('3 requests a minute');
      }
    }
    expect(statuses).toEqual([200, 200, 200, 429, 429]);
  });

  it('answers 429 concurrency_limited while the key has its concurrent requests in flight', async () => {
    await fakeBackend();
    const { key } = await issue({ limits: { concurrent: 1 } });
    expect((await infer(key)).status).toBe(200);
    let open!: () => void;
    gate = new Promise((resolve) => (open = resolve));
    const first = infer(key);
    await new Promise((r) => setTimeout(r, 50));
    const others = await Promise.all([infer(key), infer(key)]);
    for (const res of others) {
      expect(res.status).toBe(429);
      expect(res.headers.get('retry-after')).toBe('1');
      expect((await errorOf(res)).code).toBe('concurrency_limited');
    }
    open();
    expect((await first).status).toBe(200);
    expect((await infer(key)).status).toBe(200);
  });

  it('answers 402 budget_exhausted once the budget cannot cover a request, and its spending equals its receipts', async () => {
    await fakeBackend();
    const { key, jti } = await issue({ budget: { microUsd: 3, period: 'day' } });
    const amounts: number[] = [];
    let refused: Response | undefined;
    for (let i = 0; i < 6 && !refused; i++) {
      const res = await infer(key);
      if (res.status === 200) amounts.push(decodePayload<ReceiptClaims>(res.headers.get('x-mesh-receipt')!)!.amount);
      else refused = res;
    }
    expect(refused?.status).toBe(402);
    const error = await errorOf(refused!);
    expect(error.code).toBe('budget_exhausted');
    expect(error.message).toMatch(/budget of 3 µUSD for each UTC day .* renews at \d{4}-\d\d-\d\dT00:00:00\.000Z/);
    const spent = amounts.reduce((a, b) => a + b, 0);
    expect(spent).toBeGreaterThan(0);
    expect(spent).toBeLessThanOrEqual(3);
    // Reported in the background a moment after the requests end.
    let budget = (await accountOf(jti)).usage.budget!;
    for (let i = 0; i < 40 && budget.spentMicroUsd !== spent; i++) {
      await new Promise((r) => setTimeout(r, 100));
      budget = (await accountOf(jti)).usage.budget!;
    }
    expect(budget.spentMicroUsd).toBe(spent);
  });

  it('admits a request refused by a backend once, and charges nothing without a receipt', async () => {
    vi.spyOn(globalThis, 'fetch').mockImplementation(async (input: RequestInfo | URL, init?: RequestInit) =>
      new Request(input, init).method === 'GET'
        ? Response.json({ name: 'embed', versions: ['1'], platform: 'onnxruntime_onnx', inputs: [{ name: 'text', datatype: 'BYTES', shape: [-1] }], outputs: [{ name: 'embedding', datatype: 'FP32', shape: [-1, 2] }] })
        : Response.json({ error: { code: 'invalid_request', message: 'no' } }, { status: 400 }),
    );
    const { key, jti } = await issue({ budget: { microUsd: 1_000, period: 'total' }, limits: { requestsPerMinute: 100 } });
    expect((await infer(key)).status).toBe(400);
    await new Promise((r) => setTimeout(r, 1500));
    expect((await accountOf(jti)).usage.budget).toMatchObject({ spentMicroUsd: 0 });
  });
});

describe('the cost of an account', () => {
  /** `env` with every KeyAccount call counted, and a lease long enough that no renewal is due. */
  function counted(calls: string[]): Env {
    return {
      ...env,
      KEY_LEASE_SECONDS: '50',
      KEY_ACCOUNT: wrapStubs(env.KEY_ACCOUNT as unknown as DurableObjectNamespace, (_name, method, _args, invoke) => {
        calls.push(method);
        return invoke();
      }),
    } as unknown as Env;
  }

  async function inferWith(e: Env, key: string, waitUntil: Promise<unknown>[]) {
    const ctx = { waitUntil: (p: Promise<unknown>) => void waitUntil.push(p), passThroughOnException() {}, props: {} } as unknown as ExecutionContext;
    return app.fetch(
      new Request(`${BASE}/v2/models/embed/infer`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'x-mesh-dev-colo': 'FRA', 'x-mesh-verify': 'none' }, body: body() }),
      e,
      ctx,
    );
  }

  it('is no call to the key object per request once the lease is held, and none at all without settings', async () => {
    await fakeBackend();
    const calls: string[] = [];
    const e = counted(calls);
    const waitUntil: Promise<unknown>[] = [];
    const { key } = await issue({ limits: { requestsPerMinute: 1000, concurrent: 10 } });
    // The key's first request in this isolate waits for its lease: one call.
    expect((await inferWith(e, key, waitUntil)).status).toBe(200);
    expect(calls).toEqual(['lease']);
    calls.length = 0;
    for (let i = 0; i < 20; i++) expect((await inferWith(e, key, waitUntil)).status).toBe(200);
    expect(calls).toEqual([]);

    const plain = await issue({});
    for (let i = 0; i < 5; i++) expect((await inferWith(e, plain.key, waitUntil)).status).toBe(200);
    expect(calls).toEqual([]);
  });

  it('fails closed with 503 not_ready when a key account cannot be reached and no lease is held', async () => {
    const { key } = await issue({ limits: { requestsPerMinute: 5 } });
    const broken = {
      ...env,
      KEY_ACCOUNT: wrapStubs(env.KEY_ACCOUNT as unknown as DurableObjectNamespace, () => Promise.reject(new Error('unreachable (test)'))),
    } as unknown as Env;
    const ctx = createExecutionContext();
    const res = await app.fetch(new Request(`${BASE}/v1/models`, { headers: { authorization: `Bearer ${key}` } }), broken, ctx);
    await waitOnExecutionContext(ctx);
    expect(res.status).toBe(503);
    expect(res.headers.get('retry-after')).toBe('1');
    expect((await errorOf(res)).code).toBe('not_ready');
  });

  it('applies settings given after issue to a key without the claim, in the isolate that took the change at once', async () => {
    await fakeBackend();
    const { key, jti } = await issue({});
    expect((await infer(key)).status).toBe(200);
    const res = await call(`/admin/keys/${jti}`, { method: 'PATCH', token: await keyFor('admin'), body: JSON.stringify({ limits: { requestsPerMinute: 1 } }) });
    expect(res.status).toBe(200);
    expect([(await infer(key)).status, (await infer(key)).status]).toEqual([200, 429]);
  });
});

describe('CORS', () => {
  const APP = 'https://app.example.com';

  it('answers a preflight for any origin on the consumer routes, and none elsewhere', async () => {
    const res = await call('/v2/models/embed/infer', {
      method: 'OPTIONS',
      headers: { origin: 'https://anyone.example', 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type' },
    });
    expect(res.status).toBe(204);
    expect(res.headers.get('access-control-allow-origin')).toBe('https://anyone.example');
    expect(res.headers.get('access-control-allow-methods')).toBe('GET,POST');
    expect(res.headers.get('access-control-allow-headers')).toContain('authorization');
    expect(res.headers.get('access-control-max-age')).toBe('600');
    expect(res.headers.get('x-request-id')).toBeTruthy();
    for (const path of ['/admin/keys', '/v2/health/live']) {
      const other = await call(path, { method: 'OPTIONS', headers: { origin: APP, 'access-control-request-method': 'POST' } });
      expect(other.status).not.toBe(204);
      expect(other.headers.get('access-control-allow-origin')).toBeNull();
    }
  });

  it('lets an allowed origin read answers and errors, refuses another with 403, and says nothing for a key without origins', async () => {
    await fakeBackend();
    const { key } = await issue({ cors: { origins: [APP] } });
    const ok = await infer(key, { origin: APP });
    expect(ok.status).toBe(200);
    expect(ok.headers.get('access-control-allow-origin')).toBe(APP);
    expect(ok.headers.get('vary')).toContain('origin');
    const exposed = ok.headers.get('access-control-expose-headers')!;
    for (const h of ['retry-after', 'x-request-id', 'x-mesh-receipt', 'x-mesh-region', 'x-mesh-backend', 'x-mesh-cache']) expect(exposed).toContain(h);

    const bad = await call('/v2/models/embed/infer', { method: 'POST', token: key, colo: 'FRA', headers: { origin: APP }, body: '{"inputs":' });
    expect(bad.status).toBe(400);
    expect(bad.headers.get('access-control-allow-origin')).toBe(APP);
    const models = await call('/v1/models', { token: key, headers: { origin: APP } });
    expect(models.status).toBe(200);
    expect(models.headers.get('access-control-allow-origin')).toBe(APP);

    const other = await infer(key, { origin: 'https://evil.example' });
    expect(other.status).toBe(403);
    expect(other.headers.get('access-control-allow-origin')).toBeNull();
    expect((await errorOf(other)).code).toBe('forbidden');
    // Without an Origin (a server) the key works as any other.
    expect((await infer(key)).headers.get('access-control-allow-origin')).toBeNull();

    const plain = await issue({});
    const res = await infer(plain.key, { origin: APP });
    expect(res.status).toBe(200);
    expect(res.headers.get('access-control-allow-origin')).toBeNull();
    const any = await issue({ cors: { origins: ['*'] } });
    expect((await infer(any.key, { origin: 'https://whoever.example' })).headers.get('access-control-allow-origin')).toBe('https://whoever.example');
  });
});
