/**
 * The producer side of settlement: every signed receipt goes to the
 * `RECEIPTS` queue before its answer leaves the edge. The send is awaited, so
 * a consumer never holds a receipt the settlement log may lack. If the queue
 * refuses twice, the receipt is appended straight to its ledger shard (a
 * Durable Object call, only on this failure path); if that fails too, the
 * request fails with 503 `settlement_unavailable`: an answer that cannot be
 * billed is not given, and nothing is lost silently.
 */

import { MeshError } from '../../shared/errors.ts';
import type { Env } from '../env.ts';
import { ledgerShard, shardOfReceipt } from './ledger.ts';

/** The queue message: a version tag and the compact receipt JWT. */
export interface ReceiptMessage {
  v: 1;
  receipt: string;
}

const SEND_ATTEMPTS = 2;

export async function recordReceipt(env: Env, jti: string, receipt: string): Promise<void> {
  let error: unknown;
  for (let attempt = 0; attempt < SEND_ATTEMPTS; attempt++) {
    try {
      await env.RECEIPTS.send({ v: 1, receipt } satisfies ReceiptMessage, { contentType: 'json' });
      return;
    } catch (err) {
      error = err;
    }
  }
  console.error(`settlement: queue send failed for receipt ${jti}; appending to the ledger directly.`, error);
  try {
    const shard = shardOfReceipt(env, jti);
    const [outcome] = await ledgerShard(env, shard).append(shard, [receipt]);
    if (outcome === 'appended' || outcome === 'duplicate') return;
    error = new Error(`ledger refused the receipt: ${JSON.stringify(outcome)}`);
  } catch (err) {
    error = err;
  }
  console.error(`settlement: receipt ${jti} could not be recorded; failing the request.`, error);
  throw new MeshError('settlement_unavailable', 'The answer could not be recorded for billing, so it was not delivered and will not be charged. Retry shortly.', {
    cause: error,
    retryAfter: 1,
  });
}
