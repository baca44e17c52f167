/**
 * The offline verifier of fraud proofs (docs/api.md section 6): what a
 * billing system or auditor runs to check, with the mesh's public JWKS and
 * nothing else, that a dispute document of `GET /v1/disputes/{id}` proves
 * what it claims, and that a batch's withheld receipts are justified by such
 * proofs. It re-verifies every piece (the mesh-signed dispute and receipts,
 * the providers' attestations against their admitted keys, the answer bytes
 * against their hashes) and RECOMPUTES the comparison and the verdict with
 * the dispute's own rule, so a proof stands on its evidence, not on the
 * mesh's word.
 *
 * Failures are `VerifyError`s (receipts/verify.ts) with stable codes.
 */

import { compactVerify, decodeProtectedHeader, errors, importJWK, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import { compareAnswerBytes, isCompareRule } from './compare.ts';
import { sha256Hex } from './hash.ts';
import {
  checkReceipt,
  isNonEmptyString,
  isSha256Hex,
  keySet,
  normalizeTyp,
  verifyJws,
  VerifyError,
  type Jwks,
  type VerifyOptions,
} from './verify.ts';
import { TYP, decodePayload, type BatchClaims, type DisputeClaims, type DisputeRun, type ReceiptClaims } from '../shared/jwt.ts';

export type DisputeRole = DisputeRun['role'];

/** The JSON document of `GET /v1/disputes/{id}`. */
export interface DisputeDocument {
  id: string;
  /** The dispute JWT (`typ: mesh-dispute+jwt`), signed by the mesh key. */
  dispute: string;
  /** output_sha256 (hex) -> base64 (standard, padded) of the answer bytes of a run. */
  outputs?: Record<string, string>;
}

/** What a verified fraud proof establishes. */
export interface DisputeReport {
  id: string;
  kind: DisputeClaims['kind'];
  verdict: DisputeClaims['verdict'];
  accused: string | null;
  model: string;
  withheld: string[];
  runs: { role: DisputeRole; provider: string; backend: string; receipt: string }[];
  /** The recomputed comparisons of a mismatch, every pair of runs (answer, check, referee order); none for a signature dispute. */
  comparisons: { a: DisputeRole; b: DisputeRole; agree: boolean; reason?: string }[];
}

/** How one disputed receipt of a batch is justified. */
export interface DisputeJustification {
  jti: string;
  /** The id of the proven dispute that justifies it. */
  dispute: string;
  /** `withheld`: the dispute withholds this receipt itself; `penalty`: the batch penalizes its provider for the dispute. */
  how: 'withheld' | 'penalty';
}

/** The claims a dispute JWT must carry. */
const DISPUTE_REQUIRED_CLAIMS = ['iss', 'iat', 'jti', 'kind', 'verdict', 'accused', 'model', 'model_version', 'input_sha256', 'rule', 'runs', 'withheld'] as const;

const ROLE_ORDER: readonly DisputeRole[] = ['answer', 'check', 'referee'];

/**
 * Verifies a dispute document (`{ id, dispute, outputs }`): the mesh's
 * signature and claims, every run's receipt and attestation, and for a
 * `mismatch` the answer bytes and the recomputed comparisons and verdict;
 * for a `signature` dispute, that the attestation indeed does not verify
 * with the provider's admitted key. Returns what it proves.
 */
export async function verifyDispute(doc: unknown, jwks: Jwks, opts: VerifyOptions = {}): Promise<DisputeReport> {
  const d = checkDocument(doc);
  const getKey = keySet(jwks);
  const signedId = decodePayload<{ jti?: unknown }>(d.dispute)?.jti;
  const label = `dispute ${isNonEmptyString(signedId) ? signedId : d.id}`;
  const payload = await verifyJws(d.dispute, TYP.dispute, DISPUTE_REQUIRED_CLAIMS, getKey, opts, label);
  if (payload.jti !== d.id) {
    throw new VerifyError('id_mismatch', `dispute document says id ${d.id}, but its signed dispute is ${JSON.stringify(payload.jti)}`);
  }
  const claims = checkClaims(payload, label);

  const receipts = await checkRunReceipts(claims, getKey, opts, label);
  for (const [i, run] of claims.runs.entries()) checkAttestationClaims(run, claims, runLabel(label, run, i));

  const runs = claims.runs.map((run, i) => ({ role: run.role, provider: run.provider, backend: run.backend, receipt: receipts[i]!.jti }));
  const report = (comparisons: DisputeReport['comparisons']): DisputeReport => ({
    id: claims.jti,
    kind: claims.kind,
    verdict: claims.verdict,
    accused: claims.accused,
    model: claims.model,
    withheld: [...claims.withheld],
    runs,
    comparisons,
  });

  if (claims.kind === 'signature') {
    const run = claims.runs[0]!;
    if (await attestationVerifies(run, `${runLabel(label, run, 0)} attestation`)) {
      throw new VerifyError('verdict_mismatch', `${label}: the attestation of provider ${run.provider} verifies with its admitted key; there is no signature fraud`);
    }
    checkVerdict(claims, label, { verdict: 'proven', accused: run.provider, withheld: [receipts[0]!.jti] });
    return report([]);
  }

  // mismatch: the providers' signatures, the answer bytes, then the comparison recomputed.
  const answers: Uint8Array[] = [];
  for (const [i, run] of claims.runs.entries()) {
    const where = runLabel(label, run, i);
    if (!(await attestationVerifies(run, `${where} attestation`))) {
      throw new VerifyError('bad_attestation', `${where} attestation: signature does not verify with provider ${run.provider}'s admitted key`);
    }
    answers.push(await checkOutput(d.outputs, run, where));
  }
  const index = new Map(claims.runs.map((r, i) => [r.role, i]));
  const comparisons: DisputeReport['comparisons'] = [];
  for (let x = 0; x < ROLE_ORDER.length; x++) {
    for (let y = x + 1; y < ROLE_ORDER.length; y++) {
      const [a, b] = [ROLE_ORDER[x]!, ROLE_ORDER[y]!];
      const ia = index.get(a);
      const ib = index.get(b);
      if (ia === undefined || ib === undefined) continue;
      const c = compareAnswerBytes(answers[ia]!, answers[ib]!, claims.rule);
      // The reason says "first" and "second" answer: name the runs instead.
      const reason = c.agree ? undefined : c.reason.replace(/\b(first|second) answer\b/g, (_, which: string) => `${which === 'first' ? a : b} run's answer`);
      comparisons.push(reason === undefined ? { a, b, agree: true } : { a, b, agree: false, reason });
    }
  }
  /** Whether runs `x` and `y` (indices) agree. */
  const agree = (x: number, y: number) => {
    const [rx, ry] = [claims.runs[x]!.role, claims.runs[y]!.role];
    return comparisons.find((c) => (c.a === rx && c.b === ry) || (c.a === ry && c.b === rx))!.agree;
  };
  if (agree(index.get('answer')!, index.get('check')!)) {
    throw new VerifyError('verdict_mismatch', `${label}: the answer and check runs agree under the dispute's rule; there is no mismatch`);
  }
  checkVerdict(claims, label, recomputeVerdict(claims, receipts, agree));
  return report(comparisons);
}

/**
 * The verdict of a mismatch from its comparisons: proven when there are three
 * runs and exactly one disagrees with both others, which agree with each other.
 */
function recomputeVerdict(
  claims: DisputeClaims,
  receipts: readonly ReceiptClaims[],
  agree: (x: number, y: number) => boolean,
): Pick<DisputeClaims, 'verdict' | 'accused' | 'withheld'> {
  const unresolved = { verdict: 'unresolved' as const, accused: null, withheld: [] };
  if (claims.runs.length !== 3) return unresolved;
  for (let k = 0; k < 3; k++) {
    const [i, j] = [0, 1, 2].filter((n) => n !== k) as [number, number];
    if (!agree(k, i) && !agree(k, j) && agree(i, j)) {
      return { verdict: 'proven', accused: claims.runs[k]!.provider, withheld: [receipts[k]!.jti] };
    }
  }
  return unresolved;
}

function checkVerdict(claims: DisputeClaims, label: string, want: Pick<DisputeClaims, 'verdict' | 'accused' | 'withheld'>): void {
  const fail = (what: string, says: unknown, is: unknown) =>
    new VerifyError('verdict_mismatch', `${label}: ${what} is ${JSON.stringify(says)}, but its evidence gives ${JSON.stringify(is)}`);
  if (claims.verdict !== want.verdict) throw fail('verdict', claims.verdict, want.verdict);
  if (claims.accused !== want.accused) throw fail('accused', claims.accused, want.accused);
  if (claims.withheld.length !== want.withheld.length || claims.withheld.some((j, i) => j !== want.withheld[i])) {
    throw fail('withheld', claims.withheld, want.withheld);
  }
}

/**
 * Whether every disputed receipt of a verified batch is justified by the
 * given (verified) fraud proofs: a proven dispute withholds it, or the batch
 * penalizes its provider (or redundant second) for a proven dispute against
 * that provider. Every penalty must name a given dispute proven against its
 * provider (else `penalty_unjustified`). Disputed receipts that nothing
 * justifies (an operator's manual dispute, say) are returned as `unproven`.
 */
export function verifyBatchDisputes(
  batch: BatchClaims,
  receipts: readonly ReceiptClaims[],
  disputes: readonly DisputeReport[],
): { justified: DisputeJustification[]; unproven: string[] } {
  const byId = new Map<string, DisputeReport>();
  for (const d of disputes) if (!byId.has(d.id)) byId.set(d.id, d);
  const withheldBy = new Map<string, string>();
  for (const d of byId.values()) {
    if (d.verdict !== 'proven') continue;
    for (const jti of d.withheld) if (!withheldBy.has(jti)) withheldBy.set(jti, d.id);
  }

  const penalties = new Map<string, string>();
  for (const p of batch.penalties ?? []) {
    const d = byId.get(p.dispute);
    if (!d) {
      throw new VerifyError('penalty_unjustified', `batch ${batch.batch_id} penalizes provider ${p.provider} for dispute ${p.dispute}, which is not among the disputes given`);
    }
    if (d.verdict !== 'proven' || d.accused !== p.provider) {
      const is = d.verdict === 'proven' ? `proven against ${d.accused}` : d.verdict;
      throw new VerifyError('penalty_unjustified', `batch ${batch.batch_id} penalizes provider ${p.provider} for dispute ${p.dispute}, which is ${is}`);
    }
    penalties.set(p.provider, p.dispute);
  }

  const byJti = new Map(receipts.map((r) => [r.jti, r]));
  const justified: DisputeJustification[] = [];
  const unproven: string[] = [];
  for (const jti of batch.disputed) {
    const w = withheldBy.get(jti);
    if (w !== undefined) {
      justified.push({ jti, dispute: w, how: 'withheld' });
      continue;
    }
    const r = byJti.get(jti);
    if (!r) throw new VerifyError('unknown_disputed', `batch ${batch.batch_id} disputes receipt ${jti}, which is not one of the receipts given`);
    const penalty = [r.provider, r.second?.provider].map((p) => (p === undefined ? undefined : penalties.get(p))).find((d) => d !== undefined);
    if (penalty !== undefined) justified.push({ jti, dispute: penalty, how: 'penalty' });
    else unproven.push(jti);
  }
  return { justified, unproven };
}

// --- the document and its claims ---------------------------------------------

function checkDocument(doc: unknown): Required<DisputeDocument> {
  const bad = (what: string) => new VerifyError('malformed', `dispute document: ${what}`);
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw bad('must be a JSON object { id, dispute, outputs }');
  const { id, dispute, outputs } = doc as Record<string, unknown>;
  if (!isNonEmptyString(id)) throw bad('"id" must be a non-empty string');
  if (!isNonEmptyString(dispute)) throw bad('"dispute" must be the dispute JWT');
  if (outputs !== undefined && (typeof outputs !== 'object' || outputs === null || Array.isArray(outputs) || !Object.values(outputs).every((v) => typeof v === 'string'))) {
    throw bad('"outputs" must map output hashes to base64 strings');
  }
  return { id, dispute, outputs: (outputs ?? {}) as Record<string, string> };
}

function checkClaims(p: JWTPayload, label: string): DisputeClaims {
  const c = p as Record<string, unknown>;
  const bad = (what: string) => new VerifyError('invalid_claim', `${label}: ${what}`);
  for (const k of ['iss', 'jti', 'model'] as const) if (!isNonEmptyString(c[k])) throw bad(`${k} must be a non-empty string`);
  if (typeof c.model_version !== 'string') throw bad('model_version must be a string');
  if (c.kind !== 'mismatch' && c.kind !== 'signature') throw bad('kind must be "mismatch" or "signature"');
  if (c.verdict !== 'proven' && c.verdict !== 'unresolved') throw bad('verdict must be "proven" or "unresolved"');
  if (c.accused !== null && !isNonEmptyString(c.accused)) throw bad('accused must be a provider id or null');
  if (!isSha256Hex(c.input_sha256)) throw bad('input_sha256 must be 64 hex digits');
  if (!isCompareRule(c.rule)) throw bad('rule must be { float: { abs, rel } } with abs and rel finite in [0, 1]');
  const withheld = c.withheld;
  if (!Array.isArray(withheld) || !withheld.every(isNonEmptyString)) throw bad('withheld must be an array of receipt ids');
  if (new Set(withheld).size !== withheld.length) throw bad('withheld lists a receipt id twice');

  const runs = c.runs;
  if (!Array.isArray(runs)) throw bad('runs must be an array');
  runs.forEach((run, i) => checkRun(run, `${label}: runs[${i}]`));
  const roles = (runs as DisputeRun[]).map((r) => r.role);
  if (new Set(roles).size !== roles.length) throw bad('runs must have distinct roles');
  if (c.kind === 'signature') {
    if (runs.length !== 1 || roles[0] !== 'answer') throw bad('a signature dispute has exactly one run, of role "answer"');
  } else {
    if (runs.length !== 2 && runs.length !== 3) throw bad('a mismatch dispute has 2 or 3 runs');
    if (!roles.includes('answer') || !roles.includes('check') || (runs.length === 3 && !roles.includes('referee'))) {
      throw bad('the runs of a mismatch dispute are answer and check, and referee when there are three');
    }
    const providers = (runs as DisputeRun[]).map((r) => r.provider);
    if (new Set(providers).size !== providers.length) throw bad('the runs of a mismatch dispute must be on different providers');
  }
  return c as unknown as DisputeClaims;
}

const B64URL_32 = /^[A-Za-z0-9_-]{43}$/;

function checkRun(run: unknown, label: string): void {
  const bad = (what: string) => new VerifyError('invalid_claim', `${label}: ${what}`);
  if (typeof run !== 'object' || run === null || Array.isArray(run)) throw bad('must be an object');
  const r = run as Record<string, unknown>;
  if (!ROLE_ORDER.includes(r.role as DisputeRole)) throw bad('role must be "answer", "check" or "referee"');
  if (!isNonEmptyString(r.provider)) throw bad('provider must be a non-empty string');
  if (typeof r.backend !== 'string') throw bad('backend must be a string');
  const jwk = r.public_jwk as Record<string, unknown> | null;
  if (typeof jwk !== 'object' || jwk === null || jwk.kty !== 'OKP' || jwk.crv !== 'Ed25519' || typeof jwk.x !== 'string' || !B64URL_32.test(jwk.x) || jwk.d !== undefined) {
    throw bad('public_jwk must be an Ed25519 public JWK');
  }
  if (!isNonEmptyString(r.attestation)) throw bad('attestation must be a JWS string');
  if (!isSha256Hex(r.output_sha256)) throw bad('output_sha256 must be 64 hex digits');
  if (!isNonEmptyString(r.receipt)) throw bad('receipt must be a receipt JWT');
}

function runLabel(label: string, run: DisputeRun, i: number): string {
  return `${label} run ${i} (${run.role}, provider ${run.provider})`;
}

// --- receipts, attestations, outputs ------------------------------------------

/** Verifies every run's receipt and that it pays that run; returns them in run order. */
async function checkRunReceipts(claims: DisputeClaims, getKey: JWTVerifyGetKey, opts: VerifyOptions, label: string): Promise<ReceiptClaims[]> {
  const receipts: ReceiptClaims[] = [];
  for (const [i, run] of claims.runs.entries()) {
    const where = `${runLabel(label, run, i)} receipt`;
    const r = await checkReceipt(run.receipt, getKey, opts, where);
    const mismatch = (what: string, got: unknown, want: unknown) =>
      new VerifyError('receipt_mismatch', `${where} (jti ${r.jti}): ${what} ${JSON.stringify(got)}, the run's is ${JSON.stringify(want)}`);
    if (r.iss !== claims.iss) {
      throw new VerifyError('wrong_issuer', `${where} (jti ${r.jti}): issuer ${JSON.stringify(r.iss)} differs from the dispute's ${JSON.stringify(claims.iss)}`);
    }
    if (r.provider !== run.provider) throw mismatch('provider', r.provider, run.provider);
    if (r.backend !== run.backend) throw mismatch('backend', r.backend, run.backend);
    if (r.attestation !== run.attestation) throw mismatch('attestation', r.attestation ?? null, run.attestation);
    if (r.model !== claims.model) {
      throw new VerifyError('receipt_mismatch', `${where} (jti ${r.jti}): model ${JSON.stringify(r.model)}, the dispute's is ${JSON.stringify(claims.model)}`);
    }
    const same = receipts.findIndex((o) => o.jti === r.jti);
    if (same >= 0) throw new VerifyError('receipt_mismatch', `${where} (jti ${r.jti}) is also the receipt of run ${same}`);
    receipts.push(r);
  }
  // A verification run's receipt names the receipt it checked, when it says.
  const answer = receipts[claims.runs.findIndex((r) => r.role === 'answer')]!;
  for (const [i, run] of claims.runs.entries()) {
    const r = receipts[i]!;
    if (run.role !== 'answer' && r.checks !== undefined && r.checks !== answer.jti) {
      throw new VerifyError('receipt_mismatch', `${runLabel(label, run, i)} receipt (jti ${r.jti}) checks receipt ${r.checks}, not the answer's ${answer.jti}`);
    }
  }
  return receipts;
}

/** The attestation's header and claims are this run's (its signature is checked separately). */
function checkAttestationClaims(run: DisputeRun, claims: DisputeClaims, where: string): void {
  const label = `${where} attestation`;
  const bad = (what: string) => new VerifyError('bad_attestation', `${label}: ${what}`);
  let header: ReturnType<typeof decodeProtectedHeader>;
  try {
    header = decodeProtectedHeader(run.attestation);
  } catch {
    throw bad('not a compact JWS');
  }
  if (header.alg !== 'EdDSA') throw bad(`alg is ${JSON.stringify(header.alg)}, expected "EdDSA"`);
  if (typeof header.typ !== 'string' || normalizeTyp(header.typ) !== TYP.attestation) throw bad(`typ is ${JSON.stringify(header.typ)}, expected "${TYP.attestation}"`);
  const a = decodePayload<Record<string, unknown>>(run.attestation);
  if (typeof a !== 'object' || a === null || Array.isArray(a)) throw bad('payload does not parse');
  if (a.iss !== run.provider) throw bad(`iss is ${JSON.stringify(a.iss)}, expected the run's provider ${JSON.stringify(run.provider)}`);
  if (a.sub !== run.backend) throw bad(`sub is ${JSON.stringify(a.sub)}, expected the run's backend ${JSON.stringify(run.backend)}`);
  if (a.model !== claims.model) throw bad(`model is ${JSON.stringify(a.model)}, expected the dispute's ${JSON.stringify(claims.model)}`);
  if (typeof a.output_sha256 !== 'string' || a.output_sha256.toLowerCase() !== run.output_sha256.toLowerCase()) {
    throw bad(`output_sha256 is ${JSON.stringify(a.output_sha256)}, expected the run's ${run.output_sha256}`);
  }
}

/**
 * Whether the run's attestation verifies with the run's admitted key (false:
 * the signature does not verify). Anything else wrong is `bad_attestation`.
 */
async function attestationVerifies(run: DisputeRun, label: string): Promise<boolean> {
  let key: Awaited<ReturnType<typeof importJWK>>;
  try {
    key = await importJWK({ kty: 'OKP', crv: 'Ed25519', x: run.public_jwk.x }, 'EdDSA');
  } catch (err) {
    throw new VerifyError('invalid_claim', `${label}: the run's public_jwk is not a usable Ed25519 key`, { cause: err });
  }
  try {
    // The signature only: header and claims are checkAttestationClaims'. Any `exp` or `nbf` in it is the provider's
    // own word and dates nothing: a proof must verify at any time, not only while the accused says it may.
    await compactVerify(run.attestation, key, { algorithms: ['EdDSA'] });
    return true;
  } catch (err) {
    if (err instanceof errors.JWSSignatureVerificationFailed) return false;
    throw new VerifyError('bad_attestation', `${label}: ${(err as Error).message}`, { cause: err });
  }
}

/** The run's answer bytes from the document's outputs, checked against its hash. */
async function checkOutput(outputs: Record<string, string>, run: DisputeRun, where: string): Promise<Uint8Array> {
  const hash = run.output_sha256.toLowerCase();
  const b64 = Object.hasOwn(outputs, hash) ? outputs[hash] : Object.hasOwn(outputs, run.output_sha256) ? outputs[run.output_sha256] : undefined;
  if (b64 === undefined) throw new VerifyError('output_missing', `${where}: the document has no output ${hash}`);
  const bytes = fromBase64(b64);
  if (!bytes) throw new VerifyError('malformed', `${where}: output ${hash} is not standard padded base64`);
  const got = await sha256Hex(bytes);
  if (got !== hash) throw new VerifyError('output_mismatch', `${where}: the bytes of output ${hash} hash to ${got}`);
  return bytes;
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
type FromBase64 = (s: string) => Uint8Array;
const nativeFromBase64 = (Uint8Array as unknown as { fromBase64?: FromBase64 }).fromBase64;

/** Standard padded base64 to bytes: the runtime's `Uint8Array.fromBase64` where it has one, else `atob`. */
function fromBase64(s: string): Uint8Array | undefined {
  if (s.length % 4 !== 0 || !BASE64.test(s)) return undefined;
  try {
    if (nativeFromBase64) return nativeFromBase64(s);
  } catch {
    return undefined;
  }
  let bin: string;
  try {
    bin = atob(s);
  } catch {
    return undefined;
  }
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return bytes;
}
