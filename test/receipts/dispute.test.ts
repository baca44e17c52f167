/**
 * The offline verifier of fraud proofs (receipts/dispute.ts): valid proven,
 * unresolved and signature disputes verify; each piece tampered with (and
 * re-signed by the mesh where the mesh signs it) fails with its own code;
 * a batch's disputed receipts are justified by proven disputes or penalties.
 */

import { beforeAll, describe, expect, it } from 'vitest';
import { verifyBatchDisputes, verifyDispute, type DisputeReport } from '../../receipts/dispute.ts';
import { leafHash, merkleRoot, toHex } from '../../receipts/merkle.ts';
import { sortedTotals, totalsOf } from '../../receipts/totals.ts';
import { verifyBatch, VerifyError } from '../../receipts/verify.ts';
import { TYP, type AttestationClaims, type BatchClaims, type ReceiptClaims } from '../../shared/jwt.ts';
import {
  answer,
  buildDispute,
  embedding,
  noisy,
  provenMismatch,
  resign,
  sign,
  signatureDispute,
  signer,
  signReceipt,
  world,
  type Built,
  type Provider,
  type World,
} from '../helpers/dispute-fixtures.ts';
import { failure, receiptClaims, TEST_ISSUER } from '../helpers/receipts.ts';

let w: World;
let a: Provider;
let b: Provider;
let c: Provider;
let d: Provider;
let proven: Built;
let signature: Built;

beforeAll(async () => {
  w = await world();
  [a, b, c, d] = w.providers as [Provider, Provider, Provider, Provider];
  [proven, signature] = await Promise.all([provenMismatch(w), signatureDispute(w)]);
});

const codeOf = async (p: Promise<unknown>) => (await failure(p)).code;

/** The document with one run's field replaced, re-signed by the mesh. */
function withRun(built: Built, i: number, edit: (run: Built['claims']['runs'][number]) => void) {
  return resign(w, built, (claims) => edit(claims.runs[i]!));
}

