/**
 * The backend's logs (docs/api.md section 2.12): one JSON object per line
 * (`time`, `level`, `name`, `msg`, fields), errors with their stack in the
 * line, secret-looking fields redacted and every string bounded; and one
 * `request` line per request from the HTTP app over real ONNX Runtime
 * sessions, naming the edge's request id, the route, the model and the
 * status, never the dispatch token or the consumer's input.
 */

import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { MeshError } from '../../shared/errors.ts';
import { createWorkerApp } from '../../gpu-backend/src/http/app.ts';
import { Lifecycle } from '../../gpu-backend/src/lifecycle.ts';
import { logRecord, memoryLogger, stdioLogger } from '../../gpu-backend/src/log.ts';
import { Attestor } from '../../gpu-backend/src/mesh/attestation.ts';
import type { DispatchVerifier } from '../../gpu-backend/src/mesh/dispatch.ts';
import { ProbeSigner } from '../../gpu-backend/src/mesh/probe.ts';
import { generateProviderKey, importProviderKey } from '../../gpu-backend/src/mesh/provider-key.ts';
import type { InferencePort } from '../../gpu-backend/src/serving/executor.ts';
import { dispatchToken, type Harness, useDemoHarness } from './helpers.ts';

afterEach(() => vi.restoreAllMocks());

describe('stdioLogger', () => {
  it('writes one JSON object per line: time, level, name, msg, then the fields; info to stdout, the rest to stderr', () => {
    const out: string[] = [];
    const errors: string[] = [];
    const log = stdioLogger('backend sg-1', { out: (l) => out.push(l), err: (l) => errors.push(l) });
    log.info('model embed loaded', { model: 'embed', ms: 12, warm: true, skipped: undefined });
    log.warn('heartbeat failed');
    log.error('inference failed', new Error('boom\nsecond line'), { model: 'embed' });

    expect(out).toHaveLength(1);
    expect(out[0]).not.toContain('\n');
    const info = JSON.parse(out[0]!) as Record<string, unknown>;
    expect(Object.keys(info)).toEqual(['time', 'level', 'name', 'msg', 'model', 'ms', 'warm']);
    expect(info).toMatchObject({ level: 'info', name: 'backend sg-1', msg: 'model embed loaded', model: 'embed', ms: 12, warm: true });
    expect(new Date(info.time as string).toISOString()).toBe(info.time);
    expect(JSON.parse(errors[0]!)).toMatchObject({ level: 'warn', msg: 'heartbeat failed' });
    expect(errors).toHaveLength(2);
    expect(errors[1]).not.toContain('\n');
    const error = JSON.parse(errors[1]!) as { level: string; model: string; err: { name: string; message: string; stack: string } };
    expect(error).toMatchObject({ level: 'error', model: 'embed', err: { name: 'Error', message: 'boom\nsecond line' } });
    expect(error.err.stack).toContain('log.test.ts');
  });

  it('writes from a worker thread straight to the file descriptors, not through the main thread as console does', async () => {
    const fixture = new URL('./fixtures/log-from-worker.ts', import.meta.url).pathname;
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [fixture], { timeout: 20_000 });
    const lines = (text: string) => text.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines(stdout).map((r) => [r.name, r.msg, r.i])).toEqual([0, 1, 2].map((i) => ['backend t http-worker-1', 'request', i]));
    expect(stdout).toContain('from console');
    const errs = lines(stderr);
    expect(errs[0]).toMatchObject({ level: 'warn', msg: 'slow', ms: 9 });
    // The main thread's streams saw the one console line, and none of the logger's.
    expect(errs.at(-1)).toMatchObject({ name: 'main', msg: 'relayed 1 0' });
  });

  it('redacts fields that may hold a secret or an input, keeps its own keys, and bounds strings', () => {
    const r = logRecord('info', 'n', 'm', {
      authorization: 'Bearer abc',
      token: 'abc',
      dispatchToken: 'abc',
      key: 'k',
      privateJwk: 'p',
      input: 'hello',
      inputs: 'hello',
      body: '{}',
      data: '[1]',
      level: 'error',
      msg: 'spoofed',
      model: 'x'.repeat(5000),
    });
    for (const k of ['authorization', 'token', 'dispatchToken', 'key', 'privateJwk', 'input', 'inputs', 'body', 'data']) expect(r[k], k).toBe('[redacted]');
    expect(r.level).toBe('info');
    expect(r.msg).toBe('m');
    expect((r.model as string).length).toBeLessThanOrEqual(1025);
  });
});

