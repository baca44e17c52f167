/**
 * Power of two choices (Azar et al.; Finagle's and Linkerd's balancers): among
 * the best few candidates, draw two distinct at random and take the cheaper.
 * Isolates with the same snapshot then spread their picks instead of all
 * herding onto the single best backend, and load that builds on one backend
 * (its expected time rises) moves picks elsewhere. The randomness is injected.
 *
 * No draw when the best leads the next by more than its `crowdMs`: what one
 * more request sent there first (another isolate's, unseen) would add to it.
 * Even after such a collision the best would still be the better, so a draw
 * would only cost the request the difference (docs/benchmarks.md, "The best
 * without a draw, when a collision cannot cost it the lead").
 */

/** Anything with an expected time: `Scored` from score.ts. */
export interface Costed {
  expectedMs: number;
  /** What one more request ahead of this one would add to `expectedMs`, ms (score.ts: its service time over its slots); absent: always drawn. */
  crowdMs?: number;
}

export interface P2cOptions {
  /** At most this many of the best candidates are drawn from (default 5). */
  poolSize?: number;
  /**
   * Only candidates with expectedMs <= best x (1 + bandRatio) + bandMs are drawn
   * from (defaults 0.5 and 25 ms), so a far region never shares the pool with a near one.
   */
  bandRatio?: number;
  /** See `bandRatio`. */
  bandMs?: number;
}

export const P2C_DEFAULTS = { poolSize: 5, bandRatio: 0.5, bandMs: 25 } as const;

/** The candidates P2C draws from: the best ones, within the band of the best. */
export function p2cPool<T extends Costed>(ranked: readonly T[], options: P2cOptions = {}): T[] {
  const first = ranked[0];
  if (!first) return [];
  const size = options.poolSize ?? P2C_DEFAULTS.poolSize;
  const limit = first.expectedMs * (1 + (options.bandRatio ?? P2C_DEFAULTS.bandRatio)) + (options.bandMs ?? P2C_DEFAULTS.bandMs);
  const pool: T[] = [];
  for (const c of ranked) {
    if (pool.length >= size || c.expectedMs > limit) break;
    pool.push(c);
  }
  return pool;
}

const index = (random: () => number, n: number) => Math.min(n - 1, Math.max(0, Math.floor(random() * n)));

/**
 * The order in which to try candidates: the P2C pick first, then every other
 * candidate in `ranked` order (the next one is the retry or hedge target).
 * `ranked` must be best first (as `rankByScore` returns it); ties between the
 * two drawn go to the first drawn. Candidates `heldBack` says are held back
 * go last, in ranked order, unless every candidate is.
 *
 * @example
 * const attempts = pickAttempts(rankByScore(...), Math.random);
 * // attempts[0]: send; attempts[1]: retry or hedge target
 */
export function pickAttempts<T extends Costed>(ranked: readonly T[], random: () => number, options: P2cOptions = {}, heldBack?: (candidate: T) => boolean): T[] {
  if (heldBack && ranked.some(heldBack)) {
    // Held back (outliers.ts: failing, but not ejectable): after every other candidate, never drawn first.
    const ready = ranked.filter((c) => !heldBack(c));
    if (ready.length > 0) return [...pickAttempts(ready, random, options), ...ranked.filter(heldBack)];
  }
  const [best, next] = ranked;
  if (best?.crowdMs !== undefined && next && next.expectedMs - best.expectedMs > best.crowdMs) return [...ranked];
  const pool = p2cPool(ranked, options);
  if (pool.length < 2) return [...ranked];
  const i = index(random, pool.length);
  let j = index(random, pool.length - 1);
  if (j >= i) j += 1;
  const a = pool[i]!;
  const b = pool[j]!;
  const chosen = b.expectedMs < a.expectedMs ? b : a;
  return [chosen, ...ranked.filter((c) => c !== chosen)];
}
