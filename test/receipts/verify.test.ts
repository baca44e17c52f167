import { base64url, generateKeyPair, exportJWK, SignJWT, type CryptoKey, type JWK } from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';
import { generateEd25519 } from '../../shared/keys.ts';
import { emptyRoot, inclusionProof, leafHash, merkleRoot, toHex } from '../../receipts/merkle.ts';
import { sortedTotals, totalsOf } from '../../receipts/totals.ts';
import { TYP, type BatchClaims, type ReceiptClaims } from '../../shared/jwt.ts';
import {
  verifyBatch,
  verifyInclusionProof,
  verifyReceipt,
  type InclusionProof,
  type Jwks,
  type VerifyOptions,
} from '../../receipts/verify.ts';
import { failure, receiptClaims as baseClaims } from '../helpers/receipts.ts';

const ISSUER = 'https://mesh.test';
const NOW = Math.floor(Date.now() / 1000);

interface Signer {
  kid: string;
  key: CryptoKey;
  publicJwk: JWK;
}

async function signer(kid: string): Promise<Signer> {
  const { privateJwk, publicJwk } = await generateEd25519(kid);
  const { importJWK } = await import('jose');
  return { kid, key: (await importJWK(privateJwk, 'EdDSA')) as CryptoKey, publicJwk };
}

let k1: Signer; // the old mesh key
let k2: Signer; // the current mesh key
let outsider: Signer; // a key the JWKS does not hold
let jwks: Jwks;

beforeAll(async () => {
  [k1, k2, outsider] = await Promise.all([signer('mesh-2025-01'), signer('mesh-2025-02'), signer('outsider')]);
  jwks = { keys: [k1.publicJwk, k2.publicJwk] };
});

function receiptClaims(i: number, over: Partial<ReceiptClaims> = {}): ReceiptClaims {
  return baseClaims(i, { iss: ISSUER, iat: NOW - 100 + (i % 50), attestation: 'eyJhbGciOiJFZERTQSJ9.e30.c2ln', ...over });
}

/** Signs any payload with any header over a key of `s`. */
function sign(payload: object, s: Signer, header: { typ?: string; kid?: string | null } = {}): Promise<string> {
  const h: { alg: string; typ?: string; kid?: string } = { alg: 'EdDSA', typ: header.typ ?? TYP.receipt };
  if (header.kid !== null) h.kid = header.kid ?? s.kid;
  return new SignJWT({ ...payload }).setProtectedHeader(h).sign(s.key);
}

function signReceipt(i: number, s: Signer = k2, over: Partial<ReceiptClaims> = {}): Promise<string> {
  return sign(receiptClaims(i, over), s);
}

/** A batch JWT over `receipts` as the ledger would sign it; `over` replaces any claim. */
async function signBatch(receipts: string[], over: Partial<BatchClaims> = {}, s: Signer = k2, typ: string = TYP.batch): Promise<string> {
  const disputed = over.disputed ?? [];
  const claims = receipts.map((r) => JSON.parse(Buffer.from(r.split('.')[1]!, 'base64url').toString()) as ReceiptClaims);
  const batch: BatchClaims = {
    iss: ISSUER,
    iat: NOW,
    batch_id: '1764083700123-03-000042',
    shard: 3,
    epoch_start: 1764083640123,
    epoch_end: 1764083700123,
    count: receipts.length,
    merkle_root: toHex(merkleRoot(receipts.map(leafHash))),
    totals: sortedTotals(totalsOf(claims, new Set(disputed))),
    disputed,
    ...over,
  };
  return sign(batch, s, { typ });
}

async function signReceipts(n: number, s: Signer = k2): Promise<string[]> {
  return Promise.all(Array.from({ length: n }, (_, i) => signReceipt(i, s)));
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  return (await failure(p)).code;
}

/** Replaces the payload of a compact JWS, keeping header and signature. */
function withPayload(jwt: string, edit: (claims: Record<string, unknown>) => void): string {
  const [h, p, sig] = jwt.split('.');
  const claims = JSON.parse(Buffer.from(p!, 'base64url').toString()) as Record<string, unknown>;
  edit(claims);
  return `${h}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.${sig}`;
}

