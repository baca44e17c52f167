/**
 * Proof of location (docs/api.md section 3.2): whether the round trips the
 * edge measured from its PoPs to a backend fit the place the backend claims.
 * Pure: the claim, the minima per PoP and the rule's numbers come in.
 *
 * - Physics: light in fibre covers at most FIBRE_KM_PER_MS / 2 = 100 km per
 *   ms of round trip, so a PoP whose minimum round trip is r ms proves the
 *   backend is within r x 100 km of it: no path, queue or allowance can make a
 *   backend look nearer than it is.
 * - A PoP counts once it has `minSamples` samples.
 * - Refuted when (a) a counted PoP is farther from the claim than its reach
 *   (r x 100 km + `slackKm`): the backend is near that PoP and the PoP is far
 *   from the claim; or (b) a counted PoP within `nearKm` of the claim has r
 *   above the ceiling 2 x d x `inflation` / 200 + `processingMs`: a backend
 *   really at the claim answers a nearby PoP faster than that at its best
 *   (p90 path inflation, plus TLS/HTTP handling, last mile and the edge's
 *   timer granularity).
 * - Verified when not refuted and some PoP within `nearKm` of the claim has
 *   `minSamples` probes whose minimum is at or under its ceiling; unverified
 *   otherwise.
 *
 * Two minima per PoP: over all samples, and over probes alone. A probe is
 * timed by the edge end to end, so a backend can only make it longer; a
 * dispatch's sample is its time less the service time the backend states, so
 * a dishonest backend can make it look shorter. Hence dispatch samples may
 * refute (a shorter round trip only proves the backend nearer the PoP that
 * measured it, and a backend that shrinks its samples near its claim still
 * faces (b) on its probes) but never verify.
 */

import { FIBRE_KM_PER_MS, greatCircleKm, type LatLon } from './distance.ts';

export type LocationState = 'verified' | 'unverified' | 'refuted';

/** The rule's numbers (docs/api.md section 3.2 says why each). */
export interface LocationRule {
  /** Samples a PoP needs before it counts. */
  minSamples: number;
  /** PoPs within this many km of the claim can verify it (and refute it by slowness). */
  nearKm: number;
  /** Path inflation over the great circle allowed near the claim: the p90 of measured internet paths. */
  inflation: number;
  /** Round-trip time a backend at the claim may spend besides the path, ms. */
  processingMs: number;
  /** Added to a PoP's reach, km: coordinates are a city's, PoPs and machines sit around it. */
  slackKm: number;
}

export const DEFAULT_LOCATION_RULE: Readonly<LocationRule> = {
  minSamples: 5,
  nearKm: 1000,
  inflation: 3.4,
  processingMs: 25,
  slackKm: 50,
};

/** What the edge measured from one PoP to a backend. */
export interface PopRtt extends LatLon {
  /** The PoP's IATA code. */
  pop: string;
  /** The lowest round trip measured, probes and dispatches alike, ms. */
  minRttMs: number;
  /** How many round trips `minRttMs` is the minimum of. */
  samples: number;
  /** The lowest round trip a probe measured, ms (absent: no probe yet). */
  probeMinRttMs?: number;
  /** How many of `samples` were probes. */
  probeSamples?: number;
  /** How many of `probeSamples` are from the directory's current window: what the edge's probes keep up (directory/probes.ts). */
  windowProbeSamples?: number;
}

/** One PoP's measurement against the claim, for display. */
export interface LocationEvidence {
  pop: string;
  minRttMs: number;
  samples: number;
  probeMinRttMs?: number;
  probeSamples?: number;
  windowProbeSamples?: number;
  /** Great-circle km from the PoP to the claimed point. */
  distanceKm: number;
  /** The farthest from the PoP the backend can be, km: minRttMs x 100 + slack. */
  reachKm: number;
  /** For a PoP within `nearKm` of the claim: the slowest minimum a backend at the claim shows it, ms. */
  ceilingMs?: number;
  /** For a refuting PoP: `reach` (too far from the claim for its round trip), `ceiling` (too slow for one near the claim). */
  failed?: 'reach' | 'ceiling';
}

export interface LocationVerdict {
  state: LocationState;
  /** The refuting PoP; the nearest verifying PoP; or, unverified, the nearest PoP with samples (none when there are none). */
  evidence?: LocationEvidence;
}

/** The farthest a backend can be from a PoP whose minimum round trip to it is `minRttMs`, plus the slack, km. */
export function reachKm(minRttMs: number, rule: Readonly<LocationRule> = DEFAULT_LOCATION_RULE): number {
  return minRttMs * (FIBRE_KM_PER_MS / 2) + rule.slackKm;
}

