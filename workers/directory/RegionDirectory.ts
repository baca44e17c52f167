/**
 * RegionDirectory: one Durable Object per region (`getByName(regionId)`). It
 * holds the region's backends as of their last heartbeat (SQLite), answers
 * snapshots that isolates cache off the hot path, drops backends that stop
 * heartbeating with an alarm, and counts demand per model, from which its
 * heartbeat replies ask backends to load (or unload) models (placement.ts).
 * It also keeps the last heartbeat `seq` accepted per backend id, so that no
 * heartbeat token is accepted twice (docs/api.md section 3.2), and the
 * providers the operator removed, whose heartbeats it refuses for a while
 * (section 3.1). For proof of location it keeps the round trips isolates
 * measured and report in the background (round-trips.ts), and its
 * `backends()` entries carry the verdict on each claimed lat/lon, with the
 * PoP that carried the last heartbeat. For the status page (docs/api.md
 * section 2.15) it keeps the recent traffic isolates report
 * (traffic-log.ts), and a backend that stopped heartbeating stays listed as
 * departed for DEPARTED_KEEP_MS after it expired (`status()`), never routed to.
 */

import { DurableObject } from 'cloudflare:workers';
import type { JWK } from 'jose';
import { isExecutionProvider, type Heartbeat, type HeartbeatAction } from '../../shared/heartbeat.ts';
import type { Env } from '../env.ts';
import type { LocationVerdict } from '../geo/location.ts';
import { migrate, sqlOf, type Sql } from '../sql.ts';
import type { BackendEntry } from './backend.ts';
import { DEFAULT_PLACEMENT, placementActions, type PlacementPolicy } from './placement.ts';
import type { RttSample } from './rtt-report.ts';
import { RoundTrips } from './round-trips.ts';
import { TRAFFIC_TABLE, TrafficLog, type TrafficWindow } from './traffic-log.ts';

/** The verified claims of the heartbeat token that carried a heartbeat. */
export interface HeartbeatTokenClaims {
  /** The token's `seq`: accepted only above the last one accepted for this backend id. */
  seq: number;
  /** The token's `exp`, in ms: the accepted `seq` is kept at least until then. */
  expiresAt: number;
}

export type HeartbeatResult =
  | { ok: true; created: boolean; actions: HeartbeatAction[] }
  | { ok: false; code: 'forbidden'; reason: 'owned'; message: string }
  /** `replayed`: a `seq` not above the last accepted; `expired`: the token's exp passed before it got here; `removed`: the operator removed this provider (tombstone). */
  | { ok: false; code: 'invalid_token'; reason: 'replayed' | 'expired' | 'removed'; message: string };

/** Demand reports are bounded: this many models per call, counts capped (the rest is ignored). */
const DEMAND_MAX_MODELS = 1024;
const DEMAND_MAX_COUNT = 1_000_000_000;
const MODEL_NAME = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;

/** An expired backend is kept this long after its expiry, to be shown as down (`status()`); never routed to. */
export const DEPARTED_KEEP_MS = 10 * 60_000;

/** What `status()` answers: the backends live and departed, without their provider keys, and the recent traffic. */
export interface DirectoryStatus {
  backends: Omit<BackendEntry, 'providerKey'>[];
  /** Backends that expired within DEPARTED_KEEP_MS, as of their last heartbeat. */
  departed: Omit<BackendEntry, 'providerKey'>[];
  traffic: TrafficWindow;
}

/** The PoP code a heartbeat's colo is kept as, at most. */
const COLO = /^[A-Za-z0-9]{1,16}$/;

