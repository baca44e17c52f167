/**
 * HTTP workers (HTTP_THREADS, http-pool.ts): a backend process whose port is
 * served by two HTTP workers behaves as one backend. Inferences answer on any
 * worker and are attested; a token is single-use across workers (one replay
 * cache, on the main thread); bad requests get the same 4xx codes, and fuzzed
 * ones never a 5xx; every other route (health, metadata, repository control,
 * metrics) is the main thread's answer; the main thread's metrics count what
 * the workers served. A worker that dies is replaced and the port keeps
 * serving. Also how `auto` resolves.
 */

import { createHash } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { decodeProtectedHeader, importJWK, jwtVerify } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateDemoModels } from '../../../gpu-backend/src/demo-models/generate.ts';
import { HttpPool, httpThreadsFor } from '../../../gpu-backend/src/http/http-pool.ts';
import { generateProviderKey } from '../../../gpu-backend/src/mesh/provider-key.ts';
import { TYP } from '../../../shared/jwt.ts';
import { demoRepository, dispatchToken, expectNo5xx, harness, inferBodies, type Harness } from '../helpers.ts';
import { fakeEdge, run, until, type FakeEdge, type Running } from '../process-helpers.ts';

describe('httpThreadsFor', () => {
  it('keeps HTTP on the main thread below 4 cores and uses half the cores, at most 8, above', () => {
    expect(httpThreadsFor('auto', 1)).toBe(0);
    expect(httpThreadsFor('auto', 2)).toBe(0);
    expect(httpThreadsFor('auto', 3)).toBe(0);
    expect(httpThreadsFor('auto', 4)).toBe(2);
    expect(httpThreadsFor('auto', 6)).toBe(3);
    expect(httpThreadsFor('auto', 16)).toBe(8);
    expect(httpThreadsFor('auto', 64)).toBe(8);
  });

  it('takes an explicit count as it is, whatever the cores', () => {
    expect(httpThreadsFor(0, 64)).toBe(0);
    expect(httpThreadsFor(3, 2)).toBe(3);
  });
});

const BACKEND = 'threads-1';
const TEXT = 'the night shift nurses got their insulin on time';

