import { env, runDurableObjectAlarm, runInDurableObject } from 'cloudflare:test';
import { importJWK } from 'jose';
import { describe, expect, it } from 'vitest';
import { HEARTBEAT_LIMITS, HEARTBEAT_MAX_BYTES, type Heartbeat } from '../../shared/heartbeat.ts';
import { generateEd25519 } from '../../shared/keys.ts';
import { DEPARTED_KEEP_MS } from '../../workers/directory/RegionDirectory.ts';
import {
  admitProvider,
  call,
  envWith,
  heartbeatBody,
  heartbeatToken,
  keyFor,
  nextSeq,
  sendHeartbeat,
  sendHeartbeatWith,
} from './helpers.ts';

type ErrorBody = { error: { code: string; message: string } };

/** Posts `text` as a heartbeat body with a token signed over it (or the given token). */
async function postHeartbeat(provider: Parameters<typeof heartbeatToken>[0], sub: string, text: string, token?: string) {
  return call('/v1/providers/heartbeat', { method: 'POST', token: token ?? (await heartbeatToken(provider, sub, text)), body: text });
}

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

  it('re-keys a provider: the new key works at once, the old one no longer does', async () => {
    const old = await admitProvider('prov-rekey');
    expect((await sendHeartbeat(old, heartbeatBody('rekey-1', 'eu-west'))).status).toBe(200);
    const fresh = await admitProvider('prov-rekey');
    expect((await sendHeartbeat(fresh, heartbeatBody('rekey-1', 'eu-west'))).status).toBe(200);
    const stale = await sendHeartbeat(old, heartbeatBody('rekey-1', 'eu-west'));
    expect(stale.status).toBe(401);
    expect(await stale.json()).toMatchObject({ error: { code: 'invalid_token' } });
  });
});

