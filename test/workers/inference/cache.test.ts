/**
 * The PoP's answer cache (docs/api.md section 2.13) in workerd, with its real
 * Cache API (Miniflare's): the same request twice is a miss then a hit with
 * equal bytes, whatever way the same tensors are written and whatever route
 * they came by; `cache-control: no-store` bypasses it and `no-cache` refreshes
 * it; non-deterministic models and redundant mode bypass it; an answer whose
 * attestation does not verify is never kept; a hit's receipt (cache price, no
 * provider, its origin) verifies offline and settles, charging the consumer
 * and paying no provider. The backends are FAKES answering in-process (global
 * fetch stubbed): a GPU backend cannot run inside workerd; the integration
 * test (test/integration/cache.test.ts) runs real ones.
 */

import { runInDurableObject } from 'cloudflare:test';
import { env } from 'cloudflare:workers';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { sha256Hex } from '../../../receipts/hash.ts';
import { totalsOf } from '../../../receipts/totals.ts';
import { verifyBatch, verifyReceipt, type Jwks } from '../../../receipts/verify.ts';
import { encodeBinaryBody, encodeBytesElements, HEADER_LENGTH_HEADER } from '../../../shared/binary.ts';
import { decodePayload, type ReceiptClaims } from '../../../shared/jwt.ts';
import { refreshSnapshot } from '../../../workers/directory/snapshot.ts';
import { offered } from '../../../workers/inference/catalogue.ts';
import { priceOf } from '../../../workers/inference/pricing.ts';
import { ledgerShard, shardOfReceipt } from '../../../workers/settlement/ledger.ts';
import { call, callWith, keyFor } from '../helpers.ts';
import { fakeBackends, providers } from './fake-backends.ts';

afterEach(() => vi.restoreAllMocks());

const utf8 = new TextEncoder();

const oip = (texts: string[], extra: Record<string, unknown> = {}) =>
  JSON.stringify({ inputs: [{ name: 'text', shape: [texts.length], datatype: 'BYTES', data: texts }], ...extra });

/** One request through the app, its `waitUntil` work (the cache's store, the receipt's send) awaited. */
async function infer(path: string, body: BodyInit, headers: Record<string, string> = {}, token?: string) {
  const res = await callWith(env, path, {
    method: 'POST',
    token: token ?? (await keyFor('consumer', 'cache-consumer')),
    headers: { 'x-mesh-dev-colo': 'FRA', 'x-mesh-verify': 'none', ...headers },
    body,
  });
  const bytes = new Uint8Array(await res.arrayBuffer());
  const receipt = res.headers.get('x-mesh-receipt');
  return { res, bytes, text: new TextDecoder().decode(bytes), cache: res.headers.get('x-mesh-cache'), receipt, claims: receipt ? decodePayload<ReceiptClaims>(receipt)! : undefined };
}

async function jwks(): Promise<Jwks> {
  return (await (await call('/.well-known/jwks.json')).json()) as Jwks;
}

