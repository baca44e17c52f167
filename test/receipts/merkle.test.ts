import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  chunkedProof,
  emptyRoot,
  fromHex,
  inclusionProof,
  leafHash,
  merkleRoot,
  nodeHash,
  toHex,
  verifyInclusion,
  type Hash,
} from '../../receipts/merkle.ts';

/*
 * Known answers: the eight-leaf reference tree of the Certificate Transparency
 * test suites, verbatim from google/certificate-transparency
 * cpp/merkletree/merkle_tree_test.cc (kInputs, kSHA256EmptyTreeHash,
 * kSHA256Roots, kSHA256Paths) and transparency-dev/merkle proof/verify_test.go
 * (the same `leaves`, `roots`, `inclusionProofs`). Those sources number leaves
 * from 1; the indexes below are 0-based.
 */
const CT_INPUTS = ['', '00', '10', '2021', '3031', '40414243', '5051525354555657', '606162636465666768696a6b6c6d6e6f'];
const CT_EMPTY_ROOT = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';
/** CT_ROOTS[n - 1] is the root of the first n leaves. */
const CT_ROOTS = [
  '6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d',
  'fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125',
  'aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77',
  'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7',
  '4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4',
  '76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef',
  'ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c',
  '5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328',
];
/** Published audit paths (kSHA256Paths, 0-based index here). */
const CT_PATHS: { index: number; size: number; path: string[] }[] = [
  { index: 0, size: 1, path: [] },
  {
    index: 0,
    size: 8,
    path: [
      '96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7',
      '5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e',
      '6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4',
    ],
  },
  {
    index: 5,
    size: 8,
    path: [
      'bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b',
      'ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0',
      'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7',
    ],
  },
  { index: 2, size: 3, path: ['fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125'] },
  {
    index: 1,
    size: 5,
    path: [
      '6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d',
      '5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e',
      'bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b',
    ],
  },
];

const ctLeaves = CT_INPUTS.map((h) => leafHash(Uint8Array.from(Buffer.from(h, 'hex'))));
const hex = (hs: readonly Hash[]) => hs.map(toHex);
const unhex = (h: string) => fromHex(h)!;

/** RFC 9162 section 2.1.1 MTH, recursive and literal: the reference the fast code is checked against. */
function refRoot(d: readonly Hash[]): Hash {
  if (d.length === 0) return createHash('sha256').digest();
  if (d.length === 1) return d[0]!;
  const k = largestPowerOfTwoBelow(d.length);
  return nodeHash(refRoot(d.slice(0, k)), refRoot(d.slice(k)));
}

/** RFC 9162 section 2.1.3.1 PATH(m, D[n]), recursive and literal. */
function refPath(m: number, d: readonly Hash[]): Hash[] {
  if (d.length === 1) return [];
  const k = largestPowerOfTwoBelow(d.length);
  return m < k ? [...refPath(m, d.slice(0, k)), refRoot(d.slice(k))] : [...refPath(m - k, d.slice(k)), refRoot(d.slice(0, k))];
}

