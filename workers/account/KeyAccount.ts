/**
 * KeyAccount: one Durable Object per consumer key (`getByName(jti)`), created
 * when `POST /admin/keys` issues the key. It holds the key's settings (limits,
 * budget, CORS origins; docs/api.md section 2.14) and leases their allowances
 * to isolates (account/book.ts has the arithmetic). Isolates call `lease` when
 * a key's lease is new, low, half-lived or idle, never once per request; the
 * operator routes call `open`, `read` and `update`.
 */

import { DurableObject } from 'cloudflare:workers';
import type { Env } from '../env.ts';
import { settings as envSettings } from '../env.ts';
import { migrate, sqlOf } from '../sql.ts';
import { AccountBook, MIGRATIONS, type AccountRecord, type LeaseAnswer, type LeaseAsk, type Usage } from './book.ts';
import type { KeySettings, SettingsPatch } from './settings.ts';

export class KeyAccount extends DurableObject<Env> {
  #book: AccountBook;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    const sql = sqlOf(ctx.storage);
    this.#book = new AccountBook(sql, (fn) => ctx.storage.transactionSync(fn));
    ctx.blockConcurrencyWhile(async () => migrate(sql, MIGRATIONS));
  }

  /** Creates the key's account at issue; an existing one is left as it is. */
  open(init: { jti: string; sub: string; expiresAt: number; claim: boolean; settings: KeySettings }): { created: boolean; account: AccountRecord } {
    return this.#book.open(init, Date.now());
  }

  /** The account and what it has handed out, or null when the key has none. */
  read(): { account: AccountRecord; usage: Usage } | null {
    const now = Date.now();
    const account = this.#book.account();
    return account ? { account, usage: this.#book.usage(now)! } : null;
  }

  /** Changes settings; null when the key has no account. */
  update(patch: SettingsPatch): { account: AccountRecord; usage: Usage } | null {
    const now = Date.now();
    const account = this.#book.update(patch, now);
    return account ? { account, usage: this.#book.usage(now)! } : null;
  }

  /** An isolate's lease call (account/lease.ts). */
  lease(ask: LeaseAsk): LeaseAnswer {
    return this.#book.lease(ask, Date.now(), envSettings(this.env).keyLeaseMs);
  }
}
