/**
 * Cache hits offline (docs/api.md sections 2.13, 4.2 and 5.4): a hit's
 * receipt names no provider, backend, region or attestation and names its
 * origin; the verifier (library and `mesh-verify`) accepts exactly that, and
 * still requires who computed every other receipt; totals charge a hit's
 * consumer and pay no provider, in a batch that verifies.
 */

import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { importJWK, SignJWT, type CryptoKey } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { leafHash, merkleRoot, toHex } from '../../receipts/merkle.ts';
import { sortedTotals, totalsOf } from '../../receipts/totals.ts';
import { verifyBatch, verifyReceipt, type Jwks } from '../../receipts/verify.ts';
import { generateEd25519 } from '../../shared/keys.ts';
import { TYP, type BatchClaims, type ReceiptClaims } from '../../shared/jwt.ts';
import { runCli } from '../helpers/cli.ts';
import { failure, receiptClaims, TEST_ISSUER } from '../helpers/receipts.ts';

const CLI = fileURLToPath(new URL('../../bin/mesh-verify.ts', import.meta.url));

let sign: (payload: object, typ?: string) => Promise<string>;
let jwks: Jwks;
let dir: string;

beforeAll(async () => {
  const mesh = await generateEd25519('mesh-cache-test');
  const key = (await importJWK(mesh.privateJwk, 'EdDSA')) as CryptoKey;
  sign = (payload, typ = TYP.receipt) => new SignJWT({ ...payload }).setProtectedHeader({ alg: 'EdDSA', typ, kid: mesh.publicJwk.kid! }).sign(key);
  jwks = { keys: [mesh.publicJwk] };
  dir = await mkdtemp(join(tmpdir(), 'mesh-cache-hit-'));
});

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** A hit's claims as the edge signs them: a computed receipt's, less who computed it, plus its origin. */
function hitClaims(i: number, over: Partial<ReceiptClaims> = {}): ReceiptClaims {
  const { provider: _p, backend: _b, region: _r, ...rest } = receiptClaims(i);
  return { ...rest, cache: 'hit', origin: `rcpt-origin-${i}`, ...over };
}

describe("a cache hit's receipt", () => {
  it('verifies without a provider, backend, region or attestation, and names its origin', async () => {
    const claims = await verifyReceipt(await sign(hitClaims(1)), jwks, { issuer: TEST_ISSUER });
    expect(claims).toMatchObject({ cache: 'hit', origin: 'rcpt-origin-1' });
    expect(claims.provider).toBeUndefined();
  });

  it('is refused when it names who computed it, or no origin', async () => {
    for (const extra of [{ provider: 'p1' }, { backend: 'b1' }, { region: 'eu-west' }, { attestation: 'a.b.c' }, { location: 'verified' as const }, { checks: 'x' }]) {
      const f = await failure(verifyReceipt(await sign(hitClaims(2, extra)), jwks));
      expect(f.code, JSON.stringify(extra)).toBe('invalid_claim');
      expect(f.message).toMatch(/a cache hit's receipt carries no/);
    }
    const { origin: _o, ...noOrigin } = hitClaims(3);
    expect((await failure(verifyReceipt(await sign(noOrigin), jwks))).code).toBe('missing_claim');
    expect((await failure(verifyReceipt(await sign(hitClaims(3, { origin: '' })), jwks))).code).toBe('invalid_claim');
  });

  it('leaves every other receipt as it was: who computed it is required, and no origin', async () => {
    await expect(verifyReceipt(await sign(receiptClaims(4)), jwks)).resolves.toMatchObject({ cache: 'miss', provider: 'p0' });
    for (const claim of ['provider', 'backend', 'region'] as const) {
      const { [claim]: _gone, ...rest } = receiptClaims(4);
      const f = await failure(verifyReceipt(await sign(rest), jwks));
      expect(f, claim).toEqual({ code: 'missing_claim', message: expect.stringContaining(`missing claim "${claim}"`) });
    }
    expect((await failure(verifyReceipt(await sign(receiptClaims(4, { origin: 'x' })), jwks))).code).toBe('invalid_claim');
    expect((await failure(verifyReceipt(await sign(receiptClaims(4, { provider: '' })), jwks))).code).toBe('invalid_claim');
  });
});

describe('a batch with cache hits', () => {
  it('charges their consumers, pays no provider for them, and verifies (library and mesh-verify)', async () => {
    const claims = [receiptClaims(0), hitClaims(1, { sub: 'consumer-0', amount: 7 }), receiptClaims(2), hitClaims(3, { sub: 'consumer-2', amount: 5 })];
    const jwts = await Promise.all(claims.map((c) => sign(c)));
    const totals = sortedTotals(totalsOf(claims, new Set([claims[3]!.jti])));
    // Consumers pay for every receipt, hits included; providers only for the computed ones (a disputed hit withholds nothing).
    expect(totals.consumers['consumer-0']).toBe(claims[0]!.amount + 7);
    expect(totals.providers).toEqual({ p0: claims[0]!.amount + claims[2]!.amount });
    expect(totals.withheld).toEqual({});
    const batch: BatchClaims = {
      iss: TEST_ISSUER,
      iat: Math.floor(Date.now() / 1000),
      batch_id: '1764083700123-01-000001',
      shard: 1,
      epoch_start: 1764083640123,
      epoch_end: 1764083700123,
      count: jwts.length,
      merkle_root: toHex(merkleRoot(jwts.map(leafHash))),
      totals,
      disputed: [claims[3]!.jti],
    };
    const batchJwt = await sign(batch, TYP.batch);
    await expect(verifyBatch(batchJwt, jwts, jwks, { issuer: TEST_ISSUER })).resolves.toMatchObject({ claims: { count: 4 } });
    // A batch that paid a provider for a hit does not verify.
    const paying = await sign({ ...batch, totals: { ...totals, providers: { p0: totals.providers.p0! + 7 } } }, TYP.batch);
    expect((await failure(verifyBatch(paying, jwts, jwks))).code).toBe('totals_mismatch');

    await writeFile(join(dir, 'jwks.json'), JSON.stringify(jwks));
    await writeFile(join(dir, 'hit.jwt'), jwts[1]!);
    await writeFile(join(dir, 'batch.json'), JSON.stringify({ id: batch.batch_id, batch: batchJwt }));
    await writeFile(join(dir, 'receipts.ndjson'), jwts.map((r, leaf) => JSON.stringify({ leaf, jti: claims[leaf]!.jti, receipt: r })).join('\n'));
    const receipt = await runCli(CLI, ['receipt', join(dir, 'hit.jwt'), '--jwks', join(dir, 'jwks.json')]);
    expect(receipt.code, receipt.stderr + receipt.stdout).toBe(0);
    expect(receipt.stdout).toContain(`from the answer cache at SIN (computed under receipt rcpt-origin-1) for consumer consumer-0, 7 micro-USD`);
    const verified = await runCli(CLI, ['batch', join(dir, 'batch.json'), '--receipts', join(dir, 'receipts.ndjson'), '--jwks', join(dir, 'jwks.json')]);
    expect(verified.code, verified.stderr + verified.stdout).toBe(0);
  });
});
