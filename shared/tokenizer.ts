/**
 * The mesh's text tokenizer ("mesh-hash-v1"): turns text into the int64 token
 * ids the demo `embed` model takes. It is a hashing tokenizer, not a learned
 * vocabulary, so it needs no vocabulary file and gives the same ids in workerd
 * (the edge counts the tokens of a Hugging Face fallback's texts) and in Node (the backend
 * and the tests). It uses only language built-ins: no Node APIs.
 *
 * Steps: NFKC-normalise, lowercase, split into words (runs of Unicode letters,
 * combining marks and digits; everything else separates), hash each word's
 * UTF-8 bytes with 32-bit FNV-1a into [FIRST_WORD_ID, VOCAB_SIZE), and put a
 * [CLS]-style id first. Id 0 is padding and never produced for a word.
 *
 * Changing anything here changes every embedding: bump the tokenizer name in
 * the models' config.json ("parameters.tokenizer") if you do.
 */

/** Number of ids, and the row count of the `embed` model's embedding table. */
export const VOCAB_SIZE = 8192;
/** Padding id; the `embed` model ignores it. */
export const PAD_ID = 0;
/** Leading id of every tokenized text, so an empty text still has one token. */
const CLS_ID = 1;
/** The smallest id a word can hash to. */
const FIRST_WORD_ID = 2;
/** The tokenizer's name, as models' config.json refers to it. */
export const TOKENIZER_NAME = 'mesh-hash-v1';
/** Default `maxLength` of `tokenize`, [CLS] included. */
export const DEFAULT_MAX_LENGTH = 128;

const WORD = /[\p{L}\p{M}\p{N}]+/gu;
const encoder = new TextEncoder();

/** 32-bit FNV-1a over bytes, as an unsigned integer. */
function fnv1a32(bytes: Uint8Array): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < bytes.length; i++) {
    h ^= bytes[i]!;
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** The id of one (already normalised) word: in [FIRST_WORD_ID, VOCAB_SIZE). */
function wordId(word: string): number {
  return FIRST_WORD_ID + (fnv1a32(encoder.encode(word)) % (VOCAB_SIZE - FIRST_WORD_ID));
}

/**
 * Tokenizes `text` into ids: `[CLS_ID, ...word ids]`, truncated to `maxLength`
 * ids in all ([CLS] included). The empty text, or one without any letter or
 * digit, gives `[CLS_ID]`. Deterministic on every platform.
 */
export function tokenize(text: string, maxLength: number = DEFAULT_MAX_LENGTH): number[] {
  if (!Number.isInteger(maxLength) || maxLength < 1) {
    throw new RangeError(`tokenize: maxLength must be a positive integer, got ${maxLength}`);
  }
  const ids = [CLS_ID];
  if (ids.length >= maxLength) return ids;
  const normalised = text.normalize('NFKC').toLowerCase();
  for (const match of normalised.matchAll(WORD)) {
    ids.push(wordId(match[0]));
    if (ids.length >= maxLength) break;
  }
  return ids;
}

/**
 * Right-pads rows with PAD_ID to the longest row and flattens them row-major,
 * ready for an int64 tensor of shape `[rows.length, seq]`. No rows give
 * `{ ids: [], seq: 0 }`.
 */
export function padBatch(rows: number[][]): { ids: number[]; seq: number } {
  let seq = 0;
  for (const row of rows) seq = Math.max(seq, row.length);
  const ids = new Array<number>(rows.length * seq).fill(PAD_ID);
  rows.forEach((row, r) => {
    for (let i = 0; i < row.length; i++) ids[r * seq + i] = row[i]!;
  });
  return { ids, seq };
}
