/**
 * The time spans a key's allowances belong to (docs/api.md section 2.14), all
 * in UTC: the minute window that requests and tokens per minute count in
 * (fixed, aligned to the minute), and the budget period (a UTC day, a UTC
 * calendar month, or the key's whole life). Pure functions of a time in ms.
 */

import type { BudgetPeriod } from './settings.ts';

/** The window requests and tokens per minute are counted in. */
export const WINDOW_MS = 60_000;

export interface Span {
  /** ms since the epoch, inclusive. */
  start: number;
  /** ms since the epoch, exclusive; null: never ends. */
  end: number | null;
}

/** The UTC minute holding `now`. */
export function windowOf(now: number): { start: number; end: number } {
  const start = Math.floor(now / WINDOW_MS) * WINDOW_MS;
  return { start, end: start + WINDOW_MS };
}

/** The budget period of kind `period` holding `now`. */
export function periodOf(period: BudgetPeriod, now: number): Span {
  const d = new Date(now);
  switch (period) {
    case 'day': {
      const start = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate());
      return { start, end: Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() + 1) };
    }
    case 'month':
      return { start: Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1), end: Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1) };
    case 'total':
      return { start: 0, end: null };
  }
}
