/**
 * OperatorRegistry: the operator's decisions, one object for the mesh
 * (`getByName("global")`): the providers admitted with their Ed25519 public
 * keys (docs/api.md section 3.1, `POST` and `DELETE /admin/providers`), read on
 * heartbeats; which provider owns each backend id, mesh-wide (the first to
 * heartbeat it, until that provider is removed), with a cap on ids per
 * provider; the bearer keys revoked before their expiry; each provider's
 * standing under verification (docs/api.md section 6.3: strikes from proven
 * frauds, quarantine at a threshold until the operator clears it, a sampling
 * rate override), which isolates copy into their snapshot (`edgeState`) so
 * that no request waits on this object; the consumer keys given settings
 * after issue, whose JWT does not say they have an account (docs/api.md
 * section 2.14), copied the same way; and the index of disputes with the
 * providers' standing events, kept when a provider is removed.
 */

import { DurableObject } from 'cloudflare:workers';
import type { JWK } from 'jose';
import type { Env } from '../env.ts';
import { migrate, sqlOf, type Sql } from '../sql.ts';
import type { DisputeSummary, ProviderEvent, ProviderStanding } from './standing.ts';
import { AFTER_FRAUD_MS, NEW_PROVIDER_MS } from '../verification/sampling.ts';
import { MAX_CACHE_TTL_S } from '../inference/catalogue.ts';

/**
 * How long a proven fraud keeps a provider's standing in isolates'
 * snapshots: as long as the answer cache may hold an answer of it from
 * before the fraud (inference/answer-cache.ts), and at least as long as
 * sampling samples it more.
 */
const PROVEN_MEMORY_MS = Math.max(AFTER_FRAUD_MS, MAX_CACHE_TTL_S * 1000);

export type { DisputeSummary, ProviderEvent, ProviderStanding } from './standing.ts';

export interface ProviderRecord {
  id: string;
  publicJwk: JWK;
  /** When this admission began (ms): a provider removed and admitted again gets a new one. */
  addedAt: number;
}

/** The answer to a backend-id claim: the caller turns a refusal into its HTTP error. */
export type ClaimResult =
  | { ok: true }
  /** `unknown`: the provider is not admitted (any more); `owned`: another provider owns the id; `too_many`: the provider is at its cap. */
  | { ok: false; reason: 'unknown' | 'owned' | 'too_many' };

const MIGRATIONS = [
  ['CREATE TABLE providers (id TEXT PRIMARY KEY, public_jwk TEXT NOT NULL, added_at INTEGER NOT NULL)'],
  // expires_at: the revoked key's own exp (ms); past it the key is dead anyway and the row goes.
  ['CREATE TABLE revoked_keys (jti TEXT PRIMARY KEY, expires_at INTEGER NOT NULL, revoked_at INTEGER NOT NULL)'],
  // Backend id -> the provider that owns it mesh-wide (docs/api.md section 3.1).
  [
    'CREATE TABLE backend_owners (backend_id TEXT PRIMARY KEY, provider TEXT NOT NULL, claimed_at INTEGER NOT NULL)',
    'CREATE INDEX backend_owners_provider ON backend_owners (provider)',
  ],
  // Standing under verification (docs/api.md section 6.3).
  [
    'ALTER TABLE providers ADD COLUMN strikes INTEGER NOT NULL DEFAULT 0',
    'ALTER TABLE providers ADD COLUMN last_proven_at INTEGER',
    'ALTER TABLE providers ADD COLUMN quarantined_at INTEGER',
    'ALTER TABLE providers ADD COLUMN sample_rate REAL',
  ],
  // The disputes index (providers and withheld as JSON arrays), who each involves, and the standing events.
  [
    `CREATE TABLE disputes (
       id TEXT PRIMARY KEY,
       kind TEXT NOT NULL,
       verdict TEXT NOT NULL,
       accused TEXT,
       providers TEXT NOT NULL,
       model TEXT NOT NULL,
       withheld TEXT NOT NULL,
       created_at INTEGER NOT NULL)`,
    'CREATE TABLE dispute_providers (provider TEXT NOT NULL, dispute TEXT NOT NULL, PRIMARY KEY (provider, dispute))',
    `CREATE TABLE provider_events (
       seq INTEGER PRIMARY KEY AUTOINCREMENT,
       provider TEXT NOT NULL,
       kind TEXT NOT NULL,
       at INTEGER NOT NULL,
       dispute TEXT)`,
  ],
  // Keys with an account their JWT does not claim (settings given after issue), until the key expires (ms).
  ['CREATE TABLE key_accounts (jti TEXT PRIMARY KEY, expires_at INTEGER NOT NULL)'],
] as const;

