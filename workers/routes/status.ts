/**
 * `GET /v1/mesh/status` (docs/api.md section 2.15): the JSON the status page
 * polls, for an admin or billing token, or a provider's key (its own
 * backends, traffic and payouts only). It asks every region directory and
 * ledger shard at once; one that does not answer is named in `unavailable`
 * rather than failing the page. Never on the inference path.
 */

import { Hono } from 'hono';
import { REGIONS } from '../../shared/regions.ts';
import { authenticate } from '../auth.ts';
import type { AppEnv } from '../context.ts';
import { settings } from '../env.ts';
import { getSnapshot } from '../directory/snapshot.ts';
import { resolvePop } from '../geo/pop.ts';
import { isolateRouting } from '../routing/isolate.ts';
import { allShards, ledgerShard } from '../settlement/ledger.ts';
import { meshStatus, STATUS_BATCHES, STATUS_WINDOW_SECONDS } from '../status/collect.ts';
import type { StatusViewer } from '../status/view.ts';

export const statusRoutes = new Hono<AppEnv>().get('/v1/mesh/status', async (c) => {
  const claims = await authenticate(c, ['admin', 'billing', 'provider']);
  const viewer: StatusViewer = claims.role === 'provider' ? { role: 'provider', provider: claims.sub } : { role: claims.role as 'admin' | 'billing' };
  const { dev, snapshotRefreshMs } = settings(c.env);
  const pop = resolvePop(c.req.raw, dev).code;
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
  const status = meshStatus({
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
  return c.json(status, 200, { 'cache-control': 'no-store' });
});
