/**
 * Batch totals are keyed by provider and consumer ids, which are any strings:
 * ids that name Object.prototype members (`__proto__`, `constructor`,
 * `toString`, `hasOwnProperty`) must total as numbers like any other id,
 * survive the JSON round trip of a signed batch, and verify offline.
 */

import { importJWK, SignJWT, type CryptoKey } from 'jose';
import { describe, expect, it } from 'vitest';
import { leafHash, merkleRoot, toHex } from '../../receipts/merkle.ts';
import { addToTotals, emptyTotals, sortedTotals, totalsEqual, totalsOf, type Billable } from '../../receipts/totals.ts';
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