describe('verifyReceipt', () => {
  it('accepts a well-formed receipt and returns its claims', async () => {
    const claims = await verifyReceipt(await signReceipt(7), jwks, { issuer: ISSUER });
    expect(claims).toMatchObject({ jti: 'rcpt-000007', amount: 107, units: { input: 4, output: 3 }, iss: ISSUER });
  });

  it('accepts a receipt without attestation (cache hit), an old receipt, and an iat slightly ahead', async () => {
    // A cache hit names no one who computed it, and its origin (test/receipts/cache-hit.test.ts has the rest).
    const { attestation: _, provider: _p, backend: _b, region: _r, ...hit } = receiptClaims(1, { cache: 'hit', origin: 'rcpt-000000' });
    expect((await verifyReceipt(await sign(hit, k2), jwks)).cache).toBe('hit');
    expect((await verifyReceipt(await signReceipt(1, k2, { iat: 1_000_000_000 }), jwks)).iat).toBe(1_000_000_000);
    await verifyReceipt(await signReceipt(1, k2, { iat: NOW + 120 }), jwks);
  });

  it('refuses a tampered payload', async () => {
    const tampered = withPayload(await signReceipt(2), (c) => (c.amount = 1));
    const f = await failure(verifyReceipt(tampered, jwks));
    expect(f).toEqual({ code: 'bad_signature', message: 'receipt (jti rcpt-000002): signature does not verify (kid mesh-2025-02)' });
  });

  it('refuses a wrong kid: another key of the JWKS, an unknown one, none at all', async () => {
    const claims = receiptClaims(3);
    expect(await codeOf(verifyReceipt(await sign(claims, k2, { kid: k1.kid }), jwks))).toBe('bad_signature');
    expect(await codeOf(verifyReceipt(await sign(claims, k2, { kid: 'no-such-kid' }), jwks))).toBe('unknown_kid');
    expect(await codeOf(verifyReceipt(await sign(claims, k2, { kid: null }), jwks))).toBe('unknown_kid');
  });

  it('refuses a receipt signed by a key not in the JWKS, under its own kid or a known one', async () => {
    const claims = receiptClaims(4);
    const f = await failure(verifyReceipt(await sign(claims, outsider), jwks));
    expect(f.code).toBe('unknown_kid');
    expect(f.message).toContain('"outsider"');
    expect(await codeOf(verifyReceipt(await sign(claims, outsider, { kid: k2.kid }), jwks))).toBe('bad_signature');
  });

  it('refuses any alg but EdDSA: HS256, ES256 with its key in the JWKS, and alg none', async () => {
    const claims = receiptClaims(5);
    const secret = new TextEncoder().encode('a shared secret of at least 32 bytes!!');
    const hs = await new SignJWT({ ...claims }).setProtectedHeader({ alg: 'HS256', typ: TYP.receipt, kid: k2.kid }).sign(secret);
    expect(await codeOf(verifyReceipt(hs, jwks))).toBe('wrong_alg');

    const ec = await generateKeyPair('ES256', { extractable: true });
    const ecJwk = { ...(await exportJWK(ec.publicKey)), kid: 'ec', alg: 'ES256' };
    const es = await new SignJWT({ ...claims }).setProtectedHeader({ alg: 'ES256', typ: TYP.receipt, kid: 'ec' }).sign(ec.privateKey);
    expect(await codeOf(verifyReceipt(es, { keys: [...jwks.keys, ecJwk] }))).toBe('wrong_alg');

    const none = `${base64url.encode(JSON.stringify({ alg: 'none', typ: TYP.receipt, kid: k2.kid }))}.${base64url.encode(JSON.stringify(claims))}.`;
    expect(await codeOf(verifyReceipt(none, jwks))).toBe('wrong_alg');
    // An EdDSA header over a stripped signature is no better.
    const real = await signReceipt(5);
    expect(await codeOf(verifyReceipt(`${real.slice(0, real.lastIndexOf('.'))}.`, jwks))).toBe('bad_signature');
  });

  it('refuses the wrong typ: a batch, an API key, no typ', async () => {
    const batch = await signBatch(await signReceipts(2));
    const f = await failure(verifyReceipt(batch, jwks));
    expect(f.code).toBe('wrong_typ');
    expect(f.message).toContain('expected "mesh-receipt+jwt"');
    expect(await codeOf(verifyReceipt(await sign(receiptClaims(1), k2, { typ: TYP.key }), jwks))).toBe('wrong_typ');
    const untyped = await new SignJWT({ ...receiptClaims(1) }).setProtectedHeader({ alg: 'EdDSA', kid: k2.kid }).sign(k2.key);
    expect(await codeOf(verifyReceipt(untyped, jwks))).toBe('wrong_typ');
  });

  it('refuses the wrong issuer when one is expected', async () => {
    const f = await failure(verifyReceipt(await signReceipt(1), jwks, { issuer: 'https://other.mesh' }));
    expect(f).toEqual({ code: 'wrong_issuer', message: 'receipt (jti rcpt-000001): issuer is "https://mesh.test", expected "https://other.mesh"' });
  });

  it('refuses a receipt missing any required claim', async () => {
    for (const claim of ['iss', 'sub', 'jti', 'iat', 'model', 'provider', 'units', 'amount', 'output_sha256', 'cache', 'verify'] as const) {
      const c: Partial<ReceiptClaims> = receiptClaims(1);
      delete c[claim];
      const f = await failure(verifyReceipt(await sign(c, k2), jwks));
      expect(f.code, claim).toBe('missing_claim');
      expect(f.message, claim).toContain(`"${claim}"`);
    }
  });

  it('refuses claims of the wrong type', async () => {
    const cases: Partial<Record<keyof ReceiptClaims, unknown>>[] = [
      { units: { input: 1, output: -1 } },
      { units: { input: 1.5, output: 1 } },
      { units: [1, 2] },
      { amount: '100' },
      { amount: -1 },
      { amount: 0.5 },
      { input_sha256: 'xyz' },
      { output_sha256: 'b'.repeat(63) },
      { cache: 'maybe' },
      { verify: 'always' },
      { latency_ms: -3 },
      { jti: '' },
      { provider: 7 },
      { attestation: 42 },
      { iat: 'yesterday' },
    ];
    for (const over of cases) {
      const code = await codeOf(verifyReceipt(await sign({ ...receiptClaims(1), ...over }, k2), jwks));
      expect(code, JSON.stringify(over)).toBe('invalid_claim');
    }
  });

  it('refuses an iat more than 5 minutes ahead, relative to currentDate when given', async () => {
    const ahead = await signReceipt(1, k2, { iat: NOW + 600 });
    expect(await codeOf(verifyReceipt(ahead, jwks))).toBe('issued_in_future');
    const later: VerifyOptions = { currentDate: new Date((NOW + 400) * 1000) };
    await verifyReceipt(ahead, jwks, later);
  });

  it('refuses garbage and a bad JWKS', async () => {
    expect(await codeOf(verifyReceipt('not a jwt', jwks))).toBe('malformed');
    expect(await codeOf(verifyReceipt('a.b.c', jwks))).toBe('malformed');
    expect(await codeOf(verifyReceipt(await signReceipt(1), {} as Jwks))).toBe('bad_jwks');
  });
});

