/**
 * The settlement ledger in workerd (Durable Objects, Queue and R2 in
 * Miniflare): exactly-once appends, idempotent closing (alarm fired twice,
 * restart mid-epoch), chunked Merkle proofs, totals, disputes and penalties
 * (redundant receipts included), the R2 archive, and the billing API checked
 * with the offline verifier.
 */

import { env } from 'cloudflare:workers';
import { createExecutionContext, createMessageBatch, getQueueResult, runDurableObjectAlarm, runInDurableObject, evictDurableObject } from 'cloudflare:test';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { leafHash, merkleRoot, toHex } from '../../../receipts/merkle.ts';
import { totalsOf } from '../../../receipts/totals.ts';
import { decodePayload, type BatchClaims, type ReceiptClaims } from '../../../shared/jwt.ts';
import { verifyBatch, verifyInclusionProof, type Jwks } from '../../../receipts/verify.ts';
import type { Env } from '../../../workers/env.ts';
import { signingKeys } from '../../../workers/keys.ts';
import worker from '../../../workers/index.ts';
import { signReceipt } from '../../../workers/inference/receipts.ts';
import { ledgerShard, shardOfReceipt } from '../../../workers/settlement/ledger.ts';
import type { SettlementLedger } from '../../../workers/settlement/SettlementLedger.ts';
import { receiptClaims } from '../../helpers/receipts.ts';
import { call, keyFor } from '../helpers.ts';

const SHARDS = Number(env.SETTLEMENT_SHARDS ?? 4);

afterEach(() => vi.restoreAllMocks());

let counter = 0;

/** A real receipt signed by the edge's key; `shard` picks a jti that hashes there. */
async function receipt(over: Partial<ReceiptClaims> = {}, shard?: number): Promise<{ jti: string; jwt: string; claims: ReceiptClaims }> {
  let jti = over.jti ?? crypto.randomUUID();
  while (shard !== undefined && shardOfReceipt(env, jti) !== shard) jti = crypto.randomUUID();
  const claims = receiptClaims(counter++, { iss: env.MESH_ISSUER, iat: Math.floor(Date.now() / 1000), jti, ...over });
  return { jti, jwt: await signReceipt(await signingKeys(env), claims), claims };
}

async function jwks(): Promise<Jwks> {
  return (await (await call('/.well-known/jwks.json')).json()) as Jwks;
}

async function closeAll(): Promise<string[]> {
  const res = await call('/admin/settlement/close', { method: 'POST', token: await keyFor('admin') });
  expect(res.status).toBe(200);
  return ((await res.json()) as { closed: string[] }).closed;
}

/** Runs the shard's alarm (archiving happens there) and waits until the batch is archived. */
async function archived(shard: number, id: string): Promise<void> {
  const ledger = ledgerShard(env, shard);
  for (let i = 0; i < 100; i++) {
    await runDurableObjectAlarm(ledger);
    if ((await ledger.batch(shard, id))?.archived) return;
    await scheduler.wait(50);
  }
  throw new Error(`batch ${id} was not archived`);
}

async function allReceipts(id: string, token: string, limit = 1000): Promise<string[]> {
  const out: string[] = [];
  let from: number | null = 0;
  while (from !== null) {
    const res = await call(`/v1/settlement/batches/${id}/receipts?from=${from}&limit=${limit}`, { token });
    expect(res.status).toBe(200);
    const page = (await res.json()) as { receipts: string[]; next: number | null };
    out.push(...page.receipts);
    from = page.next;
  }
  return out;
}

