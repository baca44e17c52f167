/**
 * Filing a fraud proof in workerd (verification/disputes.ts) and the routes
 * that read and act on it (routes/disputes.ts): the document is stored and
 * checks with the offline verifier; the registry counts a strike and
 * quarantines at the threshold; the ledger withholds the accused's receipt
 * and penalizes it in every shard; only billing and admin read disputes, only
 * the admin clears a quarantine or sets a sample rate.
 */

import { env } from 'cloudflare:test';
import { importJWK, SignJWT, type JWK } from 'jose';
import { describe, expect, it } from 'vitest';
import { DEFAULT_RULE, sha256Hex, verifyDispute, type Jwks } from '../../../receipts/index.ts';
import { generateEd25519 } from '../../../shared/keys.ts';
import { decodePayload, TYP, type BatchClaims, type ReceiptClaims } from '../../../shared/jwt.ts';
import type { BackendEntry } from '../../../workers/directory/backend.ts';
import { backend as entry } from '../routing/fixtures.ts';
import { signReceipt } from '../../../workers/inference/receipts.ts';
import { signingKeys } from '../../../workers/keys.ts';
import { allShards, ledgerShard, shardOfReceipt } from '../../../workers/settlement/ledger.ts';
import { fileDispute, type DisputeDocument, type Execution } from '../../../workers/verification/disputes.ts';
import { admitProvider, call, keyFor } from '../helpers.ts';

const encoder = new TextEncoder();

/** An OIP answer whose one output is `data`. */
const answer = (data: number[]) => encoder.encode(JSON.stringify({ model_name: 'embed', outputs: [{ name: 'embedding', datatype: 'FP32', shape: [1, data.length], data }] }));

/** A provider admitted through the admin API, with its private key for attestations. */
async function provider(id: string) {
  const pair = await generateEd25519(`${id}-key`);
  const res = await call('/admin/providers', { method: 'POST', token: await keyFor('admin'), body: JSON.stringify({ id, publicJwk: pair.publicJwk }) });
  expect(res.status).toBeLessThan(300);
  return { id, pair };
}

/** One run by `p`'s backend: attested by its key (or `signWith`), paid by a mesh receipt. */
async function execution(p: Awaited<ReturnType<typeof provider>>, oip: Uint8Array, signWith: JWK = p.pair.privateJwk): Promise<Execution> {
  const backend: BackendEntry = entry(`${p.id}-b1`, 'eu-west', {
    provider: p.id,
    providerKey: p.pair.publicJwk as JWK,
    url: 'http://127.0.0.1:1',
    lat: 50.1,
    lon: 8.7,
  });
  const outputSha256 = await sha256Hex(oip);
  const attestation = await new SignJWT({ jti: crypto.randomUUID(), model: 'embed', output_sha256: outputSha256, units: { input: 3, output: 1 } })
    .setProtectedHeader({ alg: 'EdDSA', typ: TYP.attestation, kid: p.pair.publicJwk.kid! })
    .setIssuer(p.id)
    .setSubject(backend.id)
    .setIssuedAt()
    .sign(await importJWK(signWith, 'EdDSA'));
  const jti = crypto.randomUUID();
  const claims: ReceiptClaims = {
    iss: env.MESH_ISSUER,
    sub: 'consumer-1',
    jti,
    iat: Math.floor(Date.now() / 1000),
    model: 'embed',
    model_version: '1',
    provider: p.id,
    backend: backend.id,
    region: 'eu-west',
    pop: 'FRA',
    units: { input: 3, output: 1 },
    amount: 10,
    input_sha256: '11'.repeat(32),
    output_sha256: outputSha256,
    latency_ms: 5,
    cache: 'miss',
    verify: 'sampled',
    attestation,
  };
  const receipt = await signReceipt(await signingKeys(env), claims);
  return { backend, attestation, outputSha256, oip, receipt, receiptJti: jti };
}

/** Files a mismatch dispute over `runs` (answer, check and, when given, referee), as reexecute.ts does. */
function fileMismatch(runs: Execution[], accused?: Execution, inputSha256 = '11'.repeat(32)) {
  const roles = ['answer', 'check', 'referee'] as const;
  return fileDispute(env, {
    kind: 'mismatch',
    verdict: accused ? 'proven' : 'unresolved',
    ...(accused ? { accused } : {}),
    model: 'embed',
    modelVersion: '1',
    inputSha256,
    rule: DEFAULT_RULE,
    runs: runs.map((run, i) => ({ role: roles[i]!, run })),
  });
}

