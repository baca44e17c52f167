/**
 * Settlement arithmetic both sides share: how a batch's totals follow from its
 * receipts (API.md section 5), the shard a receipt belongs to, and batch ids.
 * The ledger and the offline verifier compute totals with the same function,
 * so a billing system recomputing them gets the signed numbers exactly.
 */

import type { BatchTotals } from './tokens.ts';

/** What totals need from a receipt. */
export interface Billable {
  jti: string;
  /** consumer id */
  sub: string;
  provider: string;
  /** integer micro-USD */
  amount: number;
}

export function emptyTotals(): BatchTotals {
  return { providers: {}, consumers: {} };
}

/** Adds one receipt: the consumer is always charged; the provider is paid unless the receipt is disputed. */
export function addToTotals(totals: BatchTotals, r: Billable, disputed?: ReadonlySet<string>): void {
  totals.consumers[r.sub] = (totals.consumers[r.sub] ?? 0) + r.amount;
  if (!disputed?.has(r.jti)) totals.providers[r.provider] = (totals.providers[r.provider] ?? 0) + r.amount;
  else totals.providers[r.provider] ??= 0;
}

/** Totals of a list of receipts. */
export function totalsOf(receipts: Iterable<Billable>, disputed?: ReadonlySet<string>): BatchTotals {
  const totals = emptyTotals();
  for (const r of receipts) addToTotals(totals, r, disputed);
  return totals;
}

/** Same totals, whatever the key order. */
export function totalsEqual(a: BatchTotals, b: BatchTotals): boolean {
  const same = (x: Record<string, number>, y: Record<string, number>) => {
    const kx = Object.keys(x);
    return kx.length === Object.keys(y).length && kx.every((k) => Object.hasOwn(y, k) && y[k] === x[k]);
  };
  return same(a.providers, b.providers) && same(a.consumers, b.consumers);
}

/** Totals with keys sorted, for stable signing and printing. */
export function sortedTotals(t: BatchTotals): BatchTotals {
  const sort = (o: Record<string, number>) => Object.fromEntries(Object.keys(o).sort().map((k) => [k, o[k]!]));
  return { providers: sort(t.providers), consumers: sort(t.consumers) };
}

/**
 * The ledger shard of a receipt id: FNV-1a over its UTF-8 bytes, mod `shards`.
 * Stable forever for a given shard count (changing the count only moves new receipts).
 */
export function shardOf(jti: string, shards: number): number {
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
