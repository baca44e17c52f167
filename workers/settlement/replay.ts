/**
 * The operator's replay of `undelivered/` (docs/api.md section 5.6): receipts
 * that neither the queue nor their ledger shard took when they were recorded
 * (record.ts) wait in the archive bucket; `replayUndelivered` appends a page
 * of them to the shard each was recorded for (the object's `shard`
 * metadata, else the one its `jti` hashes to now) and deletes each object
 * once its shard holds the receipt. What cannot be replayed is kept, and said
 * why. Every count and size is bounded before work is done.
 */

import { decodePayload } from '../../shared/jwt.ts';
import { MAX_SETTLEMENT_SHARDS, type Env } from '../env.ts';
import { appendByShard, shardOfReceipt } from './ledger.ts';
import { UNDELIVERED_PREFIX } from './record.ts';

/** Objects replayed per call by default, and at most. */
export const REPLAY_DEFAULT = 100;
export const REPLAY_MAX = 1000;
/** The largest receipt read back, bytes (one with two attestations is a few KiB). */
const MAX_RECEIPT_BYTES = 64 * 1024;

export interface ReplayResult {
  /** Appended to their shards now. */
  replayed: number;
  /** Their shards held them already (appended by an earlier replay or delivery). */
  duplicates: number;
  /** Left in the bucket, and why. */
  kept: { key: string; reason: string }[];
  /** More objects wait under `undelivered/` than this call looked at. */
  more: boolean;
}

interface Item {
  key: string;
  receipt: string;
}

/** The shard an object was recorded for: its metadata's, else the current hash of its `jti`. */
function shardOf(env: Env, jti: string, meta: Record<string, string> | undefined): number | string {
  const raw = meta?.shard;
  if (raw === undefined) return shardOfReceipt(env, jti);
  const shard = /^\d{1,2}$/.test(raw) ? Number(raw) : Number.NaN;
  return Number.isInteger(shard) && shard < MAX_SETTLEMENT_SHARDS ? shard : `its shard metadata ${JSON.stringify(raw.slice(0, 20))} is not a ledger shard`;
}

/** Replays up to `limit` objects under `undelivered/`, oldest key first. */
export async function replayUndelivered(env: Env, limit: number): Promise<ReplayResult> {
  const bucket = env.SETTLEMENT_ARCHIVE;
  const listed = await bucket.list({ prefix: UNDELIVERED_PREFIX, limit, include: ['customMetadata'] });
  const result: ReplayResult = { replayed: 0, duplicates: 0, kept: [], more: listed.truncated };
  const keep = (key: string, reason: string) => result.kept.push({ key, reason });
  const byShard = new Map<number, Item[]>();
  for (const object of listed.objects) {
    const { key } = object;
    const jti = /^undelivered\/(.{1,256})\.jwt$/.exec(key)?.[1];
    if (!jti) {
      keep(key, 'its name is not undelivered/<jti>.jwt');
      continue;
    }
    if (object.size > MAX_RECEIPT_BYTES) {
      keep(key, `it is over ${MAX_RECEIPT_BYTES} bytes`);
      continue;
    }
    const shard = shardOf(env, jti, object.customMetadata);
    if (typeof shard === 'string') {
      keep(key, shard);
      continue;
    }
    const body = await bucket.get(key);
    if (!body) continue; // deleted meanwhile (another replay)
    const receipt = (await body.text()).trim();
    if (decodePayload<{ jti?: unknown }>(receipt)?.jti !== jti) {
      keep(key, 'it is not a receipt whose jti is its name');
      continue;
    }
    let items = byShard.get(shard);
    if (!items) byShard.set(shard, (items = []));
    items.push({ key, receipt });
  }
  await appendByShard(env, byShard, async (shard, items, appended) => {
    if ('error' in appended) {
      for (const { key } of items) keep(key, `ledger shard ${shard} could not be reached (${(appended.error as Error).message}); try again`);
      return;
    }
    const done: string[] = [];
    items.forEach(({ key }, i) => {
      const outcome = appended.outcomes[i];
      if (outcome === 'appended' || outcome === 'duplicate') {
        if (outcome === 'appended') result.replayed++;
        else result.duplicates++;
        done.push(key);
      } else if (outcome !== undefined && 'failed' in outcome) keep(key, `ledger shard ${shard} failed to store it (${outcome.failed}); try again`);
      else keep(key, `ledger shard ${shard} refused it: ${outcome?.invalid ?? 'no answer'}`);
    });
    // Only once its shard holds it: a failed delete leaves an object the next replay finds a duplicate.
    if (done.length === 0) return;
    try {
      await bucket.delete(done);
    } catch (err) {
      for (const key of done) keep(key, `in ledger shard ${shard} now, but the object could not be deleted (${(err as Error).message}); the next replay finds it a duplicate`);
    }
  });
  result.kept.sort((a, b) => a.key.localeCompare(b.key));
  return result;
}