describe('POST /v1/providers/heartbeat', () => {
  it('registers a backend in its region directory', async () => {
    const p = await admitProvider('prov-a');
    const res = await sendHeartbeat(p, heartbeatBody('be-1', 'eu-west'));
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ ok: true, ttlSeconds: 10, actions: [] });
    const backends = (await env.REGION_DIRECTORY.getByName('eu-west').backends()).filter((b) => b.provider === 'prov-a');
    expect(backends.map((b) => [b.id, b.provider, b.region, b.ready])).toEqual([['be-1', 'prov-a', 'eu-west', true]]);
    expect(await env.REGION_DIRECTORY.getByName('us-east').backends()).toEqual([]);
  });

  it('refuses a token for another backend, and one that lives too long', async () => {
    const p = await admitProvider('prov-b');
    const body = JSON.stringify(heartbeatBody('be-2', 'eu-west'));
    const mismatch = await postHeartbeat(p, 'be-other', body);
    expect(mismatch.status).toBe(403);
    expect(await mismatch.json()).toMatchObject({ error: { code: 'forbidden' } });
    const longLived = await postHeartbeat(p, 'be-2', body, await heartbeatToken(p, 'be-2', body, { ttl: 3600 }));
    expect(longLived.status).toBe(401);
    expect(await longLived.json()).toMatchObject({ error: { code: 'invalid_token' } });
  });

  it('answers an unknown issuer exactly like a bad signature', async () => {
    await admitProvider('prov-known');
    const other = await admitProvider('prov-c');
    const strangerKey = await generateEd25519('stranger');
    const stranger = { id: 'nobody', key: await importJWK(strangerKey.privateJwk, 'EdDSA'), kid: 'stranger' };
    const body = JSON.stringify(heartbeatBody('be-x', 'eu-west'));
    const unknown = await postHeartbeat(stranger, 'be-x', body);
    // prov-known is admitted; the token is signed by another provider's key.
    const forged = await postHeartbeat({ ...other, id: 'prov-known' }, 'be-x', body);
    const answers = await Promise.all(
      [unknown, forged].map(async (r) => ({ status: r.status, auth: r.headers.get('www-authenticate'), body: await r.json() })),
    );
    expect(answers[0]).toEqual(answers[1]);
    expect(answers[0]).toMatchObject({ status: 401, body: { error: { code: 'invalid_token' } } });
    // So is an issuer that is not even an id (it is never used as a key).
    const weird = await postHeartbeat({ ...stranger, id: 'x'.repeat(5000) }, 'be-x', body);
    expect({ status: weird.status, body: await weird.json() }).toEqual({ status: answers[0]!.status, body: answers[0]!.body });
  });

  it('remembers an unknown issuer: a second heartbeat from it costs no registry call', async () => {
    const calls: string[] = [];
    const e = envWith({}, calls);
    const pair = await generateEd25519('ghost');
    const ghost = { id: 'ghost-provider', key: await importJWK(pair.privateJwk, 'EdDSA'), kid: 'ghost' };
    for (let i = 0; i < 3; i++) expect((await sendHeartbeatWith(e, ghost, heartbeatBody('ghost-1', 'eu-west'))).status).toBe(401);
    expect(calls).toEqual(['OperatorRegistry(global).get']);
    // Admitting it here clears this isolate's negative entry at once.
    const admitted = await call('/admin/providers', {
      method: 'POST',
      token: await keyFor('admin'),
      body: JSON.stringify({ id: 'ghost-provider', publicJwk: pair.publicJwk }),
    });
    expect(admitted.status).toBe(201);
    expect((await sendHeartbeatWith(e, ghost, heartbeatBody('ghost-1', 'eu-west'))).status).toBe(200);
  });

  it('costs a steady heartbeat no registry call once ownership is confirmed', async () => {
    const p = await admitProvider('prov-steady');
    const calls: string[] = [];
    const e = envWith({}, calls);
    for (let i = 0; i < 3; i++) expect((await sendHeartbeatWith(e, p, heartbeatBody('steady-1', 'us-west'))).status).toBe(200);
    expect(calls.filter((c) => c.startsWith('OperatorRegistry'))).toEqual(['OperatorRegistry(global).get', 'OperatorRegistry(global).claimBackend']);
    expect(calls.filter((c) => c.startsWith('RegionDirectory'))).toEqual(Array(3).fill('RegionDirectory(us-west).heartbeat'));
  });

  it('answers a malformed heartbeat with a 400 naming the field', async () => {
    const p = await admitProvider('prov-d');
    const res = await sendHeartbeat(p, { ...heartbeatBody('be-3', 'eu-west'), region: 'mars' });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ error: { code: 'unknown_region' } });
    const res2 = await sendHeartbeat(p, { ...heartbeatBody('be-3', 'eu-west'), capacity: { slots: 0, inFlight: 0, queued: 0 } });
    expect(res2.status).toBe(400);
    expect(((await res2.json()) as ErrorBody).error.message).toMatch(/capacity\.slots/);
    const notJson = await postHeartbeat(p, 'be-3', '{"backendId":');
    expect(notJson.status).toBe(400);
    expect(await notJson.json()).toMatchObject({ error: { code: 'invalid_json' } });
  });
});