const MIGRATIONS = [
  [
    `CREATE TABLE backends (
       id TEXT PRIMARY KEY,
       provider TEXT NOT NULL,
       provider_key TEXT NOT NULL,
       region TEXT NOT NULL,
       url TEXT NOT NULL,
       lat REAL NOT NULL,
       lon REAL NOT NULL,
       execution_provider TEXT NOT NULL,
       ready INTEGER NOT NULL,
       models TEXT NOT NULL,
       capacity TEXT NOT NULL,
       last_seen INTEGER NOT NULL,
       expires_at INTEGER NOT NULL
     )`,
    'CREATE INDEX backends_expiry ON backends (expires_at)',
  ],
  [
    "ALTER TABLE backends ADD COLUMN available TEXT NOT NULL DEFAULT '[]'",
    'CREATE TABLE demand (model TEXT PRIMARY KEY, requests INTEGER NOT NULL, last_request INTEGER NOT NULL)',
    'CREATE TABLE asked (action TEXT PRIMARY KEY, at INTEGER NOT NULL)',
    'CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)',
  ],
  [
    // The last accepted heartbeat seq per backend id; kept until the latest accepted token's exp (ms), even after the backend row goes.
    'CREATE TABLE heartbeat_seqs (backend_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, expires_at INTEGER NOT NULL)',
    // Providers the operator removed: their heartbeats are refused until `until` (ms).
    'CREATE TABLE removed_providers (provider TEXT PRIMARY KEY, until INTEGER NOT NULL)',
  ],
  [
    // The PoP that carried the backend's last heartbeat (request.cf.colo), when known.
    'ALTER TABLE backends ADD COLUMN heartbeat_colo TEXT',
    // Proof of location: per (backend, PoP) the lowest round trip (ms) and sample count, over all samples and over probes alone.
    `CREATE TABLE rtt (
       backend_id TEXT NOT NULL,
       pop TEXT NOT NULL,
       min_rtt REAL NOT NULL,
       samples INTEGER NOT NULL,
       probe_min_rtt REAL,
       probe_samples INTEGER NOT NULL DEFAULT 0,
       updated_at INTEGER NOT NULL,
       PRIMARY KEY (backend_id, pop)
     )`,
  ],
  [TRAFFIC_TABLE],
  [
    // Proof of location's minima per window (round-trips.ts): the current window's start, and the window before it.
    'ALTER TABLE rtt ADD COLUMN window_start INTEGER NOT NULL DEFAULT 0',
    'UPDATE rtt SET window_start = updated_at',
    'ALTER TABLE rtt ADD COLUMN prev_min_rtt REAL',
    'ALTER TABLE rtt ADD COLUMN prev_samples INTEGER NOT NULL DEFAULT 0',
    'ALTER TABLE rtt ADD COLUMN prev_probe_min_rtt REAL',
    'ALTER TABLE rtt ADD COLUMN prev_probe_samples INTEGER NOT NULL DEFAULT 0',
  ],
] as const;

type BackendRow = {
  id: string;
  provider: string;
  provider_key: string;
  region: string;
  url: string;
  lat: number;
  lon: number;
  execution_provider: string;
  ready: number;
  models: string;
  capacity: string;
  last_seen: number;
  expires_at: number;
  available: string;
  heartbeat_colo: string | null;
};

function toEntry(r: BackendRow, location: LocationVerdict): BackendEntry {
  return {
    id: r.id,
    provider: r.provider,
    providerKey: JSON.parse(r.provider_key),
    region: r.region,
    url: r.url,
    lat: r.lat,
    lon: r.lon,
    executionProvider: isExecutionProvider(r.execution_provider) ? r.execution_provider : 'cpu',
    ready: r.ready === 1,
    models: JSON.parse(r.models),
    capacity: JSON.parse(r.capacity),
    lastSeen: r.last_seen,
    expiresAt: r.expires_at,
    available: JSON.parse(r.available),
    location,
    ...(r.heartbeat_colo !== null ? { heartbeatColo: r.heartbeat_colo } : {}),
  };
}

