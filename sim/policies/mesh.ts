/**
 * The mesh's own routing, with the production code imported: per PoP an
 * isolate (or `isolatesPerPop` of them, a request landing on one at random)
 * with its own routing memory (workers/routing/isolate.ts) on the
 * simulated clock and its own snapshot copy, refreshed when older than the
 * edge's refresh interval; candidates ranked from the snapshot's index
 * (snapshot-index.ts: scoring, warm only, spill-over to any region), the
 * first picked by power of two choices (p2c.ts), then attempts as
 * routing/attempts.ts decides them (retry budget, one hedge at the backend's
 * p95, outlier ejection), learning latency and RTT from each answer as
 * inference/run.ts does. The isolates of a PoP share their service times
 * through the PoP's book (routing/pop-book.ts), each exchanging with it at
 * most every `popBookExchangeMs`, as inference/service-exchange.ts does with
 * the Cache API. Demand goes to the directory for warm placement.
 */

import type { BackendEntry } from '../../workers/directory/backend.ts';
import { nearestRegion } from '../../workers/geo/regions.ts';
import { AttemptPlan, type Attempt } from '../../workers/routing/attempts.ts';
import { createIsolateRouting, type IsolateRouting } from '../../workers/routing/isolate.ts';
import { pickAttempts } from '../../workers/routing/p2c.ts';
import { PopBook, ServiceOutbox } from '../../workers/routing/pop-book.ts';
import { rankIndexed } from '../../workers/routing/rank.ts';
import { buildRoutingIndex, type RoutingIndex } from '../../workers/routing/snapshot-index.ts';
import { backendLocation, type RttOrigin } from '../../workers/routing/rtt.ts';
import { newJob, type Job, type JobOutcome } from '../backend.ts';
import { toPopMs, type Policy, type SimContext, type SimRequest } from './policy.ts';

/** Candidates ranked per request, as workers/inference/candidates.ts keeps. */
const RANKED = 8;

interface Isolate {
  origin: RttOrigin;
  region: string;
  routing: IsolateRouting;
  snapshot: readonly BackendEntry[];
  index: RoutingIndex | undefined;
  at: number;
  regionSizes: Map<string, number>;
  /** Service times not yet added to the PoP's book. */
  outbox: ServiceOutbox;
  /** When it last exchanged with the PoP's book. */
  exchangedAt: number;
}

/** What the simulator attaches to each attempt. */
interface Call {
  job: Job;
  settled: boolean;
}