async function jwks(): Promise<Jwks> {
  return (await (await call('/.well-known/jwks.json')).json()) as Jwks;
}

async function fetchDispute(id: string, role: 'billing' | 'admin' | 'consumer' = 'billing') {
  return call(`/v1/disputes/${id}`, { token: await keyFor(role) });
}

describe('filing a mismatch fraud proof', () => {
  it('stores a document the offline verifier accepts, strikes the accused, withholds its receipt and penalizes it in every shard', async () => {
    const [liar, honestA, honestB] = await Promise.all([provider('fp-liar'), provider('fp-honest-a'), provider('fp-honest-b')]);
    const truth = [0.25, -0.5, 1];
    const [answerRun, check, referee] = await Promise.all([
      execution(liar, answer([0.75, -0.5, 1])),
      execution(honestA, answer(truth)),
      execution(honestB, answer(truth.map((x) => x * (1 + 1e-6)))),
    ]);
    const id = await fileMismatch([answerRun, check, referee], answerRun);
    expect(id).toMatch(/^d-\d{13}-[0-9a-f]{8}$/);

    const res = await fetchDispute(id!);
    expect(res.status).toBe(200);
    const doc = (await res.json()) as DisputeDocument;
    const report = await verifyDispute(doc, await jwks(), { issuer: env.MESH_ISSUER });
    expect(report).toMatchObject({ id, kind: 'mismatch', verdict: 'proven', accused: 'fp-liar', withheld: [answerRun.receiptJti] });

    const registry = env.OPERATOR_REGISTRY.getByName('global');
    expect((await registry.standings()).find((s) => s.id === 'fp-liar')).toMatchObject({ strikes: 1, quarantinedAt: null });
    expect((await registry.standings()).find((s) => s.id === 'fp-honest-a')).toMatchObject({ strikes: 0 });
    const listed = (await (await call('/v1/disputes?provider=fp-liar', { token: await keyFor('billing') })).json()) as { disputes: { id: string }[] };
    expect(listed.disputes.map((d) => d.id)).toContain(id);

    const stats = await Promise.all(allShards(env).map((s) => ledgerShard(env, s).stats(s)));
    expect(stats.every((s) => (s as { penalties?: number }).penalties! >= 1)).toBe(true);
  });

  it('quarantines at VERIFY_QUARANTINE_AFTER proven frauds; the admin clears it, and the events say so', async () => {
    const [liar, a, b] = await Promise.all([provider('fp-repeat'), provider('fp-repeat-a'), provider('fp-repeat-b')]);
    const file = async () => {
      const [x, y, z] = await Promise.all([execution(liar, answer([9])), execution(a, answer([1])), execution(b, answer([1]))]);
      return fileMismatch([x, y, z], x, '22'.repeat(32));
    };
    const threshold = Number(env.VERIFY_QUARANTINE_AFTER);
    for (let i = 0; i < threshold; i++) await file();
    const registry = env.OPERATOR_REGISTRY.getByName('global');
    const quarantined = (await registry.standings()).find((s) => s.id === 'fp-repeat')!;
    expect(quarantined.strikes).toBe(threshold);
    expect(quarantined.quarantinedAt).not.toBeNull();
    // The operator sees it in the provider list.
    const listed = (await (await call('/admin/providers', { token: await keyFor('admin') })).json()) as { providers: { id: string; strikes: number; quarantinedAt: number | null }[] };
    expect(listed.providers.find((p) => p.id === 'fp-repeat')).toMatchObject({ strikes: threshold, quarantinedAt: quarantined.quarantinedAt });

    expect((await call('/admin/providers/fp-repeat/clear', { method: 'POST', token: await keyFor('billing') })).status).toBe(403);
    const cleared = await call('/admin/providers/fp-repeat/clear', { method: 'POST', token: await keyFor('admin') });
    expect(cleared.status).toBe(200);
    expect(await cleared.json()).toMatchObject({ id: 'fp-repeat', strikes: 0, quarantinedAt: null });

    const events = (await (await call('/v1/verification/events?limit=1000', { token: await keyFor('billing') })).json()) as {
      events: { provider: string; kind: string }[];
    };
    expect(events.events.filter((e) => e.provider === 'fp-repeat').map((e) => e.kind)).toEqual([
      ...Array.from({ length: threshold }, () => 'proven'),
      'quarantined',
      'cleared',
    ]);
  });

  it('files an unresolved dispute (two runs) without a strike or a penalty', async () => {
    const [x, y] = await Promise.all([provider('fp-two-a'), provider('fp-two-b')]);
    const [a, b] = await Promise.all([execution(x, answer([1])), execution(y, answer([2]))]);
    const id = await fileMismatch([a, b], undefined, '33'.repeat(32));
    const doc = (await (await fetchDispute(id!)).json()) as DisputeDocument;
    expect(await verifyDispute(doc, await jwks())).toMatchObject({ verdict: 'unresolved', accused: null, withheld: [] });
    const standings = await env.OPERATOR_REGISTRY.getByName('global').standings();
    expect(standings.filter((s) => s.id.startsWith('fp-two-')).map((s) => s.strikes)).toEqual([0, 0]);
  });
});

