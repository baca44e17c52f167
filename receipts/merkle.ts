/**
 * RFC 9162 section 2.1 Merkle trees (Certificate Transparency v2), the tree
 * every settlement batch commits to (docs/api.md section 5): leaf and node hashes,
 * the tree head, inclusion proofs and their verification, and the chunked
 * composition the ledger relies on to keep memory bounded.
 *
 * Synchronous and allocation-light, in Node and in workerd alike (timings:
 * docs/benchmarks.md, bench:settlement). Leaf hashes go through `node:crypto`
 * (workerd needs `nodejs_compat`), one digest per leaf; node hashes, all
 * exactly 65 bytes, through a plain-JavaScript SHA-256 (see below). Every hash
 * returned is a fresh 32-byte `Uint8Array` (never a `Buffer`) that owns its
 * buffer, safe to keep, store or structured-clone; inputs are never modified.
 *
 * Composition (what `chunkedProof` relies on). Split n leaves into aligned
 * chunks of C = 2^k leaves, the last one possibly partial, and let
 * chunkRoots[j] = merkleRoot(chunk j). Then
 *
 *   merkleRoot(all)          = merkleRoot(chunkRoots)
 *   inclusionProof(all, i)   = inclusionProof(chunk of i, i mod C)
 *                              ++ inclusionProof(chunkRoots, floor(i / C))
 *
 * because for n > C the RFC's split point (the largest power of two below n)
 * is a power of two >= C, so a multiple of C: no split ever cuts a chunk, and
 * over m = ceil(n / C) chunk roots the split p (largest power of two below m)
 * gives p * C, which is exactly the largest power of two below n. So the ledger
 * only needs the C leaf hashes of one chunk plus one root per chunk to answer
 * any proof.
 */

import * as nodeCrypto from 'node:crypto';
import { toHex } from './hash.ts';

/** A SHA-256 value: always 32 bytes. */
export type Hash = Uint8Array;

/** Length of every hash in the tree. */
const HASH_LENGTH = 32;

/**
 * One SHA-256 digest of `data`, as a fresh 32-byte plain `Uint8Array` (not a
 * `Buffer`, whose `slice` would alias): the digest's own 32-byte buffer, re-viewed.
 */
const sha256: (data: Uint8Array) => Uint8Array =
  typeof nodeCrypto.hash === 'function'
    ? (data) => plain(nodeCrypto.hash('sha256', data, 'buffer'))
    : (data) => plain(nodeCrypto.createHash('sha256').update(data).digest());

function plain(b: Uint8Array): Uint8Array {
  return b.byteOffset === 0 && b.buffer.byteLength === b.length ? new Uint8Array(b.buffer, 0, b.length) : new Uint8Array(b);
}

/** Scratch space for `0x00 || entry` (grown on demand up to SCRATCH_MAX). */
let leafInput = new Uint8Array(4096);
const SCRATCH_MAX = 1 << 20;
const encoder = new TextEncoder();

function isHash(h: unknown): h is Hash {
  return h instanceof Uint8Array && h.length === HASH_LENGTH;
}

/** Leaf hash: SHA-256(0x00 || entry), a string entry taken as its UTF-8 bytes. */
export function leafHash(entry: string | Uint8Array): Hash {
  // UTF-8 is at most 3 bytes per UTF-16 code unit.
  const max = 1 + (typeof entry === 'string' ? 3 * entry.length : entry.length);
  let buf = leafInput;
  if (max > buf.length) {
    if (max <= SCRATCH_MAX) buf = leafInput = new Uint8Array(Math.max(max, 2 * buf.length));
    else buf = new Uint8Array(max);
  }
  buf[0] = 0x00;
  let len: number;
  if (typeof entry === 'string') len = 1 + encoder.encodeInto(entry, buf.subarray(1)).written;
  else {
    buf.set(entry, 1);
    len = 1 + entry.length;
  }
  return sha256(buf.subarray(0, len));
}

/** Interior node hash: SHA-256(0x01 || left || right). Throws a TypeError unless both are 32-byte hashes. */
export function nodeHash(left: Hash, right: Hash): Hash {
  if (!isHash(left) || !isHash(right)) throw new TypeError('nodeHash: both children must be 32-byte hashes');
  NODE_BLOCKS.set(left, 1);
  NODE_BLOCKS.set(right, 1 + HASH_LENGTH);
  STATE.set(IV);
  compress(NODE_BLOCKS, 0);
  compress(NODE_BLOCKS, 64);
  const out = new Uint8Array(HASH_LENGTH);
  for (let i = 0; i < 8; i++) {
    const v = STATE[i]!;
    out[4 * i] = v >>> 24;
    out[4 * i + 1] = v >>> 16;
    out[4 * i + 2] = v >>> 8;
    out[4 * i + 3] = v;
  }
  return out;
}

