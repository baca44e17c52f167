/**
 * How a settlement batch's totals follow from its receipts (docs/api.md
 * section 5). The ledger and the offline verifier compute totals with this
 * same code, so a billing system recomputing them gets the signed numbers exactly.
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
  provider: string;
  /** integer micro-USD */
  amount: number;
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
  return { providers: record(), consumers: record() };
}

/** Adds one receipt: the consumer is always charged; the provider is paid unless the receipt is disputed. */
export function addToTotals(totals: BatchTotals, r: Billable, disputed?: ReadonlySet<string>): void {
  add(totals.consumers, r.sub, r.amount);
  add(totals.providers, r.provider, disputed?.has(r.jti) ? 0 : r.amount);
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
  const sort = (o: Record<string, number>) => {
    const out = record();
    for (const k of Object.keys(o).sort()) add(out, k, o[k]!);
    return out;
  };
  return { providers: sort(t.providers), consumers: sort(t.consumers) };
}