describe('heartbeat limits', () => {
  const model = (i: number) => ({ name: `m${i}`, version: '1', warm: true, maxBatchSize: 1, p50Ms: 1 });

  it('accepts a body of exactly the limit and refuses one byte more with 413, declared or not', async () => {
    const p = await admitProvider('prov-size');
    const json = JSON.stringify(heartbeatBody('size-1', 'eu-west'));
    const exact = json + ' '.repeat(HEARTBEAT_MAX_BYTES - json.length);
    expect((await postHeartbeat(p, 'size-1', exact)).status).toBe(200);

    const over = exact + ' ';
    const declared = await postHeartbeat(p, 'size-1', over);
    expect(declared.status).toBe(413);
    expect(await declared.json()).toMatchObject({ error: { code: 'body_too_large' } });

    // No content-length: a stream, read until it passes the limit.
    const token = await heartbeatToken(p, 'size-1', over);
    const bytes = new TextEncoder().encode(over);
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let at = 0; at < bytes.length; at += 4096) controller.enqueue(bytes.slice(at, at + 4096));
        controller.close();
      },
    });
    const streamed = await call('/v1/providers/heartbeat', { method: 'POST', token, body: stream });
    expect(streamed.status).toBe(413);
    expect(await streamed.json()).toMatchObject({ error: { code: 'body_too_large' } });
  });

  it('refuses a declared content-length above the limit without reading the body', async () => {
    const p = await admitProvider('prov-size-2');
    // A stream that never ends: only refusing it unread can answer.
    const endless = new ReadableStream<Uint8Array>({
      pull(controller) {
        controller.enqueue(new Uint8Array(1024));
        return new Promise((r) => setTimeout(r, 1000));
      },
    });
    const res = await call('/v1/providers/heartbeat', {
      method: 'POST',
      token: await heartbeatToken(p, 'size-2', ''),
      headers: { 'content-length': String(HEARTBEAT_MAX_BYTES + 1) },
      body: endless,
    });
    expect(res.status).toBe(413);
    expect(await res.json()).toMatchObject({ error: { code: 'body_too_large' } });
  });

  const cases: [string, (b: Heartbeat) => unknown, RegExp][] = [
    ['too many models', (b) => ({ ...b, models: Array.from({ length: HEARTBEAT_LIMITS.models + 1 }, (_, i) => model(i)) }), /models must be an array of at most 64/],
    ['too many available', (b) => ({ ...b, available: Array.from({ length: HEARTBEAT_LIMITS.available + 1 }, (_, i) => `a${i}`) }), /available .*at most 256/],
    ['a long url', (b) => ({ ...b, url: `https://gpu.example/${'a'.repeat(HEARTBEAT_LIMITS.urlChars)}` }), /url .*at most 2048/],
    ['a url that is not a string', (b) => ({ ...b, url: ['https://gpu.example'] }), /url/],
    ['a long model version', (b) => ({ ...b, models: [{ ...model(0), version: 'v'.repeat(65) }] }), /models\[0\]\.version/],
    ['a model version with a space', (b) => ({ ...b, models: [{ ...model(0), version: '1 2' }] }), /models\[0\]\.version/],
    ['a model that is not an object', (b) => ({ ...b, models: [null] }), /models\[0\] must be an object/],
    ['too many slots', (b) => ({ ...b, capacity: { ...b.capacity, slots: HEARTBEAT_LIMITS.slots + 1 } }), /capacity\.slots/],
    ['a huge queue', (b) => ({ ...b, capacity: { ...b.capacity, queued: 1e12 } }), /capacity\.queued/],
    ['no capacity', (b) => ({ ...b, capacity: undefined }), /capacity must be an object/],
    ['a huge maxBatchSize', (b) => ({ ...b, models: [{ ...model(0), maxBatchSize: 1e9 }] }), /models\[0\]\.maxBatchSize/],
    ['a huge p50Ms', (b) => ({ ...b, models: [{ ...model(0), p50Ms: 1e12 }] }), /models\[0\]\.p50Ms/],
    ['a negative memoryBytes', (b) => ({ ...b, models: [{ ...model(0), memoryBytes: -1 }] }), /models\[0\]\.memoryBytes/],
    ['lat out of range', (b) => ({ ...b, lat: 91 }), /lat/],
    ['a location far from its region (Sydney claiming eu-west)', (b) => ({ ...b, lat: -33.87, lon: 151.21 }), /km from region "eu-west".*nearest: "ap-southeast-3"/],
  ];
  for (const [what, change, message] of cases) {
    it(`refuses ${what} with a 400 naming the field`, async () => {
      const p = await admitProvider('prov-caps');
      const res = await postHeartbeat(p, 'caps-1', JSON.stringify(change(heartbeatBody('caps-1', 'eu-west'))));
      expect(res.status).toBe(400);
      const { error } = (await res.json()) as ErrorBody;
      expect(error.code).toBe('invalid_request');
      expect(error.message).toMatch(message);
    });
  }

  it('refuses a number JSON reads as Infinity', async () => {
    const p = await admitProvider('prov-caps');
    const text = JSON.stringify(heartbeatBody('caps-2', 'eu-west')).replace('"slots":4', '"slots":1e400');
    expect(text).toContain('1e400');
    const res = await postHeartbeat(p, 'caps-2', text);
    expect(res.status).toBe(400);
    expect(((await res.json()) as ErrorBody).error.message).toMatch(/capacity\.slots/);
  });

  it('accepts every cap exactly', async () => {
    const p = await admitProvider('prov-caps');
    const body = heartbeatBody('caps-3', 'eu-west', {
      url: `https://gpu.example/${'a'.repeat(HEARTBEAT_LIMITS.urlChars - 'https://gpu.example/'.length)}`,
      models: Array.from({ length: HEARTBEAT_LIMITS.models }, (_, i) => ({ ...model(i), version: `v.${i}_-`.padEnd(64, 'x') })),
      available: Array.from({ length: HEARTBEAT_LIMITS.available }, (_, i) => `a${i}`),
      capacity: { slots: HEARTBEAT_LIMITS.slots, inFlight: 0, queued: 0 },
    });
    const res = await sendHeartbeat(p, body);
    expect(res.status).toBe(200);
  });
});

