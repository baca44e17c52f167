/**
 * The backend end to end over real ONNX Runtime sessions: OIP metadata,
 * inference on both demo models (token ids, text, features), the provider
 * attestation on every answer, health, metrics, repository load/unload, and
 * one run over a real listening socket.
 */

import { serve } from '@hono/node-server';
import { importJWK, jwtVerify } from 'jose';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { sha256Hex } from '../../../receipts/hash.ts';
import type { InferResponse, ModelMetadata } from '../../../shared/protocol.ts';
import { tokenize } from '../../../shared/tokenizer.ts';
import { TYP, decodePayload, type AttestationClaims, type DispatchClaims } from '../../../shared/jwt.ts';
import { BACKEND_ID, PROVIDER_ID, dispatchToken, errorCode, type Harness, useDemoHarness } from '../helpers.ts';

let h: Harness;
useDemoHarness((built) => (h = built));

/** Verifies the response's attestation with the provider's public key and checks it covers these exact bytes. */
async function checkAttestation(res: Response, token: string, bytes: Uint8Array): Promise<AttestationClaims> {
  const jws = res.headers.get('x-provider-attestation');
  expect(jws).toBeTruthy();
  const { payload, protectedHeader } = await jwtVerify(jws!, await importJWK(h.provider.publicJwk, 'EdDSA'), {
    algorithms: ['EdDSA'],
    typ: TYP.attestation,
    issuer: PROVIDER_ID,
    subject: BACKEND_ID,
  });
  expect(protectedHeader.kid).toBe(h.provider.privateJwk.kid);
  const claims = payload as unknown as AttestationClaims;
  expect(claims.jti).toBe(decodePayload<DispatchClaims>(token)!.jti);
  expect(claims.output_sha256).toBe(await sha256Hex(bytes));
  return claims;
}

async function infer(model: string, body: unknown) {
  const raw = JSON.stringify(body);
  const token = await dispatchToken({ model, body: raw, key: h.mesh });
  const res = await h.post(`/v2/models/${model}/infer`, undefined, { raw, token });
  const bytes = new Uint8Array(await res.arrayBuffer());
  return { res, token, bytes, json: JSON.parse(new TextDecoder().decode(bytes)) as InferResponse };
}

const norm = (v: number[]) => Math.sqrt(v.reduce((s, x) => s + x * x, 0));

describe('metadata', () => {
  it('describes the server', async () => {
    const res = await h.get('/v2');
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ name: expect.any(String), version: expect.any(String), extensions: expect.any(Array) });
  });

  it('gives embed its OIP datatypes and shapes, -1 for the batch and sequence dims', async () => {
    const res = await h.get('/v2/models/embed');
    expect(res.status).toBe(200);
    const meta = (await res.json()) as ModelMetadata;
    expect(meta).toMatchObject({ name: 'embed', versions: ['1'], platform: 'onnxruntime_onnx' });
    expect(meta.inputs).toEqual([
      { name: 'input_ids', datatype: 'INT64', shape: [-1, -1] },
      { name: 'text', datatype: 'BYTES', shape: [-1] },
    ]);
    expect(meta.outputs).toEqual([{ name: 'embedding', datatype: 'FP32', shape: [-1, 256] }]);
  });

  it('gives classifier [-1,16] FP32 in and [-1,4] FP32 out, also under its version', async () => {
    for (const p of ['/v2/models/classifier', '/v2/models/classifier/versions/1']) {
      const meta = (await (await h.get(p)).json()) as ModelMetadata;
      expect(meta.inputs).toEqual([{ name: 'features', datatype: 'FP32', shape: [-1, 16] }]);
      expect(meta.outputs).toEqual([{ name: 'probabilities', datatype: 'FP32', shape: [-1, 4] }]);
    }
  });

  it('answers 404 model_not_found for an unknown model or version', async () => {
    const unknown = await h.get('/v2/models/nope');
    expect(unknown.status).toBe(404);
    expect(await errorCode(unknown)).toBe('model_not_found');
    const version = await h.get('/v2/models/embed/versions/7');
    expect(version.status).toBe(404);
    expect(await errorCode(version)).toBe('model_not_found');
  });

  it('reports model readiness', async () => {
    const res = await h.get('/v2/models/embed/ready');
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ name: 'embed', ready: true, state: 'READY' });
  });
});

describe('health', () => {
  it('is live and ready with every model warm, naming the execution provider in use', async () => {
    expect((await h.get('/v2/health/live')).status).toBe(200);
    const res = await h.get('/v2/health/ready');
    expect(res.status).toBe(200);
    const body = (await res.json()) as { ready: boolean; executionProvider: string; models: { name: string; state: string }[] };
    expect(body.ready).toBe(true);
    expect(['cpu', 'cuda']).toContain(body.executionProvider);
    expect(body.models.map((m) => m.name)).toEqual(['classifier', 'embed']);
  });
});

