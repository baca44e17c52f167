/**
 * Which receipts of a sealed batch are withheld from payout (docs/api.md
 * section 6): the disputed ones, and every receipt whose provider or second
 * provider is penalized in that batch. Found with SQL over the batch's seq
 * range, so only the withheld ids are held in memory.
 */

/** A batch's withheld receipt ids and its penalties, sorted by provider (as signed). */
export function withheldIn(
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