describe('heartbeat tokens are bound to their body and used once', () => {
  it('refuses a body other than the one the token hashes, even by one space', async () => {
    const p = await admitProvider('prov-bind');
    const body = JSON.stringify(heartbeatBody('bind-1', 'eu-west'));
    const token = await heartbeatToken(p, 'bind-1', body);
    const repointed = JSON.stringify(heartbeatBody('bind-1', 'eu-west', { url: 'https://attacker.example' }));
    for (const other of [repointed, `${body} `]) {
      const res = await postHeartbeat(p, 'bind-1', other, token);
      expect(res.status).toBe(401);
      const { error } = (await res.json()) as ErrorBody;
      expect(error.code).toBe('invalid_token');
      expect(error.message).toMatch(/body_sha256/);
    }
    expect(await env.REGION_DIRECTORY.getByName('eu-west').backends()).not.toContainEqual(expect.objectContaining({ id: 'bind-1' }));
    expect((await postHeartbeat(p, 'bind-1', body, token)).status).toBe(200);
  });

  it('refuses a token without body_sha256 or seq, or with a bad seq', async () => {
    const p = await admitProvider('prov-bind');
    const body = JSON.stringify(heartbeatBody('bind-2', 'eu-west'));
    for (const claims of [{ body_sha256: undefined }, { seq: undefined }, { seq: -1 }, { seq: 1.5 }, { seq: '7' }, { seq: 2 ** 53 }, { body_sha256: 'ABC' }]) {
      const res = await postHeartbeat(p, 'bind-2', body, await heartbeatToken(p, 'bind-2', body, { claims }));
      expect(res.status, JSON.stringify(claims)).toBe(401);
      expect(await res.json()).toMatchObject({ error: { code: 'invalid_token' } });
    }
  });

  it('refuses a replayed token, and any seq not above the last accepted', async () => {
    const p = await admitProvider('prov-replay');
    const body = JSON.stringify(heartbeatBody('replay-1', 'ap-northeast'));
    const seq = nextSeq();
    const token = await heartbeatToken(p, 'replay-1', body, { seq });
    expect((await postHeartbeat(p, 'replay-1', body, token)).status).toBe(200);
    const replay = await postHeartbeat(p, 'replay-1', body, token);
    expect(replay.status).toBe(401);
    const { error } = (await replay.json()) as ErrorBody;
    expect(error.code).toBe('invalid_token');
    expect(error.message).toMatch(/^Replayed heartbeat/);
    for (const older of [seq, seq - 1, 0]) {
      const res = await postHeartbeat(p, 'replay-1', body, await heartbeatToken(p, 'replay-1', body, { seq: older }));
      expect(res.status).toBe(401);
    }
    expect((await postHeartbeat(p, 'replay-1', body, await heartbeatToken(p, 'replay-1', body, { seq: seq + 1 }))).status).toBe(200);
  });
});

