/**
 * A bad attestation signature, found after the answer has left: a
 * `signature` fraud proof is filed (stored, indexed by the operator
 * registry) and the receipt is disputed in its ledger shard (the provider is
 * not paid for it); a good one changes nothing.
 */

import { env } from 'cloudflare:test';
import { importJWK, SignJWT, type JWK } from 'jose';
import { describe, expect, it } from 'vitest';
import { generateEd25519 } from '../../../shared/keys.ts';
import { TYP } from '../../../shared/jwt.ts';
import type { BackendEntry } from '../../../workers/directory/backend.ts';
import { backend as entry } from '../routing/fixtures.ts';
import { attestationClaims, settleAttestation, signatureProblem } from '../../../workers/inference/attestation.ts';
import { disputeKey, type DisputeDocument, type Execution } from '../../../workers/verification/disputes.ts';
import { ledgerShard, shardOfReceipt } from '../../../workers/settlement/ledger.ts';

const provider = await generateEd25519('prov-att-key');
const stranger = await generateEd25519('stranger-att-key');

const backend: BackendEntry = entry('att-1', 'eu-west', {
  provider: 'prov-att',
  providerKey: provider.publicJwk as JWK,
  url: 'http://127.0.0.1:1',
  lat: 50.11,
  lon: 8.68,
});

async function attestation(jwk: JWK, o: { header?: Record<string, unknown>; iss?: string; sub?: string } = {}): Promise<string> {
  return new SignJWT({ jti: 'dispatch-1', model: 'embed', output_sha256: '00'.repeat(32), units: { input: 1, output: 1 } })
    .setProtectedHeader({ alg: 'EdDSA', typ: TYP.attestation, kid: 'k', ...o.header })
    .setIssuer(o.iss ?? backend.provider)
    .setSubject(o.sub ?? backend.id)
    .setIssuedAt()
    .sign(await importJWK(jwk, 'EdDSA'));
}

async function disputes(receiptJti: string): Promise<number> {
  const shard = shardOfReceipt(env, receiptJti);
  return (await ledgerShard(env, shard).stats(shard)).disputes;
}

function run(att: string, receiptJti: string): Execution {
  return { backend, attestation: att, outputSha256: '00'.repeat(32), receipt: 'receipt.jwt.here', receiptJti };
}

const subject = { model: 'embed', modelVersion: '1', inputSha256: '11'.repeat(32) };

describe('settling an attestation after the answer', () => {
  it("files a signature fraud proof and disputes the receipt when the signature is not the provider's", async () => {
    const jti = crypto.randomUUID();
    const before = await disputes(jti);
    const registry = env.OPERATOR_REGISTRY.getByName('global');
    const known = new Set((await registry.listDisputes('', 1000)).map((d) => d.id));
    expect(await settleAttestation(env, run(await attestation(stranger.privateJwk), jti), 1, subject)).toBe(false);
    expect(await disputes(jti)).toBe(before + 1);
    const filed = (await registry.listDisputes('', 1000)).filter((d) => !known.has(d.id));
    expect(filed).toMatchObject([{ kind: 'signature', verdict: 'proven', accused: backend.provider, withheld: [jti] }]);
    const stored = await env.SETTLEMENT_ARCHIVE.get(disputeKey(filed[0]!.id));
    const doc = (await stored!.json()) as DisputeDocument;
    expect(doc.id).toBe(filed[0]!.id);
    expect(doc.dispute.split('.')).toHaveLength(3);
  });

  it('changes nothing when it verifies', async () => {
    const jti = crypto.randomUUID();
    const before = await disputes(jti);
    expect(await settleAttestation(env, run(await attestation(provider.privateJwk), jti), 1, subject)).toBe(true);
    expect(await disputes(jti)).toBe(before);
  });
});

describe('checking an attestation', () => {
  const expectation = { jti: 'dispatch-1', model: 'embed', outputSha256: '00'.repeat(32) };

  it('reads the claims of an attestation about this dispatch, and verifies its signature with the admitted key', async () => {
    const att = await attestation(provider.privateJwk);
    expect(attestationClaims(att, backend, expectation)).toMatchObject({ iss: backend.provider, sub: backend.id, units: { input: 1, output: 1 } });
    expect(await signatureProblem(att, backend)).toBeUndefined();
  });

  it("refuses a signature by another key, or over other bytes than the ones read", async () => {
    expect(await signatureProblem(await attestation(stranger.privateJwk), backend)).toBe("attestation signature does not verify with prov-att's admitted key");
    const [h, , sig] = (await attestation(provider.privateJwk)).split('.');
    const other = (await attestation(provider.privateJwk, { sub: 'att-2' })).split('.')[1];
    expect(await signatureProblem(`${h}.${other}.${sig}`, { ...backend, id: 'att-2' })).toMatch(/does not verify/);
  });

  it.each([
    ['not three parts', 'a.b', /not a compact JWS/],
    ['four parts', 'a.b.c.d', /not a compact JWS/],
    ['a header that is not JSON', `${btoa('nope')}.e30.AA`, /not a compact JWS/],
    ['a payload that is an array', `${btoa(JSON.stringify({ alg: 'EdDSA', typ: TYP.attestation })).replace(/=+$/, '')}.${btoa('[]')}.AA`, /not a compact JWS/],
  ])('refuses %s', async (_what, att, reason) => {
    expect(attestationClaims(att, backend, expectation)).toMatch(reason);
    expect(await signatureProblem(att, backend)).toMatch(reason);
  });

  /** A compact JWS signed by the provider over any header, as a backend could build by hand. */
  async function signedByProvider(header: Record<string, unknown>): Promise<string> {
    const b64 = (v: unknown) => btoa(JSON.stringify(v)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
    const claims = { iss: backend.provider, sub: backend.id, jti: 'dispatch-1', model: 'embed', output_sha256: '00'.repeat(32), units: { input: 1, output: 1 } };
    const input = `${b64({ alg: 'EdDSA', typ: TYP.attestation, ...header })}.${b64(claims)}`;
    const key = (await importJWK(provider.privateJwk, 'EdDSA')) as CryptoKey;
    const sig = new Uint8Array(await crypto.subtle.sign('Ed25519', key, new TextEncoder().encode(input)));
    return `${input}.${btoa(String.fromCharCode(...sig)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '')}`;
  }

  it('reads and verifies one signed by hand the same way', async () => {
    expect(await signatureProblem(await signedByProvider({}), backend)).toBeUndefined();
  });

  it.each([
    ['crit', { crit: ['exp'], exp: 1 }, /crit, b64/],
    ['an unencoded payload (b64)', { b64: true, crit: ['b64'] }, /crit, b64/],
    ['another algorithm', { alg: 'none' }, /not EdDSA/],
  ])('refuses a header with %s, even when signed by the provider', async (_what, header, reason) => {
    const att = await signedByProvider(header);
    expect(attestationClaims(att, backend, expectation)).toMatch(reason);
    expect(await signatureProblem(att, backend)).toMatch(reason);
  });

  it('refuses an attestation signed by the provider that names another backend', async () => {
    const att = await attestation(provider.privateJwk, { sub: 'att-2' });
    expect(attestationClaims(att, backend, expectation)).toBe('attestation names another provider or backend');
    expect(await signatureProblem(att, backend)).toBe('attestation names another provider or backend');
  });
});
