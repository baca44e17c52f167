/**
 * The queue consumers of settlement.
 * - `RECEIPTS` queue: groups messages by ledger shard and appends them, then
 *   acknowledges message by message. Appended and duplicate receipts are
 *   acked; a shard that cannot be reached, or whose storage failed, gets its
 *   messages retried with backoff; a message that is not a receipt (poison) is retried and, after
 *   `max_retries`, lands in the dead-letter queue.
 * - Dead-letter queue: each poison message is written to the archive bucket
 *   under `dead-letter/` and logged, then acked, so none is lost silently.
 */

import { decodePayload } from '../../shared/jwt.ts';
import { MAX_SETTLEMENT_SHARDS, type Env } from '../env.ts';
import { appendByShard, shardOfReceipt } from './ledger.ts';
import type { ReceiptMessage } from './record.ts';

function receiptOf(body: unknown, env: Env): { receipt: string; shard: number } | string {
  const m = body as Partial<ReceiptMessage> | null;
  if (typeof m !== 'object' || m === null || m.v !== 1 || typeof m.receipt !== 'string') return 'not a { v: 1, receipt } message';
  const jti = decodePayload<{ jti?: unknown }>(m.receipt)?.jti;
  if (typeof jti !== 'string' || jti.length === 0) return 'receipt has no jti';
  if (m.shard === undefined) return { receipt: m.receipt, shard: shardOfReceipt(env, jti) };
  // The shard chosen when the receipt was recorded, kept across a change of SETTLEMENT_SHARDS (record.ts).
  if (!Number.isInteger(m.shard) || m.shard < 0 || m.shard >= MAX_SETTLEMENT_SHARDS) return `shard ${JSON.stringify(m.shard)} is not a ledger shard`;
  return { receipt: m.receipt, shard: m.shard };
}

/** Retry delay for a shard that failed: 1, 2, 4 ... 60 s by delivery attempt. */
function backoffSeconds(attempts: number): number {
  return Math.min(60, 2 ** Math.max(0, attempts - 1));
}

export async function consumeReceipts(batch: MessageBatch<unknown>, env: Env): Promise<void> {
  const groups = new Map<number, { msg: Message<unknown>; receipt: string }[]>();
  for (const msg of batch.messages) {
    const parsed = receiptOf(msg.body, env);
    if (typeof parsed === 'string') {
      console.error(`settlement: poison message ${msg.id} (attempt ${msg.attempts}): ${parsed}`);
      msg.retry();
      continue;
    }
    const { shard } = parsed;
    let group = groups.get(shard);
    if (!group) groups.set(shard, (group = []));
    group.push({ msg, receipt: parsed.receipt });
  }
  await appendByShard(env, groups, (shard, items, result) => {
    if ('error' in result) {
      console.error(`settlement: ledger shard ${shard} failed; retrying ${items.length} messages.`, result.error);
      for (const { msg } of items) msg.retry({ delaySeconds: backoffSeconds(msg.attempts) });
      return;
    }
    items.forEach(({ msg }, i) => {
      const outcome = result.outcomes[i];
      if (outcome === 'appended' || outcome === 'duplicate') msg.ack();
      else if (outcome !== undefined && 'failed' in outcome) msg.retry({ delaySeconds: backoffSeconds(msg.attempts) });
      else {
        console.error(`settlement: poison message ${msg.id} (attempt ${msg.attempts}): ${JSON.stringify(outcome)}`);
        msg.retry();
      }
    });
  });
}

export async function consumeDeadLetters(batch: MessageBatch<unknown>, env: Env): Promise<void> {
  for (const msg of batch.messages) {
    const key = `dead-letter/${batch.queue}/${msg.timestamp.toISOString().slice(0, 10)}/${msg.id}.json`;
    const record = { id: msg.id, queue: batch.queue, timestamp: msg.timestamp.toISOString(), attempts: msg.attempts, body: msg.body };
    try {
      await env.SETTLEMENT_ARCHIVE.put(key, JSON.stringify(record), { httpMetadata: { contentType: 'application/json' } });
      console.error(`settlement: dead letter ${msg.id} kept at ${key}`);
      msg.ack();
    } catch (err) {
      console.error(`settlement: could not keep dead letter ${msg.id}; retrying.`, err);
      msg.retry({ delaySeconds: 30 });
    }
  }
}
