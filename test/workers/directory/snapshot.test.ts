/**
 * Revocations fail closed. An isolate whose registry call for the revoked-key
 * list fails must not treat the list as empty: until it has loaded the list
 * once, every key gets 503 `not_ready`; once loaded, a failed refresh keeps
 * the last list. A cold isolate is simulated by forgetting the snapshot
 * (`forgetSnapshotForTests`; re-importing the modules would also reload the
 * Durable Object classes and fail their next call); the registry failure is
 * made by wrapping the
 * OPERATOR_REGISTRY binding so `edgeState` (the revoked keys and provider standings) throws (workerd gives no other
 * way to make a healthy Durable Object's RPC fail on demand). And the refresh
 * builds the new snapshot's routing index, so no request pays for it.
 */

import { env } from 'cloudflare:test';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { app } from '../../../workers/app.ts';
import { forgetSnapshotForTests, refreshSnapshot } from '../../../workers/directory/snapshot.ts';
import { builtIndexFor, routingIndexFor } from '../../../workers/routing/snapshot-index.ts';
import type { Env } from '../../../workers/env.ts';
import { admitProvider, BASE, heartbeatBody, keyFor, nextSeq, wrapStubs } from '../helpers.ts';

/** `env` whose OPERATOR_REGISTRY fails `edgeState` while `failing.on` is set; other methods pass through. */
function registryFailing(failing: { on: boolean }, refreshMs: string): Env {
  const registry = wrapStubs(env.OPERATOR_REGISTRY as unknown as DurableObjectNamespace, (_name, method, _args, invoke) =>
    method === 'edgeState' && failing.on ? Promise.reject(new Error('registry unreachable (test)')) : invoke(),
  );
  return { ...env, SNAPSHOT_REFRESH_MS: refreshMs, OPERATOR_REGISTRY: registry } as unknown as Env;
}

/** The app as a fresh isolate sees it: no snapshot yet. */
function coldIsolate() {
  forgetSnapshotForTests();
  return app;
}

function ctx(pending: Promise<unknown>[]): ExecutionContext {
  return { waitUntil: (p: Promise<unknown>) => void pending.push(p), passThroughOnException() {}, props: {} } as unknown as ExecutionContext;
}

/** A route that needs a valid, unrevoked consumer key, then answers 404 (no backend serves this model). */
const modelPath = '/v2/models/no-such-model';

afterEach(() => {
  vi.useRealTimers();
  vi.restoreAllMocks();
});

describe('revocation fails closed', () => {
  it('answers 503 not_ready with retry-after while the isolate never loaded the revoked list, then serves once it loads', async () => {
    vi.spyOn(console, 'warn').mockImplementation(() => {});
    coldIsolate();
    const failing = { on: true };
    const e = registryFailing(failing, '1000');
    const key = await keyFor('consumer', 'fail-closed');
    const pending: Promise<unknown>[] = [];
    const get = () => app.fetch(new Request(BASE + modelPath, { headers: { authorization: `Bearer ${key}` } }), e, ctx(pending));

    const refused = await get();
    expect(refused.status).toBe(503);
    expect(refused.headers.get('retry-after')).toBe('1');
    const body = (await refused.json()) as { error: { code: string; message: string } };
    expect(body.error.code).toBe('not_ready');
    expect(body.error.message).toMatch(/revocation/i);
    // Still unknown on the next request: the failure is not turned into "nothing revoked".
    expect((await get()).status).toBe(503);

    // The registry answers again; the next refresh loads the list and keys pass.
    failing.on = false;
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(Date.now() + 1_500);
    expect((await get()).status).toBe(503); // starts the background refresh, still answered from the old snapshot
    await Promise.all(pending);
    vi.useRealTimers();
    const served = await get();
    expect(served.status, await served.clone().text()).toBe(404);
  });

  it('refuses a bad key as 401 before looking at revocations', async () => {
    vi.spyOn(console, 'warn').mockImplementation(() => {});
    coldIsolate();
    const e = registryFailing({ on: true }, '1000');
    const res = await app.fetch(new Request(BASE + modelPath, { headers: { authorization: 'Bearer not.a.jwt' } }), e, ctx([]));
    expect(res.status).toBe(401);
  });

  it('keeps the last loaded list when a later refresh fails: a revoked key stays revoked, others pass', async () => {
    vi.spyOn(console, 'warn').mockImplementation(() => {});
    coldIsolate();
    const failing = { on: false };
    const e = registryFailing(failing, '1000');
    const admin = await keyFor('admin', 'ops');
    const revokedKey = await keyFor('consumer', 'to-revoke');
    const keptKey = await keyFor('consumer', 'kept');
    const pending: Promise<unknown>[] = [];
    const get = (key: string) => app.fetch(new Request(BASE + modelPath, { headers: { authorization: `Bearer ${key}` } }), e, ctx(pending));

    expect((await get(keptKey)).status).toBe(404); // the list is loaded: the key passes
    const revoke = await app.fetch(
      new Request(`${BASE}/admin/keys/revoke`, { method: 'POST', headers: { authorization: `Bearer ${admin}` }, body: JSON.stringify({ key: revokedKey }) }),
      e,
      ctx(pending),
    );
    expect(revoke.status, await revoke.clone().text()).toBe(200);

    // A fresh isolate loads the list with the revocation, then its refreshes fail.
    const other = coldIsolate();
    const getOther = (key: string) => other.fetch(new Request(BASE + modelPath, { headers: { authorization: `Bearer ${key}` } }), e, ctx(pending));
    expect((await getOther(revokedKey)).status).toBe(401);
    failing.on = true;
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(Date.now() + 1_500);
    await getOther(keptKey); // starts a background refresh, which fails
    await Promise.all(pending);
    vi.setSystemTime(Date.now() + 1_500);
    const stillRevoked = await getOther(revokedKey);
    await Promise.all(pending);
    vi.useRealTimers();
    expect(stillRevoked.status).toBe(401);
    expect(await stillRevoked.json()).toMatchObject({ error: { code: 'invalid_token' } });
    expect((await getOther(keptKey)).status).toBe(404);
  });
});