describe('the answer cache', () => {
  it('answers the same request twice as a miss, then a hit with the same bytes, a receipt of its own, and no backend', async () => {
    const fake = await fakeBackends(['cache-a']);
    // Long enough that its cache price rounds up to less than its price.
    const body = oip([Array.from({ length: 40 }, (_, i) => `word${i}`).join(' ')]);
    const miss = await infer('/v2/models/embed/infer', body);
    expect(miss.res.status, miss.text).toBe(200);
    expect(miss.cache).toBe('miss');
    expect(miss.res.headers.get('x-mesh-backend')).toBe('cache-a');
    expect(miss.claims).toMatchObject({ cache: 'miss', provider: 'prov-cache-a', backend: 'cache-a', region: 'eu-west' });
    expect(miss.claims!.origin).toBeUndefined();

    const hit = await infer('/v2/models/embed/infer', body);
    expect(hit.res.status, hit.text).toBe(200);
    expect(hit.cache).toBe('hit');
    expect(hit.text).toBe(miss.text);
    expect(fake.calls.get('cache-a')).toBe(1);
    expect(hit.res.headers.get('content-type')).toBe('application/json');
    expect(hit.res.headers.get('x-mesh-backend')).toBeNull();
    expect(hit.res.headers.get('x-mesh-region')).toBeNull();
    expect(hit.res.headers.get('server-timing')).toMatch(/^edge;dur=\d+, backend;dur=0, total;dur=\d+$/);

    // The hit's receipt: its own jti, this consumer, these bytes, the cache price, no one who computed it, the receipt that paid for it.
    const entry = offered(env, 'embed');
    const claims = await verifyReceipt(hit.receipt!, await jwks(), { issuer: env.MESH_ISSUER });
    expect(claims).toMatchObject({
      sub: 'cache-consumer',
      model: 'embed',
      model_version: '1',
      pop: 'FRA',
      cache: 'hit',
      verify: 'none',
      units: miss.claims!.units,
      amount: priceOf(entry.cache!.price, miss.claims!.units),
      input_sha256: await sha256Hex(body),
      output_sha256: await sha256Hex(hit.bytes),
      origin: miss.claims!.jti,
    });
    expect(claims.jti).not.toBe(miss.claims!.jti);
    for (const absent of ['provider', 'backend', 'region', 'attestation', 'location', 'second', 'upstream_model']) {
      expect(claims, absent).not.toHaveProperty(absent);
    }
    // The cache price is below the price: what the catalogue in wrangler.toml says.
    expect(claims.amount).toBeLessThan(miss.claims!.amount);
  });

  it('finds the same tensors however they are written: key order, spacing, nesting, numbers, the binary extension', async () => {
    const fake = await fakeBackends(['cache-a']);
    const text = 'written four ways';
    const first = await infer('/v2/models/embed/infer', oip([text]));
    expect(first.cache).toBe('miss');
    const reordered = `{ "inputs" : [ { "data": [["${text}"]], "datatype": "BYTES", "shape": [1.0], "name": "text" } ] }`;
    const header = JSON.stringify({ inputs: [{ name: 'text', shape: [1], datatype: 'BYTES', parameters: { binary_data_size: 4 + utf8.encode(text).byteLength } }] });
    const binary = encodeBinaryBody(JSON.parse(header), [encodeBytesElements([utf8.encode(text)])]);
    for (const [what, body, headers] of [
      ['keys reordered, spaced, nested', reordered, {}],
      ['the binary tensor extension', binary.body, { [HEADER_LENGTH_HEADER]: String(binary.headerLength) }],
    ] as const) {
      const again = await infer('/v2/models/embed/infer', body, headers);
      expect(again.cache, what).toBe('hit');
      expect(again.text, what).toBe(first.text);
      expect(again.claims!.input_sha256, what).toBe(await sha256Hex(body));
    }
    expect(fake.calls.get('cache-a')).toBe(1);

    // What changes the answer changes the key: the id it echoes, other data, the version asked for.
    const withId = await infer('/v2/models/embed/infer', oip([text], { id: 'req-7' }));
    expect(withId.cache).toBe('miss');
    expect(JSON.parse(withId.text).id).toBe('req-7');
    expect((await infer('/v2/models/embed/infer', oip([text], { id: 'req-7' }))).cache).toBe('hit');
    expect((await infer('/v2/models/embed/infer', oip([text, text]))).cache).toBe('miss');
    expect((await infer('/v2/models/embed/versions/1/infer', oip([text]))).cache).toBe('miss');
    expect((await infer('/v2/models/embed/versions/1/infer', oip([text]))).cache).toBe('hit');
  });

  it('keeps a cache per PoP: a simulated PoP does not see another one\'s answers', async () => {
    const fake = await fakeBackends(['cache-a']);
    const body = oip(['kept where it was computed']);
    expect((await infer('/v2/models/embed/infer', body)).cache).toBe('miss');
    expect((await infer('/v2/models/embed/infer', body)).cache).toBe('hit');
    expect((await infer('/v2/models/embed/infer', body, { 'x-mesh-dev-colo': 'SIN' })).cache).toBe('miss');
    expect((await infer('/v2/models/embed/infer', body, { 'x-mesh-dev-colo': 'SIN' })).cache).toBe('hit');
    expect(fake.calls.get('cache-a')).toBe(2);
  });

  it('serves the OpenAI and Hugging Face routes from the entry the OIP route made, each in its own shape', async () => {
    const fake = await fakeBackends(['cache-a']);
    const text = 'one text, three routes';
    const first = await infer('/v2/models/embed/infer', oip([text]));
    expect(first.cache).toBe('miss');
    const vector = JSON.parse(first.text).outputs[0].data as number[];

    const openai = await infer('/v1/embeddings', JSON.stringify({ model: 'embed', input: text }));
    expect(openai.res.status, openai.text).toBe(200);
    expect(openai.cache).toBe('hit');
    expect(JSON.parse(openai.text)).toMatchObject({ object: 'list', data: [{ object: 'embedding', index: 0, embedding: vector }], model: 'embed' });
    expect(openai.claims).toMatchObject({ cache: 'hit', origin: first.claims!.jti, output_sha256: await sha256Hex(openai.bytes), units: first.claims!.units });

    const hf = await infer('/models/embed', JSON.stringify({ inputs: text }));
    expect(hf.res.status, hf.text).toBe(200);
    expect(hf.cache).toBe('hit');
    expect(JSON.parse(hf.text)).toEqual(vector);
    expect(fake.calls.get('cache-a')).toBe(1);

    // Hugging Face's options.use_cache: false asks for a fresh answer.
    const fresh = await infer('/models/embed', JSON.stringify({ inputs: text, options: { use_cache: false } }));
    expect(fresh.cache).toBe('miss');
    expect(fake.calls.get('cache-a')).toBe(2);
  });

  it('is bypassed with cache-control: no-store, refreshed with no-cache, and not used for other models or redundant mode', async () => {
    const fake = await fakeBackends(['cache-a', 'cache-b']);
    const body = oip(['not to be kept']);
    const noStore = await infer('/v2/models/embed/infer', body, { 'cache-control': 'no-store' });
    expect(noStore.res.status, noStore.text).toBe(200);
    expect(noStore.cache).toBe('bypass');
    expect(noStore.claims!.cache).toBe('miss');
    // Nothing was kept: the next request computes again.
    expect((await infer('/v2/models/embed/infer', body)).cache).toBe('miss');
    expect((await infer('/v2/models/embed/infer', body)).cache).toBe('hit');
    expect((await infer('/v2/models/embed/infer', body, { 'cache-control': 'max-age=0, no-store' })).cache).toBe('bypass');
    const calls = () => [...fake.calls.values()].reduce((a, b) => a + b, 0);
    expect(calls()).toBe(3);
    // no-cache: computed, not looked up; and kept.
    const refreshed = await infer('/v2/models/embed/infer', body, { 'cache-control': 'no-cache' });
    expect(refreshed.cache).toBe('miss');
    expect(calls()).toBe(4);
    const after = await infer('/v2/models/embed/infer', body);
    expect(after.cache).toBe('hit');
    expect(after.claims!.origin).toBe(refreshed.claims!.jti);

    // Redundant mode: two providers compute, whatever the cache holds.
    const redundant = await infer('/v2/models/embed/infer', body, { 'x-mesh-verify': 'redundant' });
    expect(redundant.res.status, redundant.text).toBe(200);
    expect(redundant.cache).toBe('bypass');
    expect(calls()).toBe(6);
  });

  it('bypasses a model that is not deterministic', async () => {
    const fake = await fakeBackends(['cache-a']);
    expect(offered(env, 'classifier').cache).toBeUndefined();
    const body = JSON.stringify({ inputs: [{ name: 'features', shape: [1, 2], datatype: 'FP32', data: [1, 2] }] });
    const lines: string[] = [];
    vi.spyOn(console, 'log').mockImplementation((...args: unknown[]) => void lines.push(args.map(String).join(' ')));
    for (let i = 0; i < 2; i++) {
      const res = await infer('/v2/models/classifier/infer', body);
      expect(res.res.status, res.text).toBe(200);
      expect(res.cache).toBe('bypass');
      expect(res.claims!.cache).toBe('miss');
    }
    expect([...fake.calls.values()].reduce((x, y) => x + y, 0)).toBe(2);
    const records = lines.map((l) => JSON.parse(l) as { msg?: string; cache?: string }).filter((r) => r.msg === 'request');
    expect(records.map((r) => r.cache)).toEqual(['bypass', 'bypass']);
  });

  it('never keeps an answer whose attestation does not verify', async () => {
    const fake = await fakeBackends(['cache-a']);
    vi.spyOn(console, 'warn').mockImplementation(() => undefined);
    const text = 'attested with the wrong key';
    fake.forged.add(text);
    const body = oip([text]);
    const first = await infer('/v2/models/embed/infer', body);
    // The consumer gets it (the signature is checked after the answer), but the cache does not keep it.
    expect(first.res.status, first.text).toBe(200);
    expect(first.cache).toBe('miss');
    fake.forged.delete(text);
    expect((await infer('/v2/models/embed/infer', body)).cache).toBe('miss');
    expect((await infer('/v2/models/embed/infer', body)).cache).toBe('hit');
  });

  it('logs hits as hits, with the receipt and no backend', async () => {
    await fakeBackends(['cache-a']);
    const body = oip(['logged as a hit']);
    await infer('/v2/models/embed/infer', body);
    const lines: string[] = [];
    vi.spyOn(console, 'log').mockImplementation((...args: unknown[]) => void lines.push(args.map(String).join(' ')));
    const hit = await infer('/v2/models/embed/infer', body);
    const record = lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((r) => r.msg === 'request');
    expect(record).toMatchObject({ status: 200, model: 'embed', pop: 'FRA', cache: 'hit', receipt: hit.claims!.jti });
    expect(record).not.toHaveProperty('backend');
    expect(record).not.toHaveProperty('provider');
    expect(record).not.toHaveProperty('attempts');
  });

  it("settles a hit's receipt: the consumer is charged, no provider is paid, and the batch verifies offline", async () => {
    await fakeBackends(['cache-a']);
    const token = await keyFor('consumer', 'settling-consumer');
    const body = oip(['settled from the cache']);
    const miss = await infer('/v2/models/embed/infer', body, {}, token);
    const hit = await infer('/v2/models/embed/infer', body, {}, token);
    expect([miss.cache, hit.cache]).toEqual(['miss', 'hit']);
    // Into the hit's shard, as the queue's consumer appends receipts (it may have done so already: a duplicate is ignored).
    const shard = shardOfReceipt(env, hit.claims!.jti);
    const outcomes = await ledgerShard(env, shard).append(shard, [miss.receipt!, hit.receipt!]);
    expect(outcomes.every((o) => o === 'appended' || o === 'duplicate'), JSON.stringify(outcomes)).toBe(true);
    const admin = await keyFor('admin');
    expect((await call('/admin/settlement/close', { method: 'POST', token: admin })).status).toBe(200);
    const billing = await keyFor('billing');
    const { batches } = (await (await call('/v1/settlement/batches?limit=1000', { token: billing })).json()) as { batches: { id: string }[] };
    let found: { batch: string; receipts: string[] } | undefined;
    for (const { id } of batches) {
      const { receipts } = (await (await call(`/v1/settlement/batches/${id}/receipts`, { token: billing })).json()) as { receipts: string[] };
      if (!receipts.includes(hit.receipt!)) continue;
      const { batch } = (await (await call(`/v1/settlement/batches/${id}`, { token: billing })).json()) as { batch: string };
      found = { batch, receipts };
    }
    expect(found, 'no closed batch holds the hit').toBeDefined();
    const { claims, receipts } = await verifyBatch(found!.batch, found!.receipts, await jwks(), { issuer: env.MESH_ISSUER });
    expect(receipts.find((r) => r.jti === hit.claims!.jti)).toMatchObject({ cache: 'hit', sub: 'settling-consumer' });
    // The consumer is charged for every receipt of its own, the hit included.
    const charged = receipts.filter((r) => r.sub === 'settling-consumer').reduce((n, r) => n + r.amount, 0);
    expect(charged).toBeGreaterThanOrEqual(hit.claims!.amount);
    expect(claims.totals.consumers['settling-consumer']).toBe(charged);
    // The same batch without the hit pays every provider exactly as much: the hit paid no one.
    const billable = (r: ReceiptClaims) => ({ jti: r.jti, sub: r.sub, provider: r.provider, amount: r.amount, second: r.second?.provider });
    const without = totalsOf(receipts.filter((r) => r.jti !== hit.claims!.jti).map(billable), new Set(claims.disputed));
    expect({ ...without.providers }).toEqual(claims.totals.providers);
    expect(charged - (without.consumers['settling-consumer'] ?? 0)).toBe(hit.claims!.amount);
  });
});

