/**
 * OperatorRegistry: the operator's decisions, one object for the mesh
 * (`getByName("global")`): the providers admitted with their Ed25519 public
 * keys (docs/api.md section 3.1, `POST` and `DELETE /admin/providers`), read on
 * heartbeats; which provider owns each backend id, mesh-wide (the first to
 * heartbeat it, until that provider is removed), with a cap on ids per
 * provider; and the bearer keys revoked before their expiry, which isolates
 * copy into their snapshot so that no request waits on this object.
 */

import { DurableObject } from 'cloudflare:workers';
import type { JWK } from 'jose';
import type { Env } from '../env.ts';
import { migrate, sqlOf, type Sql } from '../sql.ts';

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
] as const;

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
   * Removes a provider and its backend-id ownership records. Returns the ids
   * it owned, or null when no such provider is admitted.
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
}
