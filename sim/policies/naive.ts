/**
 * The naive decentralized baselines, through the same PoPs and directory as
 * the mesh but with one attempt, no measurements and no health memory: a
 * random live backend (a naive marketplace), or the nearest live backend
 * ignoring warmth and load. A cold model is loaded on the spot (a cold start);
 * a failed or hung attempt is a failed request (a hung one after the timeout).
 */

import { newJob } from '../backend.ts';
import { toPopMs, type Policy, type SimContext, type SimRequest } from './policy.ts';

export function naivePolicy(mode: 'random' | 'nearest'): Policy {
  /** Per PoP, backend indices nearest first (by backbone RTT). */
  const order = new Map<number, Int32Array>();

  const choose = (request: SimRequest, ctx: SimContext): number | undefined => {
    const now = ctx.events.now;
    if (mode === 'random') {
      const n = ctx.backends.length;
      const start = ctx.random.int(n);
      for (let k = 0; k < n; k++) {
        const i = (start + k) % n;
        if (ctx.directory.entryOf(i, now)?.ready) return i;
      }
      return undefined;
    }
    let list = order.get(request.pop);
    if (!list) {
      const idx = ctx.backends.map((b) => b.spec.index);
      idx.sort((a, b) => ctx.network.popToBackendMs(request.pop, a) - ctx.network.popToBackendMs(request.pop, b) || a - b);
      order.set(request.pop, (list = Int32Array.from(idx)));
    }
    for (const i of list) if (ctx.directory.entryOf(i, now)?.ready) return i;
    return undefined;
  };

  const atPop = (request: SimRequest, ctx: SimContext) => {
    const { events, config } = ctx;
    const back = toPopMs(request) + config.edge.overheadMs;
    const index = choose(request, ctx);
    if (index === undefined) {
      ctx.failed(request, events.now - request.t0 + back);
      return;
    }
    const backend = ctx.backends[index]!;
    const rtt = ctx.network.popToBackendMs(request.pop, index) + ctx.network.jitter(ctx.random);
    const sentAt = events.now;
    const job = newJob(request.model, (outcome) => {
      if (outcome.kind === 'hung') {
        events.at(sentAt + config.edge.timeoutMs, () => ctx.failed(request, events.now - request.t0 + back));
        return;
      }
      events.after(rtt / 2, () => {
        const latencyMs = events.now - request.t0 + back;
        if (outcome.kind === 'ok') ctx.served(request, { latencyMs, cold: outcome.cold, hedged: false, retried: false });
        else ctx.failed(request, latencyMs);
      });
    });
    events.after(rtt / 2, () => backend.arrive(job));
  };

  return {
    name: mode === 'random' ? 'random-node' : 'nearest-node',
    label: mode === 'random' ? 'random node (naive marketplace)' : 'nearest node (no warmth or load)',
    placement: false,
    serve(request, ctx) {
      ctx.events.after(toPopMs(request), () => atPop(request, ctx));
    },
  };
}
