/**
 * The producer: receipts go to the queue, an isolate's concurrent ones in
 * shared batches; when the queue refuses twice,
 * straight to its ledger shard; when that fails too, to R2 under
 * `undelivered/`; only if R2 fails as well, in full to the error log. It never
 * rejects. The failing queue, ledger and bucket here are stand-ins wrapped
 * around the real bindings (Miniflare's cannot be made to fail on demand).
 */

import { env } from 'cloudflare:workers';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { Env } from '../../../workers/env.ts';
import { signingKeys } from '../../../workers/keys.ts';
import { signReceipt } from '../../../workers/inference/receipts.ts';
import { ledgerShard, shardOfReceipt } from '../../../workers/settlement/ledger.ts';
import { recordReceipt } from '../../../workers/settlement/record.ts';
import { receiptClaims } from '../../helpers/receipts.ts';

async function receipt() {
  const jti = crypto.randomUUID();
  const jwt = await signReceipt(await signingKeys(env), receiptClaims(0, { iss: env.MESH_ISSUER, jti }));
  return { jti, jwt };
}

function failingQueue() {
  return { send: vi.fn(), sendBatch: vi.fn(async () => { throw new Error('queue unavailable'); }) };
}
const brokenLedger = { getByName: () => ({ append: async () => { throw new Error('ledger down'); } }) };
const brokenBucket = { put: async () => { throw new Error('R2 down'); } };

afterEach(() => vi.restoreAllMocks());

describe('recordReceipt', () => {
  it('sends the receipt to the queue', async () => {
    const sent: unknown[] = [];
    const queue = { send: vi.fn(), sendBatch: async (batch: { body: unknown }[]) => void sent.push(...batch.map((m) => m.body)) };
    const { jti, jwt } = await receipt();
    expect(await recordReceipt({ ...env, RECEIPTS: queue } as unknown as Env, jti, jwt)).toBe('queued');
    expect(sent).toEqual([{ v: 1, receipt: jwt }]);
  });

  it("sends an isolate's concurrent receipts in shared batches of at most 100, each once", async () => {
    const batches: unknown[][] = [];
    const queue = { send: vi.fn(), sendBatch: async (batch: { body: unknown }[]) => void batches.push(batch.map((m) => m.body)) };
    const fake = { ...env, RECEIPTS: queue } as unknown as Env;
    const made = await Promise.all(Array.from({ length: 150 }, () => receipt()));
    const outcomes = await Promise.all(made.map((r) => recordReceipt(fake, r.jti, r.jwt)));
    expect(batches.map((b) => b.length)).toEqual([100, 50]);
    expect(batches.flat()).toEqual(made.map((r) => ({ v: 1, receipt: r.jwt })));
    // One request per batch sent it; the others found theirs taken.
    expect(outcomes.filter((o) => o === 'queued')).toHaveLength(2);
    expect(outcomes.filter((o) => o === 'batched')).toHaveLength(148);
  });

  it('appends straight to the ledger shard when the queue refuses twice', async () => {
    vi.spyOn(console, 'error').mockImplementation(() => {});
    const { jti, jwt } = await receipt();
    const queue = failingQueue();
    expect(await recordReceipt({ ...env, RECEIPTS: queue } as unknown as Env, jti, jwt)).toBe('ledger');
    expect(queue.sendBatch).toHaveBeenCalledTimes(2);
    const shard = shardOfReceipt(env, jti);
    expect(await ledgerShard(env, shard).proof(shard, jti)).toEqual({ pending: true });
  });

  it('keeps the receipt in R2 under undelivered/ when neither the queue nor the ledger takes it', async () => {
    vi.spyOn(console, 'error').mockImplementation(() => {});
    const { jti, jwt } = await receipt();
    const where = await recordReceipt({ ...env, RECEIPTS: failingQueue(), SETTLEMENT_LEDGER: brokenLedger } as unknown as Env, jti, jwt);
    expect(where).toBe('undelivered');
    expect(await (await env.SETTLEMENT_ARCHIVE.get(`undelivered/${jti}.jwt`))!.text()).toBe(jwt);
  });

  it('logs the whole receipt when R2 fails too, and still does not throw', async () => {
    const logged: string[] = [];
    vi.spyOn(console, 'error').mockImplementation((...args: unknown[]) => void logged.push(String(args[0])));
    const { jti, jwt } = await receipt();
    const where = await recordReceipt(
      { ...env, RECEIPTS: failingQueue(), SETTLEMENT_LEDGER: brokenLedger, SETTLEMENT_ARCHIVE: brokenBucket } as unknown as Env,
      jti,
      jwt,
    );
    expect(where).toBe('lost');
    expect(logged.some((line) => line.includes('RECEIPT NOT RECORDED') && line.includes(jwt))).toBe(true);
  });
});
