/**
 * ProviderRegistry: the providers the operator admitted, with their Ed25519
 * public keys (API.md section 3, `POST /admin/providers`). One object for the
 * mesh (`getByName("global")`); read on heartbeats only, never per inference.
 */

import { DurableObject } from 'cloudflare:workers';
import type { JWK } from 'jose';
import type { Env } from '../env.ts';
import { migrate, sqlOf, type Sql } from '../sql.ts';

export interface ProviderRecord {
  id: string;
  publicJwk: JWK;
  addedAt: number;
}

const MIGRATIONS = [
  ['CREATE TABLE providers (id TEXT PRIMARY KEY, public_jwk TEXT NOT NULL, added_at INTEGER NOT NULL)'],
] as const;

export class ProviderRegistry extends DurableObject<Env> {
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
}
