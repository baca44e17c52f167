/**
 * The producer: a receipt is queued before its answer leaves; when the queue
 * refuses, it goes straight to its ledger shard; when that fails too, the
 * request fails (503 settlement_unavailable) rather than answer unbilled.
 * The failing queue and ledger here are stand-ins wrapped around the real
 * bindings (a Miniflare queue cannot be made to fail on demand).
 */

import { env } from 'cloudflare:workers';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { MeshError } from '../../../shared/errors.ts';
import { shardOf } from '../../../shared/settlement.ts';
import type { Env } from '../../../workers/env.ts';
import { signingKeys } from '../../../workers/keys.ts';
import { signReceipt } from '../../../workers/receipts.ts';
import { ledgerShard } from '../../../workers/settlement/ledger.ts';
import { recordReceipt } from '../../../workers/settlement/record.ts';
import { receiptClaims } from '../../helpers/receipts.ts';

async function receipt() {
  const jti = crypto.randomUUID();
  const jwt = await signReceipt(await signingKeys(env), receiptClaims(0, { iss: env.MESH_ISSUER, jti }));
  return { jti, jwt };
}

function failingQueue() {
  return { send: vi.fn(async () => { throw new Error('queue unavailable'); }), sendBatch: vi.fn() };
}

afterEach(() => vi.restoreAllMocks());

describe('recordReceipt', () => {
  it('sends the receipt to the queue', async () => {
    const sent: unknown[] = [];
    const queue = { send: async (body: unknown) => void sent.push(body), sendBatch: vi.fn() };
    const { jti, jwt } = await receipt();
    await recordReceipt({ ...env, RECEIPTS: queue } as unknown as Env, jti, jwt);
    expect(sent).toEqual([{ v: 1, receipt: jwt }]);
  });

  it('appends straight to the ledger shard when the queue refuses twice', async () => {
    vi.spyOn(console, 'error').mockImplementation(() => {});
    const { jti, jwt } = await receipt();
    const queue = failingQueue();
    await recordReceipt({ ...env, RECEIPTS: queue } as unknown as Env, jti, jwt);
    expect(queue.send).toHaveBeenCalledTimes(2);
    const shard = shardOf(jti, Number(env.SETTLEMENT_SHARDS));
    expect(await ledgerShard(env, shard).proof(shard, jti)).toEqual({ pending: true });
  });

  it('fails the request with 503 settlement_unavailable when neither the queue nor the ledger takes it', async () => {
    vi.spyOn(console, 'error').mockImplementation(() => {});
    const { jti, jwt } = await receipt();
    const brokenLedger = { getByName: () => ({ append: async () => { throw new Error('ledger down'); } }) };
    const err = await recordReceipt({ ...env, RECEIPTS: failingQueue(), SETTLEMENT_LEDGER: brokenLedger } as unknown as Env, jti, jwt).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MeshError);
    expect((err as MeshError).code).toBe('settlement_unavailable');
    expect((err as MeshError).status).toBe(503);
    expect((err as MeshError).retryAfter).toBe(1);
  });
});