describe('the HTTP app', () => {
  let h: Harness;
  useDemoHarness((built) => (h = built));

  const records = () => (h.log as ReturnType<typeof memoryLogger>).records.filter((r) => r.msg === 'request');

  it('logs one line per request with the edge’s request id, route, model and status; never the token or the input', async () => {
    const secret = 'words nobody may log';
    const raw = JSON.stringify({ inputs: [{ name: 'text', shape: [1], datatype: 'BYTES', data: [secret] }] });
    const token = await dispatchToken({ model: 'embed', body: raw, key: h.mesh });
    const before = records().length;
    const ok = await h.post('/v2/models/embed/infer', undefined, { raw, token, headers: { 'x-request-id': '6f1c1c1e-1111-4222-8333-944444444444' } });
    expect(ok.status).toBe(200);
    // The same token again is a replay: 401, logged with its code.
    const replay = await h.post('/v2/models/embed/infer', undefined, { raw, token, headers: { 'x-request-id': 'bad id with spaces' } });
    expect(replay.status).toBe(401);
    const missing = await h.get('/v2/nothing-here');
    expect(missing.status).toBe(404);

    const lines = records().slice(before);
    expect(lines).toHaveLength(3);
    expect(lines[0]).toMatchObject({
      level: 'info',
      request_id: '6f1c1c1e-1111-4222-8333-944444444444',
      method: 'POST',
      route: '/v2/models/:model/infer',
      model: 'embed',
      status: 200,
    });
    expect(typeof lines[0]!.ms).toBe('number');
    expect(lines[0]!.error).toBeUndefined();
    expect(lines[1]).toMatchObject({ status: 401, error: 'invalid_token', model: 'embed' });
    expect(lines[1]!.request_id).toBeUndefined();
    expect(lines[2]).toMatchObject({ status: 404, method: 'GET' });
    expect(lines[2]!.route).toBeUndefined();

    const everything = JSON.stringify(h.log.records) + h.log.lines.join('\n');
    expect(everything).not.toContain(secret);
    expect(everything).not.toContain(token.split('.')[2]!);
  });
});

describe('an HTTP worker', () => {
  it('logs the requests it answers itself, and leaves those it forwards to the main thread', async () => {
    const key = await importProviderKey((await generateProviderKey('log-worker')).privateJwk);
    const log = memoryLogger();
    const app = createWorkerApp({
      maxBodyBytes: 64 * 1024,
      dispatch: { check: () => Promise.reject(new MeshError('invalid_token', 'refused')) } as unknown as Pick<DispatchVerifier, 'check'>,
      attestor: new Attestor({ key, providerId: 'p', backendId: 'w-1' }),
      probe: new ProbeSigner({ key, backendId: 'w-1' }),
      executor: { tokenRejected: () => undefined } as unknown as InferencePort,
      lifecycle: new Lifecycle(),
      log,
      forward: async () => new Response('{}', { status: 200 }),
    });
    const infer = await app.request('/v2/models/embed/infer', { method: 'POST', headers: { 'x-request-id': 'edge-id-1' }, body: '{}' });
    expect(infer.status).toBe(401);
    const probe = await app.request('/v2/mesh/probe', { method: 'POST', body: JSON.stringify({ nonce: 'AbCdEfGhIjKlMnOp_-0123456789' }) });
    expect(probe.status).toBe(200);
    expect((await app.request('/v2/health/live')).status).toBe(200);
    expect(log.records.filter((r) => r.msg === 'request').map((r) => [r.route, r.model, r.status, r.error, r.request_id])).toEqual([
      ['/v2/models/:model/infer', 'embed', 401, 'invalid_token', 'edge-id-1'],
      ['/v2/mesh/probe', undefined, 200, undefined, undefined],
    ]);
  });
});