export class RegionDirectory extends DurableObject<Env> {
  #sql: Sql;
  #rtts: RoundTrips;
  #traffic: TrafficLog;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.#sql = sqlOf(ctx.storage);
    this.#rtts = new RoundTrips(this.#sql);
    this.#traffic = new TrafficLog(this.#sql);
    ctx.blockConcurrencyWhile(async () => migrate(this.#sql, MIGRATIONS));
  }

  /**
   * Records a heartbeat from `provider`'s backend, carried by a token whose
   * signature and body hash the caller verified. Refused when the operator
   * removed the provider within the tombstone period, when another provider's
   * live backend holds the id in this region (the mesh-wide owner is the
   * OperatorRegistry's; this is the region's own check), and when the token's
   * `seq` is not above the last one accepted for the id.
   */
  async heartbeat(
    provider: string,
    providerKey: JWK,
    hb: Heartbeat,
    token: HeartbeatTokenClaims,
    ttlMs: number,
    policy: PlacementPolicy = DEFAULT_PLACEMENT,
    heartbeatColo?: string,
  ): Promise<HeartbeatResult> {
    const now = Date.now();
    if (this.#sql.one('SELECT provider FROM removed_providers WHERE provider = ? AND until > ?', provider, now) !== undefined) {
      return { ok: false, code: 'invalid_token', reason: 'removed', message: `Provider "${provider}" was removed by the operator.` };
    }
    const existing = this.#sql.one<{ provider: string; expires_at: number }>(
      'SELECT provider, expires_at FROM backends WHERE id = ?',
      hb.backendId,
    );
    if (existing && existing.provider !== provider && existing.expires_at > now) {
      return { ok: false, code: 'forbidden', reason: 'owned', message: `Backend "${hb.backendId}" belongs to another provider.` };
    }
    if (!Number.isSafeInteger(token.seq) || token.seq < 0 || !Number.isFinite(token.expiresAt)) {
      return { ok: false, code: 'invalid_token', reason: 'replayed', message: 'The heartbeat token has no valid seq.' };
    }
    // The seq is kept only until the token's exp: a copy the edge let through just before it and that arrives
    // here after (its seq forgotten by then) would otherwise be accepted a second time.
    if (token.expiresAt <= now) {
      return { ok: false, code: 'invalid_token', reason: 'expired', message: 'The heartbeat token has expired.' };
    }
    const last = this.#sql.one<{ seq: number; expires_at: number }>(
      'SELECT seq, expires_at FROM heartbeat_seqs WHERE backend_id = ? AND expires_at > ?',
      hb.backendId,
      now,
    );
    if (last && token.seq <= last.seq) {
      return {
        ok: false,
        code: 'invalid_token',
        reason: 'replayed',
        message: `Replayed heartbeat: seq ${token.seq} is not above the last accepted for backend "${hb.backendId}" (${last.seq}).`,
      };
    }
    const seqExpiresAt = Math.max(token.expiresAt, last?.expires_at ?? 0, now);
    this.#sql.run(
      `INSERT INTO heartbeat_seqs (backend_id, seq, expires_at) VALUES (?, ?, ?)
       ON CONFLICT(backend_id) DO UPDATE SET seq = excluded.seq, expires_at = excluded.expires_at`,
      hb.backendId,
      token.seq,
      seqExpiresAt,
    );
    const expiresAt = now + ttlMs;
    this.#sql.run(
      `INSERT INTO backends (id, provider, provider_key, region, url, lat, lon, execution_provider, ready, models, capacity, last_seen, expires_at, available, heartbeat_colo)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT(id) DO UPDATE SET provider = excluded.provider, provider_key = excluded.provider_key, region = excluded.region, url = excluded.url,
         lat = excluded.lat, lon = excluded.lon, execution_provider = excluded.execution_provider, ready = excluded.ready,
         models = excluded.models, capacity = excluded.capacity, last_seen = excluded.last_seen, expires_at = excluded.expires_at,
         available = excluded.available, heartbeat_colo = excluded.heartbeat_colo`,
      hb.backendId,
      provider,
      JSON.stringify(providerKey),
      hb.region,
      hb.url,
      hb.lat,
      hb.lon,
      hb.executionProvider,
      hb.ready ? 1 : 0,
      JSON.stringify(hb.models),
      JSON.stringify(hb.capacity),
      now,
      expiresAt,
      JSON.stringify(hb.available ?? []),
      typeof heartbeatColo === 'string' && COLO.test(heartbeatColo) ? heartbeatColo.toUpperCase() : null,
    );
    // A backend whose previous row had expired starts with no round trips: its evidence went with it.
    if (!existing || existing.expires_at <= now) this.#rtts.forget(hb.backendId);
    await this.#armAlarm(Math.min(expiresAt, seqExpiresAt));
    return { ok: true, created: !existing || existing.expires_at <= now, actions: this.#place(hb, now, policy) };
  }

  /**
   * The operator removed `provider`: forgets its backends in this region now,
   * and refuses its heartbeats until `until` (ms). Returns how many live
   * backends it had here.
   */
  async removeProvider(provider: string, until: number): Promise<{ removed: number }> {
    const now = Date.now();
    const live = this.#sql.one<{ n: number }>('SELECT COUNT(*) AS n FROM backends WHERE provider = ? AND expires_at > ?', provider, now)?.n ?? 0;
    this.#rtts.forgetProvider(provider);
    this.#sql.run('DELETE FROM backends WHERE provider = ?', provider);
    this.#sql.run(
      `INSERT INTO removed_providers (provider, until) VALUES (?, ?)
       ON CONFLICT(provider) DO UPDATE SET until = MAX(until, excluded.until)`,
      provider,
      until,
    );
    await this.#armAlarm(until);
    return { removed: live };
  }

  /**
   * Counts requests for models in this region (sent in batches by isolates,
   * in the background), dated by `lastAt[model]`, the time of the last
   * request counted (the report's arrival when absent, and never later than
   * it): an isolate sends what it held back with its next request, however
   * late. Malformed entries are ignored.
   */
  recordDemand(counts: Record<string, number>, lastAt?: Record<string, number>): void {
    if (typeof counts !== 'object' || counts === null || Array.isArray(counts)) return;
    const dated = typeof lastAt === 'object' && lastAt !== null && !Array.isArray(lastAt) ? lastAt : undefined;
    const now = Date.now();
    this.#trackingSince(now);
    for (const [model, n] of Object.entries(counts).slice(0, DEMAND_MAX_MODELS)) {
      if (typeof n !== 'number' || !Number.isFinite(n) || n < 1 || !MODEL_NAME.test(model)) continue;
      const at = dated && Object.hasOwn(dated, model) ? dated[model] : undefined;
      const when = typeof at === 'number' && Number.isFinite(at) ? Math.min(now, at) : now;
      this.#sql.run(
        `INSERT INTO demand (model, requests, last_request) VALUES (?, ?, ?)
         ON CONFLICT(model) DO UPDATE SET requests = requests + excluded.requests, last_request = MAX(last_request, excluded.last_request)`,
        model,
        Math.min(Math.floor(n), DEMAND_MAX_COUNT),
        when,
      );
    }
  }

  /**
   * Merges round-trip minima measured by isolates (sent in batches, in the
   * background) for the backends live here (round-trips.ts).
   */
  recordRtt(samples: RttSample[]): void {
    const live = new Set(this.#sql.all<{ id: string }>('SELECT id FROM backends WHERE expires_at > ?', Date.now()).map((r) => r.id));
    this.#rtts.record(samples, live);
  }

  /** Adds recent traffic measured by isolates (sent in batches, in the background; traffic-log.ts); malformed cells are ignored. */
  recordTraffic(cells: unknown): void {
    this.#traffic.record(cells, Date.now());
  }

  /**
   * For the status page: the live backends, those departed within
   * DEPARTED_KEEP_MS, and the traffic of the last `windowMs` (at most 5 minutes).
   */
  status(windowMs: number): DirectoryStatus {
    const now = Date.now();
    const rows = this.#sql.all<BackendRow>('SELECT * FROM backends ORDER BY id');
    const view = (r: BackendRow) => {
      const { providerKey: _key, ...entry } = toEntry(r, this.#rtts.verdictOf(r));
      return entry;
    };
    return {
      backends: rows.filter((r) => r.expires_at > now).map(view),
      departed: rows.filter((r) => r.expires_at <= now).map(view),
      traffic: this.#traffic.window(now, Math.min(Math.max(0, windowMs), 5 * 60_000)),
    };
  }

  /** Demand per model: requests counted and when the last one was seen. */
  demand(): { model: string; requests: number; lastRequest: number }[] {
    return this.#sql
      .all<{ model: string; requests: number; last_request: number }>('SELECT model, requests, last_request FROM demand ORDER BY model')
      .map((r) => ({ model: r.model, requests: r.requests, lastRequest: r.last_request }));
  }

  #trackingSince(now: number): number {
    const row = this.#sql.one<{ value: number }>("SELECT value FROM meta WHERE key = 'tracking_since'");
    if (row) return row.value;
    this.#sql.run("INSERT INTO meta (key, value) VALUES ('tracking_since', ?)", now);
    return now;
  }

  /** The warm-placement action for the backend that just heartbeated, remembered so it is not asked twice. */
  #place(hb: Heartbeat, now: number, policy: PlacementPolicy): HeartbeatAction[] {
    const region = this.backends();
    const lastRequest = new Map(this.demand().map((d) => [d.model, d.lastRequest]));
    const asked = new Map(
      this.#sql.all<{ action: string; at: number }>('SELECT action, at FROM asked WHERE at > ?', now - policy.askAgainMs).map((r) => [r.action, r.at]),
    );
    const backend = { id: hb.backendId, ready: hb.ready, models: hb.models, available: hb.available ?? [] };
    const actions = placementActions({ now, backend, region, lastRequest, trackingSince: this.#trackingSince(now), asked, policy });
    for (const a of actions) {
      this.#sql.run('INSERT INTO asked (action, at) VALUES (?, ?) ON CONFLICT(action) DO UPDATE SET at = excluded.at', `${a.op}:${a.model}`, now);
    }
    return actions;
  }

  /** The region's live backends (not yet expired), each with its location verdict, for isolate snapshots. */
  backends(): BackendEntry[] {
    return this.#sql
      .all<BackendRow>('SELECT * FROM backends WHERE expires_at > ? ORDER BY id', Date.now())
      .map((r) => toEntry(r, this.#rtts.verdictOf(r)));
  }

  /** Forgets a backend now (operator action, or a backend leaving cleanly), with its round trips. */
  remove(backendId: string): boolean {
    this.#rtts.forget(backendId);
    return this.#sql.run('DELETE FROM backends WHERE id = ?', backendId) > 0;
  }

  /** Makes sure an alarm fires at or before `at`. */
  async #armAlarm(at: number): Promise<void> {
    const current = await this.ctx.storage.getAlarm();
    if (current === null || current > at) await this.ctx.storage.setAlarm(at);
  }

  /**
   * Drops the round trips of backends whose heartbeats stopped and those idle
   * for RTT_IDLE_MS, departed backends kept DEPARTED_KEEP_MS, seqs past their
   * token's exp and ended tombstones, then sleeps until the next expiry.
   */
  override async alarm(): Promise<void> {
    const now = Date.now();
    this.#sql.run('DELETE FROM backends WHERE expires_at <= ?', now - DEPARTED_KEEP_MS);
    this.#rtts.prune(now);
    this.#sql.run('DELETE FROM heartbeat_seqs WHERE expires_at <= ?', now);
    this.#sql.run('DELETE FROM removed_providers WHERE until <= ?', now);
    const next = this.#sql.one<{ at: number | null }>(
      `SELECT MIN(at) AS at FROM (
         SELECT MIN(CASE WHEN expires_at > ? THEN expires_at ELSE expires_at + ? END) AS at FROM backends
         UNION ALL SELECT MIN(expires_at) FROM heartbeat_seqs
         UNION ALL SELECT MIN(until) FROM removed_providers)`,
      now,
      DEPARTED_KEEP_MS,
    );
    if (next?.at != null) await this.ctx.storage.setAlarm(next.at);
  }
}