function largestPowerOfTwoBelow(n: number): number {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

/** Distinct leaf hashes for a tree of n leaves. */
function leavesOf(n: number, tag = 'x'): Hash[] {
  return Array.from({ length: n }, (_, i) => leafHash(`${tag} leaf ${i} of ${n}`));
}

function flipBit(h: Hash, bit: number): Hash {
  const out = new Uint8Array(h);
  out[bit >> 3]! ^= 1 << (bit & 7);
  return out;
}

/** Every way the CT verifier tests corrupt a good proof; each must fail. */
function corruptions(leaf: Hash, index: number, size: number, path: Hash[], root: Hash): [string, () => boolean][] {
  const other = leafHash('WrongLeaf');
  const probes: [string, () => boolean][] = [
    ['wrong leaf', () => verifyInclusion(other, index, size, path, root)],
    ['index - 1', () => verifyInclusion(leaf, index - 1, size, path, root)],
    ['index + 1', () => verifyInclusion(leaf, index + 1, size, path, root)],
    ['index ^ 2', () => verifyInclusion(leaf, index ^ 2, size, path, root)],
    ['size * 2', () => verifyInclusion(leaf, index, size * 2, path, root)],
    ['size / 2', () => verifyInclusion(leaf, index, Math.floor(size / 2), path, root)],
    ['empty root', () => verifyInclusion(leaf, index, size, path, emptyRoot())],
    ['wrong root', () => verifyInclusion(leaf, index, size, path, flipBit(root, 0))],
    ['trailing root', () => verifyInclusion(leaf, index, size, [...path, root], root)],
    ['trailing leaf', () => verifyInclusion(leaf, index, size, [...path, leaf], root)],
    ['preceding root', () => verifyInclusion(leaf, index, size, [root, ...path], root)],
    ['trailing short hash', () => verifyInclusion(leaf, index, size, [...path, new Uint8Array(0)], root)],
  ];
  if (path.length > 0) {
    probes.push(['missing last element', () => verifyInclusion(leaf, index, size, path.slice(0, -1), root)]);
    probes.push(['missing first element', () => verifyInclusion(leaf, index, size, path.slice(1), root)]);
    probes.push(['inserted element', () => verifyInclusion(leaf, index, size, [path[0]!, other, ...path.slice(1)], root)]);
  }
  path.forEach((_, j) => {
    // One bit per element, the position varying with the element and the leaf.
    const bit = (j * 37 + index * 11) % 256;
    probes.push([`path[${j}] bit ${bit}`, () => verifyInclusion(leaf, index, size, path.map((p, k) => (k === j ? flipBit(p, bit) : p)), root)]);
  });
  return probes;
}

describe('merkle: RFC 9162 / RFC 6962 known answers', () => {
  it('hashes the empty tree as SHA-256 of nothing', () => {
    expect(toHex(emptyRoot())).toBe(CT_EMPTY_ROOT);
    expect(toHex(merkleRoot([]))).toBe(CT_EMPTY_ROOT);
  });

  it('gives the published roots for n = 1..8 of the reference leaves', () => {
    for (let n = 1; n <= 8; n++) expect(toHex(merkleRoot(ctLeaves.slice(0, n))), `n=${n}`).toBe(CT_ROOTS[n - 1]);
  });

  it('gives the published audit paths, and each verifies', () => {
    for (const v of CT_PATHS) {
      const tree = ctLeaves.slice(0, v.size);
      expect(hex(inclusionProof(tree, v.index)), `${v.index} of ${v.size}`).toEqual(v.path);
      expect(verifyInclusion(ctLeaves[v.index]!, v.index, v.size, v.path.map(unhex), unhex(CT_ROOTS[v.size - 1]!))).toBe(true);
    }
  });

  it('gives the two-leaf paths that follow from the published values', () => {
    // In a two-leaf tree each leaf's path is the other leaf's hash: for leaf 1 that is
    // the one-leaf root CT_ROOTS[0]; for leaf 0 it is leafHash(0x00), the first element
    // of the published path of leaf 0 of 8.
    expect(hex(inclusionProof(ctLeaves.slice(0, 2), 1))).toEqual([CT_ROOTS[0]]);
    expect(hex(inclusionProof(ctLeaves.slice(0, 2), 0))).toEqual([CT_PATHS[1]!.path[0]]);
    expect(verifyInclusion(ctLeaves[1]!, 1, 2, [unhex(CT_ROOTS[0]!)], unhex(CT_ROOTS[1]!))).toBe(true);
  });

  it('rejects every CT-style corruption of the published proofs', () => {
    for (const v of CT_PATHS) {
      const root = unhex(CT_ROOTS[v.size - 1]!);
      for (const [what, probe] of corruptions(ctLeaves[v.index]!, v.index, v.size, v.path.map(unhex), root)) {
        expect(probe(), `${v.index} of ${v.size}: ${what}`).toBe(false);
      }
    }
  });

  it('rejects each of the 256 single-bit flips of each element of the path of leaf 5 of 8', () => {
    const path = CT_PATHS[2]!.path.map(unhex);
    const root = unhex(CT_ROOTS[7]!);
    for (let j = 0; j < path.length; j++) {
      for (let bit = 0; bit < 256; bit++) {
        const bad = path.map((p, k) => (k === j ? flipBit(p, bit) : p));
        expect(verifyInclusion(ctLeaves[5]!, 5, 8, bad, root)).toBe(false);
      }
    }
  });
});

describe('merkle: every tree up to 64 leaves', () => {
  it('matches the literal RFC recursion, and every leaf of every size verifies and resists corruption', () => {
    for (let n = 1; n <= 64; n++) {
      const leaves = leavesOf(n);
      const root = merkleRoot(leaves);
      expect(toHex(root), `root n=${n}`).toBe(toHex(refRoot(leaves)));
      for (let i = 0; i < n; i++) {
        const path = inclusionProof(leaves, i);
        expect(hex(path), `path ${i} of ${n}`).toEqual(hex(refPath(i, leaves)));
        expect(verifyInclusion(leaves[i]!, i, n, path, root), `verify ${i} of ${n}`).toBe(true);
        for (const [what, probe] of corruptions(leaves[i]!, i, n, path, root)) expect(probe(), `${i} of ${n}: ${what}`).toBe(false);
      }
    }
  });

  it('does not let a tree of n leaves pass for n + 1 by repeating the last leaf', () => {
    const three = leavesOf(3);
    expect(toHex(merkleRoot(three))).not.toBe(toHex(merkleRoot([...three, three[2]!])));
  });
});

describe('merkle: chunked composition', () => {
  /** Aligned chunks of `c` leaves, the last one possibly partial. */
  function chunksOf(leaves: Hash[], c: number): Hash[][] {
    const out: Hash[][] = [];
    for (let i = 0; i < leaves.length; i += c) out.push(leaves.slice(i, i + c));
    return out;
  }

  /** Root and proofs of `indexes` (default: all) through the chunks equal those of the whole tree. */
  function checkComposition(n: number, c: number, indexes?: number[]): void {
    const leaves = leavesOf(n, `c${c}`);
    const chunks = chunksOf(leaves, c);
    const chunkRoots = chunks.map(merkleRoot);
    const root = merkleRoot(leaves);
    expect(toHex(merkleRoot(chunkRoots)), `root n=${n} C=${c}`).toBe(toHex(root));
    for (const i of indexes ?? leaves.keys()) {
      const j = Math.floor(i / c);
      const direct = hex(inclusionProof(leaves, i)).join(' ');
      const composed = hex([...inclusionProof(chunks[j]!, i % c), ...inclusionProof(chunkRoots, j)]).join(' ');
      const helper = hex(chunkedProof(chunks[j]!, i % c, chunkRoots, j)).join(' ');
      if (composed !== direct || helper !== direct) expect({ composed, helper }, `proof ${i} of ${n}, C=${c}`).toEqual({ composed: direct, helper: direct });
    }
  }

  it('holds for C = 1, 2, 4, 8, 16 and every n up to 40 (and 63, 64, 65, 70), full and partial last chunks', () => {
    const sizes = [...Array.from({ length: 40 }, (_, i) => i + 1), 63, 64, 65, 70];
    for (const c of [1, 2, 4, 8, 16]) for (const n of sizes) checkComposition(n, c);
  });

  it('holds for random n, C = 2^k and leaves (property)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 3000 }),
        fc.integer({ min: 0, max: 11 }),
        fc.array(fc.nat(), { minLength: 1, maxLength: 4 }),
        (n, k, picks) => {
          const c = 2 ** k;
          // The first and last leaf, both sides of the first chunk boundary, and a few at random.
          const indexes = [0, n - 1, Math.min(c - 1, n - 1), Math.min(c, n - 1), ...picks.map((p) => p % n)];
          checkComposition(n, c, indexes);
        },
      ),
      { numRuns: 30 },
    );
  });

  it('refuses a chunk that does not match its root, a short non-last chunk and out-of-range indexes', () => {
    const leaves = leavesOf(20);
    const chunks = chunksOf(leaves, 8);
    const roots = chunks.map(merkleRoot);
    expect(() => chunkedProof(chunks[1]!, 0, roots, 0)).toThrow(RangeError);
    expect(() => chunkedProof(chunks[0]!.slice(0, 6), 0, [merkleRoot(chunks[0]!.slice(0, 6)), roots[1]!, roots[2]!], 0)).toThrow(
      /power of two/,
    );
    expect(() => chunkedProof(chunks[0]!, 8, roots, 0)).toThrow(RangeError);
    expect(() => chunkedProof(chunks[0]!, 0, roots, 3)).toThrow(RangeError);
    // The last chunk may be partial (4 of 8 here).
    expect(hex(chunkedProof(chunks[2]!, 3, roots, 2))).toEqual(hex(inclusionProof(leaves, 19)));
  });
});

