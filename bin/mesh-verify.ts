#!/usr/bin/env node
/**
 * mesh-verify: the offline verifier as a command, for billing systems and
 * auditors (docs/api.md sections 4, 5 and 6). Reads receipts, batches, proofs, fraud proofs and the
 * mesh's JWKS from files (or stdin, or a JWKS URL), verifies them with
 * receipts/verify.ts and says `ok` or `FAIL` with the first thing that is wrong.
 *
 * Exit status: 0 verified, 1 verification failed, 2 usage error or input that
 * cannot be read. Runs on Node >= 22.18 directly from TypeScript.
 */

import { readdir, realpath, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { calculateJwkThumbprint, type JWK } from 'jose';
import { checkBatchId, InputError, loadBatch, loadJwks, loadToken, parseJson, parseNdjson, readStdin, readText, UsageError, type LoadedBatch } from './inputs.ts';
import type { BatchClaims, ReceiptClaims } from '../shared/jwt.ts';
import {
  fromHex,
  toHex,
  verifyBatch,
  verifyBatchDisputes,
  verifyDispute,
  verifyInclusionProof,
  verifyReceipt,
  VerifyError,
  type DisputeReport,
  type InclusionProof,
  type Jwks,
  type VerifyOptions,
} from '../receipts/index.ts';

const USAGE = `Usage:
  mesh-verify receipt <receipt.jwt | JWT | -> --jwks <jwks.json | URL>
  mesh-verify batch <batch.jwt | batch.json> --receipts <receipts.ndjson> --jwks <jwks.json | URL> [--disputes <dir>]
  mesh-verify proof <receipt.jwt | JWT | -> --proof <proof.json> --batch <batch.jwt | batch.json> --jwks <jwks.json | URL>
  mesh-verify archive <dir> --jwks <jwks-archive.json | URL>
  mesh-verify dispute <dispute.json | -> --jwks <jwks.json | URL>

Verifies mesh receipts, settlement batches, inclusion proofs and fraud proofs
offline against the mesh's public JWKS (GET /.well-known/jwks.json).

  receipt   one receipt JWT: a file holding it, the JWT itself, or - for stdin
  batch     a batch JWT (a file holding it, or batch.json as GET
            /v1/settlement/batches/{id} returns it: { "id", "batch" }) against
            all its receipts in leaf order
  proof     a receipt's inclusion proof (proof.json as GET
            /v1/receipts/{jti}/proof returns it) against its batch
  archive   a downloaded batch archive folder: batch.json and
            receipts.ndjson, verified with the --jwks you trust (the edge's
            /.well-known/jwks-archive.json, or your saved copy of it), never
            with the folder's own jwks.json; that copy is only compared with
            it, and a key in it that the trusted JWKS lacks or holds
            differently fails the check
  dispute   a fraud proof (dispute.json as GET /v1/disputes/{id} returns it:
            { "id", "dispute", "outputs" }): the mesh's signature, every run's
            receipt and provider attestation, the answer bytes against their
            hashes; the comparison and the verdict are recomputed with the
            dispute's rule and must be the ones it claims

receipts.ndjson holds one receipt per line, each either a JSON object with a
"receipt" field ({"receipt":"<JWT>", ...}), a JSON string ("<JWT>"), or the
bare JWT; blank lines are skipped. A receipt or batch file may likewise hold
the bare JWT, a JSON string, or a JSON object with a "receipt" / "batch" field.

Options:
  --jwks <file | URL>  the mesh's JWKS, a file or an http(s) URL (fetched once),
                       from a source you trust; required by every command
  --issuer <url>       also require every token's iss to be this URL
  --disputes <dir>     (batch) a folder of dispute .json documents: each is
                       verified, and every disputed receipt of the batch must
                       be justified by a proven one (withheld by it, or its
                       provider penalized for it); an unjustified disputed
                       receipt or penalty fails the check
  --json               print the result as one JSON object on stdout
  -h, --help           print this help

Exit status: 0 verified, 1 verification failed, 2 usage error or unreadable input.`;


type Outcome = { line: string; json: Record<string, unknown> };

async function main(argv: string[]): Promise<number> {
  let args: ReturnType<typeof parse>;
  try {
    args = parse(argv);
  } catch (err) {
    // parseArgs explains at length; its first sentence is the reason.
    return usage((err as Error).message.split(/\.\s/)[0]!);
  }
  const { values, positionals } = args;
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const [command, target, ...extra] = positionals;
  if (!command) return usage('no command given (receipt, batch, proof, archive or dispute)');
  if (extra.length > 0) return usage(`unexpected argument ${JSON.stringify(extra[0])}`);
  const opts: VerifyOptions = values.issuer !== undefined ? { issuer: values.issuer } : {};

  let outcome: Outcome;
  try {
    switch (command) {
      case 'receipt':
        outcome = await receiptCommand(need(target, 'a receipt'), values, opts);
        break;
      case 'batch':
        outcome = await batchCommand(need(target, 'a batch'), values, opts);
        break;
      case 'proof':
        outcome = await proofCommand(need(target, 'a receipt'), values, opts);
        break;
      case 'archive':
        outcome = await archiveCommand(need(target, 'an archive folder'), values, opts);
        break;
      case 'dispute':
        outcome = await disputeCommand(need(target, 'a dispute document'), values, opts);
        break;
      default:
        return usage(`unknown command ${JSON.stringify(command)} (receipt, batch, proof, archive or dispute)`);
    }
  } catch (err) {
    if (err instanceof UsageError) return usage(err.message);
    const code = err instanceof VerifyError || err instanceof InputError || err instanceof JwksMismatch ? err.code : 'internal';
    const message = err instanceof Error ? err.message : String(err);
    if (values.json) process.stdout.write(`${JSON.stringify({ ok: false, command, code, message })}\n`);
    else process.stderr.write(`FAIL  ${code === 'internal' ? `internal error: ${message}` : message}\n`);
    return 1;
  }
  if (values.json) process.stdout.write(`${JSON.stringify({ ok: true, command, ...outcome.json })}\n`);
  else process.stdout.write(`ok  ${outcome.line}\n`);
  return 0;
}

function parse(argv: string[]) {
  return parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      jwks: { type: 'string' },
      receipts: { type: 'string' },
      proof: { type: 'string' },
      batch: { type: 'string' },
      disputes: { type: 'string' },
      issuer: { type: 'string' },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
}

type Values = ReturnType<typeof parse>['values'];

function usage(reason: string): number {
  process.stderr.write(`mesh-verify: ${reason} (see mesh-verify --help)\n`);
  return 2;
}

function need(v: string | undefined, what: string): string {
  if (v === undefined || v === '') throw new UsageError(`missing ${what}`);
  return v;
}

function needOption(values: Values, name: 'jwks' | 'receipts' | 'proof' | 'batch'): string {
  const v = values[name];
  if (v === undefined || v === '') throw new UsageError(`missing --${name}`);
  return v;
}

// --- commands --------------------------------------------------------------

async function receiptCommand(target: string, values: Values, opts: VerifyOptions): Promise<Outcome> {
  const jwks = await loadJwks(needOption(values, 'jwks'));
  const jwt = await loadToken(target, 'receipt');
  const r = await verifyReceipt(jwt, jwks, opts);
  return {
    line: `receipt ${r.jti}: ${r.model}@${r.model_version} ${r.cache === 'hit' ? `from the answer cache at ${r.pop} (computed under receipt ${r.origin})` : `by provider ${r.provider}`} for consumer ${r.sub}, ${r.amount} micro-USD, ${r.units.input}+${r.units.output} units`,
    json: { receipt: r },
  };
}

async function batchCommand(target: string, values: Values, opts: VerifyOptions): Promise<Outcome> {
  const jwks = await loadJwks(needOption(values, 'jwks'));
  const batch = await loadBatch(target);
  const receiptsPath = needOption(values, 'receipts');
  const receipts = parseNdjson(await readText(receiptsPath), receiptsPath);
  const disputesDir = values.disputes;
  if (disputesDir === undefined) return batchOutcome(batch, receipts, jwks, opts);
  if (disputesDir === '') throw new UsageError('missing --disputes folder');
  const documents = await loadDisputeDocuments(disputesDir);
  return batchOutcome(batch, receipts, jwks, opts, documents);
}

async function disputeCommand(target: string, values: Values, opts: VerifyOptions): Promise<Outcome> {
  const jwks = await loadJwks(needOption(values, 'jwks'));
  const { text, source } = target === '-' ? { text: await readStdin(), source: 'stdin' } : { text: await readText(target), source: target };
  const report = await verifyDispute(parseJson(text, source), jwks, opts);
  return { line: disputeLine(report), json: { ...report } };
}

/** `dispute <id>: <kind> <verdict>, accused <p>, <n> runs; answer vs check: differ (<reason>); ...` */
function disputeLine(d: DisputeReport): string {
  const head = `dispute ${d.id}: ${d.kind} ${d.verdict}, accused ${d.accused ?? 'none'}, ${plural(d.runs.length, 'run')}`;
  if (d.kind === 'signature') {
    const run = d.runs[0]!;
    return `${head}; the ${run.role} attestation does not verify with provider ${run.provider}'s admitted key`;
  }
  const pairs = d.comparisons.map((c) => `${c.a} vs ${c.b}: ${c.agree ? 'agree' : `differ (${c.reason})`}`);
  return `${head}; ${pairs.join('; ')}`;
}

interface DisputeFile {
  file: string;
  doc: unknown;
}

/** Every *.json file of a folder of dispute documents, in name order. */
async function loadDisputeDocuments(dir: string): Promise<DisputeFile[]> {
  const info = await stat(dir).catch(() => undefined);
  if (!info?.isDirectory()) throw new UsageError(`--disputes ${dir} is not a folder`);
  const names = (await readdir(dir)).filter((n) => n.endsWith('.json')).sort();
  const out: DisputeFile[] = [];
  for (const name of names) {
    const file = join(dir, name);
    out.push({ file, doc: parseJson(await readText(file), file) });
  }
  return out;
}

/** Verifies each dispute document; a failure names its file. */
async function verifyDisputeFiles(files: DisputeFile[], jwks: Jwks, opts: VerifyOptions): Promise<DisputeReport[]> {
  const reports: DisputeReport[] = [];
  for (const { file, doc } of files) {
    try {
      reports.push(await verifyDispute(doc, jwks, opts));
    } catch (err) {
      if (err instanceof VerifyError) throw new VerifyError(err.code, `${file}: ${err.message}`, { cause: err });
      throw err;
    }
  }
  return reports;
}

async function proofCommand(target: string, values: Values, opts: VerifyOptions): Promise<Outcome> {
  const jwks = await loadJwks(needOption(values, 'jwks'));
  const jwt = await loadToken(target, 'receipt');
  const proofPath = needOption(values, 'proof');
  const proof = parseJson(await readText(proofPath), proofPath) as InclusionProof;
  const batch = await loadBatch(needOption(values, 'batch'));
  const { receipt, batch: b } = await verifyInclusionProof(jwt, proof, batch.jwt, jwks, opts);
  checkBatchId(batch, b);
  return {
    line: `receipt ${receipt.jti} is leaf ${proof.leaf_index} of ${proof.tree_size} in batch ${b.batch_id} (root ${short(b.merkle_root)})`,
    json: { jti: receipt.jti, batch_id: b.batch_id, leaf_index: proof.leaf_index, tree_size: proof.tree_size, merkle_root: b.merkle_root },
  };
}

/**
 * An archive folder. The folder is what is being checked, so nothing in it
 * is trusted: batch and receipts are verified with the --jwks the caller
 * trusts, and the folder's jwks.json is only compared with that JWKS.
 */
async function archiveCommand(dir: string, values: Values, opts: VerifyOptions): Promise<Outcome> {
  const info = await stat(dir).catch(() => undefined);
  if (!info?.isDirectory()) throw new UsageError(`${dir} is not a folder`);
  const trustedArg = values.jwks;
  if (trustedArg === undefined || trustedArg === '') {
    throw new UsageError(
      'archive needs --jwks <file | URL> from a source you trust (the edge\'s /.well-known/jwks-archive.json or your saved copy); the archive\'s own jwks.json is not trusted',
    );
  }
  const copyPath = join(dir, 'jwks.json');
  if (await samePath(trustedArg, copyPath)) {
    throw new UsageError(`--jwks must not be the archive's own jwks.json (${copyPath}): it is what is being checked`);
  }
  const trusted = await loadJwks(trustedArg);
  const hasCopy = await stat(copyPath).then((s) => s.isFile(), () => false);
  const copyKeys = hasCopy ? await compareJwksCopy(await loadJwks(copyPath), trusted, copyPath) : undefined;
  const batch = await loadBatch(join(dir, 'batch.json'));
  const receiptsPath = join(dir, 'receipts.ndjson');
  const receipts = parseNdjson(await readText(receiptsPath), receiptsPath);
  const outcome = await batchOutcome(batch, receipts, trusted, opts);
  const copy = copyKeys === undefined ? 'no jwks.json in the archive' : `archive jwks.json matches the trusted JWKS (${plural(copyKeys, 'key')})`;
  return { line: `${outcome.line}; ${copy}`, json: { ...outcome.json, archive_jwks: copyKeys === undefined ? 'absent' : 'matches' } };
}

/** The archive's copy of the JWKS differs from the trusted one: a verification failure (exit 1). */
class JwksMismatch extends Error {
  readonly code = 'jwks_mismatch';
}

/** Whether a --jwks argument names the same file as `path` (URLs never do). */
async function samePath(arg: string, path: string): Promise<boolean> {
  if (/^https?:\/\//i.test(arg)) return false;
  const [a, b] = await Promise.all([realpath(arg).catch(() => undefined), realpath(path).catch(() => undefined)]);
  return a !== undefined && a === b;
}

/**
 * Checks that every key in the archive's jwks.json is in the trusted JWKS
 * under the same kid with the same key material (RFC 7638 thumbprint). The
 * trusted JWKS may hold more keys (ones added after this batch). Returns the
 * number of keys compared.
 */
async function compareJwksCopy(copy: Jwks, trusted: Jwks, source: string): Promise<number> {
  const trustedByKid = new Map<string, Set<string>>();
  for (const key of trusted.keys) {
    if (typeof key.kid !== 'string') continue;
    const print = await thumbprint(key);
    if (print === undefined) continue;
    let prints = trustedByKid.get(key.kid);
    if (!prints) trustedByKid.set(key.kid, (prints = new Set()));
    prints.add(print);
  }
  for (const [i, key] of copy.keys.entries()) {
    const kid = typeof key?.kid === 'string' ? key.kid : undefined;
    if (kid === undefined) throw new JwksMismatch(`${source}: key ${i} has no kid; the trusted JWKS names every key`);
    const prints = trustedByKid.get(kid);
    if (!prints) throw new JwksMismatch(`${source}: key ${JSON.stringify(kid)} is not in the trusted JWKS; the archive's keys were replaced or added to`);
    const print = await thumbprint(key);
    if (print === undefined || !prints.has(print)) {
      throw new JwksMismatch(`${source}: key ${JSON.stringify(kid)} differs from the trusted JWKS's key of that kid; the archive's keys were replaced`);
    }
  }
  return copy.keys.length;
}

async function thumbprint(key: JWK): Promise<string | undefined> {
  try {
    return await calculateJwkThumbprint(key, 'sha256');
  } catch {
    return undefined;
  }
}

/**
 * Verifies a batch against its receipts; with dispute documents, also that
 * every disputed receipt is justified by a proven fraud proof among them.
 */
async function batchOutcome(batch: LoadedBatch, receipts: string[], jwks: Jwks, opts: VerifyOptions, disputeFiles?: DisputeFile[]): Promise<Outcome> {
  const { claims, receipts: verified } = await verifyBatch(batch.jwt, receipts, jwks, opts);
  checkBatchId(batch, claims);
  const providers = Object.keys(claims.totals.providers).length;
  const consumers = Object.keys(claims.totals.consumers).length;
  const penalties = claims.penalties ?? [];
  const penalized = penalties.length > 0 ? `, ${plural(penalties.length, 'provider')} penalized` : '';
  const disputed = claims.disputed.length > 0 ? `, ${claims.disputed.length} disputed (withheld from payout)${penalized}` : penalized;
  const line = `batch ${claims.batch_id}: ${claims.count} receipts, root ${short(claims.merkle_root)}, totals verified (${plural(providers, 'provider')}, ${plural(consumers, 'consumer')})${disputed}`;
  const json: Record<string, unknown> = {
    batch_id: claims.batch_id,
    count: claims.count,
    merkle_root: claims.merkle_root,
    epoch_start: claims.epoch_start,
    epoch_end: claims.epoch_end,
    totals: claims.totals,
    disputed: claims.disputed,
    ...(claims.penalties !== undefined ? { penalties: claims.penalties } : {}),
  };
  if (disputeFiles === undefined) return { line, json };
  return { line: `${line}; ${await disputesOutcome(claims, verified, disputeFiles, jwks, opts, json)}`, json };
}

/** The dispute documents checked against a verified batch: the line's tail; adds `disputes` to `json`. */
async function disputesOutcome(
  claims: BatchClaims,
  receipts: ReceiptClaims[],
  files: DisputeFile[],
  jwks: Jwks,
  opts: VerifyOptions,
  json: Record<string, unknown>,
): Promise<string> {
  const reports = await verifyDisputeFiles(files, jwks, opts);
  const { justified, unproven } = verifyBatchDisputes(claims, receipts, reports);
  if (unproven.length > 0) {
    const shown = unproven.slice(0, 5).join(', ') + (unproven.length > 5 ? `, and ${unproven.length - 5} more` : '');
    throw new VerifyError(
      'unproven_disputed',
      `batch ${claims.batch_id}: ${plural(unproven.length, 'disputed receipt')} justified by no proven dispute of the ${plural(files.length, 'document')} given: ${shown}`,
    );
  }
  const byWithheld = justified.filter((j) => j.how === 'withheld').length;
  const byPenalty = justified.length - byWithheld;
  json.disputes = { documents: reports.length, justified, withheld: byWithheld, penalty: byPenalty };
  const proven = reports.filter((r) => r.verdict === 'proven').length;
  return `${plural(reports.length, 'dispute')} verified (${proven} proven); disputed receipts justified: ${byWithheld} withheld by a dispute, ${byPenalty} by a penalty`;
}

// --- output ----------------------------------------------------------------

function short(hex: string): string {
  const h = fromHex(hex);
  return h ? `${toHex(h).slice(0, 12)}…` : hex;
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

process.exitCode = await main(process.argv.slice(2));
