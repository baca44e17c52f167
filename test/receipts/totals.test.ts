/**
 * Batch totals are keyed by provider and consumer ids, which are any strings:
 * ids that name Object.prototype members (`__proto__`, `constructor`,
 * `toString`, `hasOwnProperty`) must total as numbers like any other id,
 * survive the JSON round trip of a signed batch, and verify offline.
 */

import { importJWK, SignJWT, type CryptoKey } from 'jose';
import { describe, expect, it } from 'vitest';
import { leafHash, merkleRoot, toHex } from '../../receipts/merkle.ts';
import { addToTotals, emptyTotals, payoutSplit, secondProvider, sortedTotals, totalsEqual, totalsOf, type Billable } from '../../receipts/totals.ts';
import { verifyBatch } from '../../receipts/verify.ts';
import { TYP, type BatchClaims, type BatchTotals } from '../../shared/jwt.ts';
import { generateEd25519 } from '../../shared/keys.ts';
import { receiptClaims, TEST_ISSUER } from '../helpers/receipts.ts';

const HOSTILE = ['constructor', '__proto__', 'toString', 'hasOwnProperty', 'valueOf', '__defineGetter__'] as const;

/** Two receipts per hostile id, as both consumer and provider, amounts 10 and 20; plus one ordinary pair. */
function billables(): Billable[] {
  return [
    ...HOSTILE.flatMap((id, i) => [
      { jti: `r-${i}-a`, sub: id, provider: id, amount: 10 },
      { jti: `r-${i}-b`, sub: id, provider: id, amount: 20 },
    ]),
    { jti: 'r-plain', sub: 'consumer-1', provider: 'p1', amount: 5 },
  ];
}

/** Own entries only, as JSON would carry them. */
const entries = (m: Record<string, number>) => Object.keys(m).map((k) => [k, m[k]] as const);

describe('totals keyed by ids that name Object.prototype members', () => {
  it('sums each id as a number, as an own entry', () => {
    const t = totalsOf(billables());
    for (const id of HOSTILE) {
      expect(Object.hasOwn(t.consumers, id), id).toBe(true);
      expect(Object.hasOwn(t.providers, id), id).toBe(true);
      expect([id, t.consumers[id]]).toEqual([id, 30]);
      expect([id, t.providers[id]]).toEqual([id, 30]);
    }
    expect(t.consumers['consumer-1']).toBe(5);
    expect(Object.keys(t.consumers)).toHaveLength(HOSTILE.length + 1);
    // No id leaked into, or was read from, Object.prototype.
    expect(Object.getPrototypeOf({})).toBe(Object.prototype);
    expect(typeof ({} as Record<string, unknown>).constructor).toBe('function');
  });

  it('counts an absent id as nothing, not as an inherited member', () => {
    const t = emptyTotals();
    addToTotals(t, { jti: 'x', sub: 'toString', provider: 'constructor', amount: 7 });
    expect(t.consumers.toString).toBe(7);
    expect(t.providers.constructor).toBe(7);
    expect(Object.hasOwn(t.consumers, 'constructor')).toBe(false);
  });

  it('keeps a disputed receipt\'s provider at 0 and still charges its consumer', () => {
    const t = totalsOf([{ jti: 'd', sub: '__proto__', provider: '__proto__', amount: 9 }], new Set(['d']));
    expect(entries(t.providers)).toEqual([['__proto__', 0]]);
    expect(entries(t.consumers)).toEqual([['__proto__', 9]]);
  });

  it('adds into plain-object totals too (as a caller may build them)', () => {
    const t: BatchTotals = { providers: {}, consumers: {} };
    addToTotals(t, { jti: 'a', sub: '__proto__', provider: 'constructor', amount: 4 });
    addToTotals(t, { jti: 'b', sub: '__proto__', provider: 'constructor', amount: 4 });
    expect(Object.getPrototypeOf(t.consumers)).toBe(Object.prototype);
    expect(entries(t.consumers)).toEqual([['__proto__', 8]]);
    expect(entries(t.providers)).toEqual([['constructor', 8]]);
  });

  it('sorts, compares and survives JSON with such ids', () => {
    const t = totalsOf(billables());
    const sorted = sortedTotals(t);
    expect(Object.keys(sorted.consumers)).toEqual([...Object.keys(t.consumers)].sort());
    expect(sorted.consumers.__proto__).toBe(30);
    const json = JSON.stringify(sorted);
    expect(json).toContain('"__proto__":30');
    const parsed = JSON.parse(json) as BatchTotals;
    expect(totalsEqual(parsed, t)).toBe(true);
    expect(totalsEqual(t, parsed)).toBe(true);
    // A difference in a hostile id's total is seen.
    const changed = JSON.parse(json.replace('"__proto__":30', '"__proto__":31')) as BatchTotals;
    expect(totalsEqual(changed, t)).toBe(false);
    // A missing hostile id is seen (its inherited member does not stand in for it).
    const { constructor: _gone, ...fewer } = parsed.consumers;
    expect(totalsEqual({ providers: parsed.providers, consumers: fewer }, t)).toBe(false);
  });

  it('signs a batch from receipts with such ids that verifies offline', async () => {
    const { privateJwk, publicJwk } = await generateEd25519('mesh-k');
    const key = (await importJWK(privateJwk, 'EdDSA')) as CryptoKey;
    const sign = (payload: object, typ: string) => new SignJWT({ ...payload }).setProtectedHeader({ alg: 'EdDSA', typ, kid: 'mesh-k' }).sign(key);
    const claims = billables().map((b, i) => receiptClaims(i, { jti: b.jti, sub: b.sub, provider: b.provider, amount: b.amount }));
    const receipts = await Promise.all(claims.map((c) => sign(c, TYP.receipt)));
    const batch: BatchClaims = {
      iss: TEST_ISSUER,
      iat: Math.floor(Date.now() / 1000),
      batch_id: '1764083700123-00-000001',
      shard: 0,
      epoch_start: 1764083640123,
      epoch_end: 1764083700123,
      count: receipts.length,
      merkle_root: toHex(merkleRoot(receipts.map(leafHash))),
      totals: sortedTotals(totalsOf(claims)),
      disputed: [],
    };
    const { claims: verified } = await verifyBatch(await sign(batch, TYP.batch), receipts, { keys: [publicJwk] });
    expect(verified.totals.consumers.__proto__).toBe(30);
    expect(verified.totals.providers.constructor).toBe(30);
    for (const id of HOSTILE) expect(typeof verified.totals.consumers[id], id).toBe('number');
  });
});