describe('a directory that keeps failing', () => {
  it('keeps its last view, but its backends stop counting as live once they expire: their models are forgotten after MODEL_MEMORY_MS', async () => {
    vi.spyOn(console, 'warn').mockImplementation(() => {});
    const region = 'sa-east';
    const p = await admitProvider('prov-snap-fail');
    const directory = env.REGION_DIRECTORY.getByName(region);
    const body = heartbeatBody('snap-fail-1', region, { models: [{ name: 'snap-fail-model', version: '1', warm: true, maxBatchSize: 1, p50Ms: 5 }] });
    expect(await directory.heartbeat(p.id, {}, body, { seq: nextSeq(), expiresAt: Date.now() + 60_000 }, 10_000)).toMatchObject({ ok: true });
    const failing = { on: false };
    const e = {
      ...env,
      REGION_DIRECTORY: wrapStubs(env.REGION_DIRECTORY as unknown as DurableObjectNamespace, (name, method, _args, invoke) =>
        method === 'backends' && name === region && failing.on ? Promise.reject(new Error('directory unreachable (test)')) : invoke(),
      ),
    } as unknown as Env;
    forgetSnapshotForTests();
    const first = await refreshSnapshot(e);
    expect(first.byRegion.get(region)?.map((b) => b.id)).toContain('snap-fail-1');
    expect(first.recentModels.has('snap-fail-model')).toBe(true);
    expect(first.liveProviders.has(p.id)).toBe(true);

    // The directory stops answering; the backend's entry expires (10 s), and the model memory's ten minutes pass.
    failing.on = true;
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(Date.now() + 11 * 60_000);
    const later = await refreshSnapshot(e);
    vi.useRealTimers();
    expect(later.recentModels.has('snap-fail-model')).toBe(false);
    expect(later.recentModels.has('snap-fail-model@1')).toBe(false);
    expect(later.liveProviders.has(p.id)).toBe(false);
    forgetSnapshotForTests();
  });
});

describe('the routing index', () => {
  it('is built by the refresh, before any request ranks on the new snapshot', async () => {
    const region = 'af-south';
    const p = await admitProvider('prov-snap-index');
    const body = heartbeatBody('snap-index-1', region);
    expect(await env.REGION_DIRECTORY.getByName(region).heartbeat(p.id, {}, body, { seq: nextSeq(), expiresAt: Date.now() + 60_000 }, 60_000)).toMatchObject({ ok: true });
    forgetSnapshotForTests();
    const snap = await refreshSnapshot(env);
    expect(snap.backends.map((b) => b.id)).toContain('snap-index-1');
    const index = builtIndexFor(snap.backends);
    expect(index).toBeDefined();
    expect(index!.byModel.get('embed')?.backends.map((b) => b.id)).toContain('snap-index-1');
    // What a request asks for is that very index.
    expect(routingIndexFor(snap.backends)).toBe(index);
    forgetSnapshotForTests();
  });
});
