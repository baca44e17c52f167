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

/** The queue message of a receipt: its shard is the one chosen when it was recorded. */
const message = (r: { jti: string; jwt: string }) => ({ v: 1, receipt: r.jwt, shard: shardOfReceipt(env, r.jti) });

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
    expect(sent).toEqual([{ v: 1, receipt: jwt, shard: shardOfReceipt(env, jti) }]);
  });

  it("sends an isolate's concurrent receipts in shared batches of at most 100, each once", async () => {
    const batches: unknown[][] = [];
    const queue = { send: vi.fn(), sendBatch: async (batch: { body: unknown }[]) => void batches.push(batch.map((m) => m.body)) };
    const fake = { ...env, RECEIPTS: queue } as unknown as Env;
    const made = await Promise.all(Array.from({ length: 150 }, () => receipt()));
    const outcomes = await Promise.all(made.map((r) => recordReceipt(fake, r.jti, r.jwt)));
    expect(batches.map((b) => b.length)).toEqual([100, 50]);
    expect(batches.flat()).toEqual(made.map((r) => message(r)));
    // The first receipt opened the window and its request sent both batches; the others joined it and were done at once.
    expect(outcomes[0]).toBe('queued');
    expect(outcomes.filter((o) => o === 'batched')).toHaveLength(149);
  });

  it('sends receipts that arrive while a window is being sent in the next window, not lost and not twice', async () => {
    const batches: unknown[][] = [];
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const queue = {
      send: vi.fn(),
      sendBatch: async (batch: { body: unknown }[]) => {
        batches.push(batch.map((m) => m.body));
        if (batches.length === 1) await held;
      },
    };
    const fake = { ...env, RECEIPTS: queue } as unknown as Env;
    const [a, b, c] = await Promise.all([receipt(), receipt(), receipt()]);
    const first = recordReceipt(fake, a!.jti, a!.jwt);
    expect(await recordReceipt(fake, b!.jti, b!.jwt)).toBe('batched');
    await vi.waitFor(() => expect(batches).toHaveLength(1), { timeout: 2000 });
    // The first window's send is still in flight: c opens the next window.
    const third = recordReceipt(fake, c!.jti, c!.jwt);
    release();
    expect(await Promise.all([first, third])).toEqual(['queued', 'queued']);
    expect(batches).toEqual([[message(a!), message(b!)], [message(c!)]]);
  });

  it('does not trust a window whose timer never fired: a receipt arriving long after it opened opens a new one that sends both', async () => {
    const batches: unknown[][] = [];
    const queue = { send: vi.fn(), sendBatch: async (batch: { body: unknown }[]) => void batches.push(batch.map((m) => m.body)) };
    const fake = { ...env, RECEIPTS: queue } as unknown as Env;
    const [a, b] = await Promise.all([receipt(), receipt()]);
    vi.useFakeTimers({ toFake: ['Date', 'setTimeout'] });
    try {
      // a opened a window 5 s ago whose timer never ran (as if its request's context were cancelled):
      // a fake timer, dropped when the real ones return.
      vi.setSystemTime(Date.now() - 5_000);
      void recordReceipt(fake, a!.jti, a!.jwt);
      vi.useRealTimers();
      expect(await recordReceipt(fake, b!.jti, b!.jwt)).toBe('queued');
      expect(batches).toEqual([[message(a!), message(b!)]]);
    } finally {
      vi.useRealTimers();
    }
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
    const kept = (await env.SETTLEMENT_ARCHIVE.get(`undelivered/${jti}.jwt`))!;
    expect(await kept.text()).toBe(jwt);
    // With its shard, for the replay's queue message (docs/api.md section 5.2).
    expect(kept.customMetadata).toEqual({ shard: String(shardOfReceipt(env, jti)) });
  });

  it('keeps the shard chosen when the receipt was recorded, in the message and in the direct append', async () => {
    vi.spyOn(console, 'error').mockImplementation(() => {});
    // Recorded under 2 shards, by a jti whose shard moves when the count becomes 4.
    const two = { ...env, SETTLEMENT_SHARDS: '2' } as unknown as Env;
    const four = { ...env, SETTLEMENT_SHARDS: '4' } as unknown as Env;
    let r = await receipt();
    while (shardOfReceipt(two, r.jti) === shardOfReceipt(four, r.jti)) r = await receipt();
    const sent: unknown[] = [];
    const queue = { send: vi.fn(), sendBatch: async (batch: { body: unknown }[]) => void sent.push(...batch.map((m) => m.body)) };
    expect(await recordReceipt({ ...two, RECEIPTS: queue } as unknown as Env, r.jti, r.jwt)).toBe('queued');
    expect(sent).toEqual([{ v: 1, receipt: r.jwt, shard: shardOfReceipt(two, r.jti) }]);
    expect(await recordReceipt({ ...two, RECEIPTS: failingQueue() } as unknown as Env, r.jti, r.jwt)).toBe('ledger');
    const home = shardOfReceipt(two, r.jti);
    expect(await ledgerShard(env, home).proof(home, r.jti)).toEqual({ pending: true });
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
