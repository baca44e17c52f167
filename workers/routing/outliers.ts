/**
 * Outlier ejection, as Envoy's outlier detection does it, per isolate: a
 * backend that fails `consecutiveFailures` calls in a row is ejected for
 * `baseEjectionMs` x the number of times it has been ejected, capped at
 * `maxEjectionMs`; no more than `maxEjectedShare` of a region's backends are
 * ejected at once (but at least one may be, as in Envoy), so a bad signal
 * cannot empty a region. The clock is injected.
 *
 * Held back: a backend over the threshold that the region's share keeps from
 * ejection is tried after every other candidate for `holdMs` after each
 * failure (`isHeldBack`; routing/p2c.ts orders it last).
 *
 * Forgiveness: a success resets the consecutive count; once an ejection has
 * ended, each `forgiveAfterMs` without a new ejection takes one off the
 * times-ejected multiplier, so a backend that recovers for good starts again
 * at the base ejection time.
 */

export interface OutlierOptions {
  /** Consecutive failures that eject (default 5). */
  consecutiveFailures?: number;
  /** Ejection time for the first ejection, ms (default 30 s); the n-th lasts n times as long. */
  baseEjectionMs?: number;
  /** Longest ejection, ms (default 300 s). */
  maxEjectionMs?: number;
  /** Most of a region that may be ejected at once, 0..1 (default 0.5); at least one backend may always be, unless it is 0 (no ejection). */
  maxEjectedShare?: number;
  /** Quiet time after an ejection ends that takes one off the multiplier, ms (default 60 s). */
  forgiveAfterMs?: number;
  /** How long a backend that could not be ejected for the region's share is held back after each failure, ms (default 5 s). */
  holdMs?: number;
  /** The clock, ms (default `Date.now`). */
  now?: () => number;
  /** Told of each ejection and each hold as it begins, for the log (default: nothing). */
  onEvent?: (event: OutlierEvent) => void;
}

/** A backend ejected (until `untilMs`, its `timesEjected`-th time) or held back (until `untilMs`, its region's share taken). */
export interface OutlierEvent {
  kind: 'ejected' | 'held';
  backendId: string;
  region: string;
  untilMs: number;
  timesEjected: number;
  /** Backends of its region ejected now, and its backends, as the cap saw them. */
  regionEjected: number;
  regionSize: number;
}

/** The backend a call went to, as the detector needs it. */
export interface OutlierTarget {
  id: string;
  region: string;
}

interface State {
  region: string;
  consecutive: number;
  timesEjected: number;
  /** ms; the backend is ejected while now < ejectedUntil. */
  ejectedUntil: number;
  /** ms; over the threshold but not ejected (the region's share was taken): held back while now < heldUntil. */
  heldUntil: number;
}

export const OUTLIER_DEFAULTS = {
  consecutiveFailures: 5,
  baseEjectionMs: 30_000,
  maxEjectionMs: 300_000,
  maxEjectedShare: 0.5,
  forgiveAfterMs: 60_000,
  holdMs: 5_000,
} as const;

/** Per-isolate outlier detection over call outcomes. */
export class OutlierDetector {
  readonly #threshold: number;
  readonly #baseMs: number;
  readonly #maxMs: number;
  readonly #share: number;
  readonly #forgiveMs: number;
  readonly #holdMs: number;
  readonly #now: () => number;
  readonly #onEvent: ((event: OutlierEvent) => void) | undefined;
  readonly #state = new Map<string, State>();

  constructor(options: OutlierOptions = {}) {
    this.#threshold = options.consecutiveFailures ?? OUTLIER_DEFAULTS.consecutiveFailures;
    this.#baseMs = options.baseEjectionMs ?? OUTLIER_DEFAULTS.baseEjectionMs;
    this.#maxMs = options.maxEjectionMs ?? OUTLIER_DEFAULTS.maxEjectionMs;
    this.#share = options.maxEjectedShare ?? OUTLIER_DEFAULTS.maxEjectedShare;
    this.#forgiveMs = options.forgiveAfterMs ?? OUTLIER_DEFAULTS.forgiveAfterMs;
    this.#holdMs = options.holdMs ?? OUTLIER_DEFAULTS.holdMs;
    this.#now = options.now ?? Date.now;
    this.#onEvent = options.onEvent;
  }