describe('SettlementLedger', () => {
  it('appends each jti once, however often it is delivered, across batches', async () => {
    await closeAll();
    const shard = 1;
    const ledger = ledgerShard(env, shard);
    const a = await receipt({}, shard);
    const b = await receipt({}, shard);
    expect(await ledger.append(shard, [a.jwt, b.jwt, a.jwt])).toEqual(['appended', 'appended', 'duplicate']);
    const [id] = await ledger.close(shard);
    // Redelivered after its batch closed: still a no-op, not a second leaf in the next batch.
    expect(await ledger.append(shard, [b.jwt, a.jwt])).toEqual(['duplicate', 'duplicate']);
    expect(await ledger.close(shard)).toEqual([]);
    const record = await ledger.batch(shard, id!);
    expect(record?.count).toBe(2);
    expect((await ledger.stats(shard)).open).toBe(0);
  });

  it('rolls a failed append back whole: the batch never counts a row it did not get', async () => {
    await closeAll();
    const shard = 1;
    const ledger = ledgerShard(env, shard);
    const good = await receipt({}, shard);
    const bad = await receipt({}, shard);
    // A storage fault, injected: inserting `bad` fails inside the append's transaction.
    await runInDurableObject(ledger, (_o, state: DurableObjectState) => {
      state.storage.sql.exec(`CREATE TRIGGER fault BEFORE INSERT ON receipts WHEN NEW.jti = '${bad.jti}' BEGIN SELECT RAISE(ABORT, 'injected fault'); END`);
    });
    vi.spyOn(console, 'error').mockImplementation(() => {});
    const outcomes = await ledger.append(shard, [good.jwt, bad.jwt]);
    expect(outcomes).toEqual([{ failed: expect.stringMatching(/injected fault/) }, { failed: expect.stringMatching(/injected fault/) }]);
    expect((await ledger.stats(shard)).open).toBe(0);
    await runInDurableObject(ledger, (_o, state: DurableObjectState) => void state.storage.sql.exec('DROP TRIGGER fault'));
    expect(await ledger.append(shard, [good.jwt, bad.jwt])).toEqual(['appended', 'appended']);
    const [id] = await ledger.close(shard);
    const { batch } = (await ledger.batch(shard, id!))!;
    await verifyBatch(batch, [good.jwt, bad.jwt], await jwks());
  });

  it('totals ids that name Object.prototype members as numbers, in a batch the offline verifier accepts', async () => {
    await closeAll();
    const shard = 3;
    const ledger = ledgerShard(env, shard);
    const ids = ['__proto__', 'constructor', 'toString', 'hasOwnProperty'];
    const made = await Promise.all(ids.flatMap((id) => [receipt({ sub: id, provider: id, amount: 10 }, shard), receipt({ sub: id, provider: id, amount: 20 }, shard)]));
    expect(await ledger.append(shard, made.map((r) => r.jwt))).toEqual(made.map(() => 'appended'));
    const [id] = await ledger.close(shard);
    const { batch } = (await ledger.batch(shard, id!))!;
    const { claims } = await verifyBatch(batch, made.map((r) => r.jwt), await jwks());
    for (const who of ids) {
      expect([who, Object.hasOwn(claims.totals.consumers, who) && claims.totals.consumers[who]]).toEqual([who, 30]);
      expect([who, Object.hasOwn(claims.totals.providers, who) && claims.totals.providers[who]]).toEqual([who, 30]);
    }
  });

  it('marks messages that are not receipts invalid, without appending them', async () => {
    const shard = 2;
    const good = await receipt({}, shard);
    const out = await ledgerShard(env, shard).append(shard, ['not-a-jwt', good.jwt, 'a.b.c']);
    expect(out[0]).toMatchObject({ invalid: expect.any(String) });
    expect(out[1]).toBe('appended');
    expect(out[2]).toMatchObject({ invalid: expect.any(String) });
  });

  it('closes a signed batch that the offline verifier accepts, with a proof for every receipt across chunk boundaries', async () => {
    await closeAll();
    const shard = 0;
    const ledger = ledgerShard(env, shard);
    const made = [];
    // 2 full chunks of 1024 and a partial third one.
    for (let i = 0; i < 2100; i++) made.push(await receipt({}, shard));
    for (let i = 0; i < made.length; i += 500) await ledger.append(shard, made.slice(i, i + 500).map((r) => r.jwt));
    const closed = await closeAll();
    const id = closed.find((x) => x.includes(`-0${shard}-`))!;
    expect(id).toBeDefined();

    const billing = await keyFor('billing');
    const res = await call(`/v1/settlement/batches/${id}`, { token: billing });
    expect(res.status).toBe(200);
    const { batch } = (await res.json()) as { batch: string };
    const receipts = await allReceipts(id, billing, 700);
    expect(receipts).toEqual(made.map((r) => r.jwt));

    const keys = await jwks();
    const { claims } = await verifyBatch(batch, receipts, keys, { issuer: env.MESH_ISSUER });
    expect(claims.count).toBe(2100);
    expect(claims.merkle_root).toBe(toHex(merkleRoot(made.map((r) => leafHash(r.jwt)))));
    expect(claims.totals).toEqual(totalsOf(made.map((r) => r.claims)));

    for (const leaf of [0, 1, 1023, 1024, 1025, 2047, 2048, 2099]) {
      const proofRes = await call(`/v1/receipts/${made[leaf]!.jti}/proof`, { token: billing });
      expect(proofRes.status).toBe(200);
      const proof = (await proofRes.json()) as { batch_id: string; leaf_index: number; tree_size: number; audit_path: string[] };
      expect(proof).toMatchObject({ batch_id: id, leaf_index: leaf, tree_size: 2100 });
      await verifyInclusionProof(made[leaf]!.jwt, proof, batch, keys);
    }
  });

  it('archives each closed batch to R2: receipts NDJSON, JWKS and the batch', async () => {
    await closeAll();
    const shard = 3;
    const made = [await receipt({}, shard), await receipt({}, shard), await receipt({}, shard)];
    await ledgerShard(env, shard).append(shard, made.map((r) => r.jwt));
    const [id] = (await closeAll()).filter((x) => x.includes(`-0${shard}-`));
    // Closing returns once the batch is signed; the alarm archives it.
    await archived(shard, id!);
    const prefix = `settlement/${id}/`;
    const batchJson = (await (await env.SETTLEMENT_ARCHIVE.get(`${prefix}batch.json`))!.json()) as { id: string; batch: string };
    expect(batchJson.id).toBe(id);
    const lines = (await (await env.SETTLEMENT_ARCHIVE.get(`${prefix}receipts.ndjson`))!.text()).trim().split('\n');
    expect(lines.map((l) => (JSON.parse(l) as { receipt: string }).receipt)).toEqual(made.map((r) => r.jwt));
    const archivedKeys = (await (await env.SETTLEMENT_ARCHIVE.get(`${prefix}jwks.json`))!.json()) as Jwks;
    await verifyBatch(batchJson.batch, made.map((r) => r.jwt), archivedKeys);
    expect((await ledgerShard(env, shard).batch(shard, id!))?.archived).toBe(true);
  });

  it('archives a batch of three 8 MiB parts through a multipart upload, every line intact', async () => {
    await closeAll();
    const shard = 2;
    const ledger = ledgerShard(env, shard);
    const jwts: string[] = [];
    // ~2.9 KB per NDJSON line: 7000 lines are two full parts and a partial third (R2 wants the full ones of one size).
    for (let i = 0; i < 7000; i++) jwts.push((await receipt({ attestation: 'x'.repeat(1500) }, shard)).jwt);
    for (let i = 0; i < jwts.length; i += 1000) await ledger.append(shard, jwts.slice(i, i + 1000));
    const [id] = await ledger.close(shard);
    await archived(shard, id!);
    const object = (await env.SETTLEMENT_ARCHIVE.get(`settlement/${id}/receipts.ndjson`))!;
    expect(object.size).toBeGreaterThan(16 * 1024 * 1024);
    const lines = (await object.text()).trimEnd().split('\n');
    expect(lines.map((l) => (JSON.parse(l) as { leaf: number; receipt: string }).receipt)).toEqual(jwts);
    expect((await ledger.batch(shard, id!))?.archived).toBe(true);
  });

  it('closes once when the epoch alarm fires twice: no duplicate batch, no gap', async () => {
    await closeAll();
    const shard = 1;
    const ledger = ledgerShard(env, shard);
    const first = [await receipt({}, shard), await receipt({}, shard)];
    await ledger.append(shard, first.map((r) => r.jwt));
    const before = (await ledger.stats(shard)).batches.signed ?? 0;
    // The epoch is over: move the open batch's deadline into the past.
    await runInDurableObject(ledger, (_o, state: DurableObjectState) => {
      state.storage.sql.exec("UPDATE batches SET deadline = 1 WHERE state = 'open'");
    });
    expect(await runDurableObjectAlarm(ledger)).toBe(true);
    await runInDurableObject(ledger, async (_o, state: DurableObjectState) => state.storage.setAlarm(Date.now()));
    await runDurableObjectAlarm(ledger);
    const stats = await ledger.stats(shard);
    expect(stats.batches.signed).toBe(before + 1);
    expect(stats.open).toBe(0);

    // The next batch starts where the last one ended.
    const second = await receipt({}, shard);
    await ledger.append(shard, [second.jwt]);
    await ledger.close(shard);
    const listed = (await ledger.list(shard, '', 1000)).slice(-2);
    expect(listed.map((b) => b.count)).toEqual([2, 1]);
    expect(listed[1]!.epoch_start).toBe(listed[0]!.epoch_end);
  });

  it('keeps the open batch across a restart mid-epoch', async () => {
    await closeAll();
    const shard = 2;
    const ledger = ledgerShard(env, shard);
    const before = [await receipt({}, shard), await receipt({}, shard)];
    await ledger.append(shard, before.map((r) => r.jwt));
    await evictDurableObject(ledger);
    const after = [await receipt({}, shard)];
    // The restarted object still knows what it holds: a redelivery is a duplicate, new ones follow on.
    expect(await ledgerShard(env, shard).append(shard, [before[0]!.jwt, after[0]!.jwt])).toEqual(['duplicate', 'appended']);
    const [id] = await ledgerShard(env, shard).close(shard);
    const page = await ledgerShard(env, shard).receipts(shard, id!, 0, 10);
    expect(page?.receipts).toEqual([...before, ...after].map((r) => r.jwt));
  });

  it('withholds a disputed receipt from payout while charging its consumer', async () => {
    await closeAll();
    const shard = 3;
    const ledger = ledgerShard(env, shard);
    const a = await receipt({ provider: 'p-honest', sub: 'c-1', amount: 7 }, shard);
    const b = await receipt({ provider: 'p-suspect', sub: 'c-1', amount: 5 }, shard);
    await ledger.append(shard, [a.jwt, b.jwt]);
    const admin = await keyFor('admin');
    const res = await call('/admin/settlement/disputes', { method: 'POST', token: admin, body: JSON.stringify({ jti: b.jti, reason: 'mismatch' }) });
    expect(res.status).toBe(201);
    const [id] = await ledger.close(shard);
    const { batch } = (await ledger.batch(shard, id!))!;
    const claims = decodePayload<BatchClaims>(batch)!;
    expect(claims.disputed).toEqual([b.jti]);
    expect(claims.totals).toEqual({ providers: { 'p-honest': 7, 'p-suspect': 0 }, consumers: { 'c-1': 12 }, withheld: { 'p-suspect': 5 } });
    expect(claims.penalties).toEqual([]);
    await verifyBatch(batch, [a.jwt, b.jwt], await jwks());
    // Closed: it can no longer be disputed.
    const late = await call('/admin/settlement/disputes', { method: 'POST', token: admin, body: JSON.stringify({ jti: a.jti }) });
    expect(late.status).toBe(409);
    expect(((await late.json()) as { error: { code: string } }).error.code).toBe('already_settled');
  });
});