describe('dispute and verification routes', () => {
  it('answers 404 dispute_not_found for an unknown or malformed id, 403 to a consumer, 401 without a token', async () => {
    const missing = await fetchDispute('d-0000000000000-00000000');
    expect(missing.status).toBe(404);
    expect(await missing.json()).toMatchObject({ error: { code: 'dispute_not_found' } });
    expect((await fetchDispute('../../etc')).status).toBe(404);
    expect((await fetchDispute('d-0000000000000-00000000', 'consumer')).status).toBe(403);
    expect((await call('/v1/disputes')).status).toBe(401);
    expect((await call('/v1/disputes?after=nope', { token: await keyFor('billing') })).status).toBe(400);
  });

  it("sets and resets a provider's sample rate, refusing anything but 0..1 or null", async () => {
    await admitProvider('fp-rate');
    const put = async (body: unknown) =>
      call('/admin/providers/fp-rate/verification', { method: 'PUT', token: await keyFor('admin'), body: JSON.stringify(body) });
    expect(await (await put({ sample_rate: 1 })).json()).toMatchObject({ id: 'fp-rate', sampleRate: 1 });
    expect(await (await put({ sample_rate: null })).json()).toMatchObject({ id: 'fp-rate', sampleRate: null });
    for (const bad of [{ sample_rate: 1.5 }, { sample_rate: -0.1 }, { sample_rate: '1' }, {}]) expect((await put(bad)).status).toBe(400);
    const unknown = await call('/admin/providers/nobody-here/verification', { method: 'PUT', token: await keyFor('admin'), body: '{"sample_rate":0.5}' });
    expect(unknown.status).toBe(404);
  });
});

describe('withholding after SETTLEMENT_SHARDS changed', () => {
  it('disputes a receipt in the shard that holds it, when it was appended under the earlier shard count', async () => {
    const p = await provider('fp-moved');
    const forged = (await generateEd25519('fp-moved-not-admitted')).privateJwk;
    // Appended while the mesh ran 2 shards; the dispute comes after the count became SETTLEMENT_SHARDS (4).
    const before = { ...env, SETTLEMENT_SHARDS: '2' } as typeof env;
    let run: Execution;
    do run = await execution(p, answer([1]), forged);
    while (shardOfReceipt(before, run.receiptJti) === shardOfReceipt(env, run.receiptJti));
    const held = shardOfReceipt(before, run.receiptJti);
    expect(await ledgerShard(env, held).append(held, [run.receipt])).toEqual(['appended']);
    await fileDispute(env, {
      kind: 'signature',
      verdict: 'proven',
      accused: run,
      model: 'embed',
      modelVersion: '1',
      inputSha256: '44'.repeat(32),
      rule: DEFAULT_RULE,
      runs: [{ role: 'answer', run }],
    });
    const [id] = await ledgerShard(env, held).close(held);
    const claims = decodePayload<BatchClaims>((await ledgerShard(env, held).batch(held, id!))!.batch)!;
    expect(claims.disputed).toContain(run.receiptJti);
  });
});