/** Most rows one listing returns. */
const MAX_PAGE = 1000;
/** Most providers and most withheld receipts one dispute names. */
const MAX_PROVIDERS = 8;
const MAX_WITHHELD = 16;
const MAX_ID = 256;
const DISPUTE_ID = /^d-\d{13}-[0-9a-f]{8}$/;

interface StandingRow extends Record<string, string | number | null> {
  id: string;
  added_at: number;
  strikes: number;
  last_proven_at: number | null;
  quarantined_at: number | null;
  sample_rate: number | null;
}

interface DisputeRow extends Record<string, string | number | null> {
  id: string;
  kind: string;
  verdict: string;
  accused: string | null;
  providers: string;
  model: string;
  withheld: string;
  created_at: number;
}

const STANDING = 'SELECT id, added_at, strikes, last_proven_at, quarantined_at, sample_rate FROM providers';

function standingOf(r: StandingRow): ProviderStanding {
  return { id: r.id, addedAt: r.added_at, strikes: r.strikes, lastProvenAt: r.last_proven_at, quarantinedAt: r.quarantined_at, sampleRate: r.sample_rate };
}

function disputeOf(r: DisputeRow): DisputeSummary {
  return {
    id: r.id,
    kind: r.kind as DisputeSummary['kind'],
    verdict: r.verdict as DisputeSummary['verdict'],
    accused: r.accused,
    providers: JSON.parse(r.providers) as string[],
    model: r.model,
    withheld: JSON.parse(r.withheld) as string[],
    createdAt: r.created_at,
  };
}

const isId = (v: unknown): v is string => typeof v === 'string' && v.length > 0 && v.length <= MAX_ID;

/** Throws a plain Error naming the first thing wrong with a dispute summary. */
function checkDispute(d: DisputeSummary): void {
  const bad = (what: string) => {
    throw new Error(`recordDispute: ${what}.`);
  };
  if (!d || typeof d !== 'object') bad('the dispute must be an object');
  if (typeof d.id !== 'string' || !DISPUTE_ID.test(d.id)) bad('id must look like d-<13-digit ms>-<8 lowercase hex>');
  if (d.kind !== 'mismatch' && d.kind !== 'signature') bad('kind must be mismatch or signature');
  if (d.verdict !== 'proven' && d.verdict !== 'unresolved') bad('verdict must be proven or unresolved');
  if (d.accused !== null && !isId(d.accused)) bad('accused must be a provider id or null');
  if (!Array.isArray(d.providers) || d.providers.length > MAX_PROVIDERS || !d.providers.every(isId)) bad(`providers must be at most ${MAX_PROVIDERS} provider ids`);
  if (!isId(d.model)) bad('model must be a non-empty string');
  if (!Array.isArray(d.withheld) || d.withheld.length > MAX_WITHHELD || !d.withheld.every(isId)) bad(`withheld must be at most ${MAX_WITHHELD} receipt ids`);
  if (!Number.isSafeInteger(d.createdAt) || d.createdAt < 0) bad('createdAt must be a time in ms');
}

/** A page size in 0..MAX_PAGE. */
function pageSize(limit: number): number {
  if (typeof limit !== 'number' || Number.isNaN(limit)) throw new Error('limit must be a number.');
  return Math.max(0, Math.min(MAX_PAGE, Math.floor(limit)));
}

