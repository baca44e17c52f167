/**
 * SettlementLedger: one shard of the settlement log (docs/api.md section 5). The
 * queue consumer appends receipts here; each shard owns the receipts whose
 * `jti` hashes to it (`shardOf`) and closes its own batches.
 *
 * Exactly once: `jti` is unique in the shard, so a redelivered message is a
 * no-op, whichever batch the first copy went into.
 *
 * Batches tile the shard's append order. Receipts get consecutive `seq`s; a
 * batch is the range [first_seq, first_seq + count) of the receipts table, and
 * a receipt's leaf index is `seq - first_seq`. A batch moves through
 * open -> sealed -> signed, each step idempotent:
 * - seal (synchronous, one transaction): the open batch's range is fixed and
 *   a new open batch starts at the next seq, so appends never wait on closing;
 * - sign: the Merkle tree (RFC 9162) and the totals are computed from the
 *   frozen range and the batch JWT is stored, only if the batch is still
 *   `sealed`; an alarm that fires twice finds nothing left to do;
 * - archive (R2) and webhook push follow in the alarm, retried until they
 *   succeed, so a close returns as soon as its batch is signed.
 *
 * Verification withholds payouts while a batch is open (docs/api.md section
 * 6): a dispute withholds one receipt (with the fraud proof's id when there is
 * one); a penalty withholds every receipt of a provider, as `provider` or as
 * redundant `second`, in the open batch, appended before or after it. Signing
 * lists both in the batch (`disputed`, `penalties`) and the totals' `withheld`.
 *
 * Memory stays bounded for any batch size: leaf hashes are computed at
 * append and stored; closing reads them in chunks of 1024 and keeps only each
 * chunk's root (32 bytes per 1024 receipts; contents.ts builds what a
 * batch signs); a proof recomputes one chunk. Only the withheld receipts' ids
 * are held, found with SQL.
 */

import { DurableObject } from 'cloudflare:workers';
import { chunkedProof, leafHash, sortedTotals, toHex, type InclusionProof } from '../../receipts/index.ts';
import { decodePayload, TYP, type BatchClaims } from '../../shared/jwt.ts';
import type { BatchStatus } from '../status/view.ts';
import { settings, type Env } from '../env.ts';
import { sign, signingKeys } from '../keys.ts';
import { migrate, sqlOf, type Sql } from '../sql.ts';
import { archiveBatch } from './archive.ts';
import { checkId, parseReceipt } from './input.ts';
import { batchId, type AppendOutcome } from './ledger.ts';
import { blobOf, bytes, joinHashes, MIGRATIONS, splitHashes, type BatchRow } from './schema.ts';
import { deliverWebhook, nextWebhookAttempt } from './webhook.ts';
import { buildBatch, CHUNK, CHUNK_BITS } from './contents.ts';

/** How long to wait before retrying finishing work that failed. */
const RETRY_MS = 5_000;



/** A closed batch as the billing API lists it. */
export interface BatchSummary {
  id: string;
  shard: number;
  epoch_start: number;
  epoch_end: number;
  count: number;
  merkle_root: string;
}

interface BatchRecord extends BatchSummary {
  batch: string;
  archived: boolean;
  webhook: 'none' | 'pending' | 'delivered' | 'failed';
}

interface ReceiptPage {
  id: string;
  receipts: string[];
  /** Leaf index to ask for next; null on the last page. */
  next: number | null;
}

type ProofAnswer = InclusionProof | { pending: true } | null;

/** The next epoch boundary strictly after `now`: epochs are aligned to the clock, so shards close together. */
function nextDeadline(now: number, epochMs: number): number {
  return (Math.floor(now / epochMs) + 1) * epochMs;
}

function summary(row: BatchRow): BatchSummary {
  return {
    id: row.id!,
    shard: 0,
    epoch_start: row.epoch_start,
    epoch_end: row.epoch_end!,
    count: row.count,
    merkle_root: row.merkle_root!,
  };
}

export class SettlementLedger extends DurableObject<Env> {
  #sql: Sql;
  #shard = -1;
  #nextSeq = 1;
  /** The latest finishing run (signing, archiving, webhooks); runs never overlap. */
  #finishing: Promise<void> | undefined;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.#sql = sqlOf(ctx.storage);
    ctx.blockConcurrencyWhile(async () => {
      migrate(this.#sql, MIGRATIONS);
      const shard = this.#sql.one<{ value: string }>("SELECT value FROM meta WHERE key = 'shard'");
      if (shard) this.#shard = Number(shard.value);
      this.#nextSeq = (this.#sql.one<{ m: number | null }>('SELECT MAX(seq) AS m FROM receipts')?.m ?? 0) + 1;
      if (!this.#open()) {
        this.#sql.run("INSERT INTO batches (seq, state, epoch_start, first_seq) VALUES (1, 'open', ?, 1)", Date.now());
      }
    });
  }