describe('SettlementLedger penalties', () => {
  const proof = (n: number) => `d-${String(1_800_000_000_000 + n)}-0000beef`;

  /** The signed claims of a batch this shard closed. */
  async function claimsOf(shard: number, id: string): Promise<BatchClaims> {
    return decodePayload<BatchClaims>((await ledgerShard(env, shard).batch(shard, id))!.batch)!;
  }

  it("withholds a penalized provider's receipts in the open batch only, as provider or as second, before and after the penalty", async () => {
    await closeAll();
    const shard = 2;
    const ledger = ledgerShard(env, shard);
    // A batch sealed before the penalty keeps paying.
    const old = await receipt({ provider: 'pen-bad', sub: 'pen-c', amount: 11 }, shard);
    await ledger.append(shard, [old.jwt]);
    const [oldId] = await ledger.close(shard);
    const oldBatch = (await ledger.batch(shard, oldId!))!.batch;

    const before = await receipt({ provider: 'pen-bad', sub: 'pen-c', amount: 10 }, shard);
    const honest = await receipt({ provider: 'pen-good', sub: 'pen-c', amount: 20 }, shard);
    const pair = { provider: 'pen-bad', backend: 'b-2', attestation: 'a.b.c' };
    const redundant = await receipt({ provider: 'pen-good', sub: 'pen-c', amount: 7, verify: 'redundant', second: pair }, shard);
    const cleanPair = await receipt({ provider: 'pen-good', sub: 'pen-c', amount: 9, verify: 'redundant', second: { ...pair, provider: 'pen-other' } }, shard);
    await ledger.append(shard, [before.jwt, honest.jwt, redundant.jwt, cleanPair.jwt]);

    const penalties = (await ledger.stats(shard)).penalties;
    const first = await ledger.penalize(shard, 'pen-bad', proof(1));
    expect(first).toEqual({ batch: expect.any(Number), created: true });
    // One penalty per batch and provider: the first dispute id stays.
    expect(await ledger.penalize(shard, 'pen-bad', proof(2))).toEqual({ batch: first.batch, created: false });
    expect((await ledger.stats(shard)).penalties).toBe(penalties + 1);

    const after = await receipt({ provider: 'pen-bad', sub: 'pen-c', amount: 5 }, shard);
    await ledger.append(shard, [after.jwt]);
    const [id] = await ledger.close(shard);
    const made = [before, honest, redundant, cleanPair, after];
    const { batch } = (await ledger.batch(shard, id!))!;
    const claims = decodePayload<BatchClaims>(batch)!;
    expect(claims.disputed).toEqual([before.jti, redundant.jti, after.jti].sort());
    expect(claims.penalties).toEqual([{ provider: 'pen-bad', dispute: proof(1) }]);
    // The redundant receipt's payout splits 4 (provider) / 3 (second); withheld, both parts are.
    expect(claims.totals).toEqual({
      providers: { 'pen-bad': 0, 'pen-good': 20 + 5, 'pen-other': 4 },
      consumers: { 'pen-c': 51 },
      withheld: { 'pen-bad': 10 + 3 + 5, 'pen-good': 4 },
    });
    await verifyBatch(batch, made.map((r) => r.jwt), await jwks());

    // The earlier batch is untouched; the next batch is not penalized.
    expect((await ledger.batch(shard, oldId!))!.batch).toBe(oldBatch);
    expect(decodePayload<BatchClaims>(oldBatch)!.disputed).toEqual([]);
    const next = await receipt({ provider: 'pen-bad', sub: 'pen-c', amount: 3 }, shard);
    await ledger.append(shard, [next.jwt]);
    const [nextId] = await ledger.close(shard);
    const nextClaims = await claimsOf(shard, nextId!);
    expect(nextClaims).toMatchObject({ disputed: [], penalties: [], totals: { providers: { 'pen-bad': 3 }, withheld: {} } });
  });

  it('penalizes the open batch, not one sealed and still being signed', async () => {
    await closeAll();
    const shard = 1;
    const ledger = ledgerShard(env, shard);
    const sealed = await receipt({ provider: 'pen-late', amount: 8 }, shard);
    await ledger.append(shard, [sealed.jwt]);
    // `close` seals at once and signs later: the penalty comes in between.
    const { ids, penalty, sealedSeq } = await runInDurableObject(ledger, async (o: SettlementLedger, state: DurableObjectState) => {
      const sealedSeq = state.storage.sql.exec<{ seq: number }>("SELECT seq FROM batches WHERE state = 'open'").one().seq;
      const closing = o.close(shard);
      const penalty = o.penalize(shard, 'pen-late', proof(3));
      return { ids: await closing, penalty, sealedSeq };
    });
    expect(penalty).toEqual({ batch: sealedSeq + 1, created: true });
    const claims = await claimsOf(shard, ids[0]!);
    expect(claims).toMatchObject({ disputed: [], penalties: [], totals: { providers: { 'pen-late': 8 } } });
    // It applies to what arrives next.
    const late = await receipt({ provider: 'pen-late', amount: 2 }, shard);
    await ledger.append(shard, [late.jwt]);
    const [nextId] = await ledger.close(shard);
    expect(await claimsOf(shard, nextId!)).toMatchObject({ disputed: [late.jti], penalties: [{ provider: 'pen-late', dispute: proof(3) }] });
  });

  it('keeps the fraud-proof id of a dispute, added to one made without it', async () => {
    const shard = 3;
    const ledger = ledgerShard(env, shard);
    const a = await receipt({}, shard);
    const b = await receipt({}, shard);
    await ledger.append(shard, [a.jwt, b.jwt]);
    expect(await ledger.dispute(shard, a.jti, 'mismatch', proof(4))).toEqual({ jti: a.jti, created: true, settled: false });
    expect(await ledger.dispute(shard, b.jti, 'operator')).toMatchObject({ created: true });
    expect(await ledger.dispute(shard, b.jti, 'mismatch', proof(5))).toMatchObject({ created: false });
    expect(await ledger.dispute(shard, a.jti, 'mismatch', proof(6))).toMatchObject({ created: false });
    const stored = await runInDurableObject(ledger, (_o, state: DurableObjectState) =>
      state.storage.sql.exec<{ jti: string; dispute_id: string | null }>('SELECT jti, dispute_id FROM disputes WHERE jti IN (?, ?)', a.jti, b.jti).toArray(),
    );
    expect(Object.fromEntries(stored.map((r) => [r.jti, r.dispute_id]))).toEqual({ [a.jti]: proof(4), [b.jti]: proof(5) });
  });

  it('stores the second provider only when it is a valid id', async () => {
    const shard = 0;
    const ledger = ledgerShard(env, shard);
    const good = await receipt({ verify: 'redundant', second: { provider: 'sp-1', backend: 'b', attestation: 'a' } }, shard);
    const long = await receipt({ verify: 'redundant', second: { provider: 'x'.repeat(257), backend: 'b', attestation: 'a' } }, shard);
    const empty = await receipt({ verify: 'redundant', second: { provider: '', backend: 'b', attestation: 'a' } }, shard);
    const none = await receipt({}, shard);
    expect(await ledger.append(shard, [good, long, empty, none].map((r) => r.jwt))).toEqual(['appended', 'appended', 'appended', 'appended']);
    const rows = await runInDurableObject(ledger, (_o, state: DurableObjectState) =>
      state.storage.sql
        .exec<{ jti: string; second_provider: string | null }>('SELECT jti, second_provider FROM receipts WHERE jti IN (?, ?, ?, ?)', good.jti, long.jti, empty.jti, none.jti)
        .toArray(),
    );
    expect(Object.fromEntries(rows.map((r) => [r.jti, r.second_provider]))).toEqual({ [good.jti]: 'sp-1', [long.jti]: null, [empty.jti]: null, [none.jti]: null });
  });

  it('refuses a penalty or a dispute id that is not an id', async () => {
    const shard = 0;
    // Called in the object (a plain throw), not over RPC.
    await runInDurableObject(ledgerShard(env, shard), (o: SettlementLedger) => {
      for (const [provider, dispute] of [['', proof(7)], ['x'.repeat(257), proof(7)], ['p', ''], [42 as unknown as string, proof(7)]] as const) {
        expect(() => o.penalize(shard, provider, dispute)).toThrow(/must be a string of 1 to 256 characters/);
      }
      expect(() => o.dispute(shard, 'some-jti', 'why', '')).toThrow(/disputeId/);
    });
  });
});

