/**
 * Redundant mode (`x-mesh-verify: redundant`, docs/api.md section 6.4): the
 * request runs on two backends of different providers at once, and the
 * consumer gets an answer only when the two agree under the model's rule
 * (receipts/compare.ts). A backend that fails is replaced by the next
 * candidate of a provider other than the one in the other slot. On
 * disagreement the consumer gets 502 `verification_failed` and, after the
 * response, a third provider referees: the dispute filed is proven against
 * the odd one out, or unresolved (reexecute.ts `settleMismatch`). The runs of
 * a disagreement are paid by verification receipts (the operator's account),
 * the liar's withheld.
 */

import { compareAnswerBytes } from '../../receipts/compare.ts';
import { MeshError } from '../../shared/errors.ts';
import type { BackendEntry } from '../directory/backend.ts';
import { dispatch, type DispatchResult } from '../inference/dispatch.ts';
import { isolateRouting, trackPending } from '../routing/isolate.ts';
import { payRun, runElsewhere, sameVersion, settleMismatch, type CheckContext } from './reexecute.ts';

/** Dispatches one redundant request may make in all (two slots and their retries). */
const MAX_DISPATCHES = 4;

type Ok = Extract<DispatchResult, { kind: 'ok' }>;
type Rejected = Extract<DispatchResult, { kind: 'rejected' }>;

/** Two agreeing answers, or the consumer's own error as a backend refused it. */
export type PairOutcome =
  | { kind: 'agreed'; first: { backend: BackendEntry; result: Ok }; second: { backend: BackendEntry; result: Ok } }
  | { kind: 'rejected'; backend: BackendEntry; result: Rejected };

/**
 * Runs the request on two providers and compares; throws 503 when fewer than
 * two providers can serve it, 502 `backend_failed` when the backends failed,
 * 502 `verification_failed` when the answers differ (the dispute follows in
 * `waitUntil`).
 */
export async function runPair(ctx: CheckContext, waitUntil: (p: Promise<unknown>) => void): Promise<PairOutcome> {
  // Both slots run the same version (answers of two versions are not comparable).
  const candidates = ctx.candidates.filter((c) => sameVersion(ctx, c.backend));
  if (new Set(candidates.map((c) => c.backend.provider)).size < 2) {
    throw new MeshError('no_capacity', `x-mesh-verify: redundant needs backends of two providers serving "${ctx.request.model}"; fewer are available now.`, {
      retryAfter: 5,
    });
  }
  const tried = new Set<string>();
  /** The provider each slot holds (or last tried), so that the other slot avoids it. */
  const held: { first?: string; second?: string } = {};
  let dispatches = 0;
  const slot = async (me: 'first' | 'second'): Promise<{ backend: BackendEntry; result: Ok | Rejected } | undefined> => {
    for (;;) {
      const avoid = held[me === 'first' ? 'second' : 'first'];
      const next = candidates.find((c) => !tried.has(c.backend.id) && c.backend.provider !== avoid);
      if (!next || dispatches >= MAX_DISPATCHES) return undefined;
      dispatches++;
      const backend = next.backend;
      tried.add(backend.id);
      held[me] = backend.provider;
      const release = trackPending(isolateRouting, backend.id);
      const result = await dispatch(backend, ctx.request).finally(release);
      if (result.kind !== 'failed') return { backend, result };
      isolateRouting.ejected.recordFailure(backend, ctx.regionSize(backend));
      console.warn(`infer ${ctx.request.model} (redundant): backend ${backend.id} failed (${result.reason})`);
    }
  };
  // The first slot takes the best candidate (set synchronously), the second the best of another provider.
  const [first, second] = await Promise.all([slot('first'), slot('second')]);
  if (first?.result.kind === 'rejected') return { kind: 'rejected', backend: first.backend, result: first.result };
  if (second?.result.kind === 'rejected') return { kind: 'rejected', backend: second.backend, result: second.result };
  if (!first || !second || first.backend.provider === second.backend.provider) {
    throw new MeshError('backend_failed', `x-mesh-verify: redundant: two providers could not both answer for "${ctx.request.model}".`);
  }
  const a = { backend: first.backend, result: first.result as Ok };
  const b = { backend: second.backend, result: second.result as Ok };
  const same = compareAnswerBytes(a.result.body, b.result.body, ctx.entry.rule);
  if (same.agree) return { kind: 'agreed', first: a, second: b };
  console.warn(`infer ${ctx.request.model} (redundant): ${a.backend.id} and ${b.backend.id} disagree (${same.reason})`);
  waitUntil(disputeDisagreement(ctx, a, b));
  throw new MeshError(
    'verification_failed',
    `x-mesh-verify: redundant: the two providers' answers for "${ctx.request.model}" differ; nothing was charged, and the disagreement is under review.`,
  );
}

/** Pays both runs of a disagreement with verification receipts, referees, and files the dispute. Never throws. */
async function disputeDisagreement(ctx: CheckContext, a: { backend: BackendEntry; result: Ok }, b: { backend: BackendEntry; result: Ok }): Promise<void> {
  try {
    const [first, second] = await Promise.all([payRun(ctx, a.backend, a.result, 'redundant'), payRun(ctx, b.backend, b.result, 'redundant')]);
    if (!first || !second) return;
    const referee = await runElsewhere(ctx, new Set([a.backend.provider, b.backend.provider]), first.receiptJti);
    await settleMismatch(ctx, [
      { role: 'answer', run: first },
      { role: 'check', run: second },
      ...(referee ? [{ role: 'referee' as const, run: referee }] : []),
    ]);
  } catch (err) {
    console.error(`infer ${ctx.request.model} (redundant): filing the disagreement failed: ${(err as Error).message}`);
  }
}
