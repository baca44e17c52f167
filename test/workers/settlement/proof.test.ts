/**
 * Inclusion proofs without guessing (docs/api.md section 5.5), in workerd:
 * `POST /v1/receipts/proof` takes the receipt itself, so a receipt the edge
 * signed that has not reached the ledger yet answers 202 `receipt_pending`
 * with `retry-after`, never a 404; then 404 `batch_open` while its batch is
 * open, then the proof, the same as `GET /v1/receipts/{jti}/proof` gives.
 * Anything the edge did not sign, or not as a receipt, is a 400.
 */

import { env } from 'cloudflare:workers';
import { importJWK, SignJWT } from 'jose';
import { describe, expect, it, vi } from 'vitest';
import { verifyInclusionProof, type Jwks } from '../../../receipts/verify.ts';
import { TYP, type ReceiptClaims } from '../../../shared/jwt.ts';
import { generateEd25519 } from '../../../shared/keys.ts';
import { signReceipt } from '../../../workers/inference/receipts.ts';
import { signingKeys } from '../../../workers/keys.ts';
import { ledgerShard, shardOfReceipt } from '../../../workers/settlement/ledger.ts';
import { receiptClaims } from '../../helpers/receipts.ts';
import { call, keyFor, meshKey } from '../helpers.ts';

let counter = 0;

function claims(over: Partial<ReceiptClaims> = {}): ReceiptClaims {
  return receiptClaims(counter++, { iss: env.MESH_ISSUER, iat: Math.floor(Date.now() / 1000), jti: crypto.randomUUID(), ...over });
}

/** A receipt as the edge signs it. */
async function signed(over: Partial<ReceiptClaims> = {}) {
  const c = claims(over);
  return { jti: c.jti, jwt: await signReceipt(await signingKeys(env), c) };
}

function postProof(body: unknown, token: string | undefined, raw?: string) {
  return call('/v1/receipts/proof', { method: 'POST', body: raw ?? JSON.stringify(body), ...(token ? { token } : {}), headers: { 'content-type': 'application/json' } });
}

async function errorOf(res: Response): Promise<{ code: string; message: string }> {
  return ((await res.json()) as { error: { code: string; message: string } }).error;
}

