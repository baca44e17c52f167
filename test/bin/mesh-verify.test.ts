import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { importJWK, SignJWT, type CryptoKey } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateEd25519 } from '../../shared/keys.ts';
import { runCli } from '../helpers/cli.ts';
import { inclusionProof, leafHash, merkleRoot, toHex } from '../../receipts/merkle.ts';
import { sortedTotals, totalsOf } from '../../receipts/totals.ts';
import { TYP, type BatchClaims, type ReceiptClaims } from '../../shared/jwt.ts';
import { receiptClaims } from '../helpers/receipts.ts';
import { answer, buildDispute, embedding, provenMismatch, resign, sign as signWith, signatureDispute, world, type Built, type World } from '../helpers/dispute-fixtures.ts';

/** The CLI runs as a real child process on this Node (22, which runs the .ts directly). */
const CLI = fileURLToPath(new URL('../../bin/mesh-verify.ts', import.meta.url));
const BATCH_ID = '1764083700123-03-000042';
const ISSUER = 'https://mesh.test';

/** Runs `mesh-verify args...`, feeding `stdin`; killed after 20 s. */
const cli = (args: string[], stdin = '') => runCli(CLI, args, { stdin });

let dir: string;
let receipts: string[];
let batchJwt: string;
let jwksServer: Server;
let jwksUrl: string;
const path = (name: string) => join(dir, name);