  // ---- appending --------------------------------------------------------

  /**
   * Appends receipts (compact JWTs) in order, all or nothing. Returns one
   * outcome per input: `duplicate` when the jti is already in this shard,
   * `invalid` when the message is not a receipt (the consumer sends those to
   * the dead-letter queue), `failed` for every input when storage failed.
   */
  append(shard: number, receipts: readonly string[]): AppendOutcome[] {
    this.#claim(shard);
    const now = Date.now();
    const out: AppendOutcome[] = [];
    const before = this.#nextSeq;
    try {
      this.#appendAll(receipts, now, out);
    } catch (err) {
      // The transaction rolled back: so does the sequence, or the batch would count rows it never got.
      this.#nextSeq = before;
      const reason = err instanceof Error ? `${err.message}${err.cause instanceof Error ? `: ${err.cause.message}` : ''}` : String(err);
      console.error(`settlement shard ${this.#shard}: append of ${receipts.length} receipts failed, nothing kept:`, reason);
      return receipts.map(() => ({ failed: reason }));
    }
    this.ctx.waitUntil(this.#schedule());
    return out;
  }

  #appendAll(receipts: readonly string[], now: number, out: AppendOutcome[]): void {
    this.ctx.storage.transactionSync(() => {
      for (const jwt of receipts) {
        const claims = parseReceipt(jwt);
        if (typeof claims === 'string') {
          out.push({ invalid: claims });
          continue;
        }
        const written = this.#sql.run(
          `INSERT INTO receipts (seq, jti, sub, provider, second_provider, amount, leaf_hash, jwt, appended_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(jti) DO NOTHING`,
          this.#nextSeq,
          claims.jti,
          claims.sub,
          claims.provider,
          claims.second,
          claims.amount,
          blobOf(leafHash(jwt)),
          jwt,
          now,
        );
        if (written > 0) {
          this.#nextSeq++;
          out.push('appended');
        } else out.push('duplicate');
      }
      const open = this.#open()!;
      if (open.deadline === null && this.#nextSeq > open.first_seq) {
        this.#sql.run('UPDATE batches SET deadline = ? WHERE seq = ?', nextDeadline(now, this.#epochMs()), open.seq);
      }
    });
  }

  /**
   * Withholds a receipt from payout (a verification mismatch). Only while
   * its batch is open: a signed batch never changes (`settled`, the route's 409).
   * A receipt not yet appended is withheld when it arrives. `disputeId` names
   * the fraud proof; a receipt already disputed without one gets it.
   */
  dispute(shard: number, jti: string, reason: string, disputeId?: string): { jti: string; created: boolean; settled: boolean } {
    const proof = disputeId === undefined || disputeId === null ? null : checkId('disputeId', disputeId);
    this.#claim(shard);
    const row = this.#sql.one<{ seq: number }>('SELECT seq FROM receipts WHERE jti = ?', jti);
    if (row && row.seq < this.#open()!.first_seq) return { jti, created: false, settled: true };
    const written = this.#sql.run(
      'INSERT INTO disputes (jti, reason, at, dispute_id) VALUES (?, ?, ?, ?) ON CONFLICT(jti) DO NOTHING',
      jti,
      reason,
      Date.now(),
      proof,
    );
    if (written === 0 && proof !== null) this.#sql.run('UPDATE disputes SET dispute_id = ? WHERE jti = ? AND dispute_id IS NULL', proof, jti);
    return { jti, created: written > 0, settled: false };
  }

  /**
   * Withholds every receipt of `provider` (as provider or as redundant
   * second) in the open batch, those appended already and those appended
   * until it seals: a proven fraud (`disputeId`). One penalty per batch and
   * provider; the first dispute id stays.
   */
  penalize(shard: number, provider: string, disputeId: string): { batch: number; created: boolean } {
    checkId('provider', provider);
    checkId('disputeId', disputeId);
    this.#claim(shard);
    const batch = this.#open()!.seq;
    const written = this.#sql.run(
      'INSERT INTO penalties (batch_seq, provider, dispute_id, at) VALUES (?, ?, ?, ?) ON CONFLICT(batch_seq, provider) DO NOTHING',
      batch,
      provider,
      disputeId,
      Date.now(),
    );
    return { batch, created: written > 0 };
  }

  // ---- closing ----------------------------------------------------------

  /**
   * Closes the open batch now (`POST /admin/settlement/close`) when it holds
   * receipts and signs every sealed batch; returns the ids of the batches this
   * call closed, readable (and provable) at once. Archiving and the webhook
   * follow in the alarm, so a big batch's R2 upload does not hold the caller.
   */
  async close(shard: number): Promise<string[]> {
    this.#claim(shard);
    const id = this.#seal(Date.now());
    try {
      await this.#serially(() => this.#signAll());
    } finally {
      await this.#schedule();
    }
    return id ? [id] : [];
  }

  /** The epoch alarm: seals the open batch at its deadline, signs, archives, pushes, schedules the next wake-up. */
  override async alarm(): Promise<void> {
    if (this.#shard < 0) return;
    const open = this.#open()!;
    const now = Date.now();
    if (open.deadline !== null && now >= open.deadline) this.#seal(now);
    let failed = false;
    try {
      await this.#serially(async () => {
        await this.#signAll();
        await this.#archiveAll();
        await this.#pushWebhooks();
      });
    } catch (err) {
      // Each step is idempotent and stays pending; #schedule wakes us again to retry.
      failed = true;
      console.error(`settlement shard ${this.#shard}: finishing batches failed:`, err);
    }
    await this.#schedule(failed ? RETRY_MS : 0);
  }

  /** Seals the open batch if it has receipts; returns the sealed batch's id. Synchronous: no append can interleave. */
  #seal(now: number): string | undefined {
    const open = this.#open()!;
    const count = this.#nextSeq - open.first_seq;
    if (count === 0) return undefined;
    const end = Math.max(now, open.epoch_start + 1);
    const id = batchId(end, this.#shard, open.seq);
    this.ctx.storage.transactionSync(() => {
      this.#sql.run("UPDATE batches SET state = 'sealed', id = ?, epoch_end = ?, count = ? WHERE seq = ?", id, end, count, open.seq);
      this.#sql.run("INSERT INTO batches (seq, state, epoch_start, first_seq) VALUES (?, 'open', ?, ?)", open.seq + 1, end, this.#nextSeq);
    });
    return id;
  }

  /**
   * Runs finishing work one run at a time: a caller waits for a run that
   * starts after its call, so the batch it just sealed is covered when it returns.
   */
  #serially(work: () => Promise<void>): Promise<void> {
    const run = (this.#finishing ?? Promise.resolve()).catch(() => {}).then(work);
    this.#finishing = run;
    return run;
  }

  async #signAll(): Promise<void> {
    for (const row of this.#sql.all<BatchRow>("SELECT * FROM batches WHERE state = 'sealed' ORDER BY seq")) await this.#signBatch(row);
  }

  async #archiveAll(): Promise<void> {
    for (const row of this.#sql.all<BatchRow>("SELECT * FROM batches WHERE state = 'signed' AND archived = 0 ORDER BY seq")) {
      await archiveBatch(this.env, row.id!, row.jwt!, this.#iterate(row.first_seq, row.count));
      this.#sql.run('UPDATE batches SET archived = 1 WHERE seq = ?', row.seq);
    }
  }

  /** Builds the tree and totals of a sealed batch from its frozen range and stores the signed JWT. */
  async #signBatch(row: BatchRow): Promise<void> {
    const { root, chunkRoots, totals, disputed, penalties } = buildBatch(this.ctx.storage.sql, row.seq, row.first_seq, row.count);
    const claims: BatchClaims = {
      iss: settings(this.env).issuer,
      iat: Math.floor(Date.now() / 1000),
      batch_id: row.id!,
      shard: this.#shard,
      epoch_start: row.epoch_start,
      epoch_end: row.epoch_end!,
      count: row.count,
      merkle_root: toHex(root),
      totals: sortedTotals(totals),
      disputed,
      penalties,
    };
    const jwt = await sign(await signingKeys(this.env), TYP.batch, { ...claims });
    this.#sql.run(
      "UPDATE batches SET state = 'signed', merkle_root = ?, chunk_roots = ?, jwt = ?, webhook = ? WHERE seq = ? AND state = 'sealed'",
      claims.merkle_root,
      joinHashes(chunkRoots),
      jwt,
      settings(this.env).settlement.webhookUrl ? 'pending' : 'none',
      row.seq,
    );
  }

  /** The receipts of a range in leaf order, read in pages (for the archive). */
  *#iterate(firstSeq: number, count: number, page = 2000): Generator<{ leaf: number; jti: string; jwt: string }> {
    for (let from = firstSeq; from < firstSeq + count; from += page) {
      const to = Math.min(from + page, firstSeq + count);
      const rows = this.#sql.all<{ seq: number; jti: string; jwt: string }>('SELECT seq, jti, jwt FROM receipts WHERE seq >= ? AND seq < ? ORDER BY seq', from, to);
      for (const r of rows) yield { leaf: r.seq - firstSeq, jti: r.jti, jwt: r.jwt };
    }
  }

  async #pushWebhooks(): Promise<void> {
    const url = settings(this.env).settlement.webhookUrl;
    if (!url) return;
    const now = Date.now();
    const due = this.#sql.all<BatchRow>(
      "SELECT * FROM batches WHERE webhook = 'pending' AND (webhook_next IS NULL OR webhook_next <= ?) ORDER BY seq",
      now,
    );
    for (const row of due) {
      const attempts = row.webhook_attempts + 1;
      const error = await deliverWebhook(this.env, url, row.id!, row.jwt!);
      if (error === undefined) {
        this.#sql.run("UPDATE batches SET webhook = 'delivered', webhook_attempts = ?, webhook_next = NULL WHERE seq = ?", attempts, row.seq);
        continue;
      }
      const next = nextWebhookAttempt(attempts, Date.now());
      console.warn(`settlement: webhook for batch ${row.id} failed (attempt ${attempts}): ${error}${next === undefined ? '; giving up' : ''}`);
      this.#sql.run(
        'UPDATE batches SET webhook = ?, webhook_attempts = ?, webhook_next = ? WHERE seq = ?',
        next === undefined ? 'failed' : 'pending',
        attempts,
        next ?? null,
        row.seq,
      );
    }
  }

  /**
   * Sets the alarm to the earliest of: the open batch's deadline, unfinished
   * batches (now, or after `retryMs` when the last try failed), the next webhook retry.
   */
  async #schedule(retryMs = 0): Promise<void> {
    const now = Date.now();
    let next = Infinity;
    const open = this.#open()!;
    if (open.deadline !== null) next = Math.min(next, open.deadline);
    const unfinished = this.#sql.one<{ n: number }>("SELECT COUNT(*) AS n FROM batches WHERE state = 'sealed' OR (state = 'signed' AND archived = 0)")!;
    if (unfinished.n > 0) next = Math.min(next, now + retryMs);
    const hook = this.#sql.one<{ t: number | null }>("SELECT MIN(COALESCE(webhook_next, 0)) AS t FROM batches WHERE webhook = 'pending'");
    if (hook?.t !== null && hook?.t !== undefined) next = Math.min(next, Math.max(hook.t, now + retryMs));
    if (next === Infinity) return;
    const current = await this.ctx.storage.getAlarm();
    if (current === null || current > next) await this.ctx.storage.setAlarm(next);
  }

  // ---- reading ----------------------------------------------------------

  /** The id of this shard's oldest batch that is closed but not signed yet; null when none is. */
  unsignedFrom(shard: number): string | null {
    this.#claim(shard);
    return this.#sql.one<{ id: string | null }>("SELECT MIN(id) AS id FROM batches WHERE state = 'sealed'")?.id ?? null;
  }

  /** Closed batches with ids after `after`, oldest first. */
  list(shard: number, after: string, limit: number): BatchSummary[] {
    this.#claim(shard);
    return this.#sql
      .all<BatchRow>("SELECT * FROM batches WHERE state = 'signed' AND id > ? ORDER BY id LIMIT ?", after, limit)
      .map((r) => ({ ...summary(r), shard: this.#shard }));
  }

  batch(shard: number, id: string): BatchRecord | null {
    this.#claim(shard);
    const row = this.#sql.one<BatchRow>("SELECT * FROM batches WHERE id = ? AND state = 'signed'", id);
    if (!row) return null;
    return {
      ...summary(row),
      shard: this.#shard,
      batch: row.jwt!,
      archived: row.archived === 1,
      webhook: row.webhook as BatchRecord['webhook'],
    };
  }

  /** A page of a closed batch's receipts in leaf order, from leaf `from`. */
  receipts(shard: number, id: string, from: number, limit: number): ReceiptPage | null {
    this.#claim(shard);
    const row = this.#sql.one<BatchRow>("SELECT * FROM batches WHERE id = ? AND state = 'signed'", id);
    if (!row) return null;
    const start = Math.min(Math.max(0, from), row.count);
    const end = Math.min(row.count, start + limit);
    const receipts = this.#sql
      .all<{ jwt: string }>('SELECT jwt FROM receipts WHERE seq >= ? AND seq < ? ORDER BY seq', row.first_seq + start, row.first_seq + end)
      .map((r) => r.jwt);
    return { id, receipts, next: end < row.count ? end : null };
  }

  /** The inclusion proof of a receipt; `{ pending }` while its batch is open; null when this shard never saw it. */
  proof(shard: number, jti: string): ProofAnswer {
    this.#claim(shard);
    const r = this.#sql.one<{ seq: number }>('SELECT seq FROM receipts WHERE jti = ?', jti);
    if (!r) return null;
    const row = this.#sql.one<BatchRow>('SELECT * FROM batches WHERE first_seq <= ? ORDER BY seq DESC LIMIT 1', r.seq)!;
    if (row.state !== 'signed') return { pending: true };
    const leaf = r.seq - row.first_seq;
    const chunkIndex = leaf >> CHUNK_BITS;
    const chunkStart = row.first_seq + (chunkIndex << CHUNK_BITS);
    const chunk = this.#sql
      .all<{ leaf_hash: ArrayBuffer }>(
        'SELECT leaf_hash FROM receipts WHERE seq >= ? AND seq < ? ORDER BY seq',
        chunkStart,
        Math.min(chunkStart + CHUNK, row.first_seq + row.count),
      )
      .map((x) => bytes(x.leaf_hash));
    const path = chunkedProof(chunk, leaf & (CHUNK - 1), splitHashes(row.chunk_roots!), chunkIndex);
    return { batch_id: row.id!, leaf_index: leaf, tree_size: row.count, audit_path: path.map(toHex) };
  }

  /**
   * The newest `limit` closed batches, newest first, as the status page shows
   * them (docs/api.md section 2.15): sums of their signed totals; for
   * `provider`, only what was paid to and withheld from it.
   */
  latest(shard: number, limit: number, provider?: string): BatchStatus[] {
    this.#claim(shard);
    const rows = this.#sql.all<BatchRow>("SELECT * FROM batches WHERE state = 'signed' ORDER BY seq DESC LIMIT ?", Math.max(0, Math.min(100, limit)));
    return rows.map((row) => {
      const claims = decodePayload<BatchClaims>(row.jwt!)!;
      const { providers, consumers, withheld = {} } = claims.totals;
      const base = { id: row.id!, shard: this.#shard, closedAt: row.epoch_end!, count: row.count };
      if (provider !== undefined) {
        return { ...base, paid: Object.hasOwn(providers, provider) ? providers[provider]! : 0, withheld: Object.hasOwn(withheld, provider) ? withheld[provider]! : 0 };
      }
      return { ...base, charged: sum(consumers), paid: sum(providers), withheld: sum(withheld), disputed: claims.disputed.length };
    });
  }

  /** Counts for tests, benchmarks and the operator: receipts held, open batch size, batches by state, disputes, penalties. */
  stats(shard: number): { shard: number; receipts: number; open: number; batches: Record<string, number>; disputes: number; penalties: number } {
    this.#claim(shard);
    const open = this.#open()!;
    const batches: Record<string, number> = {};
    for (const r of this.#sql.all<{ state: string; n: number }>('SELECT state, COUNT(*) AS n FROM batches GROUP BY state')) batches[r.state] = r.n;
    return {
      shard: this.#shard,
      receipts: this.#nextSeq - 1,
      open: this.#nextSeq - open.first_seq,
      batches,
      disputes: this.#sql.one<{ n: number }>('SELECT COUNT(*) AS n FROM disputes')!.n,
      penalties: this.#sql.one<{ n: number }>('SELECT COUNT(*) AS n FROM penalties')!.n,
    };
  }

  // ---- internals --------------------------------------------------------

  #open(): BatchRow | undefined {
    return this.#sql.one<BatchRow>("SELECT * FROM batches WHERE state = 'open'");
  }

  #epochMs(): number {
    return settings(this.env).settlement.epochMs;
  }

  /** Learns (once) which shard this object is; a call naming another shard is a routing bug. */
  #claim(shard: number): void {
    if (this.#shard === shard) return;
    if (this.#shard >= 0) throw new Error(`SettlementLedger shard ${this.#shard} was called as shard ${shard}.`);
    this.#shard = shard;
    this.#sql.run("INSERT INTO meta (key, value) VALUES ('shard', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", String(shard));
  }
}

function sum(amounts: Record<string, number>): number {
  let total = 0;
  for (const v of Object.values(amounts)) total += v;
  return total;
}
