import { env, runDurableObjectAlarm, runInDurableObject } from 'cloudflare:test';
import { importJWK } from 'jose';
import { describe, expect, it } from 'vitest';
import { generateEd25519 } from '../../shared/keys.ts';
import { admitProvider, call, heartbeatBody, heartbeatToken, keyFor, sendHeartbeat } from './helpers.ts';

describe('POST /admin/providers', () => {
  it('admits a provider with an Ed25519 public key', async () => {
    const pair = await generateEd25519('p-key');
    const res = await call('/admin/providers', {
      method: 'POST',
      token: await keyFor('admin'),
      body: JSON.stringify({ id: 'acme', publicJwk: pair.publicJwk }),
    });
    expect(res.status).toBe(201);
    expect(await res.json()).toEqual({ id: 'acme', created: true });
  });

  it('refuses a private key, a bad id and a non-admin token', async () => {
    const pair = await generateEd25519('p-key');
    const admin = await keyFor('admin');
    const priv = await call('/admin/providers', { method: 'POST', token: admin, body: JSON.stringify({ id: 'acme', publicJwk: pair.privateJwk }) });
    expect(priv.status).toBe(400);
    expect(await priv.json()).toMatchObject({ error: { code: 'invalid_request' } });
    const badId = await call('/admin/providers', { method: 'POST', token: admin, body: JSON.stringify({ id: '../x', publicJwk: pair.publicJwk }) });
    expect(badId.status).toBe(400);
    const consumer = await call('/admin/providers', {
      method: 'POST',
      token: await keyFor('consumer'),
      body: JSON.stringify({ id: 'acme', publicJwk: pair.publicJwk }),
    });
    expect(consumer.status).toBe(403);
    const none = await call('/admin/providers', { method: 'POST', body: '{}' });
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toMatch(/^Bearer/);
  });
});

describe('POST /v1/providers/heartbeat', () => {
  it('registers a backend in its region directory', async () => {
    const p = await admitProvider('prov-a');
    const res = await sendHeartbeat(p, heartbeatBody('be-1', 'eu-west'));
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ ok: true, ttlSeconds: 10, actions: [] });
    const backends = await env.REGION_DIRECTORY.getByName('eu-west').backends();
    expect(backends.map((b) => [b.id, b.provider, b.region, b.ready])).toEqual([['be-1', 'prov-a', 'eu-west', true]]);
    expect(await env.REGION_DIRECTORY.getByName('us-east').backends()).toEqual([]);
  });

  it('refuses unknown providers, bad signatures, and a token for another backend', async () => {
    const p = await admitProvider('prov-b');
    const strangerKey = await generateEd25519('stranger');
    const stranger = { id: 'nobody', key: await importJWK(strangerKey.privateJwk, 'EdDSA'), kid: 'stranger' };
    const unknown = await call('/v1/providers/heartbeat', {
      method: 'POST',
      token: await heartbeatToken(stranger, 'be-x'),
      body: JSON.stringify(heartbeatBody('be-x', 'eu-west')),
    });
    expect(unknown.status).toBe(403);
    expect(await unknown.json()).toMatchObject({ error: { code: 'unknown_provider' } });

    const other = await admitProvider('prov-c');
    const forged = await call('/v1/providers/heartbeat', {
      method: 'POST',
      token: await heartbeatToken({ ...other, id: 'prov-b' }, 'be-2'),
      body: JSON.stringify(heartbeatBody('be-2', 'eu-west')),
    });
    expect(forged.status).toBe(401);
    expect(await forged.json()).toMatchObject({ error: { code: 'invalid_token' } });

    const mismatch = await call('/v1/providers/heartbeat', {
      method: 'POST',
      token: await heartbeatToken(p, 'be-other'),
      body: JSON.stringify(heartbeatBody('be-2', 'eu-west')),
    });
    expect(mismatch.status).toBe(403);

    const longLived = await call('/v1/providers/heartbeat', {
      method: 'POST',
      token: await heartbeatToken(p, 'be-2', 3600),
      body: JSON.stringify(heartbeatBody('be-2', 'eu-west')),
    });
    expect(longLived.status).toBe(401);
  });

  it('answers a malformed heartbeat with a 400 naming the field', async () => {
    const p = await admitProvider('prov-d');
    const res = await sendHeartbeat(p, { ...heartbeatBody('be-3', 'eu-west'), region: 'mars' });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ error: { code: 'unknown_region' } });
    const res2 = await sendHeartbeat(p, { ...heartbeatBody('be-3', 'eu-west'), capacity: { slots: 0, inFlight: 0, queued: 0 } });
    expect(res2.status).toBe(400);
    expect(((await res2.json()) as { error: { message: string } }).error.message).toMatch(/capacity\.slots/);
  });

  it('keeps a backend id owned by its provider', async () => {
    const a = await admitProvider('prov-e');
    const b = await admitProvider('prov-f');
    expect((await sendHeartbeat(a, heartbeatBody('shared-id', 'us-east'))).status).toBe(200);
    const steal = await sendHeartbeat(b, heartbeatBody('shared-id', 'us-east'));
    expect(steal.status).toBe(403);
  });
});

describe('RegionDirectory expiry', () => {
  it('drops a backend whose heartbeats stopped when its alarm fires', async () => {
    const p = await admitProvider('prov-g');
    const stub = env.REGION_DIRECTORY.getByName('ap-southeast');
    const key = (await env.OPERATOR_REGISTRY.getByName('global').get(p.id))!.publicJwk;
    await stub.heartbeat(p.id, key, heartbeatBody('short', 'ap-southeast'), 50);
    await stub.heartbeat(p.id, key, heartbeatBody('long', 'ap-southeast'), 60_000);
    expect((await stub.backends()).map((b) => b.id)).toEqual(['long', 'short']);
    await new Promise((r) => setTimeout(r, 80));
    // Expired rows are already hidden from snapshots; the alarm deletes them and re-arms for the next expiry.
    expect((await stub.backends()).map((b) => b.id)).toEqual(['long']);
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    const rows = await runInDurableObject(stub, (_obj, state) => state.storage.sql.exec('SELECT id FROM backends').toArray());
    expect(rows).toEqual([{ id: 'long' }]);
    const next = await runInDurableObject(stub, (_obj, state) => state.storage.getAlarm());
    expect(next).toBeGreaterThan(Date.now() + 30_000);
  });
});

describe('warm placement through heartbeats', () => {
  it('asks a backend of the region to load a model requested there, once', async () => {
    const p = await admitProvider('prov-place');
    const body = heartbeatBody('place-1', 'ap-south', { available: ['classifier'] });
    expect(await (await sendHeartbeat(p, body)).json()).toMatchObject({ actions: [] });
    await env.REGION_DIRECTORY.getByName('ap-south').recordDemand({ classifier: 3 });
    expect(await (await sendHeartbeat(p, body)).json()).toMatchObject({ actions: [{ op: 'load', model: 'classifier' }] });
    // Not asked again while the load is under way.
    expect(await (await sendHeartbeat(p, body)).json()).toMatchObject({ actions: [] });
    expect((await env.REGION_DIRECTORY.getByName('ap-south').demand())[0]).toMatchObject({ model: 'classifier', requests: 3 });
  });
});