/** Flips one payload field while keeping the signature: a tampered receipt. */
function tamper(jwt: string): string {
  const [h, p, s] = jwt.split('.');
  const claims = JSON.parse(Buffer.from(p!, 'base64url').toString()) as ReceiptClaims;
  claims.amount = 1;
  return `${h}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.${s}`;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mesh-verify-'));
  const mesh = await generateEd25519('mesh-2025-02');
  const other = await generateEd25519('other');
  const key = (await importJWK(mesh.privateJwk, 'EdDSA')) as CryptoKey;
  const sign = (payload: object, typ: string) => new SignJWT({ ...payload }).setProtectedHeader({ alg: 'EdDSA', typ, kid: mesh.publicJwk.kid! }).sign(key);

  receipts = await Promise.all(Array.from({ length: 5 }, (_, i) => sign(receiptClaims(i), TYP.receipt)));
  const leaves = receipts.map(leafHash);
  const batchOf = (jwts: string[]): BatchClaims => ({
    iss: ISSUER,
    iat: Math.floor(Date.now() / 1000),
    batch_id: BATCH_ID,
    shard: 3,
    epoch_start: 1764083640123,
    epoch_end: 1764083700123,
    count: jwts.length,
    merkle_root: toHex(merkleRoot(jwts.map(leafHash))),
    totals: sortedTotals(totalsOf(jwts.map((_, i) => receiptClaims(i)))),
    disputed: [],
  });
  const batch = batchOf(receipts);
  batchJwt = await sign(batch, TYP.batch);
  const proof = { batch_id: BATCH_ID, leaf_index: 2, tree_size: 5, audit_path: inclusionProof(leaves, 2).map(toHex) };
  const jwks = JSON.stringify({ keys: [mesh.publicJwk] });

  // The three line formats receipts.ndjson may use, and a blank line.
  const ndjson = receipts
    .map((r, i) => (i % 3 === 0 ? JSON.stringify({ receipt: r, jti: `rcpt-${i}` }) : i % 3 === 1 ? JSON.stringify(r) : r))
    .join('\n');
  const tampered = receipts.map((r, i) => JSON.stringify({ receipt: i === 3 ? tamper(r) : r })).join('\n');
  const badPath = proof.audit_path.map((h, j) => (j === 0 ? `${h[0] === '0' ? '1' : '0'}${h.slice(1)}` : h));

  await Promise.all([
    writeFile(path('jwks.json'), jwks),
    writeFile(path('other-jwks.json'), JSON.stringify({ keys: [other.publicJwk] })),
    writeFile(path('receipt.jwt'), `${receipts[2]}\n`),
    writeFile(path('receipt.json'), JSON.stringify({ receipt: receipts[2] })),
    writeFile(path('batch.jwt'), batchJwt),
    writeFile(path('batch.json'), JSON.stringify({ id: BATCH_ID, batch: batchJwt })),
    writeFile(path('wrong-id.json'), JSON.stringify({ id: '1764083700123-03-000041', batch: batchJwt })),
    writeFile(path('receipts.ndjson'), `${ndjson}\n\n`),
    writeFile(path('tampered.ndjson'), tampered),
    writeFile(path('proof.json'), JSON.stringify(proof)),
    writeFile(path('bad-proof.json'), JSON.stringify({ ...proof, audit_path: badPath })),
    writeFile(path('not-json.ndjson'), `${receipts[0]}\n{"receipt": \n`),
  ]);
  await mkdir(path('archive'));
  await Promise.all([
    writeFile(join(dir, 'archive', 'batch.json'), JSON.stringify({ id: BATCH_ID, batch: batchJwt })),
    writeFile(join(dir, 'archive', 'receipts.ndjson'), receipts.map((r) => JSON.stringify({ receipt: r })).join('\n')),
    writeFile(join(dir, 'archive', 'jwks.json'), jwks),
  ]);

  // Forged archives: an attacker who can write the archive swaps its jwks.json for their own key (under the
  // real kid, or a new one) and re-signs every receipt and the batch with it, or re-signs them and leaves
  // the honest jwks.json in place; and an honest batch whose jwks.json gained an extra key.
  const forgedArchives = [['forged-same-kid', mesh.publicJwk.kid!, true], ['forged-new-kid', 'attacker-1', true], ['forged-honest-jwks', mesh.publicJwk.kid!, false]] as const;
  for (const [name, kid, swapJwks] of forgedArchives) {
    const attacker = await generateEd25519(kid);
    const attackerKey = (await importJWK(attacker.privateJwk, 'EdDSA')) as CryptoKey;
    const forge = (payload: object, typ: string) => new SignJWT({ ...payload }).setProtectedHeader({ alg: 'EdDSA', typ, kid }).sign(attackerKey);
    const forged = await Promise.all(Array.from({ length: 5 }, (_, i) => forge(receiptClaims(i), TYP.receipt)));
    await mkdir(path(name));
    await Promise.all([
      writeFile(join(dir, name, 'batch.json'), JSON.stringify({ id: BATCH_ID, batch: await forge(batchOf(forged), TYP.batch) })),
      writeFile(join(dir, name, 'receipts.ndjson'), forged.map((r) => JSON.stringify({ receipt: r })).join('\n')),
      writeFile(join(dir, name, 'jwks.json'), swapJwks ? JSON.stringify({ keys: [attacker.publicJwk] }) : jwks),
    ]);
  }
  await mkdir(path('extra-key'));
  await Promise.all([
    writeFile(join(dir, 'extra-key', 'batch.json'), JSON.stringify({ id: BATCH_ID, batch: batchJwt })),
    writeFile(join(dir, 'extra-key', 'receipts.ndjson'), receipts.map((r) => JSON.stringify({ receipt: r })).join('\n')),
    writeFile(join(dir, 'extra-key', 'jwks.json'), JSON.stringify({ keys: [mesh.publicJwk, other.publicJwk] })),
  ]);

  jwksServer = createServer((req, res) => {
    if (req.url === '/.well-known/jwks.json' || req.url === '/.well-known/jwks-archive.json') res.writeHead(200, { 'content-type': 'application/json' }).end(jwks);
    else res.writeHead(404).end();
  });
  await new Promise<void>((ok) => jwksServer.listen(0, '127.0.0.1', ok));
  jwksUrl = `http://127.0.0.1:${(jwksServer.address() as AddressInfo).port}/.well-known/jwks.json`;
});

