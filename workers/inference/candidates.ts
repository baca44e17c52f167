/**
 * The backends to try for one request: the regions it may be served in (the
 * key's residency and the `x-mesh-region` pin), and its candidates ranked from
 * the isolate's snapshot, or the 404/503 that says why there are none. Each
 * call also counts demand for the model (directory/demand.ts).
 */

import type { Context } from 'hono';
import { MeshError } from '../../shared/errors.ts';
import { isRegionId } from '../../shared/regions.ts';
import type { KeyClaims } from '../../shared/jwt.ts';
import type { AppEnv } from '../context.ts';
import { flushDemand, noteDemand } from '../directory/demand.ts';
import { getSnapshot, refreshSnapshot, type Snapshot } from '../directory/snapshot.ts';
import { settings } from '../env.ts';
import { resolvePop, type Pop } from '../geo/pop.ts';
import { isolateRouting } from '../routing/isolate.ts';
import { pickAttempts } from '../routing/p2c.ts';
import type { RoutingStats, Scored } from '../routing/score.ts';
import { rankIndexed } from '../routing/rank.ts';
import { routingIndexFor } from '../routing/snapshot-index.ts';
import { offered } from './catalogue.ts';

/**
 * Candidates ranked per request: P2C's pool (5), the attempts (routing/attempts.ts's MAX_ATTEMPTS)
 * and metadata's asks (5) all lie within the first 8 (the P2C pick moves one
 * of the first 5 to the front). Verification, which may search further, asks
 * for the rest (`all`).
 */
const RANKED = 8;
const RETRY_AFTER_S = 5;
/** A snapshot older than this is refreshed once before a request is refused for want of a backend. */
const STALE_BEFORE_REFUSING_MS = 250;

/** Regions this request may be served in: the `x-mesh-region` pin within the key's residency. */
export function allowedRegions(c: Context<AppEnv>, consumer: KeyClaims): Set<string> | undefined {
  const pin = c.req.header('x-mesh-region');
  const residency = consumer.regions ? new Set(consumer.regions) : undefined;
  if (pin === undefined) return residency;
  if (!isRegionId(pin)) throw new MeshError('unknown_region', `x-mesh-region: "${pin}" is not a mesh region.`);
  if (residency && !residency.has(pin)) {
    throw new MeshError('forbidden', `Your key may only be served in ${[...residency].join(', ')}, not ${pin}.`);
  }
  return new Set([pin]);
}

/**
 * The backends to try for `model` from this request's PoP: scored by expected
 * time to a complete answer, the first picked by power of two choices among
 * the best, the rest in score order; the first RANKED only (`all()`: every one,
 * the same first ones then the rest). 404 or 503 when there are none.
 */
export async function candidatesFor(
  c: Context<AppEnv>,
  consumer: KeyClaims,
  model: string,
  version?: string,
  pop: Pop = resolvePop(c.req.raw, settings(c.env).dev),
): Promise<{ pop: Pop; candidates: Scored[]; snapshot: Snapshot; withEjected: () => Scored[]; all: () => Scored[] }> {
  const s = settings(c.env);
  offered(c.env, model);
  const residency = allowedRegions(c, consumer);
  // Demand counts every request for an offered model, served or not (a metadata fetch counts too): it is what warm placement reads.
  noteDemand(pop, model);
  flushDemand(c.env, c.executionCtx);
  // From the snapshot's routing index (routing/snapshot-index.ts, ranked by routing/rank.ts): the model's backends only, the first RANKED of them.
  const score = (snap: Snapshot, stats: RoutingStats, now: number, k?: number) =>
    rankIndexed(routingIndexFor(snap.backends), { model, version, from: pop, residency }, stats, now, {
      allowCold: false,
      quarantined: snap.quarantined,
      penalties: snap.penalties,
    }, k);
  let decidedAt = 0;
  const heldBack = (c: Scored) => isolateRouting.ejected.isHeldBack(c.backend.id, decidedAt);
  const rank = (snap: Snapshot) => pickAttempts(score(snap, isolateRouting, (decidedAt = Date.now()), RANKED), Math.random, {}, heldBack);
  let snapshot = await getSnapshot(c.env, c.executionCtx, s.snapshotRefreshMs);
  let candidates = rank(snapshot);
  if (candidates.length === 0 && Date.now() - snapshot.at > STALE_BEFORE_REFUSING_MS) {
    // Before refusing, make sure the refusal is not an artefact of an old snapshot.
    snapshot = await refreshSnapshot(c.env);
    candidates = rank(snapshot);
  }
  if (candidates.length === 0) {
    if (!snapshot.recentModels.has(version === undefined ? model : `${model}@${version}`)) {
      const what = version === undefined ? `a model named "${model}"` : `version "${version}" of "${model}"`;
      throw new MeshError('model_not_found', `No backend in the mesh serves ${what}.`);
    }
    const where = residency ? ` in ${[...residency].join(', ')}` : '';
    throw new MeshError('no_capacity', `No ready backend has "${model}" warm${where} right now; retry shortly.`, {
      retryAfter: RETRY_AFTER_S,
    });
  }
  // Ejected backends too, best first: for re-executions off the answer's path (verification/reexecute.ts), where
  // a backend ejected for its latency (or for hedges it lost) can still check an answer.
  const final = snapshot;
  const withEjected = () => score(final, { ...isolateRouting, ejected: undefined }, Date.now());
  // Every candidate: the ones above, then the rest best first (ranked when asked, at the same `now`).
  let everyone: Scored[] | undefined;
  const top = candidates;
  const all = () => {
    if (everyone) return everyone;
    const taken = new Set(top.map((x) => x.backend));
    return (everyone = [...top, ...score(final, isolateRouting, decidedAt).filter((x) => !taken.has(x.backend))]);
  };
  return { pop, candidates, snapshot, withEjected, all };
}

