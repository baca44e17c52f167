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
import { settleAttestation } from '../../../workers/inference/attestation.ts';
import { disputeKey, type DisputeDocument, type Execution } from '../../../workers/verification/disputes.ts';
import { ledgerShard, shardOfReceipt } from '../../../workers/settlement/ledger.ts';

const provider = await generateEd25519('prov-att-key');
const stranger = await generateEd25519('stranger-att-key');

const backend: BackendEntry = {
  id: 'att-1',
  provider: 'prov-att',
  providerKey: provider.publicJwk as JWK,
  region: 'eu-west',
  url: 'http://127.0.0.1:1',
  lat: 50.11,
  lon: 8.68,
  executionProvider: 'cpu',
  ready: true,
  models: [],
  capacity: { slots: 1, inFlight: 0, queued: 0 },
  lastSeen: 0,
  expiresAt: Date.now() + 60_000,
};

async function attestation(jwk: JWK): Promise<string> {
  return new SignJWT({ jti: 'dispatch-1', model: 'embed', output_sha256: '00'.repeat(32), units: { input: 1, output: 1 } })
    .setProtectedHeader({ alg: 'EdDSA', typ: TYP.attestation, kid: 'k' })
    .setIssuer(backend.provider)
    .setSubject(backend.id)
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
