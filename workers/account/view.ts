/**
 * What `GET` and `PATCH /admin/keys/{jti}` answer (docs/api.md section 2.14):
 * a key's account as the operator reads it, times as ISO 8601, money in
 * integer micro-USD.
 */

import type { AccountRecord, Usage } from './book.ts';

const iso = (ms: number) => new Date(ms).toISOString();

export function accountView(account: AccountRecord, usage: Usage) {
  return {
    jti: account.jti,
    sub: account.sub,
    exp: Math.floor(account.expiresAt / 1000),
    limits: account.settings.limits,
    budget: account.settings.budget,
    cors: account.settings.cors,
    acctClaim: account.claim,
    version: account.version,
    updatedAt: iso(account.updatedAt),
    usage: {
      window: { start: iso(usage.window.start), end: iso(usage.window.end), requests: usage.window.requests, tokens: usage.window.tokens },
      concurrent: usage.concurrent,
      budget: usage.budget && {
        periodStart: iso(usage.budget.periodStart),
        periodEnd: usage.budget.periodEnd === null ? null : iso(usage.budget.periodEnd),
        spentMicroUsd: usage.budget.spentMicroUsd,
        heldMicroUsd: usage.budget.heldMicroUsd,
        remainingMicroUsd: usage.budget.remainingMicroUsd,
      },
    },
  };
}