describe('verifyDispute: valid fraud proofs', () => {
  it('verifies a proven mismatch and recomputes its comparisons', async () => {
    const report = await verifyDispute(proven.doc, w.jwks, { issuer: TEST_ISSUER });
    expect(report).toMatchObject({
      id: proven.doc.id,
      kind: 'mismatch',
      verdict: 'proven',
      accused: 'p-a',
      model: 'embed',
      withheld: [proven.receipts[0]!.jti],
      runs: [
        { role: 'answer', provider: 'p-a', backend: 'p-a-gpu-1', receipt: proven.receipts[0]!.jti },
        { role: 'check', provider: 'p-b', backend: 'p-b-gpu-1', receipt: proven.receipts[1]!.jti },
        { role: 'referee', provider: 'p-c', backend: 'p-c-gpu-1', receipt: proven.receipts[2]!.jti },
      ],
    });
    expect(report.comparisons.map(({ a, b, agree }) => [a, b, agree])).toEqual([
      ['answer', 'check', false],
      ['answer', 'referee', false],
      ['check', 'referee', true],
    ]);
    expect(report.comparisons[0]!.reason).toMatch(/^output "embeddings" element 500: /);
    expect(report.comparisons[2]!.reason).toBeUndefined();
  });

  it('verifies a proven mismatch whose check run is the accused one, with runs in any order', async () => {
    const honest = embedding(64, 7);
    const wrong = honest.map((v) => v + 0.5);
    const built = await buildDispute(w, {
      runs: [
        { role: 'referee', provider: c, output: answer(noisy(honest)) },
        { role: 'check', provider: b, output: answer(wrong) },
        { role: 'answer', provider: a, output: answer(honest) },
      ],
      accused: b,
    });
    const report = await verifyDispute(built.doc, w.jwks);
    expect(report).toMatchObject({ verdict: 'proven', accused: 'p-b', withheld: [built.receipts[1]!.jti] });
    expect(report.comparisons.map((x) => `${x.a}-${x.b}`)).toEqual(['answer-check', 'answer-referee', 'check-referee']);
  });

  it('verifies unresolved mismatches: two runs, or a referee that agrees with neither or with both', async () => {
    const x = embedding(32, 3);
    const two = await buildDispute(w, { runs: [{ role: 'answer', provider: a, output: answer(x) }, { role: 'check', provider: b, output: answer(x.map((v) => v + 1)) }] });
    const neither = await buildDispute(w, {
      runs: [
        { role: 'answer', provider: a, output: answer(x) },
        { role: 'check', provider: b, output: answer(x.map((v) => v + 1)) },
        { role: 'referee', provider: c, output: answer(x.map((v) => v - 1)) },
      ],
    });
    // Within the rule of both, not of each other: tolerance is not transitive.
    const both = await buildDispute(w, {
      runs: [
        { role: 'answer', provider: a, output: answer([0]) },
        { role: 'check', provider: b, output: answer([1.5e-4]) },
        { role: 'referee', provider: c, output: answer([0.75e-4]) },
      ],
    });
    for (const built of [two, neither, both]) {
      const report = await verifyDispute(built.doc, w.jwks);
      expect(report).toMatchObject({ kind: 'mismatch', verdict: 'unresolved', accused: null, withheld: [] });
    }
    expect((await verifyDispute(two.doc, w.jwks)).comparisons).toHaveLength(1);
    expect((await verifyDispute(both.doc, w.jwks)).comparisons.map((x) => x.agree)).toEqual([false, true, true]);
  });

  it('proves a run whose answer is not an OIP answer at all, naming the run in the reason', async () => {
    const x = embedding(8, 11);
    const built = await buildDispute(w, {
      runs: [
        { role: 'answer', provider: a, output: answer(x) },
        { role: 'check', provider: b, output: new TextEncoder().encode('{"error": "oops"}') },
        { role: 'referee', provider: c, output: answer(noisy(x)) },
      ],
      accused: b,
    });
    const report = await verifyDispute(built.doc, w.jwks);
    expect(report).toMatchObject({ verdict: 'proven', accused: 'p-b' });
    expect(report.comparisons[0]).toEqual({ a: 'answer', b: 'check', agree: false, reason: 'the check run\'s answer is not an OIP answer: "outputs" is not an array' });
    expect(report.comparisons[2]!.reason).toBe('the check run\'s answer is not an OIP answer: "outputs" is not an array');
  });

  it('verifies a signature dispute: the attestation does not verify with the admitted key', async () => {
    const report = await verifyDispute(signature.doc, w.jwks, { issuer: TEST_ISSUER });
    expect(report).toEqual({
      id: signature.doc.id,
      kind: 'signature',
      verdict: 'proven',
      accused: 'p-d',
      model: 'embed',
      withheld: [signature.receipts[0]!.jti],
      runs: [{ role: 'answer', provider: 'p-d', backend: 'p-d-gpu-1', receipt: signature.receipts[0]!.jti }],
      comparisons: [],
    });
  });

  it("keeps proving a fraud after the time the accused's attestation claims for itself (exp, nbf): a provider cannot date its evidence", async () => {
    const honest = embedding(64, 5);
    const now = Math.floor(Date.now() / 1000);
    // The edge reads only the attestation claims it needs, so a liar can add its own `exp` or `nbf`.
    const built = await buildDispute(w, {
      runs: [
        { role: 'answer', provider: a, output: answer(honest.map((v) => v + 0.5)), attestation: { exp: now + 60 } as Partial<AttestationClaims> },
        { role: 'check', provider: b, output: answer(honest) },
        { role: 'referee', provider: c, output: answer(noisy(honest)), attestation: { nbf: now + 365 * 86400 } as Partial<AttestationClaims> },
      ],
      accused: a,
    });
    // Checked right away, and by an auditor a day later.
    for (const currentDate of [undefined, new Date((now + 86400) * 1000)]) {
      const report = await verifyDispute(built.doc, w.jwks, currentDate ? { currentDate } : {});
      expect(report).toMatchObject({ verdict: 'proven', accused: 'p-a', withheld: [built.receipts[0]!.jti] });
    }
  });
});

