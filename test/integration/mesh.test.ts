/**
 * The whole path on a real local mesh: the Worker in workerd (wrangler dev),
 * three real backend processes running ONNX Runtime on the CPU provider, on
 * loopback. Requests enter at simulated PoPs (MESH_DEV's x-mesh-dev-colo).
 */

import { InferenceClient } from '@huggingface/inference';
import { createRemoteJWKSet, importJWK, jwtVerify, SignJWT } from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';
import { sha256Hex } from '../../receipts/hash.ts';
import { priceOf } from '../../workers/inference/pricing.ts';
import { TYP, type AttestationClaims, type ReceiptClaims } from '../../shared/jwt.ts';
import type { LocalMesh } from '../../scripts/local-mesh.ts';
import { useMesh } from '../helpers/mesh.ts';
import { OPENAPI_MAX_AGE_S } from '../../scripts/build-assets.ts';
import { openApiText } from '../../workers/openapi/document.ts';

const local = useMesh({
  edgeVars: { BACKEND_TTL_SECONDS: '3', SNAPSHOT_REFRESH_MS: '500' },
  backendEnv: { HEARTBEAT_INTERVAL_MS: '500' },
});
let mesh: LocalMesh;
beforeAll(() => {
  mesh = local.mesh();
});

const embedBody = (text = 'the quick brown fox') =>
  JSON.stringify({ inputs: [{ name: 'text', shape: [1], datatype: 'BYTES', data: [text] }] });

function infer(colo: string, body = embedBody(), model = 'embed', headers: Record<string, string> = {}) {
  return fetch(`${mesh.edgeUrl}/v2/models/${model}/infer`, {
    method: 'POST',
    headers: { authorization: `Bearer ${mesh.consumerKey}`, 'content-type': 'application/json', 'x-mesh-dev-colo': colo, ...headers },
    body,
  });
}

/**
 * The edge sent the request first to `backend` in `region` (after `gone`, a backend it may still try that is down).
 * On loopback every backend is as near as any other, so when the CPU is busy a hedge to a farther one can answer
 * first: then the answer names that one, and the edge's log line has it in `tried` after its first choice.
 */
async function expectFirstChoice(res: Response, colo: string, backend: string, region: string, gone?: string) {
  const line = await local.requestLine(res.headers.get('x-request-id')!);
  const tried = (line.tried ?? []).filter((id) => id !== gone);
  expect(tried[0]).toBe(backend);
  const answered = res.headers.get('x-mesh-backend');
  if (answered === backend) expect(res.headers.get('x-mesh-region')).toBe(region);
  else expect(tried.slice(1)).toContain(answered);
  expect(line).toMatchObject({ pop: colo, backend: answered, region: res.headers.get('x-mesh-region'), attempts: line.tried?.length });
}