describe('the receipts queue consumer', () => {
  it('acks message by message: a poison message is retried (towards the DLQ), the rest are appended', async () => {
    const good = [await receipt(), await receipt()];
    const batch = createMessageBatch('mesh-receipts', [
      { id: 'm1', timestamp: new Date(), attempts: 1, body: { v: 1, receipt: good[0]!.jwt } },
      { id: 'm2', timestamp: new Date(), attempts: 1, body: { nonsense: true } },
      { id: 'm3', timestamp: new Date(), attempts: 1, body: { v: 1, receipt: good[1]!.jwt } },
      { id: 'm4', timestamp: new Date(), attempts: 1, body: { v: 1, receipt: 'x.y.z' } },
    ]);
    const ctx = createExecutionContext();
    await worker.queue(batch, env);
    const result = await getQueueResult(batch, ctx);
    expect(result.explicitAcks.sort()).toEqual(['m1', 'm3']);
    expect(result.retryMessages.map((m) => m.msgId).sort()).toEqual(['m2', 'm4']);
    for (const r of good) {
      const shard = shardOfReceipt(env, r.jti);
      expect((await ledgerShard(env, shard).proof(shard, r.jti))).toEqual({ pending: true });
    }
  });

  it('retries the messages of a shard whose storage failed or that could not be reached, acking none', async () => {
    vi.spyOn(console, 'error').mockImplementation(() => {});
    const made = [await receipt(), await receipt()];
    const ledgers = [
      { append: async (_shard: number, list: string[]) => list.map(() => ({ failed: 'disk full' })) },
      { append: async () => Promise.reject(new Error('shard unreachable')) },
    ];
    for (const ledger of ledgers) {
      const batch = createMessageBatch(
        'mesh-receipts',
        made.map((r, i) => ({ id: `f${i}`, timestamp: new Date(), attempts: 3, body: { v: 1, receipt: r.jwt } })),
      );
      const ctx = createExecutionContext();
      await worker.queue(batch, { ...env, SETTLEMENT_LEDGER: { getByName: () => ledger } } as unknown as Env);
      const result = await getQueueResult(batch, ctx);
      expect(result.explicitAcks).toEqual([]);
      // (The plugin's queue result does not record retry delays, only which messages were retried.)
      expect(result.retryMessages.map((m) => m.msgId).sort()).toEqual(['f0', 'f1']);
    }
  });

  it('treats a duplicate delivery as delivered (acked, appended once)', async () => {
    await closeAll();
    const r = await receipt();
    for (const id of ['d1', 'd2']) {
      const batch = createMessageBatch('mesh-receipts', [{ id, timestamp: new Date(), attempts: 1, body: { v: 1, receipt: r.jwt } }]);
      const ctx = createExecutionContext();
      await worker.queue(batch, env);
      expect((await getQueueResult(batch, ctx)).explicitAcks).toEqual([id]);
    }
    const closed = await closeAll();
    const shard = shardOfReceipt(env, r.jti);
    const id = closed.find((x) => x.includes(`-0${shard}-`))!;
    expect((await ledgerShard(env, shard).batch(shard, id))?.count).toBe(1);
  });

  it('appends a redelivery to the shard chosen when the receipt was recorded, after SETTLEMENT_SHARDS changed: once, not in its new shard too', async () => {
    const two = { ...env, SETTLEMENT_SHARDS: '2' } as unknown as Env;
    const four = { ...env, SETTLEMENT_SHARDS: '4' } as unknown as Env;
    let r = await receipt();
    while (shardOfReceipt(two, r.jti) === shardOfReceipt(four, r.jti)) r = await receipt();
    const home = shardOfReceipt(two, r.jti);
    const moved = shardOfReceipt(four, r.jti);
    const body = { v: 1, receipt: r.jwt, shard: home };
    for (const [id, at] of [['s1', two], ['s2', four]] as const) {
      const batch = createMessageBatch('mesh-receipts', [{ id, timestamp: new Date(), attempts: 1, body }]);
      const ctx = createExecutionContext();
      await worker.queue(batch, at);
      expect((await getQueueResult(batch, ctx)).explicitAcks).toEqual([id]);
    }
    expect(await ledgerShard(env, home).proof(home, r.jti)).toEqual({ pending: true });
    expect(await ledgerShard(env, moved).proof(moved, r.jti)).toBeNull();
  });

  it('retries a message whose shard is not a ledger shard (towards the DLQ), appending nothing', async () => {
    vi.spyOn(console, 'error').mockImplementation(() => {});
    const r = await receipt();
    const bad = [-1, 1.5, 100, '1', null];
    const batch = createMessageBatch(
      'mesh-receipts',
      bad.map((shard, i) => ({ id: `b${i}`, timestamp: new Date(), attempts: 1, body: { v: 1, receipt: r.jwt, shard } })),
    );
    const ctx = createExecutionContext();
    await worker.queue(batch, env);
    const result = await getQueueResult(batch, ctx);
    expect(result.explicitAcks).toEqual([]);
    expect(result.retryMessages.map((m) => m.msgId).sort()).toEqual(bad.map((_, i) => `b${i}`));
    for (let shard = 0; shard < SHARDS; shard++) expect(await ledgerShard(env, shard).proof(shard, r.jti)).toBeNull();
  });

  it('keeps dead letters in R2 and acks them', async () => {
    const batch = createMessageBatch('mesh-receipts-dlq', [{ id: 'dead-1', timestamp: new Date('2026-11-25T00:00:00Z'), attempts: 6, body: { nonsense: 1 } }]);
    const ctx = createExecutionContext();
    await worker.queue(batch, env);
    expect((await getQueueResult(batch, ctx)).explicitAcks).toEqual(['dead-1']);
    const kept = await env.SETTLEMENT_ARCHIVE.get('dead-letter/mesh-receipts-dlq/2026-11-25/dead-1.json');
    expect(((await kept!.json()) as { body: unknown }).body).toEqual({ nonsense: 1 });
  });
});

