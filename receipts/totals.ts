/**
 * How a settlement batch's totals follow from its receipts (docs/api.md
 * section 5). The ledger and the offline verifier compute totals with this
 * same code, so a billing system recomputing them gets the signed numbers exactly.
 * A redundant receipt's payout is split between its two providers; a disputed
 * receipt pays nothing and its would-be payouts are counted in `withheld`; a
 * receipt with no provider (a cache hit's, docs/api.md section 2.13) is
 * charged and pays no one: its amount stays with the operator.
 *
 * Ids are any strings, `__proto__` and `constructor` included: the records
 * built here have no prototype, reads ask for own properties only, and
 * `__proto__` is written as a data property. Their JSON is plain objects.
 */

import type { BatchTotals } from '../shared/jwt.ts';

/** What totals need from a receipt. */
export interface Billable {
  jti: string;
  /** consumer id */
  sub: string;
  /** Who is paid `amount`; absent (or empty) on a cache hit's receipt, which pays no provider. */
  provider?: string;
  /** integer micro-USD */
  amount: number;
  /**
   * The second provider of a redundant receipt, who is paid part of
   * `amount`. A receipt's own `second` claim (`{ provider, ... }`) is taken
   * as its `provider`, so receipt claims can be totalled as they are.
   */
  second?: string | { provider: string };
}

/** An id-keyed record with no prototype, so no id names an inherited property. */
function record(): Record<string, number> {
  return Object.create(null) as Record<string, number>;
}

/** `m[id] + n`, counting an id `m` does not own as 0 (never an inherited value). */
function add(m: Record<string, number>, id: string, n: number): void {
  const v = (Object.hasOwn(m, id) ? m[id]! : 0) + n;
  // Assigning `__proto__` on an object that has a prototype would set the prototype, not a total.
  if (id === '__proto__') Object.defineProperty(m, id, { value: v, writable: true, enumerable: true, configurable: true });
  else m[id] = v;
}

export function emptyTotals(): BatchTotals {
  return { providers: record(), consumers: record(), withheld: record() };
}

/** The second provider of a billable, if it has one. */
export function secondProvider(r: Pick<Billable, 'second'>): string | undefined {
  const s = r.second;
  if (s === undefined || s === null) return undefined;
  return typeof s === 'string' ? s : s.provider;
}

/**
 * How `amount` is paid out: all to the provider, or split with a redundant
 * receipt's second provider (the second gets the lower half, the provider the rest).
 */
export function payoutSplit(amount: number, second: boolean): { provider: number; second: number } {
  const half = second ? Math.floor(amount / 2) : 0;
  return { provider: amount - half, second: half };
}

/**
 * Adds one receipt: the consumer is always charged; the provider (and a
 * redundant receipt's second provider) is paid its part unless the receipt
 * is disputed, when the parts go to `withheld` instead and the payout is 0.
 * A receipt with no provider (a cache hit) adds to no provider's total.
 */
export function addToTotals(totals: BatchTotals, r: Billable, disputed?: ReadonlySet<string>): void {
  add(totals.consumers, r.sub, r.amount);
  if (r.provider === undefined || r.provider === '') return;
  const second = secondProvider(r);
  const split = payoutSplit(r.amount, second !== undefined);
  if (disputed?.has(r.jti)) {
    const withheld = (totals.withheld ??= record());
    add(totals.providers, r.provider, 0);
    add(withheld, r.provider, split.provider);
    if (second !== undefined) {
      add(totals.providers, second, 0);
      add(withheld, second, split.second);
    }
    return;
  }
  add(totals.providers, r.provider, split.provider);
  if (second !== undefined) add(totals.providers, second, split.second);
}

/** Totals of a list of receipts. */
export function totalsOf(receipts: Iterable<Billable>, disputed?: ReadonlySet<string>): BatchTotals {
  const totals = emptyTotals();
  for (const r of receipts) addToTotals(totals, r, disputed);
  return totals;
}

/**
 * Same totals, whatever the key order. `withheld` is compared only when both
 * have it: batches signed before disputes existed lack it.
 */
export function totalsEqual(a: BatchTotals, b: BatchTotals): boolean {
  const same = (x: Record<string, number>, y: Record<string, number>) => {
    const kx = Object.keys(x);
    return kx.length === Object.keys(y).length && kx.every((k) => Object.hasOwn(y, k) && y[k] === x[k]);
  };
  if (!same(a.providers, b.providers) || !same(a.consumers, b.consumers)) return false;
  return a.withheld === undefined || b.withheld === undefined || same(a.withheld, b.withheld);
}

/** Totals with keys sorted, for stable signing and printing. */
export function sortedTotals(t: BatchTotals): BatchTotals {
  const sort = (o: Record<string, number>) => {
    const out = record();
    for (const k of Object.keys(o).sort()) add(out, k, o[k]!);
    return out;
  };
  const out: BatchTotals = { providers: sort(t.providers), consumers: sort(t.consumers) };
  if (t.withheld !== undefined) out.withheld = sort(t.withheld);
  return out;
}