/** The slowest minimum round trip a backend `distanceKm` from a PoP shows it, ms. */
export function ceilingMs(distanceKm: number, rule: Readonly<LocationRule> = DEFAULT_LOCATION_RULE): number {
  return (2 * distanceKm * rule.inflation) / FIBRE_KM_PER_MS + rule.processingMs;
}

const tenth = (x: number) => Math.round(x * 10) / 10;

/** One PoP's measurement against the claim (unrounded), and whether it verifies it. */
function judge(claim: LatLon, m: PopRtt, rule: Readonly<LocationRule>): { e: LocationEvidence; verifies: boolean } {
  const distanceKm = greatCircleKm(m, claim);
  const probes = m.probeSamples ?? 0;
  const e: LocationEvidence = {
    pop: m.pop,
    minRttMs: m.minRttMs,
    samples: m.samples,
    ...(probes > 0 ? { probeMinRttMs: m.probeMinRttMs, probeSamples: probes, windowProbeSamples: m.windowProbeSamples ?? probes } : {}),
    distanceKm,
    reachKm: reachKm(m.minRttMs, rule),
  };
  if (distanceKm <= rule.nearKm) e.ceilingMs = ceilingMs(distanceKm, rule);
  const counted = m.samples >= rule.minSamples;
  const probesCounted = probes >= rule.minSamples && m.probeMinRttMs !== undefined;
  if (counted && distanceKm > e.reachKm) {
    e.failed = 'reach';
  } else if (e.ceilingMs !== undefined && ((counted && m.minRttMs > e.ceilingMs) || (probesCounted && m.probeMinRttMs! > e.ceilingMs))) {
    e.failed = 'ceiling';
  }
  return { e, verifies: !e.failed && e.ceilingMs !== undefined && probesCounted && m.probeMinRttMs! <= e.ceilingMs };
}

function shown(e: LocationEvidence): LocationEvidence {
  return {
    ...e,
    distanceKm: tenth(e.distanceKm),
    reachKm: tenth(e.reachKm),
    ...(e.ceilingMs !== undefined ? { ceilingMs: tenth(e.ceilingMs) } : {}),
  };
}

const valid = (m: PopRtt) =>
  [m.lat, m.lon, m.minRttMs, m.samples].every(Number.isFinite) &&
  m.minRttMs >= 0 &&
  m.samples >= 1 &&
  (m.probeSamples === undefined || (Number.isFinite(m.probeSamples) && m.probeSamples <= m.samples)) &&
  (m.probeMinRttMs === undefined || (Number.isFinite(m.probeMinRttMs) && m.probeMinRttMs >= m.minRttMs));

/**
 * The verdict on a backend claiming to be at `claim`, from the minimum round
 * trips measured per PoP. Entries with inconsistent numbers are ignored.
 *
 * @example
 * const sin = { pop: 'SIN', ...popLocation('SIN')! };
 * locationVerdict(sin, [{ ...sin, minRttMs: 150, samples: 9 }])
 * // { state: 'refuted', evidence: { pop: 'SIN', failed: 'ceiling', ceilingMs: 25, ... } }
 */
export function locationVerdict(claim: LatLon, measured: readonly PopRtt[], rule: Readonly<LocationRule> = DEFAULT_LOCATION_RULE): LocationVerdict {
  let refuted: { e: LocationEvidence; reach: boolean; by: number } | undefined;
  let verified: LocationEvidence | undefined;
  let nearest: LocationEvidence | undefined;
  for (const m of measured) {
    if (!valid(m)) continue;
    const { e, verifies } = judge(claim, m, rule);
    if (e.failed) {
      // The strongest refutation is shown: reach before ceiling (it rests on physics alone), then the widest miss.
      const reach = e.failed === 'reach';
      const by = reach ? e.distanceKm - e.reachKm : Math.max(m.minRttMs, m.probeMinRttMs ?? 0) - e.ceilingMs!;
      if (!refuted || (reach && !refuted.reach) || (reach === refuted.reach && by > refuted.by)) refuted = { e, reach, by };
    } else if (verifies && (!verified || e.distanceKm < verified.distanceKm)) {
      verified = e;
    }
    if (!nearest || e.distanceKm < nearest.distanceKm) nearest = e;
  }
  if (refuted) return { state: 'refuted', evidence: shown(refuted.e) };
  if (verified) return { state: 'verified', evidence: shown(verified) };
  return nearest ? { state: 'unverified', evidence: shown(nearest) } : { state: 'unverified' };
}