describe('infer', () => {
  it('embeds token ids: [2,256] unit vectors, attested, units = non-padding tokens', async () => {
    const body = { id: 'req-1', inputs: [{ name: 'input_ids', datatype: 'INT64', shape: [2, 4], data: [1, 17, 99, 0, 1, 42, 0, 0] }] };
    const { res, token, bytes, json } = await infer('embed', body);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/application\/json/);
    expect(json.model_name).toBe('embed');
    expect(json.model_version).toBe('1');
    expect(json.id).toBe('req-1');
    const out = json.outputs[0]!;
    expect(out).toMatchObject({ name: 'embedding', datatype: 'FP32', shape: [2, 256] });
    const data = out.data as number[];
    expect(data).toHaveLength(512);
    expect(norm(data.slice(0, 256))).toBeCloseTo(1, 4);
    expect(norm(data.slice(256))).toBeCloseTo(1, 4);
    const claims = await checkAttestation(res, token, bytes);
    expect(claims.model).toBe('embed');
    expect(claims.units).toEqual({ input: 5, output: 2 });
  });

  it('embeds text (BYTES) the same as its token ids', async () => {
    const texts = ['Hello, edge mesh!', 'GPU backends answer fast'];
    const viaText = await infer('embed', { inputs: [{ name: 'text', datatype: 'BYTES', shape: [2], data: texts }] });
    expect(viaText.res.status).toBe(200);
    const claims = await checkAttestation(viaText.res, viaText.token, viaText.bytes);
    const rows = texts.map((t) => tokenize(t));
    expect(claims.units).toEqual({ input: rows[0]!.length + rows[1]!.length, output: 2 });

    const first = rows[0]!;
    const viaIds = await infer('embed', { inputs: [{ name: 'input_ids', datatype: 'INT64', shape: [1, first.length], data: first }] });
    const a = (viaText.json.outputs[0]!.data as number[]).slice(0, 256);
    const b = viaIds.json.outputs[0]!.data as number[];
    a.forEach((x, i) => expect(x).toBeCloseTo(b[i]!, 5));
  });

  it('classifies features into [3,4] probabilities that sum to 1', async () => {
    const data = Array.from({ length: 48 }, (_, i) => Math.sin(i));
    const { res, token, bytes, json } = await infer('classifier', {
      inputs: [{ name: 'features', datatype: 'FP32', shape: [3, 16], data }],
      outputs: [{ name: 'probabilities' }],
    });
    expect(res.status).toBe(200);
    const out = json.outputs[0]!;
    expect(out).toMatchObject({ name: 'probabilities', datatype: 'FP32', shape: [3, 4] });
    for (let r = 0; r < 3; r++) {
      const row = (out.data as number[]).slice(r * 4, r * 4 + 4);
      expect(row.reduce((s, x) => s + x, 0)).toBeCloseTo(1, 5);
    }
    const claims = await checkAttestation(res, token, bytes);
    expect(claims.units).toEqual({ input: 3, output: 3 });
  });

  it('accepts nested data and the versioned route', async () => {
    const row = Array.from({ length: 16 }, () => 0.5);
    const raw = JSON.stringify({ inputs: [{ name: 'features', datatype: 'FP32', shape: [2, 16], data: [row, row] }] });
    const token = await dispatchToken({ model: 'classifier', body: raw, key: h.mesh });
    const res = await h.post('/v2/models/classifier/versions/1/infer', undefined, { raw, token });
    expect(res.status).toBe(200);
    expect(((await res.json()) as InferResponse).outputs[0]!.shape).toEqual([2, 4]);
  });

  it('returns 404 for a version it does not serve', async () => {
    const res = await h.post('/v2/models/classifier/versions/9/infer', {
      inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 16], data: new Array(16).fill(0) }],
    }, { model: 'classifier' });
    expect(res.status).toBe(404);
    expect(await errorCode(res)).toBe('model_not_found');
  });
});

