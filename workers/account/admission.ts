/**
 * Consumer requests against their key's account (docs/api.md section 2.14):
 * the three hooks the request path calls. `attachAccount` (from
 * `authenticate`, consumer keys only) makes the key's lease live in this
 * isolate and refuses an Origin the key's CORS settings do not allow;
 * `admit` (the top of `runInference`) reserves a request's upper bound from
 * the lease or refuses it (429 `rate_limited`, 429 `concurrency_limited`,
 * 402 `budget_exhausted`); `settle` (where the receipt is signed) charges the
 * receipt's units and amount instead of the bound. The middleware
 * (account/middleware.ts) ends every admission when the response is ready:
 * the slot is free again and an unsettled reservation (no receipt: no
 * charge) comes back.
 *
 * A key with no account (no `acct` claim and not in the snapshot's list)
 * costs one claim check and one set lookup: no lease, no call.
 */

import type { Context } from 'hono';
import { MeshError } from '../../shared/errors.ts';
import { decodePayload, type KeyClaims, type ReceiptClaims, type Units } from '../../shared/jwt.ts';
import type { InferRequest, ModelMetadata } from '../../shared/protocol.ts';
import type { AppEnv } from '../context.ts';
import type { Env } from '../env.ts';
import type { CatalogueModel } from '../inference/catalogue.ts';
import type { LeaseAnswer } from './book.ts';
import { requestBound, type Bound } from './bound.ts';
import { periodOf } from './calendar.ts';
import { allowsOrigin } from './cors.ts';
import { isolateLeases } from './isolate.ts';
import type { LeaseCall, Refusal, Ticket } from './lease.ts';
import type { KeySettings } from './settings.ts';

function leaseCall(env: Env, jti: string): LeaseCall {
  return (ask) => env.KEY_ACCOUNT.getByName(jti).lease(ask) as Promise<LeaseAnswer>;
}

function unreachable(cause: unknown): MeshError {
  return new MeshError('not_ready', "The edge cannot reach this key's account to check its limits right now; retry shortly.", { retryAfter: 1, cause });
}

/**
 * After a consumer key verified: when the key has an account (its `acct`
 * claim, or `accounts`, the snapshot's list of keys given settings later),
 * makes its lease live (a call only when this isolate holds none) and checks
 * the request's Origin against the key's CORS origins (403 `forbidden`).
 */
export async function attachAccount(c: Context<AppEnv>, claims: KeyClaims, accounts: ReadonlySet<string>): Promise<void> {
  if (claims.acct !== true && !accounts.has(claims.jti)) return;
  const lease = isolateLeases.get(claims.jti);
  try {
    await lease.ready(leaseCall(c.env, claims.jti), c.executionCtx, c.req.method === 'POST');
  } catch (cause) {
    throw unreachable(cause);
  }
  const cors = lease.settings?.cors;
  const origin = c.req.header('origin');
  if (origin !== undefined && cors) {
    if (!allowsOrigin(cors, origin)) {
      throw new MeshError('forbidden', `This key may not be used from the origin ${JSON.stringify(origin.slice(0, 256))}: its CORS settings allow other origins.`);
    }
  }
  c.set('keyAccess', { jti: claims.jti, lease, ...(origin !== undefined && cors ? { origin } : {}) });
}

/** What `admit` reads of the inference. */
export interface AdmissionCall {
  request: InferRequest;
  metadata?: ModelMetadata;
}

/**
 * Admits the request against its key's limits and budget, reserving its
 * upper bound (account/bound.ts); throws 429 or 402 when the lease cannot
 * cover it and the key's account grants no more. Nothing for a key without
 * limits or budget, and nothing the second time in one request.
 */
