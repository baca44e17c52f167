/**
 * The producer side of settlement: every signed receipt goes to the
 * `RECEIPTS` queue. The answer does not wait for it (a queue send costs a
 * round trip, about 1 ms even in Miniflare, and the mesh exists for
 * latency): the send runs in `ctx.waitUntil`, so the runtime keeps it alive
 * after the response, and it is awaited there, retried, and never dropped
 * silently. If the queue refuses twice, the receipt is appended straight to
 * its ledger shard; if that fails too, it is written to the archive bucket
 * under `undelivered/` for the operator to replay; only if R2 fails as well
 * does the receipt end in the error log, in full. `recordReceipt` never
 * rejects: it says where the receipt went.
 */

import type { Env } from '../env.ts';
import { ledgerShard, shardOfReceipt } from './ledger.ts';

/** The queue message: a version tag and the compact receipt JWT. */
export interface ReceiptMessage {
  v: 1;
  receipt: string;
}

export type Recorded = 'queued' | 'ledger' | 'undelivered' | 'lost';

const SEND_ATTEMPTS = 2;

export function undeliveredKey(jti: string): string {
  return `undelivered/${jti}.jwt`;
}

export async function recordReceipt(env: Env, jti: string, receipt: string): Promise<Recorded> {
  let error: unknown;
  for (let attempt = 0; attempt < SEND_ATTEMPTS; attempt++) {
    try {
      await env.RECEIPTS.send({ v: 1, receipt } satisfies ReceiptMessage, { contentType: 'json' });
      return 'queued';
    } catch (err) {
      error = err;
    }
  }
  console.error(`settlement: queue send failed for receipt ${jti}; appending it to the ledger directly.`, error);
  try {
    const shard = shardOfReceipt(env, jti);
    const [outcome] = await ledgerShard(env, shard).append(shard, [receipt]);
    if (outcome === 'appended' || outcome === 'duplicate') return 'ledger';
    error = new Error(`ledger refused the receipt: ${JSON.stringify(outcome)}`);
  } catch (err) {
    error = err;
  }
  console.error(`settlement: ledger append failed for receipt ${jti}; keeping it in R2 to replay.`, error);
  try {
    await env.SETTLEMENT_ARCHIVE.put(undeliveredKey(jti), receipt);
    return 'undelivered';
  } catch (err) {
    console.error(`settlement: RECEIPT NOT RECORDED, replay it by hand: ${jti} ${receipt}`, err);
    return 'lost';
  }
}