describe('the billing API', () => {
  it('needs a billing or admin token', async () => {
    expect((await call('/v1/settlement/batches')).status).toBe(401);
    expect((await call('/v1/settlement/batches', { token: await keyFor('consumer') })).status).toBe(403);
    expect((await call('/v1/settlement/batches', { token: await keyFor('billing') })).status).toBe(200);
    expect((await call('/v1/settlement/batches', { token: await keyFor('admin') })).status).toBe(200);
    expect((await call('/admin/settlement/close', { method: 'POST', token: await keyFor('billing') })).status).toBe(403);
  });

  it('lists closed batches oldest first across shards, paged by `after`', async () => {
    for (let s = 0; s < SHARDS; s++) await ledgerShard(env, s).append(s, [(await receipt({}, s)).jwt]);
    await closeAll();
    const billing = await keyFor('billing');
    const all = (await (await call('/v1/settlement/batches?limit=1000', { token: billing })).json()) as { batches: { id: string }[] };
    const ids = all.batches.map((b) => b.id);
    expect(ids).toEqual([...ids].sort());
    expect(new Set(ids).size).toBe(ids.length);
    const firstPage = (await (await call('/v1/settlement/batches?limit=2', { token: billing })).json()) as { batches: { id: string }[]; next: string };
    expect(firstPage.batches.map((b) => b.id)).toEqual(ids.slice(0, 2));
    const second = (await (await call(`/v1/settlement/batches?limit=2&after=${firstPage.next}`, { token: billing })).json()) as { batches: { id: string }[] };
    expect(second.batches.map((b) => b.id)).toEqual(ids.slice(2, 4));
  });

  it('lists no batch past one that is closed but still signing, so that paging by `after` never skips it', async () => {
    const billing = await keyFor('billing');
    const list = async (after = '') =>
      ((await (await call(`/v1/settlement/batches?limit=1000${after ? `&after=${after}` : ''}`, { token: billing })).json()) as { batches: { id: string }[] }).batches.map((b) => b.id);
    const seen = await list();
    const last = seen.at(-1) ?? '';
    // Shard 0 closes a batch whose signing has not finished (a large batch, or a signing failure retried);
    // shard 1 closes a later one and signs it at once.
    await ledgerShard(env, 0).append(0, [(await receipt({}, 0)).jwt]);
    const [signing] = await ledgerShard(env, 0).close(0);
    // (Its alarm, which would sign it again, is cancelled for the test.)
    await runInDurableObject(ledgerShard(env, 0), async (_o, state: DurableObjectState) => {
      await state.storage.deleteAlarm();
      state.storage.sql.exec("UPDATE batches SET state = 'sealed' WHERE id = ?", signing!);
    });
    await scheduler.wait(5);
    await ledgerShard(env, 1).append(1, [(await receipt({}, 1)).jwt]);
    const [later] = await ledgerShard(env, 1).close(1);
    expect(later! > signing!).toBe(true);
    // A billing system that pages now must not be handed the later batch: it would ask `after` it, and never see the earlier one.
    expect(await list(last)).toEqual([]);
    await runInDurableObject(ledgerShard(env, 0), (_o, state: DurableObjectState) => state.storage.sql.exec("UPDATE batches SET state = 'signed' WHERE id = ?", signing!));
    expect(await list(last)).toEqual([signing, later]);
  });

  it('answers 404 batch_open for a receipt in the open batch, 404 for unknown ids, 400 for bad paging', async () => {
    const r = await receipt();
    const shard = shardOfReceipt(env, r.jti);
    await ledgerShard(env, shard).append(shard, [r.jwt]);
    const billing = await keyFor('billing');
    const open = await call(`/v1/receipts/${r.jti}/proof`, { token: billing });
    expect(open.status).toBe(404);
    expect(((await open.json()) as { error: { code: string } }).error.code).toBe('batch_open');
    const unknown = await call(`/v1/receipts/${crypto.randomUUID()}/proof`, { token: billing });
    expect(((await unknown.json()) as { error: { code: string } }).error.code).toBe('receipt_not_found');
    expect((await call('/v1/settlement/batches/nope', { token: billing })).status).toBe(404);
    expect((await call('/v1/settlement/batches/9999999999999-00-000001', { token: billing })).status).toBe(404);
    expect((await call('/v1/settlement/batches?after=garbage', { token: billing })).status).toBe(400);
    expect((await call('/v1/settlement/batches?limit=-1', { token: billing })).status).toBe(400);
  });
});
