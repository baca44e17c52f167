/** Which SettlementLedger shard holds a receipt, how to reach that object, and the batch ids it gives. */

import { settings, type Env } from '../env.ts';

/**
 * What happened to one receipt handed to a shard's `append`: `invalid`, it is
 * not a receipt (poison); `failed`, storage failed and nothing of the call
 * was kept (transient: send it again).
 */
export type AppendOutcome = 'appended' | 'duplicate' | { invalid: string } | { failed: string };

export function ledgerShard(env: Env, shard: number) {
  return env.SETTLEMENT_LEDGER.getByName(`shard-${shard}`);
}

/** The shard number of a receipt id under the current `SETTLEMENT_SHARDS`. */
export function shardOfReceipt(env: Env, jti: string): number {
  return shardOf(jti, settings(env).settlement.shards);
}

/** Every shard number, 0 .. SETTLEMENT_SHARDS - 1. */
export function allShards(env: Env): number[] {
  return Array.from({ length: settings(env).settlement.shards }, (_, i) => i);
}

/**
 * The ledger shard of a receipt id: FNV-1a over its UTF-16 code units (the
 * bytes of an ASCII id such as the edge's UUIDs), mod `shards`.
 * Stable forever for a given shard count (changing the count only moves new receipts).
 */
function shardOf(jti: string, shards: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < jti.length; i++) {
    h ^= jti.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) % shards;
}

/**
 * Batch ids sort oldest first as plain strings: the close time (ms, 13
 * digits), the shard (2 digits), the shard's batch sequence (6 digits).
 */
export function batchId(epochEndMs: number, shard: number, seq: number): string {
  return `${String(epochEndMs).padStart(13, '0')}-${String(shard).padStart(2, '0')}-${String(seq).padStart(6, '0')}`;
}

const BATCH_ID = /^(\d{13})-(\d{2})-(\d{6,})$/;

/** Parses a batch id; undefined when it is not one. */
export function parseBatchId(id: string): { epochEnd: number; shard: number; seq: number } | undefined {
  const m = BATCH_ID.exec(id);
  return m ? { epochEnd: Number(m[1]), shard: Number(m[2]), seq: Number(m[3]) } : undefined;
}

/**
 * Appends receipts grouped by shard, one call per shard, the shards at once;
 * `settle` gets each shard's items with their outcomes, in order, or the
 * error that stopped the call (the shard could not be reached).
 */
export async function appendByShard<T extends { receipt: string }>(
  env: Env,
  groups: ReadonlyMap<number, T[]>,
  settle: (shard: number, items: T[], result: { outcomes: AppendOutcome[] } | { error: unknown }) => void | Promise<void>,
): Promise<void> {
  await Promise.all(
    [...groups].map(async ([shard, items]) => {
      let outcomes: AppendOutcome[];
      try {
        outcomes = await ledgerShard(env, shard).append(
          shard,
          items.map((i) => i.receipt),
        );
      } catch (error) {
        return settle(shard, items, { error });
      }
      return settle(shard, items, { outcomes });
    }),
  );
}
