/**
 * Signed location probes (docs/api.md sections 3.2 and 3.6): each isolate, in
 * the background, times a `POST /v2/mesh/probe` to the backends that have
 * fewer than the rule's MIN_SAMPLES probe round trips from its PoP in the
 * directory's current window (evidence ages out after two). Only
 * probes can verify a claim (geo/location.ts: a dispatch's round trip rests
 * on the service time the backend itself states), and they check a claim
 * even where this PoP never dispatches. The backend must sign `mesh-probe:<backendId>:<nonce>` with its
 * provider's key (checked against the admitted key on the directory entry):
 * only then does the fetch's duration count as a round trip (rtt-report.ts).
 * An unsigned, wrongly signed or malformed answer counts nothing and is logged.
 *
 * Bounds, per isolate: one probe per backend per PROBE_INTERVAL_MS, at most
 * PROBES_PER_ROUND per round and one round per PROBE_ROUND_MS. From the
 * request path `scheduleProbes` only picks the backends and hands the probes
 * to `ctx.waitUntil`: no request waits on a probe.
 */

import { PROBE_NONCE, probeMessage } from '../../shared/probe.ts';
import { base64url } from 'jose';
import type { JWK } from 'jose';
import type { Env } from '../env.ts';
import { DEFAULT_LOCATION_RULE } from '../geo/location.ts';
import { popLocation } from '../geo/pops.ts';
import type { BackendEntry } from './backend.ts';
import { readWithin } from '../body.ts';
import { RTT_WINDOW_MS } from './round-trips.ts';
import { flushRtt, noteRtt } from './rtt-report.ts';

/** A backend is probed at most once per this long by one isolate. */
export const PROBE_INTERVAL_MS = 10_000;
/** At most this many probes start in one round. */
export const PROBES_PER_ROUND = 4;
/** Rounds start at most this often per isolate (like the RTT and demand flushes). */
export const PROBE_ROUND_MS = 2_000;
/** A probe not answered by then counts nothing. */
export const PROBE_TIMEOUT_MS = 5_000;
/**
 * This long after an isolate's last probe of a backend, its round trip is in
 * the directory's verdict (reports flush within RTT_FLUSH_MS, snapshots
 * refresh every second): a verdict that shows fewer probes means the
 * directory forgot them, and the isolate probes again.
 */
export const FORGOTTEN_AFTER_MS = 30_000;
/** The largest probe answer read, bytes. */
const MAX_ANSWER_BYTES = 1024;
/** Probed pairs and backends remembered per isolate; past it the oldest half is forgotten. */
const MAX_REMEMBERED = 4096;
const MAX_KEYS = 256;
const SIGNATURE = /^[A-Za-z0-9_-]{86}$/;

type Ctx = { waitUntil(p: Promise<unknown>): void };


export interface ProberOptions {
  /** Default: the global `fetch`. */
  fetch?: typeof fetch;
  /** Wall-clock ms; also times the probes. Default Date.now. */
  now?: () => number;
  /** Where a valid probe's round trip goes. Default `noteRtt` (rtt-report.ts), as a probe's. */
  note?: (popCode: string, backend: { id: string; region: string }, rttMs: number) => void;
  /** Samples a PoP needs before it counts (default the location rule's). */
  minSamples?: number;
  intervalMs?: number;
  perRound?: number;
  roundMs?: number;
  timeoutMs?: number;
}

/** Why a probe counted nothing, or its round trip in ms. */
export type ProbeResult = { ok: true; rttMs: number } | { ok: false; reason: string };

/** One isolate's probes: what it probed when, and how many valid answers it got per (backend, PoP). */
export class Prober {
  readonly #fetch: typeof fetch;
  readonly #now: () => number;
  readonly #note: NonNullable<ProberOptions['note']>;
  readonly #minSamples: number;
  readonly #intervalMs: number;
  readonly #perRound: number;
  readonly #roundMs: number;
  readonly #timeoutMs: number;
  /** Backend id -> when this isolate last probed it. */
  readonly #lastProbe = new Map<string, number>();
  /** `backend\0POP` -> valid probe answers this isolate counted from that PoP in the window that began at `since`, the last at `last`. */
  readonly #answered = new Map<string, { n: number; since: number; last: number }>();
  /** The provider key's `x` -> the imported key. */
  readonly #keys = new Map<string, Promise<CryptoKey>>();
  #lastRound = -Infinity;

