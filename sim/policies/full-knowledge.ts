/**
 * A reference, not a buildable router: each request goes to the backend that
 * would answer it first if the router knew everything at that instant: every
 * backend's true queue and busy slots, the requests every PoP has sent that
 * are still on their way, the true round trip from the PoP, the true service
 * speed. It weighs them as a queue does (a request waits only when every slot
 * is taken) and takes the least; a failed or hung attempt is tried once more
 * elsewhere. No hedging, no warm placement. What it reaches at a load is what
 * the world's capacity allows routing to reach (greedy, so not a proven
 * optimum), and what the mesh reaches is measured against it.
 */

import { newJob } from '../backend.ts';
import { toPopMs, type Policy, type SimContext, type SimRequest } from './policy.ts';

/** Backends weighed per (PoP, model): those with the model warm at the start, the best idle answer first. */
const CANDIDATES = 64;

export function fullKnowledgePolicy(): Policy {
  /** Per (PoP, model): candidate backend indices. */
  const candidates = new Map<number, Int32Array>();
  /** Per backend: requests sent to it that have not arrived yet. */
  let onTheWay = new Int32Array(0);

  const listFor = (ctx: SimContext, pop: number, model: number): Int32Array => {
    const key = pop * ctx.config.models.length + model;
    let list = candidates.get(key);
    if (!list) {
      const serviceMs = ctx.config.models[model]!.serviceMs;
      const idle = (i: number) => ctx.network.popToBackendMs(pop, i) + serviceMs * ctx.backends[i]!.spec.speed;
      const warm = ctx.backends.filter((b) => b.spec.warm[model]).map((b) => b.spec.index);
      warm.sort((a, b) => idle(a) - idle(b) || a - b);
      candidates.set(key, (list = Int32Array.from(warm.slice(0, CANDIDATES))));
    }
    return list;
  };

  /** The backend that answers first, as known now; -1 when none is up with the model warm. */
  const choose = (request: SimRequest, ctx: SimContext, exclude: number): number => {
    let best = -1;
    let bestMs = Infinity;
    for (const i of listFor(ctx, request.pop, request.model)) {
      const b = ctx.backends[i]!;
      if (i === exclude || b.state !== 'up' || !b.warm[request.model]) continue;
      const serviceMs = ctx.config.models[request.model]!.serviceMs * b.spec.speed;
      const ahead = b.busy + b.queued + onTheWay[i]!;
      const waitMs = ahead >= b.spec.slots ? ((ahead + 1 - b.spec.slots) / b.spec.slots) * serviceMs : 0;
      const ms = ctx.network.popToBackendMs(request.pop, i) + waitMs + serviceMs;
      if (ms < bestMs) {
        bestMs = ms;
        best = i;
      }
    }
    return best;
  };

  const atPop = (request: SimRequest, ctx: SimContext, exclude = -1) => {
    const { events, config } = ctx;
    const back = toPopMs(request) + config.edge.overheadMs;
    const retried = exclude >= 0;
    const index = choose(request, ctx, exclude);
    if (index < 0) {
      ctx.failed(request, events.now - request.t0 + back);
      return;
    }
    const rtt = ctx.network.popToBackendMs(request.pop, index) + ctx.network.jitter(ctx.random);
    const sentAt = events.now;
    const job = newJob(request.model, (outcome) => {
      if (outcome.kind === 'ok') {
        events.after(rtt / 2, () => ctx.served(request, { latencyMs: events.now - request.t0 + back, cold: outcome.cold, hedged: false, retried }));
      } else if (!retried) {
        events.at(outcome.kind === 'hung' ? sentAt + config.edge.timeoutMs : events.now + rtt / 2, () => atPop(request, ctx, index));
      } else {
        events.after(rtt / 2, () => ctx.failed(request, events.now - request.t0 + back));
      }
    });
    onTheWay[index]!++;
    events.after(rtt / 2, () => {
      onTheWay[index]!--;
      ctx.backends[index]!.arrive(job);
    });
  };

  return {
    name: 'full-knowledge',
    label: 'full knowledge (a reference, not buildable)',
    placement: false,
    setup(ctx) {
      onTheWay = new Int32Array(ctx.backends.length);
    },
    serve(request, ctx) {
      ctx.events.after(toPopMs(request), () => atPop(request, ctx));
    },
  };
}