describe('POST /v1/receipts/proof', () => {
  it('answers 202 receipt_pending for a signed receipt not yet in the log, then batch_open, then the proof GET gives', async () => {
    const billing = await keyFor('billing');
    const r = await signed();

    const pending = await postProof({ receipt: r.jwt }, billing);
    expect(pending.status).toBe(202);
    // RECEIPTS_FLUSH_MS (200) in whole seconds, plus the queue's batch wait.
    expect(pending.headers.get('retry-after')).toBe('2');
    const err = await errorOf(pending);
    expect(err.code).toBe('receipt_pending');
    expect(err.message).toContain(r.jti);
    // The GET by jti alone cannot tell it from a receipt never signed: 404, pointing at the POST.
    const byJti = await call(`/v1/receipts/${r.jti}/proof`, { token: billing });
    expect(byJti.status).toBe(404);
    const notFound = await errorOf(byJti);
    expect(notFound.code).toBe('receipt_not_found');
    expect(notFound.message).toContain('POST');
    expect(notFound.message).toContain('/v1/receipts/proof');

    const shard = shardOfReceipt(env, r.jti);
    expect(await ledgerShard(env, shard).append(shard, [r.jwt])).toEqual(['appended']);
    const open = await postProof({ receipt: r.jwt }, billing);
    expect(open.status).toBe(404);
    expect(open.headers.get('retry-after')).toBe('60');
    expect((await errorOf(open)).code).toBe('batch_open');

    const close = await call('/admin/settlement/close', { method: 'POST', token: await keyFor('admin') });
    expect(close.status).toBe(200);
    const proved = await postProof({ receipt: r.jwt }, billing);
    expect(proved.status).toBe(200);
    const proof = (await proved.json()) as { batch_id: string; leaf_index: number; tree_size: number; audit_path: string[] };
    const viaGet = await call(`/v1/receipts/${r.jti}/proof`, { token: billing });
    expect(viaGet.status).toBe(200);
    expect(await viaGet.json()).toEqual(proof);
    const batch = (await (await call(`/v1/settlement/batches/${proof.batch_id}`, { token: billing })).json()) as { batch: string };
    const jwks = (await (await call('/.well-known/jwks.json')).json()) as Jwks;
    await verifyInclusionProof(r.jwt, proof, batch.batch, jwks);
  });

  it('refuses with 400 what the edge did not sign as a receipt, and names why', async () => {
    const billing = await keyFor('billing');
    const { kid } = await meshKey();
    const c = claims();
    // Same kid, another key: the signature does not verify.
    const other = await generateEd25519(kid);
    const forged = await new SignJWT({ ...c })
      .setProtectedHeader({ alg: 'EdDSA', typ: TYP.receipt, kid })
      .sign(await importJWK(other.privateJwk, 'EdDSA'));
    // The mesh's key, but a bearer key, not a receipt.
    const notReceipt = await keyFor('consumer');
    const { jwt: otherIssuer } = await signed({ iss: 'https://other-mesh.test' });
    const { jwt: good } = await signed();
    const [h, p, s] = good.split('.');
    const tampered = `${h}.${Buffer.from(JSON.stringify({ ...claims(), amount: 1 })).toString('base64url')}.${s}`;
    expect(p).toBeTruthy();
    const { key } = await meshKey();
    const expired = await new SignJWT({ ...c, jti: crypto.randomUUID(), exp: Math.floor(Date.now() / 1000) - 10 })
      .setProtectedHeader({ alg: 'EdDSA', typ: TYP.receipt, kid })
      .sign(key);

    const cases: [string, string][] = [
      [forged, 'bad_signature'],
      [notReceipt, 'wrong_typ'],
      [otherIssuer, 'wrong_issuer'],
      [tampered, 'bad_signature'],
      [expired, 'expired'],
      ['not.a.receipt', 'malformed'],
    ];
    for (const [receipt, why] of cases) {
      const res = await postProof({ receipt }, billing);
      expect(res.status, why).toBe(400);
      const err = await errorOf(res);
      expect(err.code, why).toBe('invalid_request');
      expect(err.message, why).toContain(`(${why})`);
    }
  });

  it('checks its body: JSON, one receipt string, bounded', async () => {
    const billing = await keyFor('billing');
    const bad = async (body: string) => {
      const res = await postProof(undefined, billing, body);
      return [res.status, (await errorOf(res)).code];
    };
    expect(await bad('{')).toEqual([400, 'invalid_json']);
    expect(await bad('{}')).toEqual([400, 'invalid_request']);
    expect(await bad('{"receipt": 42}')).toEqual([400, 'invalid_request']);
    expect(await bad('["x"]')).toEqual([400, 'invalid_request']);
    expect(await bad('null')).toEqual([400, 'invalid_request']);
    expect(await bad(JSON.stringify({ receipt: 'x'.repeat(20_000) }))).toEqual([413, 'body_too_large']);
  });

  it('names the receipt asked about in the request log line', async () => {
    const { jti, jwt } = await signed();
    const lines: string[] = [];
    const spy = vi.spyOn(console, 'log').mockImplementation((line: unknown) => void lines.push(String(line)));
    let res: Response;
    try {
      res = await postProof({ receipt: jwt }, await keyFor('billing'));
    } finally {
      spy.mockRestore();
    }
    expect(res.status).toBe(202);
    const record = lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.msg === 'request');
    expect(record).toMatchObject({ route: '/v1/receipts/proof', status: 202, error: 'receipt_pending', receipt: jti });
  });

  it('needs a billing or admin token', async () => {
    const { jwt } = await signed();
    expect((await postProof({ receipt: jwt }, undefined)).status).toBe(401);
    expect((await postProof({ receipt: jwt }, await keyFor('consumer'))).status).toBe(403);
    expect((await postProof({ receipt: jwt }, await keyFor('admin'))).status).toBe(202);
  });
});