export function meshPolicy(options: { hedging: boolean }): Policy {
  const isolates = new Map<number, Isolate>();
  /** Each PoP's service book, by PoP index: the store its isolates share (the Cache API in production). */
  const popBooks = new Map<number, PopBook>();
  let byId = new Map<string, number>();
  // One index per published snapshot, shared by the isolates that took it: room for every isolate's geometry and orders
  // (each isolate is its own origin to it, below). Its backends per region likewise (what each isolate's attempt plans ask of it).
  let last: { snapshot: readonly BackendEntry[]; index: RoutingIndex; regionSizes: Map<string, number> } | undefined;
  const published = (snapshot: readonly BackendEntry[], isolatesPerPop: number): NonNullable<typeof last> => {
    if (last?.snapshot !== snapshot) {
      const room = { maxOrigins: 1_024 * isolatesPerPop, maxOrders: 4_096 * isolatesPerPop };
      const index = buildRoutingIndex(snapshot, backendLocation, { ...room, ...(last ? { previous: last.index } : {}) });
      const regionSizes = new Map<string, number>();
      for (const b of snapshot) regionSizes.set(b.region, (regionSizes.get(b.region) ?? 0) + 1);
      last = { snapshot, index, regionSizes };
    }
    return last;
  };

  /** The isolate a request at `pop` lands on: one per PoP, or one of `isolatesPerPop` at random. */
  const isolateFor = (pop: number, ctx: SimContext): Isolate => {
    const per = ctx.config.edge.isolatesPerPop;
    const nth = per > 1 ? Math.floor(ctx.random.unit() * per) : 0;
    const key = pop * per + nth;
    let iso = isolates.get(key);
    if (!iso) {
      const site = ctx.world.pops[pop]!;
      iso = {
        // A real isolate's index and its bound orders are its own; here isolates share the published index,
        // so the second and later isolates of a PoP name their origin apart (same place, own orders and RTT book key).
        origin: { code: nth === 0 ? site.code : `${site.code}/${nth}`, lat: site.lat, lon: site.lon },
        region: nearestRegion(site).id,
        routing: createIsolateRouting(() => ctx.events.now),
        snapshot: [],
        index: undefined,
        at: Number.NEGATIVE_INFINITY,
        regionSizes: new Map(),
        outbox: new ServiceOutbox(),
        exchangedAt: Number.NEGATIVE_INFINITY,
      };
      isolates.set(key, iso);
    }
    const now = ctx.events.now;
    if (now - iso.at >= ctx.config.edge.snapshotRefreshMs) {
      iso.snapshot = ctx.directory.snapshot(now);
      ({ index: iso.index, regionSizes: iso.regionSizes } = published(iso.snapshot, per));
      iso.at = now;
    }
    const every = ctx.config.edge.popBookExchangeMs;
    if (every > 0 && now - iso.exchangedAt >= every) {
      // The exchange is instant here; in production it is a Cache API read and write after a response.
      let book = popBooks.get(pop);
      if (!book) popBooks.set(pop, (book = new PopBook()));
      book.add(iso.outbox.drain(), now);
      book.applyTo(iso.routing.latency, iso.exchangedAt);
      iso.exchangedAt = now;
    }
    return iso;
  };

  const atPop = (request: SimRequest, ctx: SimContext) => {
    const { events, config } = ctx;
    const model = config.models[request.model]!.name;
    const iso = isolateFor(request.pop, ctx);
    const routing = iso.routing;
    routing.budget.recordRequest();
    routing.hedges.recordRequest();
    ctx.directory.noteDemand(iso.region, model, events.now);
    const ranked = rankIndexed(iso.index!, { model, from: iso.origin }, routing, events.now, { allowCold: false }, RANKED);
    const candidates = pickAttempts(ranked, () => ctx.random.unit(), {}, (c) => routing.ejected.isHeldBack(c.backend.id, events.now));
    const back = toPopMs(request) + config.edge.overheadMs;
    const elapsed = () => events.now - request.t0 + back;
    if (candidates.length === 0) {
      ctx.failed(request, elapsed());
      return;
    }
    const plan = new AttemptPlan<Call>(candidates, routing, {
      model,
      hedging: options.hedging,
      regionSize: (c) => iso.regionSizes.get(c.backend.region) ?? 1,
      now: () => events.now,
    });
    let done = false;
    let hedged = false;
    let retried = false;

    const settle = (attempt: Attempt<Call>, outcome: Exclude<JobOutcome, { kind: 'hung' }> | { kind: 'timeout' }, sentAt: number) => {
      const call = attempt.driver!;
      if (done || call.settled) return;
      call.settled = true;
      const id = attempt.candidate.backend.id;
      if (outcome.kind === 'ok') {
        attempt.answered = true;
        const ms = events.now - sentAt;
        routing.answer.observe(id, model, ms, events.now);
        routing.latency.observe(id, model, outcome.backendMs, events.now);
        if (config.edge.popBookExchangeMs > 0) iso.outbox.note(id, model, outcome.backendMs, events.now);
        routing.rtt.observe(iso.origin.code!, id, Math.max(0, ms - outcome.backendMs));
        plan.learn(attempt, ms);
        // An honest provider's attestation verifies: the success that resets its failures (inference/attestation.ts).
        routing.ejected.recordSuccess(id);
        for (const loser of plan.won(attempt)) loser.driver!.job.cancelled = true;
        done = true;
        // The first attempt answered: how well its score predicted the call (the report's "How the score predicted").
        const first = !attempt.hedge && !retried;
        const site = first && ctx.backends[byId.get(id)!]!.spec.kind === 'site';
        const estimate = first ? { expectedMs: attempt.candidate.expectedMs, tookMs: ms, site } : undefined;
        ctx.served(request, { latencyMs: elapsed(), cold: outcome.cold, hedged, retried, ...(estimate ? { estimate } : {}) });
        return;
      }
      const retry = plan.failed(attempt, outcome.kind === 'timeout');
      if (retry) {
        retried = true;
        send(retry);
      } else if (plan.running.size === 0) {
        done = true;
        ctx.failed(request, elapsed());
      }
    };

    const send = (attempt: Attempt<Call> | undefined) => {
      if (!attempt) return;
      const backend = ctx.backends[byId.get(attempt.candidate.backend.id)!]!;
      const rtt = ctx.network.popToBackendMs(request.pop, backend.spec.index) + ctx.network.jitter(ctx.random);
      const sentAt = events.now;
      const job = newJob(request.model, (outcome) => {
        if (outcome.kind === 'hung') events.at(sentAt + config.edge.timeoutMs, () => settle(attempt, { kind: 'timeout' }, sentAt));
        else events.after(rtt / 2, () => settle(attempt, outcome, sentAt));
      });
      attempt.driver = { job, settled: false };
      events.after(rtt / 2, () => {
        if (!job.cancelled) backend.arrive(job);
      });
    };

    send(plan.start());
    const hedgeAfter = plan.hedgeAfterMs();
    if (hedgeAfter !== undefined) {
      events.after(hedgeAfter, () => {
        if (done) return;
        const hedge = plan.hedge();
        if (hedge) {
          hedged = true;
          send(hedge);
        }
      });
    }
  };

  return {
    name: options.hedging ? 'mesh' : 'mesh-no-hedge',
    label: options.hedging ? 'mesh (ours)' : 'mesh without hedging',
    placement: true,
    setup(ctx) {
      byId = new Map(ctx.backends.map((b) => [b.spec.id, b.spec.index]));
    },
    serve(request, ctx) {
      ctx.events.after(toPopMs(request), () => atPop(request, ctx));
    },
  };
}
