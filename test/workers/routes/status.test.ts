/** `GET /v1/mesh/status` in workerd: who may read it, what each viewer sees, traffic from real requests, settlement batches. */

import { env } from 'cloudflare:workers';
import { describe, expect, it } from 'vitest';
import { REGIONS } from '../../../shared/regions.ts';
import { app } from '../../../workers/app.ts';
import { INFERENCE_ROUTES } from '../../../workers/request-log.ts';
import { signReceipt } from '../../../workers/inference/receipts.ts';
import { signingKeys } from '../../../workers/keys.ts';
import { ledgerShard, shardOfReceipt } from '../../../workers/settlement/ledger.ts';
import type { MeshStatus } from '../../../workers/status/view.ts';
import { receiptClaims } from '../../helpers/receipts.ts';
import { STATUS_CACHE_MS } from '../../../workers/routes/status.ts';
import { admitProvider, call, callWith, envWith, heartbeatBody, keyFor, sendHeartbeat } from '../helpers.ts';

async function status(token: string, colo?: string): Promise<MeshStatus> {
  const res = await call('/v1/mesh/status', { token, ...(colo ? { colo } : {}) });
  expect(res.status).toBe(200);
  expect(res.headers.get('cache-control')).toBe('no-store');
  return (await res.json()) as MeshStatus;
}

async function providerKey(sub: string): Promise<Response> {
  return call('/admin/keys', { method: 'POST', token: await keyFor('admin'), body: JSON.stringify({ sub, role: 'provider' }) });
}

