/**
 * Warm placement, as a pure decision: given one region's demand per model and
 * its backends, what the backend now heartbeating should load or unload
 * (docs/design.md: "demand per model, from which it asks backends, in the
 * heartbeat reply, to pre-load models so that a warm one exists where demand
 * is"). At most one action per heartbeat, and none asked twice within
 * `askAgainMs`, so a slow load is not asked of every backend at once.
 */

import type { HeartbeatAction, HeartbeatModel } from '../../shared/heartbeat.ts';

export interface PlacementPolicy {
  /** A model requested within this window has demand. */
  demandWindowMs: number;
  /** A warm model not requested in the region for this long may be unloaded. */
  idleUnloadMs: number;
  /** An action on a model is not asked again (of any backend in the region) for this long. */
  askAgainMs: number;
  /** A backend is not asked to hold more warm models than this. */
  maxWarmModels: number;
}

export const DEFAULT_PLACEMENT: PlacementPolicy = {
  demandWindowMs: 60_000,
  idleUnloadMs: 15 * 60_000,
  askAgainMs: 30_000,
  maxWarmModels: 8,
};

interface PlacedBackend {
  id: string;
  ready: boolean;
  models: readonly HeartbeatModel[];
  available?: readonly string[];
}

interface PlacementInput {
  now: number;
  /** The backend whose heartbeat is being answered. */
  backend: PlacedBackend;
  /** Every live backend of the region, this one included. */
  region: readonly PlacedBackend[];
  /** Last request per model seen for this region. */
  lastRequest: ReadonlyMap<string, number>;
  /** Since when the region's demand has been tracked (no unload before a full idle period of tracking). */
  trackingSince: number;
  /** Recent asks in the region: `${op}:${model}` -> when. */
  asked: ReadonlyMap<string, number>;
  policy: PlacementPolicy;
}

/** The action to put in this backend's heartbeat reply, if any. */
export function placementActions(input: PlacementInput): HeartbeatAction[] {
  const { now, backend, region, lastRequest, asked, policy } = input;
  if (!backend.ready) return [];
  const recentlyAsked = (op: string, model: string) => now - (asked.get(`${op}:${model}`) ?? -Infinity) < policy.askAgainMs;
  const warm = backend.models.filter((m) => m.warm);

  // Load: demand here, no backend of the region has it warm or loading, this one can load it and has room.
  if (warm.length < policy.maxWarmModels) {
    const wanted = [...lastRequest]
      .filter(([, at]) => now - at < policy.demandWindowMs)
      .sort(([, a], [, b]) => b - a)
      .map(([model]) => model);
    for (const model of wanted) {
      if (!backend.available?.includes(model)) continue;
      if (region.some((b) => b.ready && b.models.some((m) => m.name === model))) continue;
      if (recentlyAsked('load', model)) continue;
      return [{ op: 'load', model }];
    }
  }

  // Unload: warm here, idle in the region for a full period of tracking; the backend keeps at least one model.
  if (warm.length > 1 && now - input.trackingSince >= policy.idleUnloadMs) {
    for (const m of warm) {
      if (now - (lastRequest.get(m.name) ?? -Infinity) < policy.idleUnloadMs) continue;
      if (recentlyAsked('unload', m.name)) continue;
      return [{ op: 'unload', model: m.name }];
    }
  }
  return [];
}
