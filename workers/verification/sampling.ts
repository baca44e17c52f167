/**
 * How often a provider's answers are re-executed elsewhere (docs/api.md
 * section 6.1). Pure: a provider's standing (from the operator registry, in
 * the isolate's snapshot), the mesh's base rate and the clock come in.
 *
 * - the operator's per-provider rate, when set, is used as it is;
 * - otherwise the base rate (`VERIFY_SAMPLE_RATE`), raised to NEW_PROVIDER_RATE
 *   while the provider is new (admitted less than NEW_PROVIDER_MS ago), and to
 *   AFTER_FRAUD_RATE for AFTER_FRAUD_MS after a proven fraud: a provider with
 *   no track record, or a bad one, is checked more, an established honest one
 *   costs the mesh little. Snapshots carry only such notable standings
 *   (`OperatorRegistry.edgeState`); a provider absent from them is an
 *   established one with a clean record.
 */

import type { ProviderStanding } from '../operator/standing.ts';

export const NEW_PROVIDER_MS = 7 * 24 * 3600_000;
export const NEW_PROVIDER_RATE = 0.2;
export const AFTER_FRAUD_MS = 24 * 3600_000;
export const AFTER_FRAUD_RATE = 0.5;

/** The share of `standing`'s answers to re-execute, 0..1. */
export function sampleRate(standing: ProviderStanding | undefined, baseRate: number, now: number): number {
  if (standing?.sampleRate != null) return standing.sampleRate;
  let rate = baseRate;
  if (standing && now - standing.addedAt < NEW_PROVIDER_MS) rate = Math.max(rate, NEW_PROVIDER_RATE);
  if (standing?.lastProvenAt != null && now - standing.lastProvenAt < AFTER_FRAUD_MS) rate = Math.max(rate, AFTER_FRAUD_RATE);
  return rate;
}

/**
 * Routing weight of a provider with `strikes` proven frauds not yet cleared: a
 * factor on its backends' expected time (routing/score.ts), so a provider
 * caught once serves only where it is clearly the best. Quarantine
 * (`quarantinedAt`) removes it altogether.
 */
export function strikePenalty(strikes: number): number {
  return 1 + Math.max(0, strikes);
}
