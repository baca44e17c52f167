/**
 * The PoP's answer cache on a real local mesh (docs/api.md section 2.13): the
 * edge in workerd (wrangler dev, Miniflare's Cache API) and a real backend
 * process. The same `embed` request twice is a miss, then a hit with the same
 * bytes that the backend never sees; the OpenAI route is served from the same
 * entry; `cache-control: no-store` is computed; the hit's receipt verifies
 * offline (the library and `mesh-verify`), and settlement charges the
 * consumer for it and pays the provider only for what its backend computed.
 */

import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { verifyReceipt, type Jwks } from '../../receipts/verify.ts';
import { sha256Hex } from '../../receipts/hash.ts';
import { decodePayload, type ReceiptClaims } from '../../shared/jwt.ts';
import { runCli } from '../helpers/cli.ts';
import { useMesh } from '../helpers/mesh.ts';
import { settle } from '../helpers/settlement.ts';

const local = useMesh({ backends: [{ id: 'fra-1', region: 'eu-west', provider: 'provider-fra' }] });
const CLI = fileURLToPath(new URL('../../bin/mesh-verify.ts', import.meta.url));

interface Answer {
  status: number;
  bytes: Uint8Array;
  cache: string | null;
  backend: string | null;
  receipt: string;
  claims: ReceiptClaims;
}

async function post(path: string, body: string, headers: Record<string, string> = {}): Promise<Answer> {
  const mesh = local.mesh();
  const res = await fetch(`${mesh.edgeUrl}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${mesh.consumerKey}`, 'content-type': 'application/json', 'x-mesh-dev-colo': 'FRA', ...headers },
    body,
  });
  const bytes = new Uint8Array(await res.arrayBuffer());
  expect(res.status, new TextDecoder().decode(bytes).slice(0, 300)).toBe(200);
  const receipt = res.headers.get('x-mesh-receipt')!;
  return { status: res.status, bytes, cache: res.headers.get('x-mesh-cache'), backend: res.headers.get('x-mesh-backend'), receipt, claims: decodePayload<ReceiptClaims>(receipt)! };
}

/** The backend's successful inferences so far (its `nv_inference_request_success`). */
async function inferences(): Promise<number> {
  const text = await (await fetch(`${local.mesh().backends[0]!.url}/metrics`)).text();
  let n = 0;
  for (const m of text.matchAll(/^nv_inference_request_success(?:\{[^}]*\})?\s+(\S+)/gm)) n += Number(m[1]);
  return n;
}

const text = 'the answer cache, on a real mesh: the same words asked twice';
const oipBody = JSON.stringify({ inputs: [{ name: 'text', shape: [1], datatype: 'BYTES', data: [text] }] });

describe('the answer cache on a real mesh', () => {
  it('answers a repeated request from the PoP, verifiably, and settles it with no provider paid', async () => {
    const mesh = local.mesh();
    const receipts: string[] = [];
    const before = await inferences();
    const miss = await post('/v2/models/embed/infer', oipBody);
    receipts.push(miss.claims.jti);
    expect(miss.cache).toBe('miss');
    expect(miss.backend).toBe('fra-1');
    expect(await inferences()).toBe(before + 1);

    // The answer is stored after its attestation verifies, just after the answer: ask until it is there.
    let hit: Answer | undefined;
    for (let i = 0; i < 40 && !hit; i++) {
      const again = await post('/v2/models/embed/infer', oipBody);
      receipts.push(again.claims.jti);
      expect(again.bytes).toEqual(miss.bytes);
      if (again.cache === 'hit') hit = again;
      else await new Promise((r) => setTimeout(r, 100));
    }
    expect(hit, 'no hit after 40 requests').toBeDefined();
    const computed = await inferences();
    expect(hit!.backend).toBeNull();

    // The hit's receipt verifies offline, with the library and with mesh-verify.
    const jwks = (await (await fetch(`${mesh.edgeUrl}/.well-known/jwks.json`)).json()) as Jwks;
    const claims = await verifyReceipt(hit!.receipt, jwks, { issuer: mesh.edgeUrl });
    expect(claims).toMatchObject({ cache: 'hit', model: 'embed', model_version: '1', pop: 'FRA', origin: expect.any(String), units: miss.claims.units });
    expect(claims.output_sha256).toBe(await sha256Hex(hit!.bytes));
    expect(claims.input_sha256).toBe(await sha256Hex(oipBody));
    expect(claims.provider).toBeUndefined();
    expect(claims.attestation).toBeUndefined();
    expect(claims.amount).toBeLessThanOrEqual(miss.claims.amount);
    const cli = await runCli(CLI, ['receipt', hit!.receipt, '--jwks', `${mesh.edgeUrl}/.well-known/jwks.json`, '--issuer', mesh.edgeUrl]);
    expect(cli.code, cli.stdout + cli.stderr).toBe(0);
    expect(cli.stdout).toMatch(/ok {2}receipt \S+: embed@1 from the answer cache at FRA \(computed under receipt \S+\) for consumer local-consumer/);

    // The OpenAI route is served from the same entry: the same vector, and no inference on the backend.
    const openai = await post('/v1/embeddings', JSON.stringify({ model: 'embed', input: text, encoding_format: 'float' }));
    receipts.push(openai.claims.jti);
    expect(openai.cache).toBe('hit');
    const vector = (JSON.parse(new TextDecoder().decode(miss.bytes)) as { outputs: { data: number[] }[] }).outputs[0]!.data;
    expect((JSON.parse(new TextDecoder().decode(openai.bytes)) as { data: { embedding: number[] }[] }).data[0]!.embedding).toEqual(vector);
    expect(await inferences()).toBe(computed);

    // no-store: computed by the backend, whatever the cache holds.
    const bypass = await post('/v2/models/embed/infer', oipBody, { 'cache-control': 'no-store' });
    receipts.push(bypass.claims.jti);
    expect(bypass.cache).toBe('bypass');
    expect(bypass.backend).toBe('fra-1');
    expect(bypass.claims).toMatchObject({ cache: 'miss', provider: 'provider-fra' });
    expect(await inferences()).toBe(computed + 1);

    // Settlement: every receipt in a closed, verified batch; the consumer is charged for each; provider-fra is
    // paid for the answers its backend computed, and nothing for the hits.
    const settled = await settle(mesh.edgeUrl, mesh.adminToken, receipts);
    const ours = settled.receipts.filter((r) => receipts.includes(r.jti));
    expect(ours.map((r) => r.jti).sort()).toEqual([...receipts].sort());
    const hits = ours.filter((r) => r.cache === 'hit');
    expect(hits.length).toBeGreaterThanOrEqual(2);
    for (const batch of settled.batches) {
      const inBatch = settled.receipts.filter((r) => settled.batchOf.get(r.jti) === batch.batch_id);
      const owed = inBatch.filter((r) => r.provider === 'provider-fra' && !batch.disputed.includes(r.jti)).reduce((n, r) => n + r.amount, 0);
      expect(batch.totals.providers['provider-fra'] ?? 0, batch.batch_id).toBe(owed);
      const charged = Object.values(batch.totals.consumers).reduce((a, b) => a + b, 0);
      const paid = Object.values(batch.totals.providers).reduce((a, b) => a + b, 0);
      const withheld = Object.values(batch.totals.withheld ?? {}).reduce((a, b) => a + b, 0);
      expect(charged - paid - withheld, batch.batch_id).toBe(inBatch.filter((r) => r.cache === 'hit').reduce((n, r) => n + r.amount, 0));
    }
  });
});