describe('a backend with HTTP_THREADS=2', () => {
  let dir: string;
  let edge: FakeEdge;
  let p: Running;
  let url: string;
  let provider: Awaited<ReturnType<typeof generateProviderKey>>;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'mesh-http-pool-'));
    await generateDemoModels(path.join(dir, 'models'));
    edge = await fakeEdge();
    provider = await generateProviderKey('threads-key');
    p = run('gpu-backend/src/main.ts', [], {
      BACKEND_ID: BACKEND,
      PROVIDER_ID: 'prov-threads',
      PROVIDER_KEY: JSON.stringify(provider.privateJwk),
      REGION: 'eu-west',
      EDGE_URL: edge.url,
      PORT: '0',
      MODEL_REPOSITORY: path.join(dir, 'models'),
      EXECUTION_PROVIDERS: 'cpu',
      INFERENCE_THREAD: 'main',
      HTTP_THREADS: '2',
      MAX_BODY_BYTES: '4096',
      HEARTBEAT_INTERVAL_MS: '200',
    });
    url = await until(() => /listening on (http:\/\/127\.0\.0\.1:\d+) \(2 HTTP threads\)/.exec(p.output())?.[1], 'the ready line', p.output);
  }, 60_000);

  afterAll(async () => {
    if (p && p.child.exitCode === null) {
      p.child.kill('SIGTERM');
      await Promise.race([p.exit, new Promise((r) => setTimeout(r, 15_000))]);
      if (p.child.exitCode === null) p.child.kill('SIGKILL');
    }
    await edge?.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** One request on a connection of its own, so the kernel may hand it to either thread. */
  function send(method: string, route: string, options: { body?: string; token?: string } = {}): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: Buffer }> {
    return new Promise((resolve, reject) => {
      const headers: Record<string, string> = {};
      if (options.token) headers.authorization = `Bearer ${options.token}`;
      if (options.body !== undefined) headers['content-type'] = 'application/json';
      const req = httpRequest(`${url}${route}`, { method, headers, agent: false }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }));
      });
      req.on('error', reject);
      req.end(options.body);
    });
  }

  const token = (model: string, body: string, claims: Record<string, unknown> = {}) =>
    dispatchToken({ model, body, key: edge.mesh, claims: { iss: edge.url, aud: BACKEND, ...claims } });

  const embedBody = (text: string, id?: string) =>
    JSON.stringify({ ...(id ? { id } : {}), inputs: [{ name: 'text', datatype: 'BYTES', shape: [1], data: [text] }] });

  it('answers inferences on its threads, each with a valid attestation over the bytes sent', async () => {
    const answers = await Promise.all(
      Array.from({ length: 8 }, async (_, i) => {
        const body = embedBody(TEXT, `req-${i}`);
        const t = await token('embed', body);
        return { t, res: await send('POST', '/v2/models/embed/infer', { body, token: t }) };
      }),
    );
    const publicKey = await importJWK(provider.publicJwk, 'EdDSA');
    const embeddings: number[][] = [];
    for (const [i, { t, res }] of answers.entries()) {
      expect(res.status).toBe(200);
      const json = JSON.parse(res.body.toString()) as { id: string; model_name: string; outputs: { name: string; shape: number[]; data: number[] }[] };
      expect(json).toMatchObject({ id: `req-${i}`, model_name: 'embed', model_version: '1' });
      expect(json.outputs[0]!.shape).toEqual([1, 256]);
      embeddings.push(json.outputs[0]!.data);
      const attestation = res.headers['x-provider-attestation'] as string;
      const { payload } = await jwtVerify(attestation, publicKey, { algorithms: ['EdDSA'], typ: TYP.attestation, issuer: 'prov-threads', subject: BACKEND });
      expect(payload.output_sha256).toBe(createHash('sha256').update(res.body).digest('hex'));
      expect(payload.jti).toBe((JSON.parse(Buffer.from(t.split('.')[1]!, 'base64url').toString()) as { jti: string }).jti);
      expect(decodeProtectedHeader(attestation).kid).toBe('threads-key');
    }
    // The same text gives the same embedding whichever thread read it (to float
    // rounding: ONNX Runtime's kernels may sum in another order at another batch size).
    for (const e of embeddings.slice(1)) e.forEach((x, j) => expect(x).toBeCloseTo(embeddings[0]![j]!, 5));
  });

  it('refuses a replayed token on every new connection, whichever thread takes it', async () => {
    const body = embedBody(TEXT);
    const t = await token('embed', body);
    expect((await send('POST', '/v2/models/embed/infer', { body, token: t })).status).toBe(200);
    // With a replay cache per thread, 8 fresh connections would all miss the spent jti only if the kernel put every one on the first thread (1 in 256).
    const replays = await Promise.all(Array.from({ length: 8 }, () => send('POST', '/v2/models/embed/infer', { body, token: t })));
    for (const res of replays) {
      expect(res.status).toBe(401);
      expect(JSON.parse(res.body.toString())).toMatchObject({ error: { code: 'invalid_token', message: expect.stringMatching(/already used/) } });
    }
  });

  it('gives bad requests the same 4xx codes as the main thread does', async () => {
    const body = embedBody(TEXT);
    const swapped = await send('POST', '/v2/models/embed/infer', { body: embedBody('another text'), token: await token('embed', body) });
    expect(swapped.status).toBe(401);
    expect(swapped.body.toString()).toMatch(/body_sha256/);

    const badTensor = JSON.stringify({ inputs: [{ name: 'text', datatype: 'INT64', shape: [1], data: [3] }] });
    const bad = await send('POST', '/v2/models/embed/infer', { body: badTensor, token: await token('embed', badTensor) });
    expect(bad.status).toBe(400);
    expect(JSON.parse(bad.body.toString()).error).toMatchObject({ code: 'datatype_mismatch', message: expect.stringMatching(/"text"/) });

    const notJson = '{"inputs": [';
    const broken = await send('POST', '/v2/models/embed/infer', { body: notJson, token: await token('embed', notJson) });
    expect(broken.status).toBe(400);
    expect(JSON.parse(broken.body.toString()).error.code).toBe('invalid_json');

    const unknown = await send('POST', '/v2/models/nope/infer', { body, token: await token('nope', body) });
    expect(unknown.status).toBe(404);
    expect(JSON.parse(unknown.body.toString()).error.code).toBe('model_not_found');

    const wrongVersion = await send('POST', '/v2/models/embed/versions/7/infer', { body, token: await token('embed', body) });
    expect(wrongVersion.status).toBe(404);

    // A repository control token is no permission to infer, checked on the thread that reads the request.
    const control = await send('POST', '/v2/models/embed/infer', { body, token: await token('embed', body, { purpose: 'control' }) });
    expect(control.status).toBe(401);
    expect(JSON.parse(control.body.toString()).error).toMatchObject({ code: 'invalid_token', message: expect.stringMatching(/purpose is "control"/) });

    // A token for another version of the model, refused once the main thread knows the version served.
    const otherVersion = await send('POST', '/v2/models/embed/infer', { body, token: await token('embed', body, { model_version: '2' }) });
    expect(otherVersion.status).toBe(401);
    expect(JSON.parse(otherVersion.body.toString()).error).toMatchObject({ code: 'invalid_token', message: expect.stringMatching(/version "2".*version "1"/) });

    const big = embedBody('x'.repeat(5000));
    const tooLarge = await send('POST', '/v2/models/embed/infer', { body: big, token: await token('embed', big) });
    expect(tooLarge.status).toBe(413);
    expect(JSON.parse(tooLarge.body.toString()).error.code).toBe('body_too_large');

    const noToken = await send('POST', '/v2/models/embed/infer', { body });
    expect(noToken.status).toBe(401);
    expect(noToken.headers['www-authenticate']).toMatch(/Bearer/);
  });

  it('answers every other route from the main thread: health, metadata, repository control, metrics', async () => {
    const ready = await send('GET', '/v2/health/ready');
    expect(ready.status).toBe(200);
    expect(JSON.parse(ready.body.toString())).toMatchObject({ ready: true, backendId: BACKEND, executionProvider: 'cpu' });
    const meta = await send('GET', '/v2/models/embed');
    expect(JSON.parse(meta.body.toString())).toMatchObject({ name: 'embed', versions: ['1'] });
    expect((await send('GET', '/v2/nowhere')).status).toBe(404);
    expect((await send('HEAD', '/v2/health/live')).status).toBe(200);

    // An inference token is no permission to change the repository (forwarded to the main thread, refused there).
    const inferToken = await send('POST', '/v2/repository/models/classifier/unload', { body: '', token: await token('classifier', '') });
    expect(inferToken.status).toBe(401);
    expect(JSON.parse(inferToken.body.toString()).error).toMatchObject({ code: 'invalid_token', message: expect.stringMatching(/purpose is "infer"/) });
    const control = { purpose: 'control' };
    const unload = await send('POST', '/v2/repository/models/classifier/unload', { body: '', token: await token('classifier', '', control) });
    expect(unload.status).toBe(200);
    expect(JSON.parse(unload.body.toString())).toMatchObject({ name: 'classifier', state: 'UNAVAILABLE' });
    const classifierReady = await send('GET', '/v2/models/classifier/ready');
    expect(classifierReady.status).toBe(503);
    const load = await send('POST', '/v2/repository/models/classifier/load', { body: '', token: await token('classifier', '', control) });
    expect(load.status).toBe(200);
    expect((await send('GET', '/v2/models/classifier/ready')).status).toBe(200);

    // The earlier tests' answers and refusals, counted on the main thread.
    const metrics = (await send('GET', '/metrics')).body.toString();
    const count = (re: RegExp) => Number(re.exec(metrics)?.[1] ?? 'NaN');
    expect(count(/^nv_inference_request_success\{model="embed",version="1"\} (\d+)$/m)).toBe(9);
    expect(count(/^nv_inference_request_failure\{model="embed",version="1",reason="datatype_mismatch"\} (\d+)$/m)).toBe(1);
    expect(count(/^nv_inference_request_failure\{model="embed",version="1",reason="invalid_json"\} (\d+)$/m)).toBe(1);
    expect(count(/^nv_inference_request_failure\{model="embed",version="1",reason="model_not_found"\} (\d+)$/m)).toBe(1);
    // Replays, the swapped body, the control token on infer, the other version, the infer token on unload.
    expect(count(/^mesh_dispatch_rejected_total\{code="invalid_token"\} (\d+)$/m)).toBe(12);
  });

  it('never answers 5xx to random bodies or near-miss requests, across the thread', async () => {
    let answered = 0;
    await fc.assert(
      fc.asyncProperty(fc.constantFrom('classifier', 'embed'), inferBodies(), async (model, value) => {
        const body = JSON.stringify(value);
        const res = await send('POST', `/v2/models/${model}/infer`, { body, token: await token(model, body) });
        if (res.status === 200) answered++;
        await expectNo5xx({ status: res.status, json: async () => JSON.parse(res.body.toString()) }, value);
      }),
      { numRuns: 150 },
    );
    expect(answered).toBeGreaterThan(0);
  });

  it('drains on SIGTERM and exits 0', async () => {
    p.child.kill('SIGTERM');
    expect(await p.exit).toBe(0);
    expect(p.output()).toMatch(/SIGTERM: draining/);
    expect(p.output()).toMatch(/stopped/);
    expect(edge.beats.at(-1)!.ready).toBe(false);
  });
});

