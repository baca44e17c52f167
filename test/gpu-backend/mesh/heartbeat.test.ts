/**
 * Heartbeats: the first one goes out at start, signed by the provider key
 * with the heartbeat typ and audience, with a body the edge's parser accepts;
 * each token is bound to the exact bytes sent (`body_sha256`) and carries a
 * `seq` above every earlier one, also when the clock stands still or steps back;
 * the edge's load/unload actions are applied; an outage is logged once and its
 * recovery once; stop() sends `ready: false`.
 */

import { createHash } from 'node:crypto';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { decodeJwt, importJWK, jwtVerify } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseHeartbeat, type HeartbeatAction } from '../../../shared/heartbeat.ts';
import { HEARTBEAT_AUDIENCE, TYP, type HeartbeatClaims } from '../../../shared/jwt.ts';
import { Heartbeater } from '../../../gpu-backend/src/mesh/heartbeat.ts';
import { memoryLogger } from '../../../gpu-backend/src/log.ts';
import { importProviderKey } from '../../../gpu-backend/src/mesh/provider-key.ts';
import { BACKEND_ID, EDGE_URL, PROVIDER_ID, demoRepository, harness, type Harness } from '../helpers.ts';

let repo: Awaited<ReturnType<typeof demoRepository>>;
let h: Harness;
let actions: HeartbeatAction[] = [];

beforeAll(async () => {
  repo = await demoRepository();
  h = await harness({
    repo: repo.dir,
    env: { HEARTBEAT_INTERVAL_MS: '60000', PUBLIC_URL: 'http://10.0.0.7:9101', LAT: '50.1', LON: '8.7' },
    heartbeatReply: () => {
      const reply = { ok: true, ttlSeconds: 10, actions };
      actions = [];
      return reply;
    },
  });
});
afterAll(async () => {
  await h?.backend.repository.close();
  await repo?.cleanup();
});