describe('verifyDispute: the mesh-signed dispute', () => {
  it('refuses a tampered, foreign, mistyped or misissued dispute, with the receipt verifier\'s codes', async () => {
    const [h, p, s] = proven.doc.dispute.split('.');
    const claims = JSON.parse(Buffer.from(p!, 'base64url').toString()) as Record<string, unknown>;
    const tampered = `${h}.${Buffer.from(JSON.stringify({ ...claims, accused: 'p-b' })).toString('base64url')}.${s}`;
    expect(await codeOf(verifyDispute({ ...proven.doc, dispute: tampered }, w.jwks))).toBe('bad_signature');
    const outsider = await signer('outsider');
    const foreign = await failure(verifyDispute({ ...proven.doc, dispute: await sign(proven.claims, outsider, TYP.dispute) }, w.jwks));
    expect(foreign).toEqual({ code: 'unknown_kid', message: `dispute ${proven.doc.id}: no EdDSA key with kid "outsider" in the JWKS` });
    expect(await codeOf(verifyDispute({ ...proven.doc, dispute: await sign(proven.claims, w.mesh, TYP.receipt) }, w.jwks))).toBe('wrong_typ');
    expect(await codeOf(verifyDispute(proven.doc, w.jwks, { issuer: 'https://other.mesh' }))).toBe('wrong_issuer');
    expect(await codeOf(verifyDispute(proven.doc, { keys: [] }))).toBe('unknown_kid');
  });

  it('refuses a document whose id is not the signed one, and malformed documents', async () => {
    expect(await failure(verifyDispute({ ...proven.doc, id: 'd-1764083700000-ffffffff' }, w.jwks))).toEqual({
      code: 'id_mismatch',
      message: `dispute document says id d-1764083700000-ffffffff, but its signed dispute is "${proven.doc.id}"`,
    });
    for (const bad of [null, [], 'x', { id: proven.doc.id }, { ...proven.doc, outputs: [] }, { ...proven.doc, outputs: { x: 1 } }]) {
      expect(await codeOf(verifyDispute(bad, w.jwks)), JSON.stringify(bad)?.slice(0, 40)).toBe('malformed');
    }
    expect(await codeOf(verifyDispute({ ...proven.doc, dispute: 'not.a.jwt' }, w.jwks))).toBe('malformed');
  });

  it('refuses ill-formed claims', async () => {
    const cases: [string, (cl: Built['claims']) => void][] = [
      ['kind', (cl) => ((cl as { kind: string }).kind = 'vibes')],
      ['verdict', (cl) => ((cl as { verdict: string }).verdict = 'maybe')],
      ['rule', (cl) => (cl.rule = { float: { abs: 2, rel: 0 } })],
      ['input_sha256', (cl) => (cl.input_sha256 = 'abc')],
      ['withheld twice', (cl) => (cl.withheld = ['x', 'x'])],
      ['one run', (cl) => (cl.runs = cl.runs.slice(0, 1))],
      ['same role twice', (cl) => (cl.runs[2]!.role = 'check')],
      ['no check', (cl) => (cl.runs[1]!.role = 'referee')],
      ['same provider twice', (cl) => (cl.runs[2]!.provider = 'p-a')],
      ['private jwk', (cl) => Object.assign(cl.runs[0]!.public_jwk, { d: 'secret' })],
      ['bad role', (cl) => ((cl.runs[0] as { role: string }).role = 'judge')],
      ['output hash', (cl) => (cl.runs[0]!.output_sha256 = 'zz')],
    ];
    for (const [what, edit] of cases) {
      expect(await codeOf(verifyDispute(await resign(w, proven, edit), w.jwks)), what).toBe('invalid_claim');
    }
    const { withheld: _, ...rest } = proven.claims;
    const f = await failure(verifyDispute({ ...proven.doc, dispute: await sign(rest, w.mesh, TYP.dispute) }, w.jwks));
    expect(f).toEqual({ code: 'missing_claim', message: `dispute ${proven.doc.id}: missing claim "withheld"` });
  });
});