/** The tree head of the empty tree: SHA-256 of nothing (RFC 9162, MTH({}) ). */
export function emptyRoot(): Hash {
  return sha256(new Uint8Array(0));
}

/**
 * The Merkle tree head (MTH) over `leaves`, which are leaf HASHES already
 * (`leafHash` of each entry). Iterative and bottom-up: adjacent nodes are
 * paired and an odd last node is carried up a level unhashed, which is the
 * same tree as the RFC's recursive split at the largest power of two below n.
 * One working copy of the leaf array, no recursion.
 */
export function merkleRoot(leaves: readonly Hash[]): Hash {
  const n = leaves.length;
  if (n === 0) return emptyRoot();
  if (n === 1) return copyHash(leaves[0]!);
  const level = leaves.slice();
  for (let m = n; m > 1; m = (m + 1) >>> 1) reduceLevel(level, m);
  return level[0]!;
}

/**
 * The inclusion proof (audit path) of leaf `index` in the tree over `leaves`
 * (leaf hashes): RFC 9162 PATH(m, D[n]), bottom-up (the sibling nearest the
 * leaf first). Throws a RangeError unless 0 <= index < leaves.length.
 */
export function inclusionProof(leaves: readonly Hash[], index: number): Hash[] {
  return proofAndRoot(leaves, index).path;
}

/**
 * RFC 9162 section 2.1.3.2: does `path` prove that `leaf` (a leaf hash) is
 * leaf `index` of the tree of `treeSize` leaves with head `root`? Never
 * throws: any malformed input (index out of range or not an integer, a hash
 * that is not 32 bytes, a path of the wrong length) is simply false.
 */
export function verifyInclusion(leaf: Hash, index: number, treeSize: number, path: readonly Hash[], root: Hash): boolean {
  if (!Number.isSafeInteger(index) || !Number.isSafeInteger(treeSize)) return false;
  if (index < 0 || index >= treeSize) return false;
  if (!isHash(leaf) || !isHash(root) || !Array.isArray(path)) return false;
  let fn = index;
  let sn = treeSize - 1;
  let r: Hash = leaf;
  for (const p of path) {
    if (!isHash(p)) return false;
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      r = nodeHash(p, r);
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) {
          fn = Math.floor(fn / 2);
          sn = Math.floor(sn / 2);
        }
      }
    } else {
      r = nodeHash(r, p);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 && equalHashes(r, root);
}

/**
 * The proof of leaf `indexInChunk` of chunk `chunkIndex` in the whole tree,
 * from that chunk's leaf hashes and the roots of all chunks (see the
 * composition note at the top). Chunks are aligned blocks of C = 2^k leaves;
 * only the last may be shorter. Throws a RangeError when an index is out of
 * range, a non-last chunk is not a power of two long, or the chunk's leaves
 * do not hash to `chunkRoots[chunkIndex]`.
 */
export function chunkedProof(chunkLeaves: readonly Hash[], indexInChunk: number, chunkRoots: readonly Hash[], chunkIndex: number): Hash[] {
  if (!Number.isSafeInteger(chunkIndex) || chunkIndex < 0 || chunkIndex >= chunkRoots.length) {
    throw new RangeError(`chunk index ${chunkIndex} out of range [0, ${chunkRoots.length})`);
  }
  const c = chunkLeaves.length;
  if (chunkIndex < chunkRoots.length - 1 && (c & (c - 1)) !== 0) {
    throw new RangeError(`chunk ${chunkIndex} is not the last, so it must hold a power of two leaves, not ${c}`);
  }
  const inner = proofAndRoot(chunkLeaves, indexInChunk);
  if (!equalHashes(inner.root, chunkRoots[chunkIndex]!)) {
    throw new RangeError(`chunk ${chunkIndex}: its leaves do not hash to its chunk root`);
  }
  return inner.path.concat(proofAndRoot(chunkRoots, chunkIndex).path);
}

export { toHex };

const HEX_HASH = /^[0-9a-fA-F]{64}$/;