/** Rewrites a provider's standing in the operator registry, as time and verification would, and refreshes the snapshot. */
async function setStanding(provider: string, fields: Record<string, number | null>) {
  const sets = Object.keys(fields).map((k) => `${k} = ?`).join(', ');
  await runInDurableObject(env.OPERATOR_REGISTRY.getByName('global'), (_o, state: DurableObjectState) =>
    state.storage.sql.exec(`UPDATE providers SET ${sets} WHERE id = ?`, ...Object.values(fields), provider),
  );
  await refreshSnapshot(env);
}

const WEEK_AND_A_DAY_MS = 8 * 24 * 3600_000;

describe('an entry of a provider the mesh trusts', () => {
  it('is served when its provider is established with a clean record (a standing no snapshot carries)', async () => {
    await fakeBackends(['cache-old']);
    const body = oip(['computed by an established provider']);
    const miss = await infer('/v2/models/embed/infer', body);
    expect(miss.cache).toBe('miss');
    // Admitted over a week ago, no strike: the registry sends isolates no standing for it (verification/sampling.ts).
    await setStanding(miss.claims!.provider!, { added_at: Date.now() - WEEK_AND_A_DAY_MS, strikes: 0, last_proven_at: null, quarantined_at: null, sample_rate: null });
    const again = await infer('/v2/models/embed/infer', body);
    expect(again.cache).toBe('hit');
    expect(again.claims!.origin).toBe(miss.claims!.jti);
  });
});