describe('verifyDispute: tampered evidence', () => {
  it('refuses answer bytes that are not the run\'s (output_mismatch), or absent (output_missing)', async () => {
    const hash = proven.claims.runs[0]!.output_sha256;
    const swapped = { ...proven.doc, outputs: { ...proven.doc.outputs, [hash]: proven.doc.outputs[proven.claims.runs[1]!.output_sha256]! } };
    const f = await failure(verifyDispute(swapped, w.jwks));
    expect(f.code).toBe('output_mismatch');
    expect(f.message).toMatch(new RegExp(`^dispute ${proven.doc.id} run 0 \\(answer, provider p-a\\): the bytes of output ${hash} hash to [0-9a-f]{64}$`));
    const { [hash]: _, ...fewer } = proven.doc.outputs;
    expect(await failure(verifyDispute({ ...proven.doc, outputs: fewer }, w.jwks))).toEqual({
      code: 'output_missing',
      message: `dispute ${proven.doc.id} run 0 (answer, provider p-a): the document has no output ${hash}`,
    });
    expect(await codeOf(verifyDispute({ ...proven.doc, outputs: { ...proven.doc.outputs, [hash]: 'not base64!' } }, w.jwks))).toBe('malformed');
  });

  it('refuses a verdict, accused or withheld that the evidence does not give', async () => {
    const unresolved = await resign(w, proven, (cl) => Object.assign(cl, { verdict: 'unresolved', accused: null, withheld: [] }));
    expect(await failure(verifyDispute(unresolved, w.jwks))).toEqual({
      code: 'verdict_mismatch',
      message: `dispute ${proven.doc.id}: verdict is "unresolved", but its evidence gives "proven"`,
    });
    const accused = await resign(w, proven, (cl) => (cl.accused = 'p-b'));
    expect(await failure(verifyDispute(accused, w.jwks))).toEqual({
      code: 'verdict_mismatch',
      message: `dispute ${proven.doc.id}: accused is "p-b", but its evidence gives "p-a"`,
    });
    const withheld = await resign(w, proven, (cl) => (cl.withheld = [proven.receipts[1]!.jti]));
    expect((await failure(verifyDispute(withheld, w.jwks))).message).toContain('withheld is ["rcpt-');
    const more = await resign(w, proven, (cl) => cl.withheld.push(proven.receipts[1]!.jti));
    expect(await codeOf(verifyDispute(more, w.jwks))).toBe('verdict_mismatch');
  });

  it('refuses a rule changed so that the runs agree', async () => {
    const loose = await resign(w, proven, (cl) => (cl.rule = { float: { abs: 0.1, rel: 0 } }));
    expect(await failure(verifyDispute(loose, w.jwks))).toEqual({
      code: 'verdict_mismatch',
      message: `dispute ${proven.doc.id}: the answer and check runs agree under the dispute's rule; there is no mismatch`,
    });
    // Strict enough that the honest runs differ too: nothing is proven any more.
    const strict = await resign(w, proven, (cl) => (cl.rule = { float: { abs: 0, rel: 0 } }));
    expect((await failure(verifyDispute(strict, w.jwks))).message).toBe(`dispute ${proven.doc.id}: verdict is "proven", but its evidence gives "unresolved"`);
  });

  it('refuses a run whose receipt is not the run\'s', async () => {
    const r0 = proven.receipts[0]!;
    const cases: [string, Partial<ReceiptClaims>][] = [
      ['provider', { provider: 'p-z' }],
      ['backend', { backend: 'other-gpu' }],
      ['attestation', { attestation: proven.claims.runs[1]!.attestation }],
      ['model', { model: 'other-model' }],
    ];
    for (const [what, over] of cases) {
      const receipt = await signReceipt(w, r0, over);
      const f = await failure(verifyDispute(await resign(w, proven, (cl) => (cl.runs[0]!.receipt = receipt)), w.jwks));
      expect(f.code, what).toBe('receipt_mismatch');
      expect(f.message, what).toContain(`run 0 (answer, provider p-a) receipt (jti ${r0.jti}): ${what}`);
    }
    // A receipt of another run; one that checks another answer; a tampered one; one from another issuer.
    expect(await codeOf(verifyDispute(await resign(w, proven, (cl) => (cl.runs[1]!.receipt = cl.runs[0]!.receipt)), w.jwks))).toBe('receipt_mismatch');
    const checksOther = await signReceipt(w, proven.receipts[1]!, { checks: 'rcpt-someone-else' });
    expect(await codeOf(verifyDispute(await resign(w, proven, (cl) => (cl.runs[1]!.receipt = checksOther)), w.jwks))).toBe('receipt_mismatch');
    const [h, , s] = proven.claims.runs[0]!.receipt.split('.');
    const forged = `${h}.${Buffer.from(JSON.stringify({ ...r0, amount: 1 })).toString('base64url')}.${s}`;
    expect(await codeOf(verifyDispute(await resign(w, proven, (cl) => (cl.runs[0]!.receipt = forged)), w.jwks))).toBe('bad_signature');
    const otherIssuer = await signReceipt(w, r0, { iss: 'https://other.mesh' });
    expect(await codeOf(verifyDispute(await resign(w, proven, (cl) => (cl.runs[0]!.receipt = otherIssuer)), w.jwks))).toBe('wrong_issuer');
  });

  it('refuses an attestation signed with another key, or whose claims are not the run\'s', async () => {
    const forged = await buildDispute(w, {
      runs: [
        { role: 'answer', provider: a, output: answer([1]), attestWith: await signer(a.signer.kid) },
        { role: 'check', provider: b, output: answer([2]) },
      ],
    });
    expect(await failure(verifyDispute(forged.doc, w.jwks))).toEqual({
      code: 'bad_attestation',
      message: `dispute ${forged.doc.id} run 0 (answer, provider p-a) attestation: signature does not verify with provider p-a's admitted key`,
    });
    // The run's key swapped for another provider's: the honest attestation no longer verifies.
    expect(await codeOf(verifyDispute(await withRun(proven, 1, (run) => (run.public_jwk = { ...proven.claims.runs[2]!.public_jwk })), w.jwks))).toBe(
      'bad_attestation',
    );
    const claimsCases: [string, Parameters<typeof buildDispute>[1]['runs'][number]['attestation']][] = [
      ['iss', { iss: 'p-b' }],
      ['sub', { sub: 'another-backend' }],
      ['model', { model: 'other-model' }],
      ['output_sha256', { output_sha256: 'e'.repeat(64) }],
    ];
    for (const [what, attestation] of claimsCases) {
      const built = await buildDispute(w, {
        runs: [
          { role: 'answer', provider: a, output: answer([1]), attestation },
          { role: 'check', provider: b, output: answer([2]) },
        ],
      });
      const f = await failure(verifyDispute(built.doc, w.jwks));
      expect(f.code, what).toBe('bad_attestation');
      expect(f.message, what).toContain(`attestation: ${what} is `);
    }
    // Wrong typ on the attestation (signed as a heartbeat), with the receipt carrying it.
    const typed = await sign({ iss: 'p-a' }, a.signer, TYP.heartbeat);
    const receipt = await signReceipt(w, proven.receipts[0]!, { attestation: typed });
    const f = await failure(verifyDispute(await withRun(proven, 0, (run) => Object.assign(run, { attestation: typed, receipt })), w.jwks));
    expect(f).toEqual({
      code: 'bad_attestation',
      message: `dispute ${proven.doc.id} run 0 (answer, provider p-a) attestation: typ is "mesh-heartbeat+jwt", expected "mesh-attestation+jwt"`,
    });
  });

  it('refuses a signature dispute whose attestation does verify, or that claims less than it proves', async () => {
    const honest = await buildDispute(w, { kind: 'signature', runs: [{ role: 'answer', provider: d, output: answer([1]) }], accused: d });
    expect(await failure(verifyDispute(honest.doc, w.jwks))).toEqual({
      code: 'verdict_mismatch',
      message: `dispute ${honest.doc.id}: the attestation of provider p-d verifies with its admitted key; there is no signature fraud`,
    });
    expect(await codeOf(verifyDispute(await resign(w, signature, (cl) => Object.assign(cl, { verdict: 'unresolved', accused: null, withheld: [] })), w.jwks))).toBe(
      'verdict_mismatch',
    );
    expect(await codeOf(verifyDispute(await resign(w, signature, (cl) => (cl.withheld = [])), w.jwks))).toBe('verdict_mismatch');
    expect(await codeOf(verifyDispute(await resign(w, signature, (cl) => (cl.runs = [...cl.runs, ...proven.claims.runs.slice(1, 2)])), w.jwks))).toBe(
      'invalid_claim',
    );
    expect(await codeOf(verifyDispute(await resign(w, signature, (cl) => (cl.runs[0]!.role = 'check')), w.jwks))).toBe('invalid_claim');
  });
});