describe('redundant receipts split the payout; disputed receipts are withheld', () => {
  it('pays the provider amount - floor(amount / 2) and the second floor(amount / 2)', () => {
    expect(payoutSplit(101, true)).toEqual({ provider: 51, second: 50 });
    expect(payoutSplit(100, true)).toEqual({ provider: 50, second: 50 });
    expect(payoutSplit(1, true)).toEqual({ provider: 1, second: 0 });
    expect(payoutSplit(0, true)).toEqual({ provider: 0, second: 0 });
    expect(payoutSplit(101, false)).toEqual({ provider: 101, second: 0 });
    const t = totalsOf([
      { jti: 'r1', sub: 'c', provider: 'p1', second: 'p2', amount: 101 },
      { jti: 'r2', sub: 'c', provider: 'p2', amount: 7 },
      { jti: 'r3', sub: 'c', provider: 'p3', second: 'p1', amount: 1 },
    ]);
    expect(entries(t.consumers)).toEqual([['c', 109]]);
    expect(entries(t.providers)).toEqual([['p1', 51], ['p2', 57], ['p3', 1]]);
    expect(entries(t.withheld!)).toEqual([]);
  });

  it('takes a receipt claim\'s second { provider, ... } as its second provider', () => {
    expect(secondProvider({ second: { provider: 'p2' } })).toBe('p2');
    expect(secondProvider({ second: 'p2' })).toBe('p2');
    expect(secondProvider({})).toBeUndefined();
    const claims = receiptClaims(0, { provider: 'p1', amount: 9, verify: 'redundant', second: { provider: 'p2', backend: 'b', attestation: 'x.y.z' } });
    expect(totalsOf([claims]).providers).toEqual({ p1: 5, p2: 4 });
  });

  it('pays a disputed receipt\'s providers 0 and counts their parts as withheld', () => {
    const t = totalsOf(
      [
        { jti: 'r1', sub: 'c', provider: 'p1', second: 'p2', amount: 101 },
        { jti: 'r2', sub: 'c', provider: 'p1', amount: 10 },
        { jti: 'r3', sub: 'c', provider: 'p1', amount: 20 },
        { jti: 'r4', sub: 'c', provider: 'p3', amount: 5 },
      ],
      new Set(['r1', 'r3']),
    );
    expect(entries(t.consumers)).toEqual([['c', 136]]);
    expect(entries(t.providers)).toEqual([['p1', 10], ['p2', 0], ['p3', 5]]);
    expect(entries(t.withheld!)).toEqual([['p1', 51 + 20], ['p2', 50]]);
  });

  it('keeps withheld prototype-free, hostile ids included, and adds it to plain totals that lack it', () => {
    const t = emptyTotals();
    expect(Object.getPrototypeOf(t.withheld)).toBe(null);
    addToTotals(t, { jti: 'x', sub: 'c', provider: '__proto__', second: 'constructor', amount: 9 }, new Set(['x']));
    expect(entries(t.withheld!)).toEqual([['__proto__', 5], ['constructor', 4]]);
    expect(entries(t.providers)).toEqual([['__proto__', 0], ['constructor', 0]]);
    expect(JSON.stringify(sortedTotals(t).withheld)).toBe('{"__proto__":5,"constructor":4}');
    const plain: BatchTotals = { providers: {}, consumers: {} };
    addToTotals(plain, { jti: 'y', sub: 'c', provider: 'p', amount: 3 });
    expect(plain.withheld).toBeUndefined();
    addToTotals(plain, { jti: 'z', sub: 'c', provider: 'p', amount: 4 }, new Set(['z']));
    expect(entries(plain.withheld!)).toEqual([['p', 4]]);
    expect(Object.getPrototypeOf({})).toBe(Object.prototype);
  });

  it('sorts withheld, and compares it only when both totals have it', () => {
    const t = totalsOf(
      [
        { jti: 'a', sub: 'c', provider: 'zeta', amount: 3 },
        { jti: 'b', sub: 'c', provider: 'alpha', amount: 4 },
      ],
      new Set(['a', 'b']),
    );
    expect(Object.keys(sortedTotals(t).withheld!)).toEqual(['alpha', 'zeta']);
    const { withheld: _, ...old } = t;
    expect(sortedTotals(old).withheld).toBeUndefined();
    expect(totalsEqual(old, t)).toBe(true);
    expect(totalsEqual(t, old)).toBe(true);
    expect(totalsEqual(t, { ...t, withheld: { alpha: 4, zeta: 2 } })).toBe(false);
    expect(totalsEqual(t, { ...t, withheld: { alpha: 4 } })).toBe(false);
    expect(totalsEqual(t, JSON.parse(JSON.stringify(sortedTotals(t))) as BatchTotals)).toBe(true);
  });
});