describe('an entry of a provider the mesh no longer trusts', () => {
  it('is not served once its provider is quarantined, or proven to have lied after it was kept', async () => {
    await fakeBackends(['cache-q1', 'cache-q2']);
    const quarantined = oip(['computed before a quarantine']);
    const first = await infer('/v2/models/embed/infer', quarantined);
    expect((await infer('/v2/models/embed/infer', quarantined)).cache).toBe('hit');
    await setStanding(first.claims!.provider!, { quarantined_at: Date.now(), strikes: 3 });
    const afterQuarantine = await infer('/v2/models/embed/infer', quarantined);
    expect(afterQuarantine.cache).toBe('miss');
    expect(afterQuarantine.claims!.provider).not.toBe(first.claims!.provider);
    await setStanding(first.claims!.provider!, { quarantined_at: null, strikes: 0, last_proven_at: null });

    const lied = oip(['computed before a proven lie']);
    const kept = await infer('/v2/models/embed/infer', lied);
    expect((await infer('/v2/models/embed/infer', lied)).cache).toBe('hit');
    // A fraud proven after the entry was kept: the entry is not served, even once the provider is back in good standing.
    await setStanding(kept.claims!.provider!, { strikes: 1, last_proven_at: Date.now() + 1 });
    expect((await infer('/v2/models/embed/infer', lied)).cache).toBe('miss');
  });


  it('is not served once its provider is removed from the mesh', async () => {
    const fake = await fakeBackends(['cache-x', 'cache-y']);
    const body = oip(['computed by a provider about to go']);
    const miss = await infer('/v2/models/embed/infer', body);
    expect((await infer('/v2/models/embed/infer', body)).cache).toBe('hit');
    const gone = miss.claims!.provider!;
    expect((await call(`/admin/providers/${gone}`, { method: 'DELETE', token: await keyFor('admin') })).status).toBe(200);
    providers.delete(miss.claims!.backend!);
    await refreshSnapshot(env);
    const after = await infer('/v2/models/embed/infer', body);
    expect(after.res.status, after.text).toBe(200);
    expect(after.cache).toBe('miss');
    expect(after.claims!.provider).not.toBe(gone);
    expect([...fake.calls.values()].reduce((x, y) => x + y, 0)).toBe(2);
  });
});

describe('a hit receipt in the ledger', () => {
  it('is stored without a provider, and a receipt that is no hit still needs one', async () => {
    const { parseReceipt } = await import('../../../workers/settlement/input.ts');
    const { signReceipt } = await import('../../../workers/inference/receipts.ts');
    const { signingKeys } = await import('../../../workers/keys.ts');
    const { receiptClaims } = await import('../../helpers/receipts.ts');
    const keys = await signingKeys(env);
    const { provider: _p, backend: _b, region: _r, ...rest } = receiptClaims(1, { iss: env.MESH_ISSUER });
    const hit = await signReceipt(keys, { ...rest, cache: 'hit', origin: 'rcpt-origin' });
    expect(parseReceipt(hit)).toMatchObject({ provider: '', second: null });
    expect(parseReceipt(await signReceipt(keys, { ...rest, cache: 'miss' }))).toBe('provider missing');
    expect(parseReceipt(await signReceipt(keys, { ...rest, cache: 'hit', provider: 'p1', origin: 'x' }))).toBe('a cache hit names a provider');
    expect((await verifyReceipt(hit, await jwks())).cache).toBe('hit');
  });
});