describe('backend ids are owned mesh-wide', () => {
  it('keeps a backend id owned by its provider, in its region and in every other', async () => {
    const a = await admitProvider('prov-e');
    const b = await admitProvider('prov-f');
    expect((await sendHeartbeat(a, heartbeatBody('shared-id', 'us-east'))).status).toBe(200);
    for (const region of ['us-east', 'eu-west', 'ap-south']) {
      const steal = await sendHeartbeat(b, heartbeatBody('shared-id', region));
      expect(steal.status, region).toBe(403);
      const { error } = (await steal.json()) as ErrorBody;
      expect(error).toMatchObject({ code: 'forbidden', message: expect.stringMatching(/owned by another provider/) });
      expect((await env.REGION_DIRECTORY.getByName(region).backends()).filter((x) => x.id === 'shared-id').map((x) => x.provider)).toEqual(
        region === 'us-east' ? ['prov-e'] : [],
      );
    }
    // The owner may move it to another region.
    expect((await sendHeartbeat(a, heartbeatBody('shared-id', 'eu-west'))).status).toBe(200);
    expect(await env.OPERATOR_REGISTRY.getByName('global').ownedBackends('prov-f')).toEqual([]);
  });

  it('caps the backend ids one provider may own (MAX_BACKENDS_PER_PROVIDER)', async () => {
    const p = await admitProvider('prov-many');
    const e = envWith({ MAX_BACKENDS_PER_PROVIDER: '2' });
    expect((await sendHeartbeatWith(e, p, heartbeatBody('many-1', 'eu-west'))).status).toBe(200);
    expect((await sendHeartbeatWith(e, p, heartbeatBody('many-2', 'us-east'))).status).toBe(200);
    const third = await sendHeartbeatWith(e, p, heartbeatBody('many-3', 'eu-west'));
    expect(third.status).toBe(403);
    const { error } = (await third.json()) as ErrorBody;
    expect(error.code).toBe('forbidden');
    expect(error.message).toMatch(/already owns 2 backend ids \(MAX_BACKENDS_PER_PROVIDER\)/);
    // The ids it owns still heartbeat.
    expect((await sendHeartbeatWith(e, p, heartbeatBody('many-1', 'eu-west'))).status).toBe(200);
    expect(await env.OPERATOR_REGISTRY.getByName('global').ownedBackends('prov-many')).toEqual(['many-1', 'many-2']);
  });

  it('handles ids named constructor and toString, and refuses __proto__', async () => {
    const ctor = await admitProvider('constructor');
    const str = await admitProvider('toString');
    expect((await sendHeartbeat(ctor, heartbeatBody('toString', 'sa-east'))).status).toBe(200);
    expect((await sendHeartbeat(str, heartbeatBody('constructor', 'sa-east'))).status).toBe(200);
    expect((await sendHeartbeat(str, heartbeatBody('toString', 'af-south'))).status).toBe(403);
    const rows = (await env.REGION_DIRECTORY.getByName('sa-east').backends()).filter((r) => ['constructor', 'toString'].includes(r.id));
    expect(rows.map((r) => [r.id, r.provider])).toEqual([
      ['constructor', 'toString'],
      ['toString', 'constructor'],
    ]);
    const proto = await call('/admin/providers', {
      method: 'POST',
      token: await keyFor('admin'),
      body: JSON.stringify({ id: '__proto__', publicJwk: (await generateEd25519('p')).publicJwk }),
    });
    expect(proto.status).toBe(400);
    const protoBackend = await sendHeartbeat(ctor, heartbeatBody('__proto__', 'sa-east'));
    expect(protoBackend.status).toBe(400);
    const protoIssuer = await sendHeartbeat({ ...ctor, id: '__proto__' }, heartbeatBody('ctor-2', 'sa-east'));
    expect(protoIssuer.status).toBe(401);
  });
});

