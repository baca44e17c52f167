/**
 * `GET /v1/mesh/status` (docs/api.md section 2.15): the JSON the status page
 * polls, for an admin or billing token, or a provider's key (its own
 * backends, traffic and payouts only). It asks every region directory and
 * ledger shard at once; one that does not answer is named in `unavailable`
 * rather than failing the page. Never on the inference path. An isolate
 * answers every viewer of the same view (the operator's and billing's, or
 * one provider's) from one gathering for STATUS_CACHE_MS, so that many open
 * pages cost the Durable Objects one round per second per isolate.
 */

import { Hono, type Context } from 'hono';
import { REGIONS } from '../../shared/regions.ts';
import { authenticate } from '../auth.ts';
import type { AppEnv } from '../context.ts';
import { settings } from '../env.ts';
import { getSnapshot } from '../directory/snapshot.ts';
import { resolvePop } from '../geo/pop.ts';
import { isolateRouting } from '../routing/isolate.ts';
import { allShards, ledgerShard } from '../settlement/ledger.ts';
import { meshStatus, STATUS_BATCHES, STATUS_WINDOW_SECONDS } from '../status/collect.ts';
import type { MeshStatus, StatusViewer } from '../status/view.ts';

/** How long an isolate answers the same view from one gathering, ms. */
export const STATUS_CACHE_MS = 1_000;
/** Views kept at once (one per provider viewing, plus the operator's); the oldest goes first. */
const CACHE_MAX = 256;

/** view key -> its gathering, while fresh; a gathering in flight is shared by the requests that wait for it. */
const gathered = new Map<string, { at: number; status: Promise<MeshStatus> }>();

export const statusRoutes = new Hono<AppEnv>().get('/v1/mesh/status', async (c) => {
  const claims = await authenticate(c, ['admin', 'billing', 'provider']);
  const viewer: StatusViewer = claims.role === 'provider' ? { role: 'provider', provider: claims.sub } : { role: claims.role as 'admin' | 'billing' };
  const pop = resolvePop(c.req.raw, settings(c.env).dev).code;
  // Admin and billing see the same status; each provider its own. The PoP is part of it (ejections are the isolate's).
  const key = `${viewer.role === 'provider' ? `provider\u0000${viewer.provider}` : 'all'}\u0000${pop}`;
  const now = Date.now();
  let entry = gathered.get(key);
  if (!entry || now - entry.at >= STATUS_CACHE_MS) {
    entry = { at: now, status: gather(c, pop, viewer) };
    gathered.delete(key);
    if (gathered.size >= CACHE_MAX) gathered.delete(gathered.keys().next().value!);
    gathered.set(key, entry);
    // A failed gathering is not kept: the next request tries again.
    entry.status.catch(() => gathered.get(key) === entry && gathered.delete(key));
  }
  const status = await entry.status;
  return c.json({ ...status, viewer }, 200, { 'cache-control': 'no-store' });
});

/** Asks every directory and ledger shard, and the isolate's snapshot, for what `viewer` may see. */
async function gather(c: Context<AppEnv>, pop: string, viewer: StatusViewer): Promise<MeshStatus> {
  const { snapshotRefreshMs } = settings(c.env);
  const provider = viewer.provider;
  const [directories, batches, snapshot] = await Promise.all([
    Promise.allSettled(
      REGIONS.map((r) => c.env.REGION_DIRECTORY.getByName(r.id, { locationHint: r.locationHint }).status(STATUS_WINDOW_SECONDS * 1000)),
    ),
    Promise.all(allShards(c.env).map((s) => ledgerShard(c.env, s).latest(s, STATUS_BATCHES, provider))).then(
      (lists) => lists.flat(),
      (err: unknown) => {
        console.warn(`status: settlement shards failed: ${String(err)}`);
        return undefined;
      },
    ),
    getSnapshot(c.env, c.executionCtx, snapshotRefreshMs),
  ]);
  return meshStatus({
    now: Date.now(),
    pop,
    viewer,
    directories: REGIONS.map((region, i) => {
      const answer = directories[i]!;
      if (answer.status === 'rejected') console.warn(`status: directory ${region.id} failed: ${String(answer.reason)}`);
      return { region, status: answer.status === 'fulfilled' ? answer.value : undefined };
    }),
    quarantined: snapshot.quarantined,
    isEjected: (id) => isolateRouting.ejected.isEjected(id),
    batches,
  });
}
