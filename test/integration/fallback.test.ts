/**
 * The Hugging Face fallback on a real local mesh: when no backend can serve a
 * text-embedding request, the edge calls the operator's Hugging Face endpoint
 * with one fetch, the request @huggingface/inference would send (the unit test
 * test/workers/inference/fallback.test.ts compares the two). The endpoint is a
 * FAKE (a tiny loopback HTTP server answering like a feature-extraction
 * endpoint): the real one cannot be reached from here. Everything else is
 * real: workerd, a backend process.
 */

import { createServer, type IncomingMessage, type Server } from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createRemoteJWKSet, jwtVerify } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sha256Hex } from '../../receipts/hash.ts';
import { TYP, type ReceiptClaims } from '../../shared/jwt.ts';
import { startMesh, type LocalMesh } from '../../scripts/local-mesh.ts';

let mesh: LocalMesh;
let fake: Server;
let dir: string;
const seen: { path: string | undefined; authorization: string | undefined; contentType: string | undefined; body: unknown }[] = [];
/** The `embed` model's fallback in wrangler.toml's catalogue. */
const UPSTREAM = 'sentence-transformers/all-MiniLM-L6-v2';
const logs: string[] = [];

async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return JSON.parse(Buffer.concat(chunks).toString('utf8'));
}

beforeAll(async () => {
  fake = createServer(async (req, res) => {
    const body = (await readJson(req)) as { inputs: string | string[] };
    seen.push({ path: req.url, authorization: req.headers.authorization, contentType: req.headers['content-type'], body });
    const embed = (t: string) => [t.length, 1, 0.5];
    const out = typeof body.inputs === 'string' ? embed(body.inputs) : body.inputs.map(embed);
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(out));
  });
  await new Promise<void>((resolve) => fake.listen(0, '127.0.0.1', resolve));
  const { port } = fake.address() as { port: number };
  dir = await mkdtemp(path.join(tmpdir(), 'mesh-hf-'));
  try {
    mesh = await startMesh({
      port: 0,
      backendPortBase: 0,
      dir,
      backends: [{ id: 'fra-1', region: 'eu-west', provider: 'provider-fra' }],
      log: (line) => logs.push(line),
      edgeVars: { BACKEND_TTL_SECONDS: '2', SNAPSHOT_REFRESH_MS: '300', HF_ENDPOINT_URL: `http://127.0.0.1:${port}/models/{model}`, HF_TOKEN: 'hf_local_test_token' },
      backendEnv: { HEARTBEAT_INTERVAL_MS: '400' },
    });
  } catch (err) {
    console.error(logs.join('\n'));
    throw err;
  }
});

afterAll(async () => {
  await mesh?.stop();
  await new Promise((resolve) => fake?.close(resolve));
  await rm(dir, { recursive: true, force: true });
});

function post(pathname: string, body: unknown) {
  return fetch(mesh.edgeUrl + pathname, {
    method: 'POST',
    headers: { authorization: `Bearer ${mesh.consumerKey}`, 'content-type': 'application/json', 'x-mesh-dev-colo': 'FRA' },
    body: JSON.stringify(body),
  });
}

async function receiptOf(res: Response) {
  const jwks = createRemoteJWKSet(new URL(`${mesh.edgeUrl}/.well-known/jwks.json`));
  return (await jwtVerify<ReceiptClaims>(res.headers.get('x-mesh-receipt')!, jwks, { algorithms: ['EdDSA'], typ: TYP.receipt })).payload;
}

describe('Hugging Face fallback', () => {
  it('is not used while a mesh backend can serve', async () => {
    const res = await post('/v1/embeddings', { model: 'embed', input: 'hello' });
    expect(res.status).toBe(200);
    expect((await receiptOf(res)).provider).toBe('provider-fra');
    expect(seen).toHaveLength(0);
  });

  it('serves text requests with one receipt naming huggingface once no backend is left', async () => {
    await mesh.backends[0]!.stop(true);
    await new Promise((r) => setTimeout(r, 2_500));
    const res = await post('/v1/embeddings', { model: 'embed', input: ['ab', 'abcd'] });
    expect(res.status).toBe(200);
    const bytes = new Uint8Array(await res.arrayBuffer());
    const body = JSON.parse(new TextDecoder().decode(bytes)) as { data: { embedding: number[] }[] };
    expect(body.data.map((d) => d.embedding)).toEqual([[2, 1, 0.5], [4, 1, 0.5]]);
    const receipt = await receiptOf(res);
    // The units are metered as for a backend (tokens, [CLS] included: 2 per text), priced at the fallback's 0.2 µUSD.
    expect(receipt).toMatchObject({ provider: 'huggingface', region: 'huggingface', model: 'embed', upstream_model: UPSTREAM, units: { input: 4, output: 2 }, amount: 1 });
    expect(receipt.attestation).toBeUndefined();
    expect(receipt.output_sha256).toBe(await sha256Hex(bytes));
    expect(seen.at(-1)).toEqual({ path: `/models/${UPSTREAM}`, authorization: 'Bearer hf_local_test_token', contentType: 'application/json', body: { inputs: ['ab', 'abcd'] } });

    const oip = await post('/v2/models/embed/infer', { inputs: [{ name: 'text', shape: [1], datatype: 'BYTES', data: ['xyz'] }] });
    expect(oip.status).toBe(200);
    expect(await oip.json()).toMatchObject({ model_name: 'embed', outputs: [{ datatype: 'FP32', shape: [1, 3], data: [3, 1, 0.5] }] });
  });

  it('does not fall back for a consumer whose residency the fallback does not name', async () => {
    const before = seen.length;
    const key = await mesh.issue('eu-only', 'consumer', ['eu-west']);
    const res = await fetch(`${mesh.edgeUrl}/v1/embeddings`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', 'x-mesh-dev-colo': 'FRA' },
      // Not 'hello': fra-1's answer to it is in FRA's answer cache, which serves it still (docs/api.md section 2.13).
      body: JSON.stringify({ model: 'embed', input: 'hello, resident' }),
    });
    expect(res.status).toBe(503);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('no_capacity');
    expect(seen.length).toBe(before);
  });

  it('does not fall back for numeric inputs: 503 with retry-after', async () => {
    const res = await post('/v2/models/classifier/infer', { inputs: [{ name: 'features', shape: [1, 16], datatype: 'FP32', data: Array(16).fill(0) }] });
    expect(res.status).toBe(503);
    expect(res.headers.get('retry-after')).toBeTruthy();
  });
});
