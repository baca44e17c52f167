/**
 * Optimistic verification (docs/api.md section 6.1): after an answer has
 * left, a sample of answers is re-executed on a backend of another provider,
 * off the consumer's path (`waitUntil`), and the two answers are compared
 * with the model's rule (receipts/compare.ts). When they differ, a backend of
 * a third provider referees: the run that disagrees with both others is the
 * accused, and a proven fraud proof is filed (disputes.ts); with no third
 * provider, or no majority, the dispute is filed `unresolved` for review and
 * nobody is penalized.
 *
 * Verification runs look like traffic to the backends: the same request
 * bytes, on the same route, under the consumer's id in a normal dispatch
 * token (only backends that would run the same model version are asked). Each is paid by
 * a receipt of its own, charged to the operator's verification account
 * (`VERIFICATION_ACCOUNT`) and naming the receipt it `checks`.
 */

import { compareAnswerBytes } from '../../receipts/compare.ts';
import type { ReceiptClaims } from '../../shared/jwt.ts';
import type { BackendEntry } from '../directory/backend.ts';
import { settings, type Env } from '../env.ts';
import { announcedVersion, dispatch, type DispatchRequest, type DispatchResult } from '../inference/dispatch.ts';
import type { CatalogueModel } from '../inference/catalogue.ts';
import { priceOf } from '../inference/pricing.ts';
import { signReceipt } from '../inference/receipts.ts';
import { settleAttestation } from '../inference/attestation.ts';
import { isolateRouting, trackPending } from '../routing/isolate.ts';
import type { Scored } from '../routing/score.ts';
import { recordReceipt } from '../settlement/record.ts';
import { fileDispute, type DisputeInput, type Execution } from './disputes.ts';

/** The consumer id verification runs are charged to: the operator's own account. */
export const VERIFICATION_ACCOUNT = 'mesh-verification';
/** Answers larger than this are not re-executed (a fraud proof holds every run's bytes). */
export const MAX_CHECKED_BYTES = 1024 * 1024;
/** Backends tried for one check (a failed one is skipped). */
const MAX_CHECK_TRIES = 2;

/** Everything a re-execution needs of the request it checks. */
export interface CheckContext {
  env: Env;
  /** The dispatch the answer came from (same bytes, same consumer id). */
  request: Omit<DispatchRequest, 'controller' | 'onResponse'>;
  entry: CatalogueModel;
  /** The request's ranked candidates: residency and pins already applied. */
  candidates: readonly Scored[];
  /**
   * The same, ejected backends included (computed only when asked): a check
   * runs off the answer's path, so a backend ejected for its latency may still
   * make one when no other can.
   */
  withEjected?: () => readonly Scored[];
  /** The snapshot's region sizes, for the ejection cap. */
  regionSize: (backend: BackendEntry) => number;
  pop: string;
  modelVersion: string;
}

/**
 * Runs `run`'s request on `backend` as a verification run: dispatched like
 * traffic, its receipt signed and sent to settlement, its attestation's
 * signature settled. Undefined when the backend failed or lied about its signature.
 */
export async function verificationRun(ctx: CheckContext, backend: BackendEntry, checks: string): Promise<Execution | undefined> {
  const release = trackPending(isolateRouting, backend.id);
  // The request as the consumer sent it: `backend` serves the same version (`sameVersion`), so nothing marks this run.
  // Its answer is read within twice the largest checked one: a fraud proof holds it, and a bigger one cannot agree.
  const maxResponseBytes = Math.min(ctx.request.maxResponseBytes, 2 * MAX_CHECKED_BYTES);
  const result = await dispatch(backend, { ...ctx.request, maxResponseBytes }).finally(release);
  if (result.kind !== 'ok') {
    if (result.kind === 'failed') isolateRouting.ejected.recordFailure(backend, ctx.regionSize(backend));
    console.warn(`verify ${ctx.request.model}: verification run on ${backend.id} did not answer (${result.kind === 'failed' ? result.reason : `HTTP ${result.status}`})`);
    return undefined;
  }
  return payRun(ctx, backend, result, 'sampled', checks);
}