describe('static assets', () => {
  it('serves GET /openapi.json from the assets wrangler built, as workers/openapi/ describes the routes', async () => {
    const res = await fetch(`${mesh.edgeUrl}/openapi.json`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/json; charset=utf-8');
    expect(res.headers.get('cache-control')).toBe(`public, max-age=${OPENAPI_MAX_AGE_S}`);
    expect(await res.text()).toBe(openApiText());
    // An API route next to it still reaches the Worker.
    expect((await fetch(`${mesh.edgeUrl}/v2/health/live`)).headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
  });
});

describe('routing by PoP', () => {
  it.each([
    ['SIN', 'ap-southeast', 'sg-1'],
    ['FRA', 'eu-west', 'fra-1'],
    ['IAD', 'us-east', 'iad-1'],
  ])('a request entering at %s runs in %s', async (colo, region, backend) => {
    const res = await infer(colo);
    expect(res.status).toBe(200);
    await expectFirstChoice(res, colo, backend, region);
    expect(res.headers.get('x-mesh-cache')).toBe('miss');
    expect(res.headers.get('server-timing')).toMatch(/edge;dur=\d+.*backend;dur=\d+.*total;dur=\d+/);
    const out = (await res.json()) as { model_name: string; outputs: { name: string; shape: number[]; data: number[] }[] };
    expect(out.model_name).toBe('embed');
    expect(out.outputs[0]!.shape).toEqual([1, 256]);
  });

  it('honours a region pin', async () => {
    // A text of its own: SIN's answer cache holds the test above's (a hit is computed in no region, docs/api.md section 2.13).
    const res = await infer('SIN', embedBody('pinned to us-east'), 'embed', { 'x-mesh-region': 'us-east' });
    expect(res.status).toBe(200);
    expect(res.headers.get('x-mesh-region')).toBe('us-east');
  });

  it('serves model metadata from a backend', async () => {
    const res = await fetch(`${mesh.edgeUrl}/v2/models/classifier`, {
      headers: { authorization: `Bearer ${mesh.consumerKey}`, 'x-mesh-dev-colo': 'FRA' },
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({
      name: 'classifier',
      platform: 'onnxruntime_onnx',
      inputs: [{ name: 'features', datatype: 'FP32', shape: [-1, 16] }],
      outputs: [{ name: 'probabilities', datatype: 'FP32', shape: [-1, 4] }],
    });
  });
});

describe('receipts', () => {
  it('verify against the JWKS and bind the exact bytes received', async () => {
    const request = JSON.stringify({ inputs: [{ name: 'features', shape: [2, 16], datatype: 'FP32', data: Array.from({ length: 32 }, (_, i) => i / 32) }] });
    // Pinned: what is checked here is the receipt, not the routing (a hedge may win a race to another region, above).
    const pinned = { 'x-mesh-region': 'eu-west' };
    const res = await infer('FRA', request, 'classifier', pinned);
    expect(res.status).toBe(200);
    const bytes = new Uint8Array(await res.arrayBuffer());
    const receipt = res.headers.get('x-mesh-receipt')!;
    const jwks = createRemoteJWKSet(new URL(`${mesh.edgeUrl}/.well-known/jwks.json`));
    const { payload, protectedHeader } = await jwtVerify<ReceiptClaims>(receipt, jwks, {
      algorithms: ['EdDSA'],
      typ: TYP.receipt,
      issuer: mesh.edgeUrl,
    });
    expect(protectedHeader.kid).toBe(mesh.meshPrivateJwk.kid);
    expect(payload.output_sha256).toBe(await sha256Hex(bytes));
    expect(payload.input_sha256).toBe(await sha256Hex(request));
    expect(payload).toMatchObject({
      sub: 'local-consumer',
      model: 'classifier',
      model_version: '1',
      provider: 'provider-fra',
      backend: 'fra-1',
      region: 'eu-west',
      pop: 'FRA',
      units: { input: 2, output: 2 },
      amount: priceOf({ input: 0, output: 5 }, { input: 2, output: 2 }), // the classifier's price in wrangler.toml
      cache: 'miss',
      verify: 'sampled',
    });
    expect(payload.latency_ms).toBeGreaterThanOrEqual(0);
    const attestation = JSON.parse(Buffer.from(payload.attestation!.split('.')[1]!, 'base64url').toString()) as AttestationClaims;
    expect(attestation).toMatchObject({ iss: 'provider-fra', sub: 'fra-1', model: 'classifier', output_sha256: payload.output_sha256 });
    // Each answer gets its own receipt id.
    const again = await infer('FRA', request, 'classifier', pinned);
    const second = (await jwtVerify<ReceiptClaims>(again.headers.get('x-mesh-receipt')!, jwks, { algorithms: ['EdDSA'] })).payload;
    expect(second.jti).not.toBe(payload.jti);
  });
});

describe('bad input', () => {
  it('gets a 400 naming the input, no receipt, and the backend keeps serving', async () => {
    const cases: [string, string, string][] = [
      [JSON.stringify({ inputs: [{ name: 'features', shape: [1, 15], datatype: 'FP32', data: Array(15).fill(0) }] }), 'classifier', 'features'],
      [JSON.stringify({ inputs: [{ name: 'features', shape: [1, 16], datatype: 'INT64', data: Array(16).fill(0) }] }), 'classifier', 'features'],
      [JSON.stringify({ inputs: [{ name: 'nope', shape: [1], datatype: 'FP32', data: [0] }] }), 'classifier', 'nope'],
      [JSON.stringify({ inputs: [{ name: 'features', shape: [1, 16], datatype: 'FP32', data: Array(15).fill(0) }] }), 'classifier', 'features'],
      ['{"inputs": [', 'classifier', ''],
    ];
    for (const [body, model, name] of cases) {
      const res = await infer('FRA', body, model);
      expect(res.status, body).toBe(400);
      expect(res.headers.get('x-mesh-receipt')).toBeNull();
      const err = (await res.json()) as { error: { code: string; message: string } };
      expect(err.error.code).toMatch(/^[a-z_]+$/);
      expect(err.error.message).toContain(name);
    }
    expect((await infer('FRA', embedBody(), 'embed')).status).toBe(200);
  });

  it('gets a 404 for an unknown model or version', async () => {
    const unknown = await infer('FRA', embedBody(), 'no-such-model');
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toMatchObject({ error: { code: 'model_not_found' } });
    const res = await fetch(`${mesh.edgeUrl}/v2/models/embed/versions/9/infer`, {
      method: 'POST',
      headers: { authorization: `Bearer ${mesh.consumerKey}`, 'content-type': 'application/json' },
      body: embedBody(),
    });
    expect(res.status).toBe(404);
    const v1 = await fetch(`${mesh.edgeUrl}/v2/models/embed/versions/1/infer`, {
      method: 'POST',
      headers: { authorization: `Bearer ${mesh.consumerKey}`, 'content-type': 'application/json' },
      body: embedBody(),
    });
    expect(v1.status).toBe(200);
  });
});

describe('dispatch tokens at the backend', () => {
  async function dispatchToken(over: Record<string, unknown>, body: string) {
    const key = await importJWK(mesh.meshPrivateJwk, 'EdDSA');
    const now = Math.floor(Date.now() / 1000);
    return new SignJWT({ purpose: 'infer', model: 'embed', body_sha256: await sha256Hex(body), sub: 'it', ...over })
      .setProtectedHeader({ alg: 'EdDSA', typ: TYP.dispatch, kid: mesh.meshPrivateJwk.kid! })
      .setIssuer(mesh.edgeUrl)
      .setAudience((over.aud as string) ?? 'sg-1')
      .setJti(crypto.randomUUID())
      .setIssuedAt(now)
      .setExpirationTime((over.exp as number) ?? now + 30)
      .sign(key);
  }
  const direct = (token: string | undefined, body: string) =>
    fetch(`${mesh.backends[0]!.url}/v2/models/embed/infer`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body,
    });

  it('runs only with a valid, unused token bound to the body', async () => {
    const body = embedBody('direct');
    expect((await direct(undefined, body)).status).toBe(401);
    const good = await dispatchToken({}, body);
    expect((await direct(good, body)).status).toBe(200);
    expect((await direct(good, body)).status).toBe(401); // replayed
    expect((await direct(await dispatchToken({ exp: Math.floor(Date.now() / 1000) - 5 }, body), body)).status).toBe(401);
    expect((await direct(await dispatchToken({ aud: 'fra-1' }, body), body)).status).toBe(401);
    expect((await direct(await dispatchToken({}, body), embedBody('swapped'))).status).toBe(401);
  });
});

describe('OpenAI- and Hugging Face-compatible routes', () => {
  async function oipEmbedding(text: string) {
    const res = await infer('FRA', embedBody(text));
    return ((await res.json()) as { outputs: { data: number[] }[] }).outputs[0]!.data;
  }

  it('POST /v1/embeddings answers in OpenAI\'s shape, with usage and a receipt over those bytes', async () => {
    const res = await fetch(`${mesh.edgeUrl}/v1/embeddings`, {
      method: 'POST',
      headers: { authorization: `Bearer ${mesh.consumerKey}`, 'content-type': 'application/json', 'x-mesh-dev-colo': 'FRA' },
      body: JSON.stringify({ model: 'embed', input: ['alpha beta', 'gamma'] }),
    });
    expect(res.status).toBe(200);
    const bytes = new Uint8Array(await res.arrayBuffer());
    const body = JSON.parse(new TextDecoder().decode(bytes)) as {
      object: string;
      model: string;
      data: { object: string; index: number; embedding: number[] }[];
      usage: { prompt_tokens: number; total_tokens: number };
    };
    expect(body.object).toBe('list');
    expect(body.model).toBe('embed');
    expect(body.data.map((d) => [d.object, d.index, d.embedding.length])).toEqual([['embedding', 0, 256], ['embedding', 1, 256]]);
    expect(body.data[0]!.embedding).toEqual(await oipEmbedding('alpha beta'));
    // [CLS] + 2 words, [CLS] + 1 word.
    expect(body.usage).toEqual({ prompt_tokens: 5, total_tokens: 5 });
    const receipt = JSON.parse(Buffer.from(res.headers.get('x-mesh-receipt')!.split('.')[1]!, 'base64url').toString()) as ReceiptClaims;
    expect(receipt.output_sha256).toBe(await sha256Hex(bytes));
    expect(receipt.units.input).toBe(5);

    const b64 = await fetch(`${mesh.edgeUrl}/v1/embeddings`, {
      method: 'POST',
      headers: { authorization: `Bearer ${mesh.consumerKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'embed', input: 'alpha beta', encoding_format: 'base64' }),
    });
    const raw = Uint8Array.from(Buffer.from(((await b64.json()) as { data: { embedding: string }[] }).data[0]!.embedding, "base64"));
    const vec = new Float32Array(raw.buffer);
    expect(Array.from(vec)).toEqual(body.data[0]!.embedding.map((x) => Math.fround(x)));

    const bad = await fetch(`${mesh.edgeUrl}/v1/embeddings`, {
      method: 'POST',
      headers: { authorization: `Bearer ${mesh.consumerKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'embed', input: [] }),
    });
    expect(bad.status).toBe(400);
  });

  it('GET /v1/models lists the warm models', async () => {
    const res = await fetch(`${mesh.edgeUrl}/v1/models`, { headers: { authorization: `Bearer ${mesh.consumerKey}` } });
    const body = (await res.json()) as { object: string; data: { id: string; object: string }[] };
    expect(body.object).toBe('list');
    expect(body.data.map((m) => m.id)).toEqual(['classifier', 'embed']);
  });

  it('works with @huggingface/inference pointed at the edge', async () => {
    const client = new InferenceClient(mesh.consumerKey, { endpointUrl: `${mesh.edgeUrl}/models/embed` });
    const one = await client.featureExtraction({ inputs: 'alpha beta' });
    expect(one).toEqual(await oipEmbedding('alpha beta'));
    const many = (await client.featureExtraction({ inputs: ['alpha beta', 'gamma'] })) as number[][];
    expect(many).toHaveLength(2);
    const sims = await client.sentenceSimilarity({ inputs: { source_sentence: 'alpha beta', sentences: ['alpha beta', 'gamma delta'] } });
    expect(sims[0]).toBeCloseTo(1, 5);
    expect(sims[1]).toBeLessThan(0.999);
    const probs = await fetch(`${mesh.edgeUrl}/models/classifier`, {
      method: 'POST',
      headers: { authorization: `Bearer ${mesh.consumerKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ inputs: Array.from({ length: 16 }, (_, i) => i / 16) }),
    });
    expect(probs.status).toBe(200);
    const row = (await probs.json()) as number[];
    expect(row).toHaveLength(4);
    expect(row.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 5);
  });
});

describe('a region going down', () => {
  it('costs Singapore nothing: it is served by the next region at once and after expiry', async () => {
    const sg = mesh.backends.find((b) => b.region === 'ap-southeast')!;
    await sg.stop(true);
    // Computed (no-store): SIN's answer cache still holds sg-1's answer, and would serve it (docs/api.md section 2.13).
    const computed = { 'cache-control': 'no-store' };
    const right = await infer('SIN', embedBody(), 'embed', computed);
    expect(right.status).toBe(200);
    await expectFirstChoice(right, 'SIN', 'fra-1', 'eu-west', 'sg-1');
    expect(right.headers.get('x-mesh-receipt')).toBeTruthy();
    // Once its heartbeats have stopped for longer than the TTL, the directory drops it.
    await new Promise((r) => setTimeout(r, 4_000));
    const admin = await fetch(`${mesh.edgeUrl}/admin/backends`, { headers: { authorization: `Bearer ${mesh.adminToken}` } });
    const { backends } = (await admin.json()) as { backends: { id: string }[] };
    expect(backends.map((b) => b.id).sort()).toEqual(['fra-1', 'iad-1']);
    const later = await infer('SIN', embedBody(), 'embed', computed);
    expect(later.status).toBe(200);
    await expectFirstChoice(later, 'SIN', 'fra-1', 'eu-west', 'sg-1');
  });
});