  constructor(options: ProberOptions = {}) {
    this.#fetch = options.fetch ?? ((input, init) => fetch(input, init));
    this.#now = options.now ?? Date.now;
    this.#note = options.note ?? ((pop, backend, rttMs) => noteRtt(pop, backend, rttMs, 'probe'));
    this.#minSamples = options.minSamples ?? DEFAULT_LOCATION_RULE.minSamples;
    this.#intervalMs = options.intervalMs ?? PROBE_INTERVAL_MS;
    this.#perRound = options.perRound ?? PROBES_PER_ROUND;
    this.#roundMs = options.roundMs ?? PROBE_ROUND_MS;
    this.#timeoutMs = options.timeoutMs ?? PROBE_TIMEOUT_MS;
  }

  /**
   * The probe round trips known from `pop` to `backend` in the directory's
   * current window (round-trips.ts keeps minima per RTT_WINDOW_MS, and a
   * verdict reads two windows, so each window needs its own probes): the
   * directory's count when the entry's location evidence is from this PoP,
   * or the valid probes this isolate sent from it in the last window
   * (perhaps not in the directory yet), whichever is more.
   */
  known(pop: string, backend: BackendEntry, now = this.#now()): number {
    const evidence = backend.location?.evidence;
    const directory = evidence?.pop === pop ? (evidence.windowProbeSamples ?? evidence.probeSamples ?? 0) : 0;
    const mine = this.#answered.get(`${backend.id}\u0000${pop}`);
    let own = mine && now - mine.since < RTT_WINDOW_MS ? mine.n : 0;
    // Long enough after the last probe for it to be in the directory's snapshot, a directory that shows
    // less has forgotten them: the backend left and came back (its round trips go with it), or they were pruned.
    if (mine && own > 0 && now - mine.last >= FORGOTTEN_AFTER_MS && (!evidence || evidence.pop === pop)) own = Math.min(own, directory);
    return Math.max(directory, own);
  }