describe('merkle: hashing and malformed input', () => {
  it('hashes a string entry as its UTF-8 bytes, short or long, ASCII or not', () => {
    const ref = (s: string) => createHash('sha256').update(Buffer.from([0])).update(Buffer.from(s, 'utf8')).digest('hex');
    for (const s of ['', 'a', 'héllo wörld ✓ 🚀', 'x'.repeat(5000), '€'.repeat(2000), 'y'.repeat(1_200_000), 'ab\uD800cd']) {
      expect(toHex(leafHash(s))).toBe(ref(s));
      expect(toHex(leafHash(new TextEncoder().encode(s)))).toBe(ref(s));
    }
    // The scratch buffer does not leak between calls: a long entry, then a short one.
    expect(toHex(leafHash('ab'))).toBe(ref('ab'));
  });

  it('computes node hashes exactly as node:crypto does (the plain-JS SHA-256), for any children', () => {
    const ref = (l: Uint8Array, r: Uint8Array) => createHash('sha256').update(Buffer.from([1])).update(l).update(r).digest('hex');
    const zeros = new Uint8Array(32);
    const ones = new Uint8Array(32).fill(0xff);
    for (const [l, r] of [[zeros, zeros], [ones, ones], [zeros, ones], [ones, zeros]] as const) expect(toHex(nodeHash(l, r))).toBe(ref(l, r));
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 32, maxLength: 32 }), fc.uint8Array({ minLength: 32, maxLength: 32 }), (l, r) => {
        expect(toHex(nodeHash(l, r))).toBe(ref(l, r));
      }),
      { numRuns: 500 },
    );
  });

  it('returns fresh 32-byte hashes that own their buffers', () => {
    const a = leafHash('a');
    const b = leafHash('b');
    const n = nodeHash(a, b);
    for (const h of [a, b, n, emptyRoot(), merkleRoot([a, b, n]), merkleRoot([a]), ...inclusionProof([a, b, n], 2)]) {
      expect(h).toBeInstanceOf(Uint8Array);
      expect(Buffer.isBuffer(h)).toBe(false);
      expect(h.length).toBe(32);
      expect(h.buffer.byteLength).toBe(32);
    }
    expect(toHex(a)).not.toBe(toHex(b));
  });

  it('verifyInclusion never throws and is false on malformed input', () => {
    const leaves = leavesOf(5);
    const root = merkleRoot(leaves);
    const path = inclusionProof(leaves, 2);
    const leaf = leaves[2]!;
    const bad: [string, () => boolean][] = [
      ['index = size', () => verifyInclusion(leaves[4]!, 5, 5, path, root)],
      ['negative index', () => verifyInclusion(leaf, -1, 5, path, root)],
      ['fractional index', () => verifyInclusion(leaf, 2.5, 5, path, root)],
      ['NaN index', () => verifyInclusion(leaf, Number.NaN, 5, path, root)],
      ['infinite size', () => verifyInclusion(leaf, 2, Number.POSITIVE_INFINITY, path, root)],
      ['zero size', () => verifyInclusion(leaf, 0, 0, [], emptyRoot())],
      ['short leaf', () => verifyInclusion(leaf.subarray(0, 31), 2, 5, path, root)],
      ['long root', () => verifyInclusion(leaf, 2, 5, path, new Uint8Array(33))],
      ['short path element', () => verifyInclusion(leaf, 2, 5, [path[0]!.subarray(1), ...path.slice(1)], root)],
      ['non-array path', () => verifyInclusion(leaf, 2, 5, 'abc' as unknown as Hash[], root)],
      ['string element', () => verifyInclusion(leaf, 2, 5, [toHex(path[0]!) as unknown as Hash, ...path.slice(1)], root)],
      ['null leaf', () => verifyInclusion(null as unknown as Hash, 2, 5, path, root)],
    ];
    for (const [what, probe] of bad) expect(probe, what).not.toThrow();
    for (const [what, probe] of bad) expect(probe(), what).toBe(false);
    expect(verifyInclusion(leaf, 2, 5, path, root)).toBe(true);
  });

  it('refuses out-of-range proof indexes and non-hash nodes', () => {
    const leaves = leavesOf(4);
    expect(() => inclusionProof(leaves, 4)).toThrow(RangeError);
    expect(() => inclusionProof(leaves, -1)).toThrow(RangeError);
    expect(() => inclusionProof([], 0)).toThrow(RangeError);
    expect(() => nodeHash(leaves[0]!, new Uint8Array(31))).toThrow(TypeError);
    expect(() => merkleRoot([leaves[0]!, new Uint8Array(3)])).toThrow(TypeError);
  });

  it('parses hex both ways and refuses anything but 64 hex digits', () => {
    const h = leafHash('x');
    expect(toHex(fromHex(toHex(h))!)).toBe(toHex(h));
    expect(toHex(fromHex(toHex(h).toUpperCase())!)).toBe(toHex(h));
    for (const s of ['', 'ab', toHex(h).slice(1), `${toHex(h)}0`, `${toHex(h).slice(0, 63)}g`, ` ${toHex(h).slice(1)}`]) {
      expect(fromHex(s), JSON.stringify(s)).toBeUndefined();
    }
  });

  it('builds a 2^16-leaf tree quickly and consistently with its chunks', () => {
    const leaves = Array.from({ length: 1 << 16 }, (_, i) => leafHash(String(i)));
    const t0 = performance.now();
    const root = merkleRoot(leaves);
    expect(performance.now() - t0).toBeLessThan(2_000);
    const chunkRoots: Hash[] = [];
    for (let i = 0; i < leaves.length; i += 4096) chunkRoots.push(merkleRoot(leaves.slice(i, i + 4096)));
    expect(toHex(merkleRoot(chunkRoots))).toBe(toHex(root));
    const i = 54_321;
    expect(verifyInclusion(leaves[i]!, i, leaves.length, inclusionProof(leaves, i), root)).toBe(true);
  });
});