describe('DELETE /admin/providers/{id}', () => {
  it('removes the provider and its backends from every region, and refuses its heartbeats after', async () => {
    const p = await admitProvider('prov-gone');
    const other = await admitProvider('prov-stays');
    for (const [id, region] of [
      ['gone-1', 'eu-west'],
      ['gone-2', 'us-west'],
      ['gone-3', 'ap-southeast-3'],
    ] as const) {
      expect((await sendHeartbeat(p, heartbeatBody(id, region))).status).toBe(200);
    }
    expect((await sendHeartbeat(other, heartbeatBody('stays-1', 'eu-west'))).status).toBe(200);
    const admin = await keyFor('admin');

    const res = await call('/admin/providers/prov-gone', { method: 'DELETE', token: admin });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ id: 'prov-gone', removed: true, backends: 3 });

    const everywhere = (await call('/admin/backends', { token: admin }).then((r) => r.json())) as { backends: { id: string }[] };
    expect(everywhere.backends.map((b) => b.id).filter((id) => id.startsWith('gone-') || id === 'stays-1')).toEqual(['stays-1']);
    const providers = (await call('/admin/providers', { token: admin }).then((r) => r.json())) as { providers: { id: string }[] };
    expect(providers.providers.map((x) => x.id)).not.toContain('prov-gone');
    expect(await env.OPERATOR_REGISTRY.getByName('global').ownedBackends('prov-gone')).toEqual([]);

    // Its heartbeats answer like an unknown issuer's.
    const after = await sendHeartbeat(p, heartbeatBody('gone-1', 'eu-west'));
    expect(after.status).toBe(401);
    expect(await after.json()).toMatchObject({ error: { code: 'invalid_token' } });
    // An isolate that still caches its key reaches the directory: the tombstone refuses it there, in every region.
    for (const region of ['eu-west', 'us-west', 'ap-northeast']) {
      const result = await env.REGION_DIRECTORY.getByName(region).heartbeat(p.id, {}, heartbeatBody('gone-1', region), { seq: nextSeq(), expiresAt: Date.now() + 60_000 }, 10_000);
      expect(result).toMatchObject({ ok: false, code: 'invalid_token', reason: 'removed' });
    }
    // Its ids are free for others; a second DELETE finds nothing.
    expect((await sendHeartbeat(other, heartbeatBody('gone-2', 'us-west'))).status).toBe(200);
    expect((await call('/admin/providers/prov-gone', { method: 'DELETE', token: admin })).status).toBe(404);
  });

  it('keeps a re-admitted provider out until the tombstone ends', async () => {
    const p = await admitProvider('prov-back');
    expect((await sendHeartbeat(p, heartbeatBody('back-1', 'eu-west'))).status).toBe(200);
    expect((await call('/admin/providers/prov-back', { method: 'DELETE', token: await keyFor('admin') })).status).toBe(200);
    const again = await admitProvider('prov-back');
    expect((await sendHeartbeat(again, heartbeatBody('back-1', 'eu-west'))).status).toBe(401);
    // Once the tombstone is gone (the alarm clears it when due), the provider heartbeats again.
    const stub = env.REGION_DIRECTORY.getByName('eu-west');
    await runInDurableObject(stub, (_obj, state) => state.storage.sql.exec("UPDATE removed_providers SET until = 1 WHERE provider = 'prov-back'"));
    expect((await sendHeartbeat(again, heartbeatBody('back-1', 'eu-west'))).status).toBe(200);
  });

  it('answers 404 for an unknown provider, 400 for a bad id, and needs the admin token', async () => {
    const admin = await keyFor('admin');
    expect((await call('/admin/providers/nobody-here', { method: 'DELETE', token: admin })).status).toBe(404);
    for (const id of ['constructor', 'toString', 'hasOwnProperty']) {
      const res = await call(`/admin/providers/${id}-absent`, { method: 'DELETE', token: admin });
      expect(res.status).toBe(404);
    }
    const bad = await call('/admin/providers/%5F%5Fproto%5F%5F', { method: 'DELETE', token: admin });
    expect(bad.status).toBe(400);
    await admitProvider('prov-kept');
    expect((await call('/admin/providers/prov-kept', { method: 'DELETE', token: await keyFor('consumer') })).status).toBe(403);
    expect((await call('/admin/providers/prov-kept', { method: 'DELETE' })).status).toBe(401);
  });

  it('removes a provider named constructor', async () => {
    const p = await admitProvider('constructor-2');
    const ctor = await admitProvider('constructor');
    expect((await sendHeartbeat(ctor, heartbeatBody('ctor-del', 'us-east'))).status).toBe(200);
    expect((await sendHeartbeat(p, heartbeatBody('ctor-keep', 'us-east'))).status).toBe(200);
    const res = await call('/admin/providers/constructor', { method: 'DELETE', token: await keyFor('admin') });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ id: 'constructor', removed: true });
    const ids = (await env.REGION_DIRECTORY.getByName('us-east').backends()).map((b) => b.id);
    expect(ids).toContain('ctor-keep');
    expect(ids).not.toContain('ctor-del');
  });
});

