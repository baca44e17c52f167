/**
 * OperatorRegistry: the operator's decisions, one object for the mesh
 * (`getByName("global")`): the providers admitted with their Ed25519 public
 * keys (docs/api.md section 3, `POST /admin/providers`), read on heartbeats, and
 * the bearer keys revoked before their expiry, which isolates copy into their
 * snapshot so that no request waits on this object.
 */

import { DurableObject } from 'cloudflare:workers';
import type { JWK } from 'jose';
import type { Env } from '../env.ts';
import { migrate, sqlOf, type Sql } from '../sql.ts';

interface ProviderRecord {
  id: string;
  publicJwk: JWK;
  addedAt: number;
}

const MIGRATIONS = [
  ['CREATE TABLE providers (id TEXT PRIMARY KEY, public_jwk TEXT NOT NULL, added_at INTEGER NOT NULL)'],
  // expires_at: the revoked key's own exp (ms); past it the key is dead anyway and the row goes.
  ['CREATE TABLE revoked_keys (jti TEXT PRIMARY KEY, expires_at INTEGER NOT NULL, revoked_at INTEGER NOT NULL)'],
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