describe('verifyBatch', () => {
  let receipts: string[];
  let batch: string;
  beforeAll(async () => {
    receipts = await signReceipts(10);
    batch = await signBatch(receipts);
  });

  it('accepts a batch with its receipts in leaf order', async () => {
    const { claims, receipts: rs } = await verifyBatch(batch, receipts, jwks, { issuer: ISSUER });
    expect(claims.count).toBe(10);
    expect(rs.map((r) => r.jti)).toEqual(receipts.map((_, i) => `rcpt-${String(i).padStart(6, '0')}`));
    expect(claims.totals.providers).toEqual({ p0: 100 + 102 + 104 + 106 + 108, p1: 101 + 103 + 105 + 107 + 109 });
  });

  it('accepts the empty batch', async () => {
    const empty = await signBatch([]);
    expect(JSON.parse(Buffer.from(empty.split('.')[1]!, 'base64url').toString()).merkle_root).toBe(toHex(emptyRoot()));
    expect((await verifyBatch(empty, [], jwks)).claims.count).toBe(0);
  });

  it('refuses a dropped receipt', async () => {
    const f = await failure(verifyBatch(batch, receipts.slice(0, 9), jwks));
    expect(f).toEqual({ code: 'count_mismatch', message: 'count mismatch: batch 1764083700123-03-000042 says 10 receipts, 9 given' });
    // Even when the batch is re-signed with the smaller count, the root gives it away.
    const recounted = await signBatch(receipts, { count: 9 });
    expect(await codeOf(verifyBatch(recounted, receipts.slice(0, 9), jwks))).toBe('root_mismatch');
  });

  it('refuses a duplicated receipt, even in a batch signed over the duplicate', async () => {
    const dup = [...receipts];
    dup[5] = dup[4]!;
    const f = await failure(verifyBatch(batch, dup, jwks));
    expect(f).toEqual({ code: 'duplicate_receipt', message: 'receipt 5 (jti rcpt-000004) duplicates receipt 4' });
    expect(await codeOf(verifyBatch(await signBatch(dup), dup, jwks))).toBe('duplicate_receipt');
  });

  it('refuses reordered receipts', async () => {
    const swapped = [...receipts];
    [swapped[2], swapped[3]] = [swapped[3]!, swapped[2]!];
    const f = await failure(verifyBatch(batch, swapped, jwks));
    expect(f.code).toBe('root_mismatch');
    expect(f.message).toMatch(/^merkle root mismatch: batch 1764083700123-03-000042 says [0-9a-f]{64}, receipts give [0-9a-f]{64}$/);
  });

  it('refuses altered totals, naming the entry', async () => {
    const claims = await verifyBatch(batch, receipts, jwks);
    const providers = { ...claims.claims.totals.providers, p1: claims.claims.totals.providers.p1! - 10 };
    const altered = await signBatch(receipts, { totals: { ...claims.claims.totals, providers } });
    expect(await failure(verifyBatch(altered, receipts, jwks))).toEqual({
      code: 'totals_mismatch',
      message: 'totals mismatch for provider p1: batch says 515, receipts give 525',
    });
    const extraConsumer = await signBatch(receipts, { totals: { ...claims.claims.totals, consumers: { ...claims.claims.totals.consumers, ghost: 1 } } });
    expect((await failure(verifyBatch(extraConsumer, receipts, jwks))).message).toBe(
      'totals mismatch for consumer ghost: batch says 1, receipts give nothing',
    );
  });

  it('withholds a disputed receipt from payout, and refuses a batch that pays it anyway', async () => {
    const disputed = ['rcpt-000003'];
    const ok = await verifyBatch(await signBatch(receipts, { disputed }), receipts, jwks);
    expect(ok.claims.totals.providers.p1).toBe(101 + 105 + 107 + 109);
    expect(ok.claims.totals.consumers['consumer-0']).toBe(100 + 103 + 106 + 109); // the consumer is still charged
    const paidAnyway = await signBatch(receipts, { disputed, totals: sortedTotals(totalsOf(ok.receipts)) });
    expect(await failure(verifyBatch(paidAnyway, receipts, jwks))).toEqual({
      code: 'totals_mismatch',
      message: 'totals mismatch for provider p1: batch says 525, receipts give 422',
    });
  });

  it('refuses a disputed id that is not one of the receipts', async () => {
    const f = await failure(verifyBatch(await signBatch(receipts, { disputed: ['rcpt-999999'] }), receipts, jwks));
    expect(f).toEqual({ code: 'unknown_disputed', message: 'batch 1764083700123-03-000042 disputes receipt rcpt-999999, which is not one of its receipts' });
  });

  it('names the first bad receipt by index and jti', async () => {
    const bad = [...receipts];
    bad[7] = withPayload(bad[7]!, (c) => (c.amount = 0));
    expect(await failure(verifyBatch(batch, bad, jwks))).toEqual({
      code: 'bad_signature',
      message: 'receipt 7 (jti rcpt-000007): signature does not verify (kid mesh-2025-02)',
    });
  });

  it('refuses the wrong typ, the wrong issuer and malformed batch claims', async () => {
    expect(await codeOf(verifyBatch(receipts[0]!, receipts, jwks))).toBe('wrong_typ');
    expect(await codeOf(verifyBatch(batch, receipts, jwks, { issuer: 'https://other.mesh' }))).toBe('wrong_issuer');
    expect(await codeOf(verifyBatch(await signBatch(receipts, { merkle_root: 'zz' }), receipts, jwks))).toBe('invalid_claim');
    expect(await codeOf(verifyBatch(await signBatch(receipts, { count: -1 }), receipts, jwks))).toBe('invalid_claim');
    expect(await codeOf(verifyBatch(await signBatch(receipts, { disputed: ['rcpt-000001', 'rcpt-000001'] }), receipts, jwks))).toBe('invalid_claim');
    const noTotals = withPayload(batch, (c) => delete c.totals);
    expect(await codeOf(verifyBatch(noTotals, receipts, jwks))).toBe('bad_signature');
    const { totals: _, ...rest } = JSON.parse(Buffer.from(batch.split('.')[1]!, 'base64url').toString()) as BatchClaims;
    expect(await failure(verifyBatch(await sign(rest, k2, { typ: TYP.batch }), receipts, jwks))).toEqual({
      code: 'missing_claim',
      message: 'batch 1764083700123-03-000042: missing claim "totals"',
    });
  });

  it('refuses a receipt from another issuer inside the batch', async () => {
    const mixed = [...receipts];
    mixed[1] = await signReceipt(1, k2, { iss: 'https://other.mesh' });
    expect(await codeOf(verifyBatch(await signBatch(mixed), mixed, jwks))).toBe('wrong_issuer');
  });

  it('verifies across a key rotation, and names the receipt once the old kid is gone', async () => {
    const rotated = await Promise.all(Array.from({ length: 6 }, (_, i) => signReceipt(i, i < 3 ? k1 : k2)));
    const b = await signBatch(rotated);
    expect((await verifyBatch(b, rotated, jwks)).receipts).toHaveLength(6);
    const f = await failure(verifyBatch(b, rotated, { keys: [k2.publicJwk] }));
    expect(f).toEqual({ code: 'unknown_kid', message: 'receipt 0 (jti rcpt-000000): no EdDSA key with kid "mesh-2025-01" in the JWKS' });
  });

  it('verifies a 500-receipt batch and reports a failure in a later window at its index', async () => {
    const many = await signReceipts(500);
    const b = await signBatch(many);
    expect((await verifyBatch(b, many, jwks)).claims.count).toBe(500);
    const bad = [...many];
    bad[300] = withPayload(bad[300]!, (c) => (c.sub = 'someone-else'));
    bad[450] = 'garbage';
    expect((await failure(verifyBatch(b, bad, jwks))).message).toBe('receipt 300 (jti rcpt-000300): signature does not verify (kid mesh-2025-02)');
  });
});

