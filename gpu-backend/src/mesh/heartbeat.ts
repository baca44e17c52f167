/**
 * Heartbeats (docs/api.md section 3.2): every HEARTBEAT_INTERVAL_MS the backend tells
 * the edge where it is, what it serves warm and how busy it is, signed with
 * the provider key, and applies the load/unload actions the edge's reply asks
 * for. Each token is good for one body only (`body_sha256` of the exact bytes
 * sent: the body is serialised once, hashed, and those bytes sent) and
 * carries a `seq` above every earlier one (`max(last + 1, now in ms)`: strictly
 * increasing within the process, and above anything sent before a restart
 * while the clock does not go back), so the edge refuses a replayed beat.
 * A failing edge is logged once when the outage starts and once when it
 * ends, not on every beat. `stop()` sends a last beat with `ready: false`.
 */

import { SignJWT } from 'jose';
import type { Heartbeat, HeartbeatAction } from '../../../shared/heartbeat.ts';
import { HEARTBEAT_AUDIENCE, TYP } from '../../../shared/jwt.ts';
import type { Logger } from '../log.ts';
import { sha256HexSync } from './hash.ts';
import type { ProviderKey } from './provider-key.ts';

export interface HeartbeaterOptions {
  edgeUrl: string;
  providerId: string;
  backendId: string;
  key: ProviderKey;
  intervalMs: number;
  /** The current state of the backend, as the body of the next beat. */
  snapshot: () => Heartbeat;
  /** Applies one action from the edge; resolves true when it changed something. A failure is logged and the next one runs. */
  apply: (action: HeartbeatAction) => Promise<boolean>;
  log: Logger;
  fetch?: typeof fetch;
  /** Wall-clock milliseconds. */
  now?: () => number;
  /** Per-request timeout, ms (default: the interval, at least 2 s). */
  timeoutMs?: number;
}

/** Lifetime of a heartbeat token, s. */
const TOKEN_TTL_S = 60;

const encoder = new TextEncoder();

export class Heartbeater {
  readonly url: string;
  readonly #o: HeartbeaterOptions;
  readonly #fetch: typeof fetch;
  readonly #now: () => number;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #running = false;
  #current: Promise<boolean> | undefined;
  #failures = 0;
  #beats = 0;
  /** The `seq` of the last token signed (0: none yet). */
  #seq = 0;
  #actions: Promise<void> = Promise.resolve();

  constructor(options: HeartbeaterOptions) {
    this.#o = options;
    this.url = new URL('/v1/providers/heartbeat', options.edgeUrl).href;
    this.#fetch = options.fetch ?? globalThis.fetch;
    this.#now = options.now ?? Date.now;
  }

  /** Beats accepted by the edge so far. */
  get beats(): number {
    return this.#beats;
  }

  /** Sends the first beat now, then one every interval until `stop()`. */
  start(): void {
    if (this.#running) return;
    this.#running = true;
    void this.#loop();
  }

  /** Stops beating, and tells the edge this backend is no longer ready. */
  async stop(): Promise<void> {
    this.#running = false;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#current?.catch(() => false);
    await this.beat({ ready: false });
  }

  async #loop(): Promise<void> {
    if (!this.#running) return;
    await this.beat();
    if (!this.#running) return;
    this.#timer = setTimeout(() => void this.#loop(), this.#o.intervalMs);
    this.#timer.unref?.();
  }

  /** Sends one beat; true when the edge accepted it. Never throws. */
  beat(override: Partial<Heartbeat> = {}): Promise<boolean> {
    const current = this.#send(override);
    this.#current = current;
    return current;
  }

  async #send(override: Partial<Heartbeat>): Promise<boolean> {
    let reason: string;
    try {
      const body = encoder.encode(JSON.stringify({ ...this.#o.snapshot(), ...override }));
      const token = await this.#token(body);
      const res = await this.#fetch(this.url, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body,
        signal: AbortSignal.timeout(this.#o.timeoutMs ?? Math.max(2000, this.#o.intervalMs)),
      });
      const text = await res.text();
      if (res.ok) {
        this.#recovered();
        this.#beats++;
        this.#applyActions(text);
        return true;
      }
      reason = `HTTP ${res.status}${text ? `: ${text.slice(0, 200)}` : ''}`;
    } catch (err) {
      reason = err instanceof Error ? (err.cause instanceof Error ? `${err.message} (${err.cause.message})` : err.message) : String(err);
    }
    this.#failed(reason);
    return false;
  }

  /** Signs the token for exactly `body`; its `seq` is taken before any await, so beats are numbered in the order they are sent. */
  #token(body: Uint8Array): Promise<string> {
    const nowMs = this.#now();
    this.#seq = Math.max(this.#seq + 1, Math.floor(nowMs));
    const iat = Math.floor(nowMs / 1000);
    return new SignJWT({ body_sha256: sha256HexSync(body), seq: this.#seq })
      .setProtectedHeader({ alg: 'EdDSA', typ: TYP.heartbeat, kid: this.#o.key.kid })
      .setIssuer(this.#o.providerId)
      .setSubject(this.#o.backendId)
      .setAudience(HEARTBEAT_AUDIENCE)
      .setIssuedAt(iat)
      .setExpirationTime(iat + TOKEN_TTL_S)
      .sign(this.#o.key.privateKey);
  }

  #failed(reason: string): void {
    this.#failures++;
    if (this.#failures === 1) {
      this.#o.log.warn(`heartbeat to ${this.url} failed: ${reason}; retrying every ${this.#o.intervalMs} ms (logged again when it recovers)`);
    }
  }

  #recovered(): void {
    if (this.#failures > 0) this.#o.log.info(`heartbeat to ${this.url} recovered after ${this.#failures} failed beat(s)`);
    this.#failures = 0;
  }

  /** Applies the reply's actions in order, one at a time, without holding up the next beat. */
  #applyActions(text: string): void {
    let actions: unknown;
    try {
      actions = (JSON.parse(text) as { actions?: unknown }).actions;
    } catch {
      return;
    }
    if (!Array.isArray(actions)) return;
    for (const a of actions as unknown[]) {
      const action = a as Partial<HeartbeatAction> | null;
      if (!action || (action.op !== 'load' && action.op !== 'unload') || typeof action.model !== 'string') {
        this.#o.log.warn(`heartbeat reply: ignoring malformed action ${JSON.stringify(a)}`);
        continue;
      }
      const valid: HeartbeatAction = { op: action.op, model: action.model };
      this.#actions = this.#actions.then(async () => {
        try {
          if (await this.#o.apply(valid)) this.#o.log.info(`edge asked to ${valid.op} model ${valid.model}: done`);
        } catch (err) {
          this.#o.log.warn(`edge asked to ${valid.op} model ${valid.model}: ${err instanceof Error ? err.message : String(err)}`);
        }
      });
    }
  }

  /** Resolves when the actions received so far have been applied (tests). */
  async settled(): Promise<void> {
    await this.#actions;
  }
}
