/**
 * How a settlement batch's totals follow from its receipts (docs/api.md
 * section 5). The ledger and the offline verifier compute totals with this
 * same code, so a billing system recomputing them gets the signed numbers exactly.
 */

import type { BatchTotals } from '../shared/jwt.ts';

/** What totals need from a receipt. */
export interface Billable {
  jti: string;
  /** consumer id */
  sub: string;
  provider: string;
  /** integer micro-USD */
  amount: number;
}

export function emptyTotals(): BatchTotals {
  return { providers: {}, consumers: {} };
}

/** Adds one receipt: the consumer is always charged; the provider is paid unless the receipt is disputed. */
export function addToTotals(totals: BatchTotals, r: Billable, disputed?: ReadonlySet<string>): void {
  totals.consumers[r.sub] = (totals.consumers[r.sub] ?? 0) + r.amount;
  if (!disputed?.has(r.jti)) totals.providers[r.provider] = (totals.providers[r.provider] ?? 0) + r.amount;
  else totals.providers[r.provider] ??= 0;
}

/** Totals of a list of receipts. */
export function totalsOf(receipts: Iterable<Billable>, disputed?: ReadonlySet<string>): BatchTotals {
  const totals = emptyTotals();
  for (const r of receipts) addToTotals(totals, r, disputed);
  return totals;
}

/** Same totals, whatever the key order. */
export function totalsEqual(a: BatchTotals, b: BatchTotals): boolean {
  const same = (x: Record<string, number>, y: Record<string, number>) => {
    const kx = Object.keys(x);
    return kx.length === Object.keys(y).length && kx.every((k) => Object.hasOwn(y, k) && y[k] === x[k]);
  };
  return same(a.providers, b.providers) && same(a.consumers, b.consumers);
}

/** Totals with keys sorted, for stable signing and printing. */
export function sortedTotals(t: BatchTotals): BatchTotals {
  const sort = (o: Record<string, number>) => Object.fromEntries(Object.keys(o).sort().map((k) => [k, o[k]!]));
  return { providers: sort(t.providers), consumers: sort(t.consumers) };
}