describe('heartbeats', () => {
  it('sends the first beat at start: signed by the provider key, with a body the edge accepts', async () => {
    h.backend.heartbeat.start();
    await new Promise((r) => setTimeout(r, 50));
    expect(h.heartbeats).toHaveLength(1); // at once, not after the 60 s interval
    const beat = h.heartbeats[0]!;
    expect(beat.url).toBe(`${EDGE_URL}/v1/providers/heartbeat`);
    const token = beat.authorization.replace(/^Bearer /, '');
    const { payload, protectedHeader } = await jwtVerify(token, await importJWK(h.provider.publicJwk, 'EdDSA'), {
      algorithms: ['EdDSA'],
      typ: TYP.heartbeat,
      issuer: PROVIDER_ID,
      subject: BACKEND_ID,
      audience: HEARTBEAT_AUDIENCE,
    });
    expect(protectedHeader.kid).toBe(h.provider.privateJwk.kid);
    expect(payload.exp! - payload.iat!).toBe(60);

    const body = parseHeartbeat(beat.body);
    expect(body).toMatchObject({
      backendId: BACKEND_ID,
      url: 'http://10.0.0.7:9101',
      region: 'eu-west',
      lat: 50.1,
      lon: 8.7,
      executionProvider: 'cpu',
      ready: true,
      capacity: { slots: 1, inFlight: 0, queued: 0 },
    });
    expect(body.models.map((m) => [m.name, m.version, m.warm, m.maxBatchSize])).toEqual([
      ['classifier', '1', true, 64],
      ['embed', '1', true, 32],
    ]);
    expect(body.models.every((m) => m.p50Ms > 0)).toBe(true);
    // Memory per model: the size of the model.onnx it serves.
    for (const m of body.models) {
      expect(m.memoryBytes).toBe((await stat(path.join(repo.dir, m.name, m.version, 'model.onnx'))).size);
    }
  });

  it('binds each token to the exact body bytes sent, with a seq above every earlier beat', async () => {
    const before = Date.now();
    for (let i = 0; i < 3; i++) expect(await h.backend.heartbeat.beat()).toBe(true);
    const beats = h.heartbeats.map((b) => ({ raw: b.raw, claims: decodeJwt<HeartbeatClaims>(b.authorization.replace(/^Bearer /, '')) }));
    for (const { raw, claims } of beats) expect(claims.body_sha256).toBe(createHash('sha256').update(raw).digest('hex'));
    const seqs = beats.map((b) => b.claims.seq);
    for (const [i, seq] of seqs.entries()) {
      expect(Number.isSafeInteger(seq)).toBe(true);
      if (i > 0) expect(seq).toBeGreaterThan(seqs[i - 1]!);
    }
    // Wall-clock based, so above anything a previous run of this backend sent.
    expect(seqs.at(-1)!).toBeGreaterThanOrEqual(before);
  });

  it('keeps seq increasing when the clock stands still or steps back, and hashes what it sends', async () => {
    let clock = 1_900_000_000_000;
    const sent: { raw: Uint8Array; claims: HeartbeatClaims }[] = [];
    const beater = new Heartbeater({
      edgeUrl: EDGE_URL,
      providerId: PROVIDER_ID,
      backendId: BACKEND_ID,
      key: await importProviderKey(h.provider.privateJwk),
      intervalMs: 60_000,
      snapshot: () => h.backend.snapshot(),
      apply: async () => false,
      log: memoryLogger(),
      now: () => clock,
      fetch: (async (_url: unknown, init?: RequestInit) => {
        const raw = new Uint8Array(await new Response(init?.body).arrayBuffer());
        sent.push({ raw, claims: decodeJwt<HeartbeatClaims>(new Headers(init?.headers).get('authorization')!.replace(/^Bearer /, '')) });
        return new Response('{"ok":true,"ttlSeconds":10,"actions":[]}');
      }) as typeof fetch,
    });
    await beater.beat();
    await beater.beat(); // same millisecond
    clock -= 5_000; // the clock steps back
    await beater.beat();
    clock += 60_000;
    await beater.beat({ ready: false });
    expect(sent.map((s) => s.claims.seq)).toEqual([1_900_000_000_000, 1_900_000_000_001, 1_900_000_000_002, 1_900_000_055_000]);
    for (const { raw, claims } of sent) expect(claims.body_sha256).toBe(createHash('sha256').update(raw).digest('hex'));
    expect(JSON.parse(new TextDecoder().decode(sent.at(-1)!.raw)).ready).toBe(false);
  });

  it('reports p50Ms as the median of measured execution times', async () => {
    for (let i = 0; i < 5; i++) {
      const res = await h.post('/v2/models/classifier/infer', { inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 16], data: new Array(16).fill(i) }] });
      expect(res.status).toBe(200);
    }
    const reported = h.backend.snapshot().models.find((m) => m.name === 'classifier')!.p50Ms;
    const measured = h.backend.repository.modelStats().find((m) => m.name === 'classifier')!.p50Ms;
    expect(reported).toBeGreaterThan(0);
    expect(reported).toBeCloseTo(measured, 3);
  });

  it('parses memoryBytes as optional and non-negative', () => {
    const beat = structuredClone(h.heartbeats[0]!.body) as { models: Record<string, unknown>[] };
    delete beat.models[0]!.memoryBytes;
    expect(parseHeartbeat(beat).models[0]).not.toHaveProperty('memoryBytes');
    beat.models[0]!.memoryBytes = -1;
    expect(() => parseHeartbeat(beat)).toThrow(/models\[0\]\.memoryBytes must be a number >= 0/);
    beat.models[0]!.memoryBytes = '12';
    expect(() => parseHeartbeat(beat)).toThrow(/memoryBytes/);
  });

  it('accepts the cuda, webgpu and cpu execution providers and nothing else', () => {
    const beat = structuredClone(h.heartbeats[0]!.body) as Record<string, unknown>;
    for (const p of ['cuda', 'webgpu', 'cpu']) expect(parseHeartbeat({ ...beat, executionProvider: p }).executionProvider).toBe(p);
    for (const p of ['CUDA', 'tpu', '', 1, undefined]) {
      expect(() => parseHeartbeat({ ...beat, executionProvider: p })).toThrow('Heartbeat executionProvider must be "cuda", "webgpu" or "cpu".');
    }
  });

  it('applies unload and load actions from the reply', async () => {
    actions = [{ op: 'unload', model: 'classifier' }];
    expect(await h.backend.heartbeat.beat()).toBe(true);
    await h.backend.heartbeat.settled();
    expect(h.backend.repository.state('classifier')).toBe('UNAVAILABLE');
    await h.backend.heartbeat.beat();
    expect(parseHeartbeat(h.heartbeats.at(-1)!.body).models.map((m) => m.name)).toEqual(['embed']);

    actions = [{ op: 'load', model: 'classifier' }, { op: 'load', model: 'no-such-model' }];
    await h.backend.heartbeat.beat();
    await h.backend.heartbeat.settled();
    expect(h.backend.repository.state('classifier')).toBe('READY');
    expect(h.log.lines.some((l) => l.includes('load model no-such-model') && l.startsWith('warn'))).toBe(true);
  });

  it('logs an outage once and its recovery once', async () => {
    const log = memoryLogger();
    let up = false;
    const bodies: { ready: boolean }[] = [];
    const beater = new Heartbeater({
      edgeUrl: EDGE_URL,
      providerId: PROVIDER_ID,
      backendId: BACKEND_ID,
      key: await importProviderKey(h.provider.privateJwk),
      intervalMs: 60_000,
      snapshot: () => h.backend.snapshot(),
      apply: async () => false,
      log,
      fetch: (async (_url: unknown, init?: RequestInit) => {
        bodies.push(JSON.parse(await new Response(init?.body).text()));
        if (!up) throw new TypeError('fetch failed', { cause: new Error('connect ECONNREFUSED') });
        return new Response('{"ok":true,"ttlSeconds":10,"actions":[]}');
      }) as typeof fetch,
    });
    for (let i = 0; i < 4; i++) expect(await beater.beat()).toBe(false);
    up = true;
    expect(await beater.beat()).toBe(true);
    expect(await beater.beat()).toBe(true);
    expect(log.lines).toHaveLength(2);
    expect(log.lines[0]).toMatch(/^warn: heartbeat to .* failed: fetch failed \(connect ECONNREFUSED\)/);
    expect(log.lines[1]).toMatch(/^info: heartbeat to .* recovered after 4 failed beat\(s\)/);

    await beater.stop();
    expect(bodies.at(-1)!.ready).toBe(false);
  });

  it('stop() tells the edge the backend is not ready any more', async () => {
    await h.backend.heartbeat.stop();
    const last = parseHeartbeat(h.heartbeats.at(-1)!.body);
    expect(last.ready).toBe(false);
    const count = h.heartbeats.length;
    await new Promise((r) => setTimeout(r, 30));
    expect(h.heartbeats.length).toBe(count);
  });
});