  /**
   * The backends to probe from `pop` now (and marks them probed): a round (a
   * call that picks some) at most every `roundMs`; in it, unexpired backends
   * with an admitted key and fewer than `minSamples` probe round trips known
   * from this PoP, not probed in the last `intervalMs`, fewest known first,
   * at most `perRound`.
   */
  due(pop: string, backends: readonly BackendEntry[], now = this.#now()): BackendEntry[] {
    if (now - this.#lastRound < this.#roundMs) return [];
    const wanted = backends
      .filter((b) => b.expiresAt > now && b.providerKey?.x !== undefined && b.url)
      .filter((b) => now - (this.#lastProbe.get(b.id) ?? -Infinity) >= this.#intervalMs)
      .map((b) => ({ b, known: this.known(pop, b, now) }))
      .filter(({ known }) => known < this.#minSamples)
      .sort((x, y) => x.known - y.known)
      .slice(0, this.#perRound)
      .map(({ b }) => b);
    if (wanted.length > 0) this.#lastRound = now;
    for (const b of wanted) remember(this.#lastProbe, b.id, now);
    return wanted;
  }

  /** Probes `backend` once from `pop`: a valid signed answer notes its round trip; anything else is logged and counts nothing. */
  async probe(pop: string, backend: BackendEntry): Promise<ProbeResult> {
    const result = await this.#measure(backend);
    if (!result.ok) {
      console.warn(`probe ${backend.id} from ${pop}: ${result.reason}; it counts nothing`);
      return result;
    }
    this.#note(pop, { id: backend.id, region: backend.region }, result.rttMs);
    const key = `${backend.id}\u0000${pop}`;
    const now = this.#now();
    const mine = this.#answered.get(key);
    remember(this.#answered, key, mine && now - mine.since < RTT_WINDOW_MS ? { n: mine.n + 1, since: mine.since, last: now } : { n: 1, since: now, last: now });
    return result;
  }

  /**
   * From the request path: picks the backends due (`due`) and runs their
   * probes in `ctx.waitUntil`, then sends the round trips to the directories
   * (rtt-report.ts, when its flush is due). Returns the backends picked.
   */
  schedule(env: Env, ctx: Ctx, pop: string, backends: readonly BackendEntry[]): BackendEntry[] {
    const picked = this.due(pop, backends);
    if (picked.length === 0) return picked;
    ctx.waitUntil(
      Promise.allSettled(picked.map((b) => this.probe(pop, b))).then(async () => {
        const sends: Promise<unknown>[] = [];
        flushRtt(env, { waitUntil: (p) => void sends.push(p) });
        await Promise.allSettled(sends);
      }),
    );
    return picked;
  }

  async #measure(backend: BackendEntry): Promise<ProbeResult> {
    const nonce = base64url.encode(crypto.getRandomValues(new Uint8Array(32)));
    let res: Response;
    let rttMs: number;
    try {
      const started = this.#now();
      res = await this.#fetch(`${backend.url}/v2/mesh/probe`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ nonce }),
        signal: AbortSignal.timeout(this.#timeoutMs),
      });
      rttMs = this.#now() - started;
    } catch (err) {
      return { ok: false, reason: `the probe failed (${(err as Error).message})` };
    }
    let bytes: Uint8Array | undefined;
    try {
      bytes = await readWithin(res, MAX_ANSWER_BYTES);
    } catch (err) {
      return { ok: false, reason: `reading the answer failed (${(err as Error).message})` };
    }
    if (res.status !== 200) return { ok: false, reason: `HTTP ${res.status}` };
    if (!bytes) return { ok: false, reason: `the answer is over ${MAX_ANSWER_BYTES} bytes` };
    let answer: unknown;
    try {
      answer = JSON.parse(new TextDecoder().decode(bytes));
    } catch {
      return { ok: false, reason: 'the answer is not JSON' };
    }
    const { nonce: echoed, signature } = (answer ?? {}) as { nonce?: unknown; signature?: unknown };
    if (echoed !== nonce || typeof echoed !== 'string' || !PROBE_NONCE.test(echoed)) return { ok: false, reason: 'the answer is not for this nonce' };
    if (typeof signature !== 'string' || !SIGNATURE.test(signature)) return { ok: false, reason: 'the answer carries no signature' };
    let valid: boolean;
    try {
      const key = await this.#key(backend.providerKey!);
      valid = await crypto.subtle.verify('Ed25519', key, base64url.decode(signature), new TextEncoder().encode(probeMessage(backend.id, nonce)));
    } catch (err) {
      return { ok: false, reason: `the signature could not be checked (${(err as Error).message})` };
    }
    if (!valid) return { ok: false, reason: `the signature is not by provider ${backend.provider}'s key for this backend and nonce` };
    return { ok: true, rttMs: Math.max(0, rttMs) };
  }

  #key(jwk: JWK): Promise<CryptoKey> {
    const x = jwk.x!;
    let key = this.#keys.get(x);
    if (!key) {
      if (this.#keys.size >= MAX_KEYS) this.#keys.clear();
      key = crypto.subtle.importKey('jwk', { kty: 'OKP', crv: 'Ed25519', x }, { name: 'Ed25519' }, false, ['verify']);
      // A key that fails to import is tried afresh next time.
      key.catch(() => this.#keys.delete(x));
      this.#keys.set(x, key);
    }
    return key;
  }
}

/** Sets `key`, forgetting the oldest half of `map` when it is full. */
function remember<V>(map: Map<string, V>, key: string, value: V): void {
  map.delete(key);
  if (map.size >= MAX_REMEMBERED) {
    let drop = map.size / 2;
    for (const k of map.keys()) {
      if (drop-- <= 0) break;
      map.delete(k);
    }
  }
  map.set(key, value);
}

/** This isolate's prober. */
export const isolateProber = new Prober();

/**
 * From the request path, for a request that entered at `popCode` (a PoP whose
 * round trips count): schedules, in `ctx.waitUntil`, probes of the backends
 * with too few probe round trips known from it. Never waits and never throws.
 */
export function scheduleProbes(env: Env, ctx: Ctx, popCode: string, backends: readonly BackendEntry[]): void {
  // A PoP not in the table has no place to measure from (rtt-report.ts would drop its round trips).
  if (popLocation(popCode) === undefined) return;
  try {
    isolateProber.schedule(env, ctx, popCode.toUpperCase(), backends);
  } catch (err) {
    console.warn(`probes: scheduling failed (${(err as Error).message})`);
  }
}
