/** Which SettlementLedger shard holds a receipt, and how to reach that object. */

import { shardOf } from '../../shared/settlement.ts';
import { settings, type Env } from '../env.ts';

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