describe('verifyBatchDisputes', () => {
  let reports: { proven: DisputeReport; signature: DisputeReport; unresolved: DisputeReport };
  beforeAll(async () => {
    const x = embedding(16, 9);
    const unresolved = await buildDispute(w, { runs: [{ role: 'answer', provider: c, output: answer(x) }, { role: 'check', provider: d, output: answer(x.map((v) => -v)) }] });
    reports = {
      proven: await verifyDispute(proven.doc, w.jwks),
      signature: await verifyDispute(signature.doc, w.jwks),
      unresolved: await verifyDispute(unresolved.doc, w.jwks),
    };
  });

  /** Receipts: the proven dispute's answer (p-a), two more of p-a (one as a redundant second), one of p-b, one of p-c. */
  const receipts = (): ReceiptClaims[] => [
    { ...proven.receipts[0]! },
    receiptClaims(1, { jti: 'rcpt-a-1', provider: 'p-a' }),
    receiptClaims(2, { jti: 'rcpt-b-a', provider: 'p-b', verify: 'redundant', second: { provider: 'p-a', backend: 'p-a-gpu-1', attestation: 'x.y.z' } }),
    receiptClaims(3, { jti: 'rcpt-b-1', provider: 'p-b' }),
    receiptClaims(4, { jti: 'rcpt-c-1', provider: 'p-c' }),
  ];
  const batch = (over: Partial<BatchClaims>): BatchClaims => ({
    iss: TEST_ISSUER,
    iat: 0,
    batch_id: 'b-1',
    shard: 0,
    epoch_start: 0,
    epoch_end: 1,
    count: 5,
    merkle_root: '0'.repeat(64),
    totals: { providers: {}, consumers: {} },
    disputed: [],
    ...over,
  });

  it('justifies a receipt the proven dispute withholds, and the accused\'s other receipts by its penalty', () => {
    const jtiA = proven.receipts[0]!.jti;
    const b = batch({ disputed: [jtiA, 'rcpt-a-1', 'rcpt-b-a'], penalties: [{ provider: 'p-a', dispute: proven.doc.id }] });
    expect(verifyBatchDisputes(b, receipts(), Object.values(reports))).toEqual({
      justified: [
        { jti: jtiA, dispute: proven.doc.id, how: 'withheld' },
        { jti: 'rcpt-a-1', dispute: proven.doc.id, how: 'penalty' },
        { jti: 'rcpt-b-a', dispute: proven.doc.id, how: 'penalty' },
      ],
      unproven: [],
    });
  });

  it('returns disputed receipts no proven dispute justifies as unproven', () => {
    const b = batch({ disputed: [proven.receipts[0]!.jti, 'rcpt-b-1', 'rcpt-c-1'] });
    expect(verifyBatchDisputes(b, receipts(), [reports.unresolved, reports.signature])).toEqual({ justified: [], unproven: [proven.receipts[0]!.jti, 'rcpt-b-1', 'rcpt-c-1'] });
    expect(verifyBatchDisputes(b, receipts(), Object.values(reports)).unproven).toEqual(['rcpt-b-1', 'rcpt-c-1']);
    expect(verifyBatchDisputes(batch({}), receipts(), [])).toEqual({ justified: [], unproven: [] });
  });

  it('refuses a penalty whose dispute is missing, unresolved, or proven against someone else', () => {
    const tryIt = (penalties: BatchClaims['penalties'], disputes: DisputeReport[]) => {
      try {
        verifyBatchDisputes(batch({ disputed: ['rcpt-b-1'], penalties }), receipts(), disputes);
      } catch (err) {
        if (err instanceof VerifyError) return { code: err.code, message: err.message };
        throw err;
      }
      return 'verified';
    };
    expect(tryIt([{ provider: 'p-a', dispute: proven.doc.id }], [])).toEqual({
      code: 'penalty_unjustified',
      message: `batch b-1 penalizes provider p-a for dispute ${proven.doc.id}, which is not among the disputes given`,
    });
    expect(tryIt([{ provider: 'p-c', dispute: reports.unresolved.id }], Object.values(reports))).toEqual({
      code: 'penalty_unjustified',
      message: `batch b-1 penalizes provider p-c for dispute ${reports.unresolved.id}, which is unresolved`,
    });
    expect(tryIt([{ provider: 'p-b', dispute: proven.doc.id }], Object.values(reports))).toEqual({
      code: 'penalty_unjustified',
      message: `batch b-1 penalizes provider p-b for dispute ${proven.doc.id}, which is proven against p-a`,
    });
    expect(tryIt([{ provider: 'p-d', dispute: signature.doc.id }], Object.values(reports))).toBe('verified');
  });

  it('checks a signed batch end to end: verifyBatch, then its disputes', async () => {
    const claims = receipts();
    const jwts = await Promise.all(claims.map((r) => sign(r, w.mesh, TYP.receipt)));
    const disputed = [proven.receipts[0]!.jti, 'rcpt-a-1', 'rcpt-b-a'];
    const penalties = [{ provider: 'p-a', dispute: proven.doc.id }];
    const signed = await sign(
      batch({
        iat: Math.floor(Date.now() / 1000),
        merkle_root: toHex(merkleRoot(jwts.map(leafHash))),
        totals: sortedTotals(totalsOf(claims, new Set(disputed))),
        disputed,
        penalties,
      }),
      w.mesh,
      TYP.batch,
    );
    const verified = await verifyBatch(signed, jwts, w.jwks);
    expect(verified.claims.totals.withheld).toEqual({ 'p-a': proven.receipts[0]!.amount + 101 + 51, 'p-b': 51 });
    const { justified, unproven } = verifyBatchDisputes(verified.claims, verified.receipts, [reports.proven]);
    expect(justified.map((j) => j.how)).toEqual(['withheld', 'penalty', 'penalty']);
    expect(unproven).toEqual([]);
  });
});
