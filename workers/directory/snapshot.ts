/**
 * The isolate's view of every region's backends, of the revoked keys and of
 * the providers' standing (strikes and quarantine, docs/api.md section 6.3).
 * The per-request path reads
 * this in-memory snapshot; it is refreshed from the RegionDirectory objects in
 * the background (`ctx.waitUntil`) once it is older than SNAPSHOT_REFRESH_MS,
 * with its routing index. Only a cold isolate, with no snapshot yet, waits
 * for the first fetch.
 * Revocations fail closed: until this isolate has loaded the revoked-key list
 * once, the snapshot says so (`revoked: undefined`) and keys are refused; a
 * later failed load keeps the last list.
 */

import { REGIONS } from '../../shared/regions.ts';
import type { BackendEntry } from './backend.ts';
import type { Env } from '../env.ts';
import type { ProviderStanding } from '../operator/standing.ts';
import { routingIndexFor } from '../routing/snapshot-index.ts';
import { strikePenalty } from '../verification/sampling.ts';

export interface Snapshot {
  /** ms since epoch when it was taken. */
  at: number;
  backends: BackendEntry[];
  byRegion: Map<string, BackendEntry[]>;
  /**
   * `jti`s of revoked bearer keys; `undefined` while this isolate has never
   * loaded the list (revocations unknown: no key may be trusted yet).
   */
  revoked: ReadonlySet<string> | undefined;
  /**
   * `jti`s of consumer keys given settings after issue, whose JWT does not
   * claim an account (docs/api.md section 2.14): requests with them lease
   * from their KeyAccount. Loaded with `revoked`, kept when a load fails.
   */
  accounts: ReadonlySet<string>;
  /**
   * The standing of the admitted providers that are notable: new, struck,
   * quarantined, recently proven to have lied, or with their own sample rate
   * (what sampling reads, verification/sampling.ts). An established provider
   * with a clean record has none here.
   */
  providers: ReadonlyMap<string, ProviderStanding>;
  /** Providers with a live backend in some region: admitted, not removed (a removal deletes its backends). */
  liveProviders: ReadonlySet<string>;
  /** Providers quarantined by the operator registry: no traffic until the operator clears them. */
  quarantined: ReadonlySet<string>;
  /** Expected-time factor of providers with proven frauds (verification/sampling.ts `strikePenalty`). */
  penalties: ReadonlyMap<string, number>;
  /**
   * Models (`name` and `name@version`) some backend announced within
   * MODEL_MEMORY_MS: while every backend of a model is gone, requests for it
   * get 503 (retry later), not 404 (no such model).
   */
  recentModels: ReadonlyMap<string, number>;
}

/** How long the isolate remembers a model no backend announces any more. */
const MODEL_MEMORY_MS = 10 * 60_000;

let current: Snapshot | undefined;
let inFlight: Promise<Snapshot> | undefined;