/**
 * Pays a run the consumer was not charged for (a re-execution, or either run
 * of a redundant disagreement): a receipt charged to VERIFICATION_ACCOUNT,
 * sent to settlement, and the run's attestation signature settled.
 * Undefined when that signature fails (its own dispute is filed).
 */
export async function payRun(
  ctx: CheckContext,
  backend: BackendEntry,
  result: Extract<DispatchResult, { kind: 'ok' }>,
  verify: ReceiptClaims['verify'],
  checks?: string,
): Promise<Execution | undefined> {
  const s = settings(ctx.env);
  const jti = crypto.randomUUID();
  const claims: ReceiptClaims = {
    iss: s.issuer,
    sub: VERIFICATION_ACCOUNT,
    jti,
    iat: Math.floor(Date.now() / 1000),
    model: ctx.request.model,
    model_version: ctx.modelVersion,
    provider: backend.provider,
    backend: backend.id,
    region: backend.region,
    pop: ctx.pop,
    units: result.units,
    amount: priceOf(ctx.entry.price, result.units),
    input_sha256: ctx.request.bodySha256,
    output_sha256: result.outputSha256,
    latency_ms: result.ms,
    cache: 'miss',
    verify,
    attestation: result.attestation,
    ...(checks ? { checks } : {}),
    ...(backend.location ? { location: backend.location.state } : {}),
  };
  const receipt = await signReceipt(ctx.request.keys, claims);
  const run: Execution = { backend, attestation: result.attestation, outputSha256: result.outputSha256, oip: result.body, receipt, receiptJti: jti };
  const [, signed] = await Promise.all([
    recordReceipt(ctx.env, jti, receipt),
    settleAttestation(ctx.env, run, ctx.regionSize(backend), { model: ctx.request.model, modelVersion: ctx.modelVersion, inputSha256: ctx.request.bodySha256 }),
  ]);
  return signed ? run : undefined;
}

/**
 * Whether a dispatch of `ctx.request` to `backend` runs the version the
 * checked answer came from (answers of two versions are not comparable):
 * the version the consumer named, else the one the backend announces first.
 */
export function sameVersion(ctx: CheckContext, backend: BackendEntry): boolean {
  return (ctx.request.version ?? announcedVersion(backend, ctx.request.model)) === ctx.modelVersion;
}

/**
 * The candidates whose provider is none of `providers` and that run the same
 * version, best first; when the request's candidates have none, its ejected
 * backends are asked too.
 */
export function othersThan(ctx: CheckContext, providers: ReadonlySet<string>): BackendEntry[] {
  const pick = (list: readonly Scored[]) => list.map((c) => c.backend).filter((b) => !providers.has(b.provider) && sameVersion(ctx, b));
  const ranked = pick(ctx.candidates);
  return ranked.length > 0 || !ctx.withEjected ? ranked : pick(ctx.withEjected());
}

/** Sampled answers no backend of another provider could check, since the last time it was logged. */
let unchecked = 0;
let uncheckedLoggedAt = 0;
const UNCHECKED_LOG_MS = 60_000;

/** Notes a sampled answer that went unchecked, and says so in the log at most once a minute per isolate. */
function noteUnchecked(ctx: CheckContext, answer: Execution): void {
  unchecked++;
  const now = Date.now();
  if (now - uncheckedLoggedAt < UNCHECKED_LOG_MS) return;
  console.warn(
    `verify ${ctx.request.model}: ${unchecked} sampled answer(s) could not be re-executed since the last report (the last: ${answer.backend.provider}'s, no backend of another provider answered)`,
  );
  unchecked = 0;
  uncheckedLoggedAt = now;
}

