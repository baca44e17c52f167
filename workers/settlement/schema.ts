/**
 * A ledger shard's SQLite schema (docs/api.md section 5): the receipts in
 * append order, the batches as seq ranges of them with their state
 * (open -> sealed -> signed), the disputes (single receipts withheld) and the
 * penalties (every receipt of a provider in one batch withheld); the
 * migrations that create it (`migrate` in ../sql.ts applies each once, in
 * order; new ones are appended), and how hashes are stored as blobs.
 */

import type { Hash } from '../../receipts/index.ts';

/** One row of `batches`. */
export interface BatchRow extends Record<string, string | number | ArrayBuffer | null> {
  seq: number;
  id: string | null;
  state: 'open' | 'sealed' | 'signed';
  epoch_start: number;
  epoch_end: number | null;
  deadline: number | null;
  first_seq: number;
  count: number;
  merkle_root: string | null;
  chunk_roots: ArrayBuffer | null;
  jwt: string | null;
  archived: number;
  webhook: string;
  webhook_attempts: number;
  webhook_next: number | null;
}

export const MIGRATIONS = [
  [
    'CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)',
    // seq: append order within the shard; a batch is a contiguous seq range.
    `CREATE TABLE receipts (
       seq INTEGER PRIMARY KEY,
       jti TEXT NOT NULL UNIQUE,
       sub TEXT NOT NULL,
       provider TEXT NOT NULL,
       amount INTEGER NOT NULL,
       leaf_hash BLOB NOT NULL,
       jwt TEXT NOT NULL,
       appended_at INTEGER NOT NULL)`,
    `CREATE TABLE batches (
       seq INTEGER PRIMARY KEY,
       id TEXT UNIQUE,
       state TEXT NOT NULL,
       epoch_start INTEGER NOT NULL,
       epoch_end INTEGER,
       deadline INTEGER,
       first_seq INTEGER NOT NULL,
       count INTEGER NOT NULL DEFAULT 0,
       merkle_root TEXT,
       chunk_roots BLOB,
       jwt TEXT,
       archived INTEGER NOT NULL DEFAULT 0,
       webhook TEXT NOT NULL DEFAULT 'none',
       webhook_attempts INTEGER NOT NULL DEFAULT 0,
       webhook_next INTEGER)`,
    // Receipts withheld from payout by verification (docs/design.md, Trust); only while their batch is open.
    'CREATE TABLE disputes (jti TEXT PRIMARY KEY, reason TEXT NOT NULL, at INTEGER NOT NULL)',
  ],
  [
    // The provider of a redundant receipt's second run (its `second.provider` claim), paid part of `amount`.
    'ALTER TABLE receipts ADD COLUMN second_provider TEXT',
    // The fraud proof (GET /v1/disputes/{id}) behind a dispute, when there is one.
    'ALTER TABLE disputes ADD COLUMN dispute_id TEXT',
    // A proven provider's receipts withheld in one batch (by its seq), as provider or as second provider.
    `CREATE TABLE penalties (
       batch_seq INTEGER NOT NULL,
       provider TEXT NOT NULL,
       dispute_id TEXT NOT NULL,
       at INTEGER NOT NULL,
       PRIMARY KEY (batch_seq, provider))`,
  ],
] as const;

/** A stored blob as bytes (a view, not a copy). */
export function bytes(blob: ArrayBuffer): Uint8Array {
  return new Uint8Array(blob);
}

/** A hash as a blob of its own (SQLite keeps the bytes it is given). */
export function blobOf(hash: Uint8Array): ArrayBuffer {
  return hash.buffer.slice(hash.byteOffset, hash.byteOffset + hash.byteLength) as ArrayBuffer;
}

/** Hashes, 32 bytes each, as one blob. */
export function joinHashes(hashes: readonly Hash[]): ArrayBuffer {
  const out = new Uint8Array(hashes.length * 32);
  hashes.forEach((h, i) => out.set(h, i * 32));
  return out.buffer;
}

/** The hashes of a `joinHashes` blob, as views into it. */
export function splitHashes(blob: ArrayBuffer): Hash[] {
  const all = new Uint8Array(blob);
  const out: Hash[] = [];
  for (let i = 0; i < all.length; i += 32) out.push(all.subarray(i, i + 32));
  return out;
}