async function fetchSnapshot(env: Env): Promise<Snapshot> {
  const at = Date.now();
  const [operator, ...results] = await Promise.allSettled([
    env.OPERATOR_REGISTRY.getByName('global').edgeState(),
    ...REGIONS.map((r) => env.REGION_DIRECTORY.getByName(r.id, { locationHint: r.locationHint }).backends()),
  ]);
  const byRegion = new Map<string, BackendEntry[]>();
  results.forEach((result, i) => {
    const region = REGIONS[i]!.id;
    if (result.status === 'fulfilled') {
      byRegion.set(region, result.value as BackendEntry[]);
    } else {
      // Keep what we knew of a region whose directory did not answer this time, as long as it would still be
      // live: an entry past its expiresAt is one the directory would have dropped, so it no longer keeps its
      // models remembered or its provider live.
      console.warn(`snapshot: directory ${region} failed: ${String(result.reason)}`);
      byRegion.set(region, (current?.byRegion.get(region) ?? []).filter((b) => b.expiresAt > at));
    }
  });
  if (operator!.status === 'rejected') console.warn(`snapshot: operator registry failed: ${String(operator!.reason)}`);
  const state = operator!.status === 'fulfilled' ? operator!.value : undefined;
  const standings = state ? new Map(state.standings.map((p) => [p.id, p as ProviderStanding])) : (current?.providers ?? new Map());
  const backends = [...byRegion.values()].flat();
  const recentModels = new Map([...(current?.recentModels ?? [])].filter(([, seen]) => at - seen < MODEL_MEMORY_MS));
  for (const b of backends) {
    for (const m of b.models) {
      recentModels.set(m.name, at);
      recentModels.set(`${m.name}@${m.version}`, at);
    }
    // A model a backend could load is served after warm placement: 503 (retry) until then, not 404.
    for (const name of b.available ?? []) recentModels.set(name, at);
  }
  // The routing index is built here, in the background refresh, not by the
  // first request to rank on this snapshot (31.6 ms at 10,000 backends by
  // bench:routing); a cold isolate's first request waits for it either way.
  routingIndexFor(backends);
  const snap: Snapshot = {
    at,
    backends,
    liveProviders: new Set(backends.map((b) => b.provider)),
    recentModels,
    byRegion,
    // Revocations are never forgotten because one fetch failed, and never
    // assumed empty: with no list ever loaded they stay unknown.
    revoked: state ? new Set(state.revoked) : current?.revoked,
    accounts: state ? new Set(state.accounts) : (current?.accounts ?? new Set()),
    ...standingViews(standings),
  };
  current = snap;
  return snap;
}

/** The standings, and what routing reads of them. */
function standingViews(providers: ReadonlyMap<string, ProviderStanding>): Pick<Snapshot, 'providers' | 'quarantined' | 'penalties'> {
  const quarantined = new Set<string>();
  const penalties = new Map<string, number>();
  for (const p of providers.values()) {
    if (p.quarantinedAt !== null) quarantined.add(p.id);
    if (p.strikes > 0) penalties.set(p.id, strikePenalty(p.strikes));
  }
  return { providers, quarantined, penalties };
}

/**
 * Applies a provider's new standing to this isolate's snapshot at once (a
 * fraud just proven here); others see it on their next refresh.
 */
export function noteStanding(standing: ProviderStanding): void {
  if (!current) return;
  const providers = new Map(current.providers);
  providers.set(standing.id, standing);
  current = { ...current, ...standingViews(providers) };
}

/** Fetches a fresh snapshot now (shared by concurrent callers). Only for paths that are already failing or rare. */
export function refreshSnapshot(env: Env): Promise<Snapshot> {
  inFlight ??= fetchSnapshot(env).finally(() => {
    inFlight = undefined;
  });
  return inFlight;
}

/**
 * The current snapshot. Starts a background refresh when it is stale; waits
 * only when the isolate has none yet.
 */
export async function getSnapshot(env: Env, ctx: { waitUntil(p: Promise<unknown>): void }, refreshMs: number): Promise<Snapshot> {
  if (!current) return refreshSnapshot(env);
  if (Date.now() - current.at >= refreshMs && !inFlight) ctx.waitUntil(refreshSnapshot(env).catch(() => undefined));
  return current;
}

/** Makes the next request fetch a fresh snapshot (after a registration changed the directory). */
export function invalidateSnapshot(): void {
  if (current) current = { ...current, at: 0 };
}

/**
 * Applies a revocation to this isolate's snapshot at once; others see it on
 * their next refresh. With revocations still unknown there is nothing to add
 * to: the registry holds it, and the first list this isolate loads has it.
 */
export function noteRevoked(jti: string): void {
  if (current?.revoked) current = { ...current, revoked: new Set([...current.revoked, jti]) };
}

/**
 * Applies a key's listing (`on`) or unlisting as a key with an account to
 * this isolate's snapshot at once; others see it on their next refresh.
 */
export function noteAccount(jti: string, on: boolean): void {
  if (!current) return;
  const accounts = new Set(current.accounts);
  if (on) accounts.add(jti);
  else accounts.delete(jti);
  current = { ...current, accounts };
}

/** Forgets this isolate's snapshot, as a fresh isolate starts. Tests only: production never needs it. */
export function forgetSnapshotForTests(): void {
  current = undefined;
  inFlight = undefined;
}