describe('verifyBatch: redundant receipts, withheld totals and penalties', () => {
  const second = (provider: string) => ({ provider, backend: `${provider}-b`, attestation: 'eyJhbGciOiJFZERTQSJ9.e30.c2ln' });
  let receipts: string[];
  beforeAll(async () => {
    // p0 and p1 alternate as provider; receipts 6 and 7 are redundant with p2 and p1 as second.
    receipts = await Promise.all(
      Array.from({ length: 8 }, (_, i) =>
        signReceipt(i, k2, i === 6 ? { verify: 'redundant', second: second('p2') } : i === 7 ? { verify: 'redundant', second: second('p0') } : {}),
      ),
    );
  });

  it('splits a redundant receipt\'s payout with its second provider', async () => {
    const { claims } = await verifyBatch(await signBatch(receipts), receipts, jwks);
    // 106 = 53 + 53 (p0, p2); 107 = 54 + 53 (p1, p0).
    expect(claims.totals.providers).toEqual({ p0: 100 + 102 + 104 + 53 + 53, p1: 101 + 103 + 105 + 54, p2: 53 });
    // A batch that pays the provider the whole amount is refused.
    const whole = await signBatch(receipts, { totals: sortedTotals(totalsOf(receipts.map((_, i) => receiptClaims(i)))) });
    expect(await codeOf(verifyBatch(whole, receipts, jwks))).toBe('totals_mismatch');
  });

  it('recomputes withheld, and still verifies an old batch signed without it', async () => {
    const disputed = ['rcpt-000006'];
    const { claims } = await verifyBatch(await signBatch(receipts, { disputed }), receipts, jwks);
    expect(claims.totals.withheld).toEqual({ p0: 53, p2: 53 });
    expect(claims.totals.providers.p2).toBe(0);
    const good = (await verifyBatch(await signBatch(receipts, { disputed }), receipts, jwks)).claims.totals;
    const wrongWithheld = await signBatch(receipts, { disputed, totals: { ...good, withheld: { p0: 106 } } });
    expect(await failure(verifyBatch(wrongWithheld, receipts, jwks))).toEqual({
      code: 'totals_mismatch',
      message: 'totals mismatch for withheld of provider p0: batch says 106, receipts give 53',
    });
    const { withheld: _, ...old } = good;
    expect((await verifyBatch(await signBatch(receipts, { disputed, totals: old }), receipts, jwks)).claims.totals.withheld).toBeUndefined();
    expect(await codeOf(verifyBatch(await signBatch(receipts, { disputed, totals: { ...good, withheld: { p0: -1 } } }), receipts, jwks))).toBe('invalid_claim');
  });

  it('accepts penalties whose provider has every receipt disputed, as provider or second', async () => {
    // p2 is only the second of receipt 6.
    const p2 = await verifyBatch(await signBatch(receipts, { disputed: ['rcpt-000006'], penalties: [{ provider: 'p2', dispute: 'd-1' }] }), receipts, jwks);
    expect(p2.claims.penalties).toEqual([{ provider: 'p2', dispute: 'd-1' }]);
    const ofP1 = ['rcpt-000001', 'rcpt-000003', 'rcpt-000005', 'rcpt-000007'];
    const ofP2 = ['rcpt-000006'];
    const both = await signBatch(receipts, { disputed: [...ofP1, ...ofP2].sort(), penalties: [{ provider: 'p1', dispute: 'd-2' }, { provider: 'p2', dispute: 'd-1' }] });
    expect((await verifyBatch(both, receipts, jwks)).claims.totals.providers).toEqual({ p0: 100 + 102 + 104, p1: 0, p2: 0 }); // 6 and 7 are disputed: p0's parts of them are withheld
    expect((await verifyBatch(await signBatch(receipts, { penalties: [] }), receipts, jwks)).claims.penalties).toEqual([]);
  });

  it('refuses a penalty not applied to every receipt of its provider', async () => {
    const missed = await signBatch(receipts, { disputed: ['rcpt-000001', 'rcpt-000003', 'rcpt-000005'], penalties: [{ provider: 'p1', dispute: 'd-2' }] });
    expect(await failure(verifyBatch(missed, receipts, jwks))).toEqual({
      code: 'penalty_not_applied',
      message: 'batch 1764083700123-03-000042 penalizes provider p1 (dispute d-2), but its receipt 7 (jti rcpt-000007) is not disputed',
    });
    // p0 is the second of receipt 7: that receipt is p0's too.
    const ofP0 = ['rcpt-000000', 'rcpt-000002', 'rcpt-000004', 'rcpt-000006'];
    const secondMissed = await signBatch(receipts, { disputed: ofP0, penalties: [{ provider: 'p0', dispute: 'd-3' }] });
    expect((await failure(verifyBatch(secondMissed, receipts, jwks))).message).toContain('penalizes provider p0 (dispute d-3), but its receipt 7 (jti rcpt-000007)');
    await verifyBatch(await signBatch(receipts, { disputed: [...ofP0, 'rcpt-000007'], penalties: [{ provider: 'p0', dispute: 'd-3' }] }), receipts, jwks);
  });

  it('refuses malformed penalties: not sorted, twice for a provider, or ill-typed', async () => {
    const all = receipts.map((_, i) => `rcpt-00000${i}`);
    const cases: unknown[] = [
      [{ provider: 'p1', dispute: 'd-1' }, { provider: 'p0', dispute: 'd-2' }],
      [{ provider: 'p1', dispute: 'd-1' }, { provider: 'p1', dispute: 'd-2' }],
      [{ provider: 'p1' }],
      [{ provider: '', dispute: 'd-1' }],
      {},
    ];
    for (const penalties of cases) {
      const b = await signBatch(receipts, { disputed: all, penalties: penalties as BatchClaims['penalties'] });
      expect(await codeOf(verifyBatch(b, receipts, jwks)), JSON.stringify(penalties)).toBe('invalid_claim');
    }
  });

  it('refuses a malformed second or checks on a receipt', async () => {
    for (const over of [{ second: { provider: '', backend: 'b', attestation: 'x' } }, { second: 'p2' }, { second: { provider: 'p2' } }, { checks: '' }, { checks: 7 }]) {
      expect(await codeOf(verifyReceipt(await sign({ ...receiptClaims(1), ...over }, k2), jwks)), JSON.stringify(over)).toBe('invalid_claim');
    }
    const ok = await verifyReceipt(await signReceipt(1, k2, { checks: 'rcpt-000000', sub: 'mesh-verification' }), jwks);
    expect(ok.checks).toBe('rcpt-000000');
  });
});