  /** True while the backend is ejected. */
  isEjected(backendId: string, now = this.#now()): boolean {
    const s = this.#state.get(backendId);
    return s !== undefined && now < s.ejectedUntil;
  }

  /**
   * Held back: it failed `consecutiveFailures` times in a row but its region's
   * ejected share was taken, so it could not be ejected. For `holdMs` after
   * each such failure, routing tries it after every other candidate (p2c.ts).
   */
  isHeldBack(backendId: string, now = this.#now()): boolean {
    const s = this.#state.get(backendId);
    return s !== undefined && now < s.heldUntil;
  }

  /** When the backend's ejection ends (ms), or undefined when it is not ejected. */
  ejectedUntil(backendId: string, now = this.#now()): number | undefined {
    const s = this.#state.get(backendId);
    return s !== undefined && now < s.ejectedUntil ? s.ejectedUntil : undefined;
  }

  /**
   * Records a failed call. `regionSize` is how many backends the region has
   * now (from the snapshot), for the ejected-share cap. Returns true when this
   * failure ejected the backend. Failures reported while it is ejected (calls
   * that were already in flight) are ignored.
   */
  recordFailure(backend: OutlierTarget, regionSize: number): boolean {
    const now = this.#now();
    let s = this.#state.get(backend.id);
    if (!s) {
      s = { region: backend.region, consecutive: 0, timesEjected: 0, ejectedUntil: 0, heldUntil: 0 };
      this.#state.set(backend.id, s);
    }
    s.region = backend.region;
    if (now < s.ejectedUntil) return false;
    s.consecutive += 1;
    if (s.consecutive < this.#threshold) return false;
    // Over the share cap: stay at the threshold, so the next failure tries again, and meanwhile be held
    // back: tried after every other candidate, not first (a dead backend would otherwise keep taking
    // first attempts, each one a retry, until the retry budget ran out).
    const regionEjected = this.#ejectedIn(backend.region, now);
    const event = { backendId: backend.id, region: backend.region, regionEjected, regionSize };
    if (regionEjected >= this.#maxEjectable(regionSize)) {
      const wasHeld = now < s.heldUntil;
      s.heldUntil = now + this.#holdMs;
      // Told once per hold, not for each failure that extends it (a dead backend fails every retry).
      if (!wasHeld) this.#onEvent?.({ kind: 'held', ...event, untilMs: s.heldUntil, timesEjected: s.timesEjected });
      return false;
    }
    s.timesEjected = this.#forgiven(s, now) + 1;
    s.ejectedUntil = now + Math.min(this.#maxMs, this.#baseMs * s.timesEjected);
    s.consecutive = 0;
    this.#onEvent?.({ kind: 'ejected', ...event, untilMs: s.ejectedUntil, timesEjected: s.timesEjected });
    return true;
  }

  /** Records a successful call: the consecutive count starts again. */
  recordSuccess(backendId: string): void {
    const s = this.#state.get(backendId);
    if (!s) return;
    s.consecutive = 0;
    s.heldUntil = 0;
    const now = this.#now();
    if (now >= s.ejectedUntil && this.#forgiven(s, now) === 0) this.#state.delete(backendId);
  }

  /** Forgets a backend (it left the directory). */
  forget(backendId: string): void {
    this.#state.delete(backendId);
  }

  /** How many backends of `region` are ejected now. */
  ejectedCount(region: string, now = this.#now()): number {
    return this.#ejectedIn(region, now);
  }

  #ejectedIn(region: string, now: number): number {
    let n = 0;
    for (const s of this.#state.values()) if (s.region === region && now < s.ejectedUntil) n++;
    return n;
  }

  #maxEjectable(regionSize: number): number {
    if (this.#share <= 0) return 0;
    return Math.max(1, Math.floor(this.#share * regionSize));
  }

  /** The times-ejected multiplier after forgiveness for the quiet time since the last ejection ended. */
  #forgiven(s: State, now: number): number {
    if (s.timesEjected === 0 || now < s.ejectedUntil) return s.timesEjected;
    return Math.max(0, s.timesEjected - Math.floor((now - s.ejectedUntil) / this.#forgiveMs));
  }
}