export class OperatorRegistry extends DurableObject<Env> {
  #sql: Sql;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.#sql = sqlOf(ctx.storage);
    ctx.blockConcurrencyWhile(async () => migrate(this.#sql, MIGRATIONS));
  }

  /** Admits (or re-keys) a provider. Returns whether it was new. */
  put(id: string, publicJwk: JWK): { created: boolean } {
    const existed = this.#sql.one('SELECT id FROM providers WHERE id = ?', id) !== undefined;
    this.#sql.run(
      `INSERT INTO providers (id, public_jwk, added_at) VALUES (?, ?, ?)
       ON CONFLICT(id) DO UPDATE SET public_jwk = excluded.public_jwk`,
      id,
      JSON.stringify(publicJwk),
      Date.now(),
    );
    return { created: !existed };
  }

  get(id: string): ProviderRecord | null {
    const row = this.#sql.one<{ id: string; public_jwk: string; added_at: number }>(
      'SELECT id, public_jwk, added_at FROM providers WHERE id = ?',
      id,
    );
    return row ? { id: row.id, publicJwk: JSON.parse(row.public_jwk) as JWK, addedAt: row.added_at } : null;
  }

  /**
   * Removes a provider (and so its standing) and its backend-id ownership
   * records; its disputes and events stay. Returns the ids it owned, or null
   * when no such provider is admitted.
   */
  remove(id: string): { backends: string[] } | null {
    if (this.#sql.one('SELECT id FROM providers WHERE id = ?', id) === undefined) return null;
    const backends = this.#sql
      .all<{ backend_id: string }>('SELECT backend_id FROM backend_owners WHERE provider = ? ORDER BY backend_id', id)
      .map((r) => r.backend_id);
    this.#sql.run('DELETE FROM backend_owners WHERE provider = ?', id);
    this.#sql.run('DELETE FROM providers WHERE id = ?', id);
    return { backends };
  }

  /**
   * Claims `backendId` for `provider`, mesh-wide: the first admitted provider
   * to claim an id owns it until that provider is removed. A provider owns at
   * most `maxPerProvider` ids. Claiming an id one already owns is a no-op.
   */
  claimBackend(provider: string, backendId: string, maxPerProvider: number): ClaimResult {
    const owner = this.#sql.one<{ provider: string }>('SELECT provider FROM backend_owners WHERE backend_id = ?', backendId);
    if (owner) return owner.provider === provider ? { ok: true } : { ok: false, reason: 'owned' };
    // Checked in the same synchronous turn as the insert: a removal cannot slip between them.
    if (this.#sql.one('SELECT id FROM providers WHERE id = ?', provider) === undefined) return { ok: false, reason: 'unknown' };
    const held = this.#sql.one<{ n: number }>('SELECT COUNT(*) AS n FROM backend_owners WHERE provider = ?', provider)?.n ?? 0;
    if (held >= maxPerProvider) return { ok: false, reason: 'too_many' };
    this.#sql.run('INSERT INTO backend_owners (backend_id, provider, claimed_at) VALUES (?, ?, ?)', backendId, provider, Date.now());
    return { ok: true };
  }

  /** The backend ids `provider` owns. */
  ownedBackends(provider: string): string[] {
    return this.#sql
      .all<{ backend_id: string }>('SELECT backend_id FROM backend_owners WHERE provider = ? ORDER BY backend_id', provider)
      .map((r) => r.backend_id);
  }

  list(): ProviderRecord[] {
    return this.#sql
      .all<{ id: string; public_jwk: string; added_at: number }>('SELECT id, public_jwk, added_at FROM providers ORDER BY id')
      .map((r) => ({ id: r.id, publicJwk: JSON.parse(r.public_jwk) as JWK, addedAt: r.added_at }));
  }

  /** Revokes a bearer key by its `jti` until `expiresAt` (ms; the key's own `exp`). */
  revoke(jti: string, expiresAt: number): { revoked: boolean } {
    const now = Date.now();
    this.#sql.run('DELETE FROM revoked_keys WHERE expires_at <= ?', now);
    const written = this.#sql.run(
      'INSERT INTO revoked_keys (jti, expires_at, revoked_at) VALUES (?, ?, ?) ON CONFLICT(jti) DO NOTHING',
      jti,
      expiresAt,
      now,
    );
    return { revoked: written > 0 };
  }

  /** The `jti`s of revoked keys that have not expired yet. */
  revokedKeys(): string[] {
    return this.#sql.all<{ jti: string }>('SELECT jti FROM revoked_keys WHERE expires_at > ?', Date.now()).map((r) => r.jti);
  }

  // ---- standing under verification ---------------------------------------

  /**
   * Records a dispute once per id (a repeat records nothing: `recorded` false,
   * the accused's current standing). A `proven` one strikes its accused when
   * admitted; reaching `quarantineAfter` strikes quarantines it.
   */
  recordDispute(d: DisputeSummary, quarantineAfter: number): { recorded: boolean; standing: ProviderStanding | null; newlyQuarantined: boolean } {
    checkDispute(d);
    if (!Number.isSafeInteger(quarantineAfter) || quarantineAfter < 1) throw new Error('recordDispute: quarantineAfter must be a positive integer.');
    return this.ctx.storage.transactionSync(() => {
      const existing = this.#sql.one<{ accused: string | null }>('SELECT accused FROM disputes WHERE id = ?', d.id);
      if (existing) return { recorded: false, standing: (existing.accused === null ? undefined : this.#standing(existing.accused)) ?? null, newlyQuarantined: false };
      this.#sql.run(
        'INSERT INTO disputes (id, kind, verdict, accused, providers, model, withheld, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
        d.id,
        d.kind,
        d.verdict,
        d.accused,
        JSON.stringify(d.providers),
        d.model,
        JSON.stringify(d.withheld),
        d.createdAt,
      );
      for (const p of new Set([...d.providers, ...(d.accused === null ? [] : [d.accused])])) {
        this.#sql.run('INSERT INTO dispute_providers (provider, dispute) VALUES (?, ?)', p, d.id);
      }
      const accused = d.accused === null ? undefined : this.#standing(d.accused);
      // Strikes are for proven wrong answers; a bad signature already costs the provider that receipt (docs/api.md section 3.5).
      if (!accused || d.verdict !== 'proven' || d.kind !== 'mismatch') return { recorded: true, standing: accused ?? null, newlyQuarantined: false };
      const now = Date.now();
      this.#sql.run('UPDATE providers SET strikes = strikes + 1, last_proven_at = ? WHERE id = ?', now, accused.id);
      this.#event(accused.id, 'proven', now, d.id);
      const newlyQuarantined = accused.quarantinedAt === null && accused.strikes + 1 >= quarantineAfter;
      if (newlyQuarantined) {
        this.#sql.run('UPDATE providers SET quarantined_at = ? WHERE id = ?', now, accused.id);
        this.#event(accused.id, 'quarantined', now, d.id);
      }
      return { recorded: true, standing: this.#standing(accused.id)!, newlyQuarantined };
    });
  }

  getDispute(id: string): DisputeSummary | null {
    const row = this.#sql.one<DisputeRow>('SELECT * FROM disputes WHERE id = ?', id);
    return row ? disputeOf(row) : null;
  }

  /** Disputes with ids after `after`, oldest first; only those involving `provider` when given. */
  listDisputes(after: string, limit: number, provider?: string): DisputeSummary[] {
    if (typeof after !== 'string') throw new Error('after must be a string.');
    const n = pageSize(limit);
    const rows =
      provider === undefined || provider === null
        ? this.#sql.all<DisputeRow>('SELECT * FROM disputes WHERE id > ? ORDER BY id LIMIT ?', after, n)
        : this.#sql.all<DisputeRow>(
            'SELECT d.* FROM dispute_providers p JOIN disputes d ON d.id = p.dispute WHERE p.provider = ? AND p.dispute > ? ORDER BY p.dispute LIMIT ?',
            provider,
            after,
            n,
          );
    return rows.map(disputeOf);
  }

  /** Lifts a quarantine: strikes back to 0. Null when no such provider is admitted. */
  clearQuarantine(provider: string): ProviderStanding | null {
    return this.ctx.storage.transactionSync(() => {
      if (!this.#standing(provider)) return null;
      const now = Date.now();
      this.#sql.run('UPDATE providers SET strikes = 0, quarantined_at = NULL WHERE id = ?', provider);
      this.#event(provider, 'cleared', now, null);
      return this.#standing(provider)!;
    });
  }

  /** Sets (a share in [0, 1]) or unsets (null) a provider's sampling rate. Null when no such provider is admitted. */
  setSampleRate(provider: string, rate: number | null): ProviderStanding | null {
    if (rate !== null && (typeof rate !== 'number' || !(rate >= 0 && rate <= 1))) throw new Error('sample rate must be a number in [0, 1] or null.');
    this.#sql.run('UPDATE providers SET sample_rate = ? WHERE id = ?', rate, provider);
    return this.#standing(provider) ?? null;
  }

  standings(): ProviderStanding[] {
    return this.#sql.all<StandingRow>(`${STANDING} ORDER BY id`).map(standingOf);
  }

  /** Standing events with seq after `after`, oldest first. */
  events(after: number, limit: number): ProviderEvent[] {
    if (typeof after !== 'number' || Number.isNaN(after)) throw new Error('after must be a number.');
    return this.#sql.all<ProviderEvent & Record<string, string | number | null>>(
      'SELECT seq, provider, kind, at, dispute FROM provider_events WHERE seq > ? ORDER BY seq LIMIT ?',
      after,
      pageSize(limit),
    );
  }

  /**
   * Lists (`on`) or unlists a key whose JWT does not claim its account, until
   * `expiresAt` (ms, the key's own `exp`): isolates lease for the keys listed.
   */
  noteAccount(jti: string, expiresAt: number, on: boolean): void {
    if (typeof jti !== 'string' || jti.length === 0 || jti.length > MAX_ID) throw new Error('noteAccount: jti must be 1 to 256 characters.');
    if (!Number.isSafeInteger(expiresAt)) throw new Error('noteAccount: expiresAt must be a time in ms.');
    const now = Date.now();
    this.#sql.run('DELETE FROM key_accounts WHERE expires_at <= ?', now);
    if (on && expiresAt > now) {
      this.#sql.run('INSERT INTO key_accounts (jti, expires_at) VALUES (?, ?) ON CONFLICT(jti) DO UPDATE SET expires_at = excluded.expires_at', jti, expiresAt);
    } else {
      this.#sql.run('DELETE FROM key_accounts WHERE jti = ?', jti);
    }
  }

  /** What an isolate's snapshot loads, in one call: revoked keys, every provider's standing, and the keys listed by `noteAccount`. */
  edgeState(): { revoked: string[]; standings: ProviderStanding[]; accounts: string[] } {
    // Only standings that change what an isolate does (verification/sampling.ts, inference/answer-cache.ts): an established
    // provider with a clean record is the default, so a snapshot refresh carries the few notable ones, not every provider.
    const now = Date.now();
    const notable = this.#sql.all<StandingRow>(
      `${STANDING} WHERE added_at > ? OR strikes > 0 OR quarantined_at IS NOT NULL OR sample_rate IS NOT NULL OR last_proven_at > ? ORDER BY id`,
      now - NEW_PROVIDER_MS,
      now - PROVEN_MEMORY_MS,
    );
    const accounts = this.#sql.all<{ jti: string }>('SELECT jti FROM key_accounts WHERE expires_at > ?', now).map((r) => r.jti);
    return { revoked: this.revokedKeys(), standings: notable.map(standingOf), accounts };
  }

  #standing(id: string): ProviderStanding | undefined {
    const row = this.#sql.one<StandingRow>(`${STANDING} WHERE id = ?`, id);
    return row ? standingOf(row) : undefined;
  }

  #event(provider: string, kind: ProviderEvent['kind'], at: number, dispute: string | null): void {
    this.#sql.run('INSERT INTO provider_events (provider, kind, at, dispute) VALUES (?, ?, ?, ?)', provider, kind, at, dispute);
  }
}