describe('verifyInclusionProof', () => {
  let receipts: string[];
  let batch: string;
  const proofOf = (rs: string[], i: number, batchId = '1764083700123-03-000042'): InclusionProof => ({
    batch_id: batchId,
    leaf_index: i,
    tree_size: rs.length,
    audit_path: inclusionProof(rs.map(leafHash), i).map(toHex),
  });
  beforeAll(async () => {
    receipts = await signReceipts(7);
    batch = await signBatch(receipts);
  });

  it('accepts the proof of every receipt', async () => {
    for (let i = 0; i < receipts.length; i++) {
      const { receipt, batch: b } = await verifyInclusionProof(receipts[i]!, proofOf(receipts, i), batch, jwks, { issuer: ISSUER });
      expect(receipt.jti).toBe(`rcpt-00000${i}`);
      expect(b.count).toBe(7);
    }
  });

  it('refuses a wrong index, size or path', async () => {
    const good = proofOf(receipts, 3);
    expect(await failure(verifyInclusionProof(receipts[3]!, { ...good, leaf_index: 2 }, batch, jwks))).toEqual({
      code: 'not_included',
      message: `receipt (jti rcpt-000003) is not leaf 2 of batch 1764083700123-03-000042: the audit path does not lead to its merkle root ${toHex(merkleRoot(receipts.map(leafHash)))}`,
    });
    expect(await codeOf(verifyInclusionProof(receipts[3]!, { ...good, leaf_index: 4 }, batch, jwks))).toBe('not_included');
    expect(await codeOf(verifyInclusionProof(receipts[3]!, { ...good, tree_size: 8 }, batch, jwks))).toBe('proof_mismatch');
    const flipped = good.audit_path.map((h, j) => (j === 1 ? `${h.slice(0, 10)}${h[10] === '0' ? '1' : '0'}${h.slice(11)}` : h));
    expect(await codeOf(verifyInclusionProof(receipts[3]!, { ...good, audit_path: flipped }, batch, jwks))).toBe('not_included');
    expect(await codeOf(verifyInclusionProof(receipts[3]!, { ...good, audit_path: good.audit_path.slice(1) }, batch, jwks))).toBe('not_included');
    expect(await codeOf(verifyInclusionProof(receipts[3]!, { ...good, audit_path: [...good.audit_path, good.audit_path[0]!] }, batch, jwks))).toBe(
      'not_included',
    );
    expect(await codeOf(verifyInclusionProof(receipts[3]!, { ...good, audit_path: ['zz'] }, batch, jwks))).toBe('malformed');
    expect(await codeOf(verifyInclusionProof(receipts[3]!, { ...good, leaf_index: 7 }, batch, jwks))).toBe('malformed');
    expect(await codeOf(verifyInclusionProof(receipts[3]!, { ...good, leaf_index: 1.5 }, batch, jwks))).toBe('malformed');
    // A different receipt under a good proof.
    expect(await codeOf(verifyInclusionProof(receipts[4]!, good, batch, jwks))).toBe('not_included');
  });

  it('refuses a proof for another batch', async () => {
    const others = await Promise.all([10, 11, 12, 13, 14, 15, 16].map((i) => signReceipt(i)));
    const other = await signBatch(others, { batch_id: '1764083760000-03-000043' });
    const theirs = proofOf(others, 2, '1764083760000-03-000043');
    expect(await failure(verifyInclusionProof(others[2]!, theirs, batch, jwks))).toEqual({
      code: 'proof_mismatch',
      message: 'proof is for batch 1764083760000-03-000043, not batch 1764083700123-03-000042',
    });
    expect(await codeOf(verifyInclusionProof(others[2]!, { ...theirs, batch_id: '1764083700123-03-000042' }, batch, jwks))).toBe('not_included');
    await verifyInclusionProof(others[2]!, theirs, other, jwks);
  });

  it('checks both signatures and typs', async () => {
    const good = proofOf(receipts, 0);
    expect(await codeOf(verifyInclusionProof(withPayload(receipts[0]!, (c) => (c.amount = 0)), good, batch, jwks))).toBe('bad_signature');
    expect(await codeOf(verifyInclusionProof(receipts[0]!, good, withPayload(batch, (c) => (c.count = 8)), jwks))).toBe('bad_signature');
    expect(await codeOf(verifyInclusionProof(receipts[0]!, good, receipts[0]!, jwks))).toBe('wrong_typ');
    expect(await codeOf(verifyInclusionProof(batch, good, batch, jwks))).toBe('wrong_typ');
  });
});