describe('GET /v1/mesh/status', () => {
  it('needs an admin, billing or provider key', async () => {
    expect((await call('/v1/mesh/status')).status).toBe(401);
    const consumer = await call('/v1/mesh/status', { token: await keyFor('consumer') });
    expect(consumer.status).toBe(403);
    expect(await consumer.json()).toMatchObject({ error: { code: 'forbidden' } });
    expect((await status(await keyFor('billing'))).viewer).toEqual({ role: 'billing' });
  });

  it('shows every region and backend to the operator, and a provider only its own', async () => {
    const a = await admitProvider('status-a');
    const b = await admitProvider('status-b');
    expect((await sendHeartbeat(a, heartbeatBody('st-a1', 'eu-west'))).status).toBe(200);
    expect((await sendHeartbeat(a, heartbeatBody('st-a2', 'eu-west', { ready: false }))).status).toBe(200);
    expect((await sendHeartbeat(b, heartbeatBody('st-b1', 'us-east', { capacity: { slots: 8, inFlight: 3, queued: 1 } }))).status).toBe(200);

    const admin = await status(await keyFor('admin'), 'FRA');
    expect(admin.viewer).toEqual({ role: 'admin' });
    expect(admin.pop).toBe('FRA');
    expect(admin.regions.map((r) => r.id)).toEqual(REGIONS.map((r) => r.id));
    const ours = admin.backends.filter((x) => x.id.startsWith('st-'));
    expect(ours.map((x) => [x.id, x.provider, x.region, x.state])).toEqual([
      ['st-b1', 'status-b', 'us-east', 'warm'],
      ['st-a1', 'status-a', 'eu-west', 'warm'],
      ['st-a2', 'status-a', 'eu-west', 'starting'],
    ]);
    expect(JSON.stringify(admin)).not.toContain('http://127.0.0.1');

    // A provider key names an admitted provider, and sees that provider's backends alone.
    expect((await providerKey('nobody-admitted')).status).toBe(400);
    const issued = await providerKey('status-b');
    expect(issued.status).toBe(201);
    const { key } = (await issued.json()) as { key: string };
    const mine = await status(key);
    expect(mine.viewer).toEqual({ role: 'provider', provider: 'status-b' });
    expect(mine.backends.map((x) => x.id)).toEqual(['st-b1']);
    expect(mine.regions.find((r) => r.id === 'us-east')).toMatchObject({ backends: { total: 1, warm: 1 }, capacity: { slots: 8, inFlight: 3, queued: 1 } });
    expect(mine.regions.find((r) => r.id === 'eu-west')!.backends.total).toBe(0);
    // Nothing else opens to a provider key.
    expect((await call('/admin/backends', { token: key })).status).toBe(403);
    expect((await call('/v1/settlement/batches', { token: key })).status).toBe(403);
    expect((await call('/v1/models', { token: key })).status).toBe(403);
  });

  it('gathers a view once per STATUS_CACHE_MS in an isolate, however many pages ask', async () => {
    const calls: string[] = [];
    const e = envWith({}, calls);
    const admin = await keyFor('admin');
    const ask = async (token: string) => {
      const res = await callWith(e, '/v1/mesh/status', { token, headers: { 'x-mesh-dev-colo': 'HKG' } });
      expect(res.status).toBe(200);
      return (await res.json()) as MeshStatus;
    };
    const directoryCalls = () => calls.filter((c) => c.endsWith('.status')).length;
    const first = await ask(admin);
    expect(directoryCalls()).toBe(REGIONS.length);
    // The operator's and billing's view is the same one; each says who asked.
    const [again, billing] = await Promise.all([ask(admin), ask(await keyFor('billing'))]);
    expect(directoryCalls()).toBe(REGIONS.length);
    expect(again.at).toBe(first.at);
    expect(billing.viewer).toEqual({ role: 'billing' });
    await scheduler.wait(STATUS_CACHE_MS + 10);
    expect((await ask(admin)).at).toBeGreaterThan(first.at);
    expect(directoryCalls()).toBe(2 * REGIONS.length);
  });

  it('counts requests on every inference route, and no other', () => {
    const posts = app.routes.filter((r) => r.method === 'POST').map((r) => r.path);
    const consumer = posts.filter((p) => p.startsWith('/v2/models/') || p === '/v1/embeddings' || p.startsWith('/models/'));
    expect([...INFERENCE_ROUTES].sort()).toEqual([...new Set(consumer)].sort());
  });

  it('counts inference requests per PoP from the request log, in the background', async () => {
    const consumer = await keyFor('consumer');
    // No backend serves this model: the answer is an error, and it still counts.
    const res = await call('/v2/models/classifier/infer', {
      method: 'POST',
      token: consumer,
      colo: 'CPT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ inputs: [{ name: 'x', shape: [1, 4], datatype: 'FP32', data: [1, 2, 3, 4] }] }),
    });
    await res.arrayBuffer();
    expect(res.status).toBeGreaterThanOrEqual(400);
    const admin = await keyFor('admin');
    let cpt: MeshStatus['pops'][number] | undefined;
    for (let i = 0; i < 50 && !cpt; i++) {
      cpt = (await status(admin)).pops.find((p) => p.code === 'CPT');
      if (!cpt) await scheduler.wait(100);
    }
    expect(cpt).toMatchObject({ code: 'CPT', city: 'Cape Town', traffic: { requests: 1, errors: res.status >= 500 ? 1 : 0 } });
    expect(cpt!.traffic.p50Ms).toBeGreaterThan(0);
  });

  it('lists the newest settlement batches with their totals; a provider sees its own payout', async () => {
    const keys = await signingKeys(env);
    const shard = 2;
    const jwts: string[] = [];
    for (let i = 0; jwts.length < 3; i++) {
      const claims = receiptClaims(i, { iss: env.MESH_ISSUER, jti: crypto.randomUUID(), provider: jwts.length === 0 ? 'status-b' : 'someone-else', amount: 100 });
      if (shardOfReceipt(env, claims.jti) !== shard) continue;
      jwts.push(await signReceipt(keys, claims));
    }
    await ledgerShard(env, shard).append(shard, jwts);
    const [id] = await ledgerShard(env, shard).close(shard);
    // A PoP no other test here asks from: its view is gathered afresh (one isolate reuses a view for STATUS_CACHE_MS).
    const admin = await status(await keyFor('admin'), 'SIN');
    expect(admin.batches.find((x) => x.id === id)).toMatchObject({ id, shard, count: 3, charged: 300, paid: 300, withheld: 0, disputed: 0 });
    const { key } = (await (await providerKey('status-b')).json()) as { key: string };
    const mine = (await status(key, 'SIN')).batches.find((x) => x.id === id)!;
    expect(mine).toEqual({ id, shard, closedAt: expect.any(Number), count: 3, paid: 100, withheld: 0 });
  });
});