afterAll(async () => {
  await new Promise((ok) => jwksServer?.close(ok));
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('mesh-verify: valid material', () => {
  it('verifies a receipt from a file, a JSON file, the argument and stdin', async () => {
    const runs = await Promise.all([
      cli(['receipt', path('receipt.jwt'), '--jwks', path('jwks.json')]),
      cli(['receipt', path('receipt.json'), '--jwks', path('jwks.json'), '--issuer', ISSUER]),
      cli(['receipt', receipts[2]!, '--jwks', path('jwks.json')]),
      cli(['receipt', '-', '--jwks', path('jwks.json')], `${receipts[2]}\n`),
    ]);
    for (const run of runs) {
      expect(run, run.stderr).toMatchObject({ code: 0, stderr: '' });
      expect(run.stdout).toBe('ok  receipt rcpt-000002: embed@1 by provider p0 for consumer consumer-2, 102 micro-USD, 6+3 units\n');
    }
  });

  it('verifies a batch (batch.json or the bare JWT) against mixed-format ndjson, with a file or URL JWKS', async () => {
    const runs = await Promise.all([
      cli(['batch', path('batch.json'), '--receipts', path('receipts.ndjson'), '--jwks', path('jwks.json')]),
      cli(['batch', path('batch.jwt'), '--receipts', path('receipts.ndjson'), '--jwks', jwksUrl]),
    ]);
    for (const run of runs) {
      expect(run.code, run.stderr).toBe(0);
      expect(run.stdout).toMatch(/^ok {2}batch 1764083700123-03-000042: 5 receipts, root [0-9a-f]{12}…, totals verified \(2 providers, 3 consumers\)\n$/);
    }
  });

  it('prints one JSON object with --json', async () => {
    const run = await cli(['batch', path('batch.json'), '--receipts', path('receipts.ndjson'), '--jwks', path('jwks.json'), '--json']);
    expect(run.code, run.stderr).toBe(0);
    const out = JSON.parse(run.stdout) as Record<string, unknown>;
    expect(out).toMatchObject({ ok: true, command: 'batch', batch_id: BATCH_ID, count: 5, disputed: [] });
    expect(out.totals).toEqual({ providers: { p0: 100 + 102 + 104, p1: 101 + 103 }, consumers: { 'consumer-0': 203, 'consumer-1': 205, 'consumer-2': 102 }, withheld: {} });
  });

  it('verifies an inclusion proof and an archive folder', async () => {
    const [proof, archive] = await Promise.all([
      cli(['proof', path('receipt.jwt'), '--proof', path('proof.json'), '--batch', path('batch.json'), '--jwks', path('jwks.json')]),
      cli(['archive', path('archive'), '--jwks', path('jwks.json')]),
    ]);
    expect(proof.code, proof.stderr).toBe(0);
    expect(proof.stdout).toMatch(/^ok {2}receipt rcpt-000002 is leaf 2 of 5 in batch 1764083700123-03-000042 \(root [0-9a-f]{12}…\)\n$/);
    expect(archive.code, archive.stderr).toBe(0);
    expect(archive.stdout).toMatch(/^ok {2}batch 1764083700123-03-000042: 5 receipts, .*; archive jwks\.json matches the trusted JWKS \(1 key\)\n$/);
  });

  it('verifies an honest archive against the edge\'s jwks-archive.json URL', async () => {
    const run = await cli(['archive', path('archive'), '--jwks', jwksUrl.replace('jwks.json', 'jwks-archive.json'), '--json']);
    expect(run.code, run.stderr).toBe(0);
    expect(JSON.parse(run.stdout)).toMatchObject({ ok: true, command: 'archive', batch_id: BATCH_ID, count: 5, archive_jwks: 'matches' });
  });
});

describe('mesh-verify: failures exit 1 with a FAIL line', () => {
  it('names a tampered receipt line in receipts.ndjson', async () => {
    const run = await cli(['batch', path('batch.json'), '--receipts', path('tampered.ndjson'), '--jwks', path('jwks.json')]);
    expect(run).toEqual({ code: 1, stdout: '', stderr: 'FAIL  receipt 3 (jti rcpt-000003): signature does not verify (kid mesh-2025-02)\n' });
  });

  it('refuses a bad proof, a proof against the wrong batch id, and a batch.json whose id is not its batch', async () => {
    const [bad, json, wrongId] = await Promise.all([
      cli(['proof', path('receipt.jwt'), '--proof', path('bad-proof.json'), '--batch', path('batch.jwt'), '--jwks', path('jwks.json')]),
      cli(['proof', path('receipt.jwt'), '--proof', path('bad-proof.json'), '--batch', path('batch.jwt'), '--jwks', path('jwks.json'), '--json']),
      cli(['batch', path('wrong-id.json'), '--receipts', path('receipts.ndjson'), '--jwks', path('jwks.json')]),
    ]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^FAIL {2}receipt \(jti rcpt-000002\) is not leaf 2 of batch 1764083700123-03-000042: the audit path does not lead/);
    expect(json.code).toBe(1);
    expect(JSON.parse(json.stdout)).toMatchObject({ ok: false, command: 'proof', code: 'not_included' });
    expect(wrongId.code).toBe(1);
    expect(wrongId.stderr).toContain('batch file says id 1764083700123-03-000041');
  });

  it('refuses an archive whose jwks.json was swapped for an attacker\'s key and its batch re-signed with it', async () => {
    const [sameKid, newKid, sameKidJson] = await Promise.all([
      cli(['archive', path('forged-same-kid'), '--jwks', path('jwks.json')]),
      cli(['archive', path('forged-new-kid'), '--jwks', jwksUrl]),
      cli(['archive', path('forged-same-kid'), '--jwks', path('jwks.json'), '--json']),
    ]);
    expect(sameKid).toEqual({
      code: 1,
      stdout: '',
      stderr: `FAIL  ${join(path('forged-same-kid'), 'jwks.json')}: key "mesh-2025-02" differs from the trusted JWKS's key of that kid; the archive's keys were replaced\n`,
    });
    expect(newKid.code).toBe(1);
    expect(newKid.stderr).toBe(`FAIL  ${join(path('forged-new-kid'), 'jwks.json')}: key "attacker-1" is not in the trusted JWKS; the archive's keys were replaced or added to\n`);
    expect(JSON.parse(sameKidJson.stdout)).toMatchObject({ ok: false, command: 'archive', code: 'jwks_mismatch' });
  });

  it('verifies the batch with the trusted key even when the archive\'s jwks.json is the honest one', async () => {
    // jwks.json matches the trusted JWKS, but batch and receipts carry the attacker's signatures.
    const run = await cli(['archive', path('forged-honest-jwks'), '--jwks', path('jwks.json')]);
    expect(run.code).toBe(1);
    expect(run.stderr).toBe(`FAIL  batch ${BATCH_ID}: signature does not verify (kid mesh-2025-02)\n`);
  });

  it('refuses an honest batch whose archive jwks.json holds a key the trusted JWKS lacks', async () => {
    const run = await cli(['archive', path('extra-key'), '--jwks', path('jwks.json')]);
    expect(run.code).toBe(1);
    expect(run.stderr).toBe(`FAIL  ${join(path('extra-key'), 'jwks.json')}: key "other" is not in the trusted JWKS; the archive's keys were replaced or added to\n`);
  });

  it('refuses an archive checked against another JWKS, the wrong issuer, and an unparseable ndjson line', async () => {
    const [archive, issuer, notJson] = await Promise.all([
      cli(['archive', path('archive'), '--jwks', path('other-jwks.json')]),
      cli(['receipt', path('receipt.jwt'), '--jwks', path('jwks.json'), '--issuer', 'https://other.mesh']),
      cli(['batch', path('batch.json'), '--receipts', path('not-json.ndjson'), '--jwks', path('jwks.json')]),
    ]);
    expect(archive.code).toBe(1);
    expect(archive.stderr).toBe(`FAIL  ${join(path('archive'), 'jwks.json')}: key "mesh-2025-02" is not in the trusted JWKS; the archive's keys were replaced or added to\n`);
    expect(issuer.code).toBe(1);
    expect(issuer.stderr).toContain('FAIL  receipt (jti rcpt-000002): issuer is "https://mesh.test", expected "https://other.mesh"');
    expect(notJson.code).toBe(1);
    expect(notJson.stderr).toBe(`FAIL  ${path('not-json.ndjson')} line 2: not valid JSON\n`);
  });
});

describe('mesh-verify: fraud proofs', () => {
  const DISPUTE_BATCH = '1764083760000-01-000007';
  let w: World;
  let proven: Built;
  let signature: Built;
  let unresolved: Built;
  const dp = (...parts: string[]) => join(dir, 'fraud', ...parts);

  beforeAll(async () => {
    w = await world();
    const [, , c, d] = w.providers;
    [proven, signature] = await Promise.all([provenMismatch(w), signatureDispute(w)]);
    const x = embedding(16, 5);
    unresolved = await buildDispute(w, { runs: [{ role: 'answer', provider: c!, output: answer(x) }, { role: 'check', provider: d!, output: answer(x.map((v) => v + 1)) }] });
    // A batch: the proven dispute's answer receipt (p-a, withheld by it), another p-a receipt (penalty), one of p-b, one of p-c.
    const claims = [
      proven.receipts[0]!,
      receiptClaims(1, { jti: 'rcpt-a-1', provider: 'p-a' }),
      receiptClaims(2, { jti: 'rcpt-b-1', provider: 'p-b' }),
      receiptClaims(3, { jti: 'rcpt-c-1', provider: 'p-c' }),
    ];
    const jwts = await Promise.all(claims.map((r) => signWith(r, w.mesh, TYP.receipt)));
    const batchWith = (disputed: string[]) =>
      signWith(
        {
          iss: ISSUER,
          iat: Math.floor(Date.now() / 1000),
          batch_id: DISPUTE_BATCH,
          shard: 1,
          epoch_start: 1764083700000,
          epoch_end: 1764083760000,
          count: jwts.length,
          merkle_root: toHex(merkleRoot(jwts.map(leafHash))),
          totals: sortedTotals(totalsOf(claims, new Set(disputed))),
          disputed,
          penalties: [{ provider: 'p-a', dispute: proven.doc.id }],
        },
        w.mesh,
        TYP.batch,
      );
    const tampered = await resign(w, proven, (cl) => (cl.accused = 'p-b'));
    await mkdir(dp('all'), { recursive: true });
    await Promise.all([mkdir(dp('no-proven')), mkdir(dp('tampered')), mkdir(dp('empty'))]);
    await Promise.all([
      writeFile(dp('jwks.json'), JSON.stringify(w.jwks)),
      writeFile(dp('receipts.ndjson'), jwts.map((r) => JSON.stringify({ receipt: r })).join('\n')),
      writeFile(dp('batch.json'), JSON.stringify({ id: DISPUTE_BATCH, batch: await batchWith([proven.receipts[0]!.jti, 'rcpt-a-1']) })),
      writeFile(dp('manual-batch.json'), JSON.stringify({ id: DISPUTE_BATCH, batch: await batchWith([proven.receipts[0]!.jti, 'rcpt-a-1', 'rcpt-c-1']) })),
      writeFile(dp('proven.json'), JSON.stringify(proven.doc)),
      writeFile(dp('signature.json'), JSON.stringify(signature.doc)),
      writeFile(dp('unresolved.json'), JSON.stringify(unresolved.doc)),
      writeFile(dp('tampered.json'), JSON.stringify(tampered)),
      writeFile(dp('all', `${proven.doc.id}.json`), JSON.stringify(proven.doc)),
      writeFile(dp('all', `${signature.doc.id}.json`), JSON.stringify(signature.doc)),
      writeFile(dp('all', `${unresolved.doc.id}.json`), JSON.stringify(unresolved.doc)),
      writeFile(dp('all', 'README.txt'), 'not a dispute'),
      writeFile(dp('no-proven', `${signature.doc.id}.json`), JSON.stringify(signature.doc)),
      writeFile(dp('tampered', 'bad.json'), JSON.stringify(tampered)),
    ]);
  });

  it('verifies a proven mismatch, naming every comparison', async () => {
    const run = await cli(['dispute', dp('proven.json'), '--jwks', dp('jwks.json'), '--issuer', ISSUER]);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toMatch(
      new RegExp(
        `^ok {2}dispute ${proven.doc.id}: mismatch proven, accused p-a, 3 runs; answer vs check: differ \\(output "embeddings" element 500: [^)]+\\)\\); answer vs referee: differ \\(output "embeddings" element 500: .+\\); check vs referee: agree\\n$`,
      ),
    );
  });

  it('verifies an unresolved mismatch and a signature dispute, from a file or stdin, and prints JSON', async () => {
    const [un, sig, json] = await Promise.all([
      cli(['dispute', dp('unresolved.json'), '--jwks', dp('jwks.json')]),
      cli(['dispute', '-', '--jwks', dp('jwks.json')], JSON.stringify(signature.doc)),
      cli(['dispute', dp('proven.json'), '--jwks', dp('jwks.json'), '--json']),
    ]);
    expect(un.code, un.stderr).toBe(0);
    expect(un.stdout).toMatch(new RegExp(`^ok {2}dispute ${unresolved.doc.id}: mismatch unresolved, accused none, 2 runs; answer vs check: differ \\(.+\\)\\n$`));
    expect(sig.code, sig.stderr).toBe(0);
    expect(sig.stdout).toBe(`ok  dispute ${signature.doc.id}: signature proven, accused p-d, 1 run; the answer attestation does not verify with provider p-d's admitted key\n`);
    expect(json.code, json.stderr).toBe(0);
    const out = JSON.parse(json.stdout) as Record<string, unknown>;
    expect(out).toMatchObject({ ok: true, command: 'dispute', id: proven.doc.id, kind: 'mismatch', verdict: 'proven', accused: 'p-a', withheld: [proven.receipts[0]!.jti] });
    expect(out.comparisons).toHaveLength(3);
  });

  it('fails a dispute its evidence does not prove, exit 1', async () => {
    const [plain, json] = await Promise.all([
      cli(['dispute', dp('tampered.json'), '--jwks', dp('jwks.json')]),
      cli(['dispute', dp('tampered.json'), '--jwks', dp('jwks.json'), '--json']),
    ]);
    expect(plain).toEqual({ code: 1, stdout: '', stderr: `FAIL  dispute ${proven.doc.id}: accused is "p-b", but its evidence gives "p-a"\n` });
    expect(JSON.parse(json.stdout)).toMatchObject({ ok: false, command: 'dispute', code: 'verdict_mismatch' });
  });

  it('verifies a batch whose disputed receipts are justified by a withheld receipt and a penalty', async () => {
    const [plain, json] = await Promise.all([
      cli(['batch', dp('batch.json'), '--receipts', dp('receipts.ndjson'), '--jwks', dp('jwks.json'), '--disputes', dp('all')]),
      cli(['batch', dp('batch.json'), '--receipts', dp('receipts.ndjson'), '--jwks', dp('jwks.json'), '--disputes', dp('all'), '--json']),
    ]);
    expect(plain.code, plain.stderr).toBe(0);
    expect(plain.stdout).toMatch(
      new RegExp(
        `^ok {2}batch ${DISPUTE_BATCH}: 4 receipts, root [0-9a-f]{12}…, totals verified \\(3 providers, 3 consumers\\), 2 disputed \\(withheld from payout\\), 1 provider penalized; 3 disputes verified \\(2 proven\\); disputed receipts justified: 1 withheld by a dispute, 1 by a penalty\\n$`,
      ),
    );
    expect(json.code, json.stderr).toBe(0);
    expect(JSON.parse(json.stdout)).toMatchObject({
      ok: true,
      command: 'batch',
      penalties: [{ provider: 'p-a', dispute: proven.doc.id }],
      disputes: {
        documents: 3,
        withheld: 1,
        penalty: 1,
        justified: [
          { jti: proven.receipts[0]!.jti, dispute: proven.doc.id, how: 'withheld' },
          { jti: 'rcpt-a-1', dispute: proven.doc.id, how: 'penalty' },
        ],
      },
    });
    // Without --disputes, the batch alone verifies as before.
    const alone = await cli(['batch', dp('batch.json'), '--receipts', dp('receipts.ndjson'), '--jwks', dp('jwks.json')]);
    expect(alone.code, alone.stderr).toBe(0);
    expect(alone.stdout).not.toContain('justified');
  });

  it('fails a batch with an unproven disputed receipt, an unjustified penalty, or a bad dispute document', async () => {
    const args = (batch: string, disputes: string) => ['batch', dp(batch), '--receipts', dp('receipts.ndjson'), '--jwks', dp('jwks.json'), '--disputes', dp(disputes)];
    const [manual, noProven, tampered, empty, manualJson] = await Promise.all([
      cli(args('manual-batch.json', 'all')),
      cli(args('batch.json', 'no-proven')),
      cli(args('batch.json', 'tampered')),
      cli(args('batch.json', 'empty')),
      cli([...args('manual-batch.json', 'all'), '--json']),
    ]);
    expect(manual).toEqual({
      code: 1,
      stdout: '',
      stderr: `FAIL  batch ${DISPUTE_BATCH}: 1 disputed receipt justified by no proven dispute of the 3 documents given: rcpt-c-1\n`,
    });
    expect(JSON.parse(manualJson.stdout)).toMatchObject({ ok: false, command: 'batch', code: 'unproven_disputed' });
    expect(noProven).toEqual({
      code: 1,
      stdout: '',
      stderr: `FAIL  batch ${DISPUTE_BATCH} penalizes provider p-a for dispute ${proven.doc.id}, which is not among the disputes given\n`,
    });
    expect(tampered).toEqual({
      code: 1,
      stdout: '',
      stderr: `FAIL  ${join(dp('tampered'), 'bad.json')}: dispute ${proven.doc.id}: accused is "p-b", but its evidence gives "p-a"\n`,
    });
    expect(empty.code).toBe(1);
    expect(empty.stderr).toContain('which is not among the disputes given');
  });

  it('exits 2 on usage errors', async () => {
    const cases: string[][] = [
      ['dispute'],
      ['dispute', dp('proven.json')],
      ['dispute', dp('no-such.json'), '--jwks', dp('jwks.json')],
      ['batch', dp('batch.json'), '--receipts', dp('receipts.ndjson'), '--jwks', dp('jwks.json'), '--disputes', dp('no-such-dir')],
      ['batch', dp('batch.json'), '--receipts', dp('receipts.ndjson'), '--jwks', dp('jwks.json'), '--disputes', dp('proven.json')],
    ];
    const runs = await Promise.all(cases.map((a) => cli(a)));
    runs.forEach((run, i) => {
      expect(run.code, JSON.stringify(cases[i])).toBe(2);
      expect(run.stderr, JSON.stringify(cases[i])).toMatch(/^mesh-verify: [^\n]+\n$/);
    });
  });
});

describe('mesh-verify: usage', () => {
  it('prints help and exits 0', async () => {
    const run = await cli(['--help']);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/^Usage:\n {2}mesh-verify receipt/);
  });

  it('exits 2 with a one-line reason on usage errors', async () => {
    const cases: string[][] = [
      [],
      ['frobnicate'],
      ['receipt'],
      ['receipt', path('receipt.jwt')],
      ['receipt', path('receipt.jwt'), '--jwks', path('jwks.json'), '--bogus'],
      ['receipt', path('no-such-file.jwt'), '--jwks', path('jwks.json')],
      ['receipt', path('receipt.jwt'), '--jwks', path('no-such-jwks.json')],
      ['batch', path('batch.json'), '--jwks', path('jwks.json')],
      ['proof', path('receipt.jwt'), '--batch', path('batch.json'), '--jwks', path('jwks.json')],
      ['archive', path('no-such-dir'), '--jwks', path('jwks.json')],
      ['archive', path('archive')],
      ['archive', path('forged-same-kid'), '--jwks', join(path('forged-same-kid'), 'jwks.json')],
      ['receipt', path('receipt.jwt'), 'extra', '--jwks', path('jwks.json')],
    ];
    const runs = await Promise.all(cases.map((args) => cli(args)));
    runs.forEach((run, i) => {
      const what = JSON.stringify(cases[i]);
      expect(run.code, what).toBe(2);
      expect(run.stdout, what).toBe('');
      expect(run.stderr, what).toMatch(/^mesh-verify: [^\n]+\n$/);
    });
  });

  it('says that archive needs a trusted --jwks, and that the archive\'s own copy is not one', async () => {
    const [none, own] = await Promise.all([
      cli(['archive', path('archive')]),
      cli(['archive', path('archive'), '--jwks', join(path('archive'), 'jwks.json')]),
    ]);
    expect(none.code).toBe(2);
    expect(none.stderr).toContain('archive needs --jwks <file | URL> from a source you trust');
    expect(own.code).toBe(2);
    expect(own.stderr).toContain("--jwks must not be the archive's own jwks.json");
  });
});