export async function admit(c: Context<AppEnv>, call: AdmissionCall, entry: CatalogueModel, verify: ReceiptClaims['verify']): Promise<void> {
  const access = c.get('keyAccess');
  if (!access || access.ticket) return;
  const settings = access.lease.settings;
  if (!settings || (settings.limits === null && settings.budget === null)) return;
  const bound: Bound =
    settings.limits?.tokensPerMinute !== undefined || settings.budget !== null ? requestBound(entry, call.request, call.metadata, verify) : { units: 0, microUsd: 0 };
  let result: Ticket | Refusal;
  try {
    result = await access.lease.admit(leaseCall(c.env, access.jti), c.executionCtx, { tokens: bound.units, microUsd: bound.microUsd });
  } catch (cause) {
    throw unreachable(cause);
  }
  if ('refused' in result) throw refusalError(result, access.lease.settings ?? settings, bound, Date.now());
  access.ticket = result;
}

/** Charges the admitted request what its receipt says: `units` metered, `amount` micro-USD. */
export function settle(c: Context<AppEnv>, amount: number, units: Units): void {
  const access = c.get('keyAccess');
  if (access?.ticket) access.lease.settle(access.ticket, units.input + units.output, amount);
}

/**
 * Ends the request's admission (the middleware, once the response is ready).
 * An answer whose receipt was signed where `settle` was not called (any
 * receipt site) is settled from the receipt it carries (`x-mesh-receipt`).
 */
export function finishAccess(c: Context<AppEnv>, res: Response | undefined): void {
  const access = c.get('keyAccess');
  if (!access?.ticket) return;
  const receipt = res?.status === 200 ? res.headers.get('x-mesh-receipt') : null;
  if (!access.ticket.settled && receipt) {
    const claims = decodePayload<Partial<ReceiptClaims>>(receipt);
    const { amount, units } = claims ?? {};
    if (Number.isSafeInteger(amount) && units && Number.isSafeInteger(units.input) && Number.isSafeInteger(units.output)) settle(c, amount!, units);
  }
  access.lease.finish(access.ticket, leaseCall(c.env, access.jti), c.executionCtx);
}

const PERIOD_WORDS = { day: 'each UTC day', month: 'each UTC month', total: 'the life of the key' } as const;

/** The error a refusal answers with: its code, a sentence with the numbers, and `retry-after` where a wait helps. */
export function refusalError(r: Refusal, settings: KeySettings, bound: Bound, now: number): MeshError {
  const limits = settings.limits ?? {};
  const retry = r.retryAfterS === undefined ? {} : { retryAfter: r.retryAfterS };
  switch (r.refused) {
    case 'requests':
      return new MeshError('rate_limited', `This key allows ${limits.requestsPerMinute} requests a minute (UTC minutes) and this minute's are used; retry in ${r.retryAfterS} s.`, retry);
    case 'tokens':
      if (r.tooLarge) {
        return new MeshError(
          'rate_limited',
          `This request counts up to ${bound.units} tokens (metered units), more than the ${limits.tokensPerMinute} a minute this key allows: it can never be admitted; send a smaller one.`,
        );
      }
      return new MeshError(
        'rate_limited',
        `This key allows ${limits.tokensPerMinute} tokens (metered units) a minute; this request needs up to ${bound.units} and this minute's are used; retry in ${r.retryAfterS} s.`,
        retry,
      );
    case 'slots':
      return new MeshError('concurrency_limited', `This key allows ${limits.concurrent} requests at once and has that many in flight; retry when one ends.`, retry);
    case 'budget': {
      const b = settings.budget!;
      const per = PERIOD_WORDS[b.period];
      if (r.tooLarge) {
        return new MeshError('budget_exhausted', `This request may cost up to ${bound.microUsd} µUSD, more than this key's whole budget of ${b.microUsd} µUSD for ${per}.`);
      }
      const end = periodOf(b.period, now).end;
      const when = end === null ? 'the operator can raise it' : `it renews at ${new Date(end).toISOString()}`;
      return new MeshError('budget_exhausted', `This key's budget of ${b.microUsd} µUSD for ${per} cannot cover this request, which may cost up to ${bound.microUsd} µUSD; ${when}.`);
    }
  }
}