describe('HttpPool', () => {
  let repo: Awaited<ReturnType<typeof demoRepository>>;
  let edge: FakeEdge;
  let h: Harness;
  let pool: HttpPool | undefined;

  beforeAll(async () => {
    repo = await demoRepository();
    edge = await fakeEdge();
    // The threads fetch the fake edge's JWKS; the harness's own key is not used here.
    h = await harness({ repo: repo.dir, env: { EDGE_URL: edge.url, MODELS: 'classifier' } });
  }, 60_000);
  afterAll(async () => {
    await pool?.terminate();
    await h?.backend.repository.close();
    await edge?.close();
    await repo?.cleanup();
  });

  it('replaces a worker that dies, and the port keeps answering', async () => {
    const { backend } = h;
    pool = await HttpPool.start({ count: 2, config: backend.config, executor: backend.executor, app: backend.app, log: h.log });
    const url = `http://127.0.0.1:${pool.address.port}`;
    const infer = async () => {
      const body = JSON.stringify({ inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 16], data: new Array(16).fill(0.5) }] });
      const token = await dispatchToken({ model: 'classifier', body, key: edge.mesh, claims: { iss: edge.url } });
      return fetch(`${url}/v2/models/classifier/infer`, { method: 'POST', headers: { authorization: `Bearer ${token}` }, body });
    };
    expect((await infer()).status).toBe(200);

    const [victim] = pool.workers;
    await victim!.terminate();
    await until(() => (pool!.workers.length === 2 && !pool!.workers.includes(victim!) ? true : undefined), 'a new worker', () => h.log.lines.join('\n'), 10_000);
    expect(h.log.lines.some((l) => /warn: an HTTP worker exited \(code 1\); starting another/.test(l))).toBe(true);
    const statuses = await Promise.all(Array.from({ length: 8 }, async () => (await infer()).status));
    expect(statuses).toEqual(new Array(8).fill(200));
  });

  it('prepares requests on the workers once they know the model, and sends them parsed again after a reload (stale)', async () => {
    const { backend } = h;
    pool ??= await HttpPool.start({ count: 2, config: backend.config, executor: backend.executor, app: backend.app, log: h.log });
    const url = `http://127.0.0.1:${pool.address.port}`;
    const body = JSON.stringify({ inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 16], data: Array.from({ length: 16 }, (_, i) => i / 16) }] });
    const infer = async () => {
      const token = await dispatchToken({ model: 'classifier', body, key: edge.mesh, claims: { iss: edge.url } });
      const res = await fetch(`${url}/v2/models/classifier/infer`, { method: 'POST', headers: { authorization: `Bearer ${token}` }, body });
      expect(res.status).toBe(200);
      return { outputs: ((await res.json()) as { outputs: unknown }).outputs, attestation: res.headers.get('x-provider-attestation')! };
    };
    // What the main thread alone answers (its app checks tokens against the harness's key).
    const own = await dispatchToken({ model: 'classifier', body, key: h.mesh, claims: { iss: edge.url } });
    const expected = (await (await h.post('/v2/models/classifier/infer', undefined, { raw: body, token: own })).json()) as { outputs: unknown };
    expect(expected.outputs).toBeDefined();
    const jobs: { prepared: boolean; stale: boolean }[] = [];
    const original = backend.executor.runForWorker.bind(backend.executor);
    backend.executor.runForWorker = async (job) => {
      const answer = await original(job);
      jobs.push({ prepared: job.prepared !== undefined, stale: 'stale' in answer });
      return answer;
    };
    try {
      for (let i = 0; i < 12; i++) {
        const { outputs, attestation } = await infer();
        expect(outputs).toEqual(expected.outputs);
        // Metered on the worker when prepared there: the same units as the main thread counts.
        expect(JSON.parse(Buffer.from(attestation.split('.')[1]!, 'base64url').toString())).toMatchObject({ units: { input: 1, output: 1 } });
      }
      expect(jobs.filter((j) => j.prepared).length).toBeGreaterThan(0);
      await backend.repository.unload('classifier');
      await backend.repository.load('classifier');
      jobs.length = 0;
      for (let i = 0; i < 6; i++) expect((await infer()).outputs).toEqual(expected.outputs);
      expect(jobs.some((j) => j.prepared && j.stale)).toBe(true);
      expect(jobs.filter((j) => j.stale).every((j) => j.prepared)).toBe(true);
    } finally {
      backend.executor.runForWorker = original;
    }
  });
});
