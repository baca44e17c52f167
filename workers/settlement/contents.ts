/**
 * What a sealed batch signs, computed from its frozen seq range in one pass
 * (docs/api.md section 5.4): the RFC 9162 tree head and its chunk roots, the
 * totals, and the receipts withheld from payout (section 6): the disputed
 * ones and every receipt whose provider or second provider is penalized in
 * that batch. Memory stays bounded: leaf hashes are read in chunks of CHUNK
 * and only each chunk's root is kept; the withheld ids are found with SQL.
 */

import { addToTotals, emptyTotals, merkleRoot, type Hash } from '../../receipts/index.ts';
import { bytes } from './schema.ts';

/** Leaves per stored chunk root (a power of two). */
export const CHUNK = 1024;
export const CHUNK_BITS = 10;

/** A batch's withheld receipt ids and its penalties, sorted by provider (as signed). */
function withheldIn(
  sql: SqlStorage,
  batchSeq: number,
  firstSeq: number,
  end: number,
): { disputed: Set<string>; penalties: { provider: string; dispute: string }[] } {
  const disputed = new Set<string>();
  const add = (cursor: Iterable<{ jti: string }>) => {
    for (const r of cursor) disputed.add(r.jti);
  };
  add(sql.exec<{ jti: string }>('SELECT d.jti FROM disputes d JOIN receipts r ON r.jti = d.jti WHERE r.seq >= ? AND r.seq < ?', firstSeq, end));
  const penalties = sql
    .exec<{ provider: string; dispute: string }>('SELECT provider, dispute_id AS dispute FROM penalties WHERE batch_seq = ?', batchSeq)
    .toArray()
    .sort((a, b) => (a.provider < b.provider ? -1 : a.provider > b.provider ? 1 : 0));
  if (penalties.length > 0) {
    const penalized = 'SELECT provider FROM penalties WHERE batch_seq = ?';
    add(
      sql.exec<{ jti: string }>(
        `SELECT jti FROM receipts WHERE seq >= ? AND seq < ? AND (provider IN (${penalized}) OR second_provider IN (${penalized}))`,
        firstSeq,
        end,
        batchSeq,
        batchSeq,
      ),
    );
  }
  return { disputed, penalties: penalties.map(({ provider, dispute }) => ({ provider, dispute })) };
}

/**
 * One pass over a batch's receipts: chunk roots, the tree head, totals,
 * withheld ids (disputed, or of a provider penalized in batch `batchSeq`) and the penalties.
 */
export function buildBatch(sql: SqlStorage, batchSeq: number, firstSeq: number, count: number) {
  const end = firstSeq + count;
  const { disputed: disputedSet, penalties } = withheldIn(sql, batchSeq, firstSeq, end);
  const totals = emptyTotals();
  const chunkRoots: Hash[] = [];
  let chunk: Hash[] = [];
  const cursor = sql.exec<{ jti: string; sub: string; provider: string; second_provider: string | null; amount: number; leaf_hash: ArrayBuffer }>(
    'SELECT jti, sub, provider, second_provider, amount, leaf_hash FROM receipts WHERE seq >= ? AND seq < ? ORDER BY seq',
    firstSeq,
    end,
  );
  for (const r of cursor) {
    chunk.push(bytes(r.leaf_hash));
    const { jti, sub, provider, amount } = r;
    const second = r.second_provider ?? undefined;
    // A cache hit's receipt is stored with no provider (input.ts): charged, paid to no one.
    addToTotals(totals, { jti, sub, ...(provider !== '' ? { provider } : {}), amount, second }, disputedSet);
    if (chunk.length === CHUNK) {
      chunkRoots.push(merkleRoot(chunk));
      chunk = [];
    }
  }
  if (chunk.length > 0) chunkRoots.push(merkleRoot(chunk));
  return { root: merkleRoot(chunkRoots), chunkRoots, totals, disputed: [...disputedSet].sort(), penalties };
}
