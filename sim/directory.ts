/**
 * The directory as the simulation keeps it: every backend heartbeats every
 * `heartbeatMs` (staggered; a crashed backend that refuses connections falls
 * silent, a hung one keeps heartbeating), entries expire after the TTL, and,
 * when warm placement is on, each heartbeat is answered with the production
 * placement decision (workers/directory/placement.ts) from the demand the
 * isolates noted for the backend's region. Isolates take the live entries
 * when their snapshot is stale, as each real isolate fetches its own; the
 * list is rebuilt at most every `snapshotPublishMs`, and isolates that take
 * it within that span share it (and its routing index).
 */

import type { BackendEntry } from '../workers/directory/backend.ts';
import { DEFAULT_PLACEMENT, placementActions } from '../workers/directory/placement.ts';
import type { SimBackend } from './backend.ts';
import type { SimConfig } from './config.ts';
import type { EventQueue } from './events.ts';

export class SimDirectory {
  private readonly entries: (BackendEntry | undefined)[];
  private readonly config: SimConfig;
  private readonly events: EventQueue;
  private readonly modelIndex: Map<string, number>;
  /** Per region: last request per model, and recent placement asks (placement.ts's inputs). */
  private readonly demand = new Map<string, Map<string, number>>();
  private readonly asked = new Map<string, Map<string, number>>();
  private readonly placement: boolean;
  /** Backend indices per region. */
  private readonly members = new Map<string, number[]>();
  private live: BackendEntry[] | undefined;
  private liveAt = Number.NaN;
  /** Placement actions taken: loads and unloads. */
  loads = 0;
  unloads = 0;

  constructor(backends: readonly SimBackend[], config: SimConfig, events: EventQueue, placement: boolean) {
    this.config = config;
    this.events = events;
    this.placement = placement;
    this.modelIndex = new Map(config.models.map((m, i) => [m.name, i]));
    this.entries = backends.map((b) => b.entry(0, config.edge.backendTtlMs));
    for (const b of backends) {
      const list = this.members.get(b.spec.region);
      if (list) list.push(b.spec.index);
      else this.members.set(b.spec.region, [b.spec.index]);
    }
    backends.forEach((b, i) => {
      const offset = ((i * 7919) % 1000) / 1000;
      events.at(offset * config.edge.heartbeatMs, () => this.beat(b));
    });
  }

  /** A request for `model` in `region` (what the isolates' demand reports carry). */
  noteDemand(region: string, model: string, now: number): void {
    let models = this.demand.get(region);
    if (!models) this.demand.set(region, (models = new Map()));
    models.set(model, now);
  }

  /**
   * The live entries as of at most `snapshotPublishMs` ago: one array shared
   * by every isolate that asks within that span, never changed afterwards.
   */
  snapshot(now: number): readonly BackendEntry[] {
    if (this.live && now - this.liveAt < this.config.edge.snapshotPublishMs) return this.live;
    const live: BackendEntry[] = [];
    for (const e of this.entries) if (e && e.expiresAt > now) live.push(e);
    this.live = live;
    this.liveAt = now;
    return live;
  }

  /** The entry of a backend, while it is live. */
  entryOf(index: number, now: number): BackendEntry | undefined {
    const e = this.entries[index];
    return e && e.expiresAt > now ? e : undefined;
  }

  private beat(backend: SimBackend): void {
    const now = this.events.now;
    this.events.at(now + this.config.edge.heartbeatMs, () => this.beat(backend));
    if (backend.state === 'refusing') return;
    let entry = backend.entry(now, this.config.edge.backendTtlMs);
    this.entries[backend.spec.index] = entry;
    if (!this.placement) return;
    const region = backend.spec.region;
    const peers: BackendEntry[] = [];
    for (const i of this.members.get(region) ?? []) {
      const e = this.entries[i];
      if (e && e.expiresAt > now) peers.push(e);
    }
    let asked = this.asked.get(region);
    if (!asked) this.asked.set(region, (asked = new Map()));
    const actions = placementActions({
      now,
      backend: entry,
      region: peers,
      lastRequest: this.demand.get(region) ?? new Map(),
      trackingSince: 0,
      asked,
      policy: DEFAULT_PLACEMENT,
    });
    for (const action of actions) {
      const model = this.modelIndex.get(action.model);
      if (model === undefined) continue;
      asked.set(`${action.op}:${action.model}`, now);
      if (action.op === 'load') {
        backend.load(model);
        this.loads++;
      } else {
        backend.unload(model);
        this.unloads++;
      }
    }
    if (actions.length > 0) this.entries[backend.spec.index] = entry = backend.entry(now, this.config.edge.backendTtlMs);
  }
}