/** Parses a 64-digit hex string (either case) into a hash; undefined when it is not one. */
export function fromHex(hex: string): Hash | undefined {
  if (typeof hex !== 'string' || !HEX_HASH.test(hex)) return undefined;
  const out = new Uint8Array(HASH_LENGTH);
  for (let i = 0; i < HASH_LENGTH; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** Constant-shape byte comparison of two hashes. */
export function equalHashes(a: Hash, b: Hash): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}

/** Replaces level[0 .. ceil(m/2)) with the next level up of level[0 .. m). */
function reduceLevel(level: Hash[], m: number): void {
  const pairs = m >>> 1;
  for (let i = 0; i < pairs; i++) level[i] = nodeHash(level[2 * i]!, level[2 * i + 1]!);
  if (m & 1) level[pairs] = level[m - 1]!;
}

/** The audit path of leaf `index` and the root, in one bottom-up pass. */
function proofAndRoot(leaves: readonly Hash[], index: number): { path: Hash[]; root: Hash } {
  const n = leaves.length;
  if (!Number.isSafeInteger(index) || index < 0 || index >= n) {
    throw new RangeError(`leaf index ${index} out of range [0, ${n})`);
  }
  const path: Hash[] = [];
  if (n === 1) return { path, root: copyHash(leaves[0]!) };
  const level = leaves.slice();
  let i = index;
  for (let m = n; m > 1; m = (m + 1) >>> 1) {
    const sibling = i ^ 1;
    if (sibling < m) path.push(copyHash(level[sibling]!));
    reduceLevel(level, m);
    i >>>= 1;
  }
  return { path, root: level[0]! };
}

/** A copy (never a view: a `Buffer`'s `slice` would alias). */
function copyHash(h: Hash): Hash {
  if (!isHash(h)) throw new TypeError('leaves must be 32-byte hashes');
  return new Uint8Array(h);
}

// --- SHA-256 of an interior node, in plain JavaScript -------------------------
//
// A node hash is SHA-256 over exactly 65 bytes (0x01 || left || right), so its
// two 64-byte blocks have a fixed shape: the 65 input bytes, 0x80, zeros, and
// the message length, 520 bits, in the last 8 bytes. Only bytes 1..64 change
// from call to call. This runs in plain JavaScript because in workerd
// node:crypto builds a stream object per hash, which costs several times the
// hash itself (measured: docs/benchmarks.md). Checked against node:crypto in
// test/receipts/merkle.test.ts.

const K = new Int32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3,
  0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
  0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
  0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);
const IV = new Int32Array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]);
/** The two padded blocks of a node hash; hashing is synchronous, so one buffer serves every call. */
const NODE_BLOCKS = new Uint8Array(128);
NODE_BLOCKS[0] = 0x01;
NODE_BLOCKS[65] = 0x80;
NODE_BLOCKS[126] = (65 * 8) >>> 8;
NODE_BLOCKS[127] = (65 * 8) & 0xff;
const STATE = new Int32Array(8);
const SCHEDULE = new Int32Array(64);

/** The SHA-256 compression function over the 64-byte block at `off`, into STATE. */
function compress(block: Uint8Array, off: number): void {
  const w = SCHEDULE;
  for (let i = 0; i < 16; i++, off += 4) w[i] = (block[off]! << 24) | (block[off + 1]! << 16) | (block[off + 2]! << 8) | block[off + 3]!;
  for (let i = 16; i < 64; i++) {
    const x = w[i - 15]!;
    const y = w[i - 2]!;
    const s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
    const s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
    w[i] = (w[i - 16]! + s0 + w[i - 7]! + s1) | 0;
  }
  let a = STATE[0]!;
  let b = STATE[1]!;
  let c = STATE[2]!;
  let d = STATE[3]!;
  let e = STATE[4]!;
  let f = STATE[5]!;
  let g = STATE[6]!;
  let h = STATE[7]!;
  for (let i = 0; i < 64; i++) {
    const s1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
    const t1 = (h + s1 + ((e & f) ^ (~e & g)) + K[i]! + w[i]!) | 0;
    const s0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
    const t2 = (s0 + ((a & b) ^ (a & c) ^ (b & c))) | 0;
    h = g;
    g = f;
    f = e;
    e = (d + t1) | 0;
    d = c;
    c = b;
    b = a;
    a = (t1 + t2) | 0;
  }
  STATE[0] = (STATE[0]! + a) | 0;
  STATE[1] = (STATE[1]! + b) | 0;
  STATE[2] = (STATE[2]! + c) | 0;
  STATE[3] = (STATE[3]! + d) | 0;
  STATE[4] = (STATE[4]! + e) | 0;
  STATE[5] = (STATE[5]! + f) | 0;
  STATE[6] = (STATE[6]! + g) | 0;
  STATE[7] = (STATE[7]! + h) | 0;
}
