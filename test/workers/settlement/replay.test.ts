/**
 * `POST /admin/settlement/replay` (docs/api.md section 5.6): the receipts kept
 * under `undelivered/` (record.ts, when the queue and the shard both refused
 * them) go to the shard each was recorded for, once, and leave the bucket;
 * what cannot be replayed stays, with the reason. Real R2 and ledger shards
 * in Miniflare.
 */

import { env } from 'cloudflare:workers';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { Env } from '../../../workers/env.ts';
import { signReceipt } from '../../../workers/inference/receipts.ts';
import { signingKeys } from '../../../workers/keys.ts';
import { ledgerShard, shardOfReceipt } from '../../../workers/settlement/ledger.ts';
import { undeliveredKey } from '../../../workers/settlement/record.ts';
import { replayUndelivered } from '../../../workers/settlement/replay.ts';
import { receiptClaims } from '../../helpers/receipts.ts';
import { call, keyFor } from '../helpers.ts';

afterEach(() => vi.restoreAllMocks());

let counter = 0;
async function receipt() {
  const jti = crypto.randomUUID();
  const jwt = await signReceipt(await signingKeys(env), receiptClaims(counter++, { iss: env.MESH_ISSUER, jti, iat: Math.floor(Date.now() / 1000) }));
  return { jti, jwt };
}

async function replay(query = '') {
  const res = await call(`/admin/settlement/replay${query}`, { method: 'POST', token: await keyFor('admin') });
  return { status: res.status, body: (await res.json()) as { replayed: number; duplicates: number; kept: { key: string; reason: string }[]; more: boolean } };
}

const bucket = () => env.SETTLEMENT_ARCHIVE;
const left = async () => (await bucket().list({ prefix: 'undelivered/' })).objects.map((o) => o.key).sort();

describe('POST /admin/settlement/replay', () => {
  it('appends each kept receipt to the shard it was recorded for, once, deletes it, and keeps what it cannot replay with the reason', async () => {
    // Recorded while the mesh ran 2 shards, by a jti whose shard moved when the count became 4.
    const two = { ...env, SETTLEMENT_SHARDS: '2' } as unknown as Env;
    let moved = await receipt();
    while (shardOfReceipt(two, moved.jti) === shardOfReceipt(env, moved.jti)) moved = await receipt();
    const home = shardOfReceipt(two, moved.jti);
    await bucket().put(undeliveredKey(moved.jti), moved.jwt, { customMetadata: { shard: String(home) } });
    // Kept before the shard travelled with it: the one its jti hashes to now.
    const plain = await receipt();
    await bucket().put(undeliveredKey(plain.jti), plain.jwt);
    // Already in its shard (a delivery that went through after all): a duplicate, deleted too.
    const twice = await receipt();
    const twiceShard = shardOfReceipt(env, twice.jti);
    await ledgerShard(env, twiceShard).append(twiceShard, [twice.jwt]);
    await bucket().put(undeliveredKey(twice.jti), twice.jwt);
    // Cannot be replayed: not a receipt, another receipt than its name says, a shard that is not one.
    const other = await receipt();
    const bad = ['undelivered/not-a-receipt.jwt', undeliveredKey(crypto.randomUUID()), undeliveredKey(other.jti)];
    await bucket().put(bad[0]!, 'x.y.z');
    await bucket().put(bad[1]!, other.jwt);
    await bucket().put(bad[2]!, other.jwt, { customMetadata: { shard: '100' } });

    const first = await replay();
    expect(first.status).toBe(200);
    expect(first.body).toMatchObject({ replayed: 2, duplicates: 1, more: false });
    expect(first.body.kept.map((k) => k.key)).toEqual([...bad].sort());
    expect(first.body.kept.find((k) => k.key === bad[2])!.reason).toMatch(/not a ledger shard/);
    expect(first.body.kept.find((k) => k.key === bad[1])!.reason).toMatch(/jti is its name/);
    expect(await left()).toEqual([...bad].sort());
    expect(await ledgerShard(env, home).proof(home, moved.jti)).toEqual({ pending: true });
    const now = shardOfReceipt(env, moved.jti);
    expect(await ledgerShard(env, now).proof(now, moved.jti)).toBeNull();
    const plainShard = shardOfReceipt(env, plain.jti);
    expect(await ledgerShard(env, plainShard).proof(plainShard, plain.jti)).toEqual({ pending: true });

    // Again: nothing more to replay; the same three kept.
    const again = await replay();
    expect(again.body).toMatchObject({ replayed: 0, duplicates: 0, more: false });
    expect(again.body.kept).toHaveLength(3);
    await bucket().delete(bad);
  });

  it('looks at `limit` objects a call and says when more wait; refuses a bad limit and any token but the admin one', async () => {
    const made = await Promise.all([receipt(), receipt(), receipt()]);
    for (const r of made) await bucket().put(undeliveredKey(r.jti), r.jwt);
    const page = await replay('?limit=2');
    expect(page.body).toMatchObject({ replayed: 2, more: true });
    expect(await left()).toHaveLength(1);
    expect((await replay('?limit=0')).status).toBe(400);
    expect((await replay('?limit=x')).status).toBe(400);
    const billing = await call('/admin/settlement/replay', { method: 'POST', token: await keyFor('billing') });
    expect(billing.status).toBe(403);
    expect((await replay()).body).toMatchObject({ replayed: 1, more: false });
    expect(await left()).toEqual([]);
  });

  it('keeps the objects of a shard that cannot be reached, to try again', async () => {
    vi.spyOn(console, 'error').mockImplementation(() => {});
    const r = await receipt();
    await bucket().put(undeliveredKey(r.jti), r.jwt);
    const down = { ...env, SETTLEMENT_LEDGER: { getByName: () => ({ append: async () => Promise.reject(new Error('shard unreachable')) }) } } as unknown as Env;
    const result = await replayUndelivered(down, 10);
    expect(result.replayed).toBe(0);
    expect(result.kept).toEqual([{ key: undeliveredKey(r.jti), reason: expect.stringMatching(/could not be reached/) }]);
    expect(await left()).toEqual([undeliveredKey(r.jti)]);
    expect((await replayUndelivered(env, 10)).replayed).toBe(1);
  });
});