describe('repository', () => {
  it('lists models with a token for "*", and unloads and reloads one with tokens for it', async () => {
    const index = await h.post('/v2/repository/index', {});
    expect(index.status).toBe(200);
    expect(await index.json()).toEqual([
      { name: 'classifier', version: '1', state: 'READY' },
      { name: 'embed', version: '1', state: 'READY' },
    ]);

    const unload = await h.post('/v2/repository/models/classifier/unload', {});
    expect(unload.status).toBe(200);
    expect((await h.get('/v2/models/classifier/ready')).status).toBe(503);
    const ready = await h.get('/v2/health/ready');
    expect(ready.status).toBe(200); // an unload asked for is not a fault

    const body = { inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 16], data: new Array(16).fill(0) }] };
    const notLoaded = await h.post('/v2/models/classifier/infer', body);
    expect(notLoaded.status).toBe(503);
    expect(await errorCode(notLoaded)).toBe('model_not_ready');

    const load = await h.post('/v2/repository/models/classifier/load', {});
    expect(load.status).toBe(200);
    expect(await load.json()).toMatchObject({ name: 'classifier', state: 'READY', version: '1' });
    expect((await h.post('/v2/models/classifier/infer', body)).status).toBe(200);
  });

  it('refuses repository changes without a token, and a control token for another model', async () => {
    const none = await h.post('/v2/repository/models/embed/unload', {}, { token: null });
    expect(none.status).toBe(401);
    const other = await h.post('/v2/repository/models/embed/unload', {}, { model: 'classifier' });
    expect(other.status).toBe(401);
    expect(await errorCode(other)).toBe('invalid_token');
    expect(h.backend.repository.state('embed')).toBe('READY');
  });

  it('refuses an inference token on index, load and unload, saying which purpose the route needs', async () => {
    for (const [p, model] of [
      ['/v2/repository/index', '*'],
      ['/v2/repository/models/embed/unload', 'embed'],
      ['/v2/repository/models/embed/load', 'embed'],
    ] as const) {
      const raw = '{}';
      const res = await h.post(p, undefined, { raw, token: await dispatchToken({ model, body: raw, key: h.mesh, purpose: 'infer' }) });
      expect(res.status).toBe(401);
      expect(res.headers.get('www-authenticate')).toBe('Bearer error="invalid_token"');
      expect(((await res.json()) as { error: { code: string; message: string } }).error).toEqual({
        code: 'invalid_token',
        message: 'The dispatch token\'s purpose is "infer", good for the inference routes only; this route needs purpose "control".',
      });
    }
    expect(h.backend.repository.state('embed')).toBe('READY');
  });

  it('answers 404 when asked to load a model it does not have', async () => {
    const res = await h.post('/v2/repository/models/nope/load', {});
    expect(res.status).toBe(404);
    expect(await errorCode(res)).toBe('model_not_found');
  });
});

describe('metrics', () => {
  it('exports Triton-named counters per model and the execution provider', async () => {
    const res = await h.get('/metrics');
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/text\/plain/);
    const text = await res.text();
    expect(text).toMatch(/^nv_inference_request_success\{model="embed",version="1"\} [1-9]/m);
    expect(text).toMatch(/^nv_inference_count\{model="classifier",version="1"\} [1-9]/m);
    expect(text).toMatch(/^nv_inference_request_failure\{model="classifier",version="1",reason="model_not_ready"\} 1/m);
    expect(text).toMatch(/^nv_inference_compute_infer_duration_us\{model="embed",version="1"\} [1-9]/m);
    expect(text).toMatch(/^nv_inference_queue_duration_us\{model="embed",version="1"\} \d/m);
    expect(text).toMatch(/^mesh_backend_info\{.*execution_provider="(cpu|cuda)".*\} 1/m);
    expect(text).toMatch(/^mesh_backend_requests_in_flight 0/m);
    expect(text).toMatch(/^nv_inference_pending_request_count 0/m);
    expect(text).toMatch(/^nv_inference_exec_count\{model="embed",version="1"\} [1-9]/m);
    // The batch size histogram: per model, Triton-like power-of-two buckets, one observation per execution.
    for (const le of ['1', '2', '4', '8', '16', '32', '64', '128', '\\+Inf']) {
      expect(text).toMatch(new RegExp(`^nv_inference_batch_size_bucket\\{le="${le}",model="embed",version="1"\\} \\d+$`, 'm'));
    }
    const exec = Number(/^nv_inference_exec_count\{model="embed",version="1"\} (\d+)/m.exec(text)![1]);
    expect(text).toMatch(new RegExp(`^nv_inference_batch_size_count\\{model="embed",version="1"\\} ${exec}$`, 'm'));
    // The first embed request was 2 rows, so some execution had at least 2 rows.
    const [, upTo1] = /^nv_inference_batch_size_bucket\{le="1",model="embed",version="1"\} (\d+)/m.exec(text)!;
    expect(Number(upTo1)).toBeLessThan(exec);
  });
});

describe('over a real socket', () => {
  it('serves an attested inference on 127.0.0.1', async () => {
    const server = serve({ fetch: h.backend.app.fetch, hostname: '127.0.0.1', port: 0 });
    try {
      const { port } = await new Promise<AddressInfo>((resolve) => server.once('listening', () => resolve(server.address() as AddressInfo)));
      const raw = JSON.stringify({ inputs: [{ name: 'text', datatype: 'BYTES', shape: [1], data: ['over the wire'] }] });
      const token = await dispatchToken({ model: 'embed', body: raw, key: h.mesh });
      const res = await fetch(`http://127.0.0.1:${port}/v2/models/embed/infer`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: raw,
      });
      expect(res.status).toBe(200);
      const bytes = new Uint8Array(await res.arrayBuffer());
      await checkAttestation(res, token, bytes);
      const json = JSON.parse(new TextDecoder().decode(bytes)) as InferResponse;
      expect(json.outputs[0]!.shape).toEqual([1, 256]);

      const replay = await fetch(`http://127.0.0.1:${port}/v2/models/embed/infer`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: raw,
      });
      expect(replay.status).toBe(401);
      expect(replay.headers.get('www-authenticate')).toBe('Bearer error="invalid_token"');
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});