describe('RegionDirectory expiry', () => {
  it('drops a backend whose heartbeats stopped DEPARTED_KEEP_MS after it expired, when its alarm fires', async () => {
    const p = await admitProvider('prov-g');
    const stub = env.REGION_DIRECTORY.getByName('ap-southeast');
    const key = (await env.OPERATOR_REGISTRY.getByName('global').get(p.id))!.publicJwk;
    const token = () => ({ seq: nextSeq(), expiresAt: Date.now() + 60_000 });
    await stub.heartbeat(p.id, key, heartbeatBody('short', 'ap-southeast'), token(), 50);
    await stub.heartbeat(p.id, key, heartbeatBody('long', 'ap-southeast'), token(), 60_000);
    expect((await stub.backends()).map((b) => b.id)).toEqual(['long', 'short']);
    await new Promise((r) => setTimeout(r, 80));
    // Expired rows are hidden from snapshots at once; the status page still shows them as departed (down) for a while.
    expect((await stub.backends()).map((b) => b.id)).toEqual(['long']);
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    const ids = () => runInDurableObject(stub, (_obj, state) => state.storage.sql.exec('SELECT id FROM backends ORDER BY id').toArray());
    expect(await ids()).toEqual([{ id: 'long' }, { id: 'short' }]);
    expect((await stub.status(60_000)).departed.map((b) => b.id)).toEqual(['short']);
    // DEPARTED_KEEP_MS after its expiry, the alarm deletes it and re-arms for the next expiry.
    await runInDurableObject(stub, (_obj, state) =>
      state.storage.sql.exec("UPDATE backends SET expires_at = ? WHERE id = 'short'", Date.now() - DEPARTED_KEEP_MS - 1),
    );
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    expect(await ids()).toEqual([{ id: 'long' }]);
    const next = await runInDurableObject(stub, (_obj, state) => state.storage.getAlarm());
    expect(next).toBeGreaterThan(Date.now() + 30_000);
  });

  it("keeps a backend's last seq until its token expires, after the backend is gone", async () => {
    const p = await admitProvider('prov-seq');
    const stub = env.REGION_DIRECTORY.getByName('af-south');
    const seq = nextSeq();
    expect(await stub.heartbeat(p.id, {}, heartbeatBody('seq-1', 'af-south'), { seq, expiresAt: Date.now() + 60_000 }, 30)).toMatchObject({ ok: true });
    expect(await stub.heartbeat(p.id, {}, heartbeatBody('seq-2', 'af-south'), { seq, expiresAt: Date.now() + 40 }, 30)).toMatchObject({ ok: true });
    await new Promise((r) => setTimeout(r, 60));
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    expect((await stub.backends()).filter((b) => b.id.startsWith('seq-'))).toEqual([]);
    // seq-1's token is still live: its seq is remembered; seq-2's has expired and its row is cleaned.
    const seqs = await runInDurableObject(stub, (_obj, state) => state.storage.sql.exec("SELECT backend_id, seq FROM heartbeat_seqs WHERE backend_id LIKE 'seq-%'").toArray());
    expect(seqs).toEqual([{ backend_id: 'seq-1', seq }]);
    expect(await stub.heartbeat(p.id, {}, heartbeatBody('seq-1', 'af-south'), { seq, expiresAt: Date.now() + 60_000 }, 30)).toMatchObject({
      ok: false,
      code: 'invalid_token',
      reason: 'replayed',
    });
    expect(await stub.heartbeat(p.id, {}, heartbeatBody('seq-1', 'af-south'), { seq: seq + 1, expiresAt: Date.now() + 60_000 }, 30)).toMatchObject({ ok: true });
    const next = await runInDurableObject(stub, (_obj, state) => state.storage.getAlarm());
    expect(next).not.toBeNull();
  });

  it('refuses a token that has expired by the time it reaches the directory, even once its seq is forgotten', async () => {
    const p = await admitProvider('prov-seq-late');
    const stub = env.REGION_DIRECTORY.getByName('af-south');
    const seq = nextSeq();
    const token = { seq, expiresAt: Date.now() + 40 };
    expect(await stub.heartbeat(p.id, {}, heartbeatBody('seq-late', 'af-south'), token, 60_000)).toMatchObject({ ok: true });
    // The edge let the copy through just before its exp; it reaches the directory after, when the seq has gone with the token.
    await new Promise((r) => setTimeout(r, 60));
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    expect(await stub.heartbeat(p.id, {}, heartbeatBody('seq-late', 'af-south'), token, 60_000)).toMatchObject({ ok: false, code: 'invalid_token' });
    expect(await stub.heartbeat(p.id, {}, heartbeatBody('seq-late', 'af-south'), { seq, expiresAt: Date.now() - 1 }, 60_000)).toMatchObject({
      ok: false,
      code: 'invalid_token',
    });
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

  it('counts demand for models named constructor and toString, and ignores malformed entries', async () => {
    const stub = env.REGION_DIRECTORY.getByName('ap-southeast-3');
    const counts = JSON.parse('{"constructor": 2, "toString": 1, "__proto__": 5, "bad name": 1, "neg": -3, "nan": "x", "huge": 1e300}') as Record<string, number>;
    await stub.recordDemand(counts);
    await stub.recordDemand({ constructor: 1 });
    const mine = new Set(Object.keys(counts));
    expect((await stub.demand()).filter((d) => mine.has(d.model)).map((d) => [d.model, d.requests])).toEqual([
      ['constructor', 3],
      ['huge', 1_000_000_000],
      ['toString', 1],
    ]);
  });
});