/** A verification run on the best backend of another provider than `exclude`; undefined when none could answer. */
export async function runElsewhere(ctx: CheckContext, exclude: ReadonlySet<string>, checks: string): Promise<Execution | undefined> {
  for (const backend of othersThan(ctx, exclude).slice(0, MAX_CHECK_TRIES)) {
    const run = await verificationRun(ctx, backend, checks);
    if (run) return run;
  }
  return undefined;
}

/**
 * Who lied, among runs that do not all agree: the one run that disagrees
 * with every other while those agree with each other (needs three runs).
 */
export function accusedOf<T>(runs: readonly T[], agree: (a: T, b: T) => boolean): T | undefined {
  if (runs.length < 3) return undefined;
  const agrees = runs.map((a, i) => runs.map((b, j) => i === j || agree(a, b)));
  const odd = runs.map((_, i) => runs.every((__, j) => i === j || !agrees[i]![j]));
  if (odd.filter(Boolean).length !== 1) return undefined;
  const i = odd.indexOf(true);
  const restAgree = runs.every((_, a) => a === i || runs.every((__, b) => b === i || agrees[a]![b]));
  return restAgree ? runs[i] : undefined;
}

/**
 * Re-executes `answer` elsewhere and files a dispute when the answers differ
 * (see the module header). Returns false when they differed (or the check
 * broke), true when they agreed or no other provider could check. Never throws.
 */
export async function reexecute(ctx: CheckContext, answer: Execution): Promise<boolean> {
  try {
    if (!answer.oip || answer.oip.byteLength > MAX_CHECKED_BYTES) return true;
    const check = await runElsewhere(ctx, new Set([answer.backend.provider]), answer.receiptJti);
    if (!check) {
      noteUnchecked(ctx, answer);
      return true;
    }
    const rule = ctx.entry.rule;
    const first = compareAnswerBytes(answer.oip, check.oip!, rule);
    if (first.agree) return true;
    console.warn(`verify ${ctx.request.model}: ${answer.backend.id} and ${check.backend.id} disagree (${first.reason}); refereeing`);
    const referee = await runElsewhere(ctx, new Set([answer.backend.provider, check.backend.provider]), answer.receiptJti);
    await settleMismatch(ctx, [
      { role: 'answer', run: answer },
      { role: 'check', run: check },
      ...(referee ? [{ role: 'referee' as const, run: referee }] : []),
    ]);
    return false;
  } catch (err) {
    console.error(`verify ${ctx.request.model}: re-execution failed: ${(err as Error).message}`);
    return false;
  }
}

/**
 * Everything that follows an answer, in `waitUntil`: its attestation's
 * signature is settled (attestation.ts) and, when `sample` and the signature
 * holds, the answer is re-executed elsewhere. Returns whether the answer
 * stands: its signature verified and no re-execution disagreed (what the
 * answer cache requires before keeping it). Never throws.
 */
export async function verifyAfterAnswer(ctx: CheckContext, answer: Execution, regionSize: number, sample: boolean): Promise<boolean> {
  const signed = await settleAttestation(ctx.env, answer, regionSize, {
    model: ctx.request.model,
    modelVersion: ctx.modelVersion,
    inputSha256: ctx.request.bodySha256,
  });
  if (!signed) return false;
  return sample ? reexecute(ctx, answer) : true;
}

/** Files the dispute of runs that do not all agree: proven against the odd one out, else unresolved. */
export async function settleMismatch(ctx: CheckContext, runs: DisputeInput['runs']): Promise<string | undefined> {
  const rule = ctx.entry.rule;
  const accused = accusedOf(runs, (a, b) => compareAnswerBytes(a.run.oip!, b.run.oip!, rule).agree);
  return fileDispute(ctx.env, {
    kind: 'mismatch',
    verdict: accused ? 'proven' : 'unresolved',
    ...(accused ? { accused: accused.run } : {}),
    model: ctx.request.model,
    modelVersion: ctx.modelVersion,
    inputSha256: ctx.request.bodySha256,
    rule,
    runs,
  });
}
