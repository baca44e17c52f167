/**
 * What the world alone allows for the p99 goal, per model, shown beside the
 * measured ratio:
 * - its service times: p99 / p50 of one request's service time on one
 *   reference GPU, with the stalls the world draws (faults.stallShare x
 *   stallFactor), and no network, queue, batching or slower site. No routing
 *   policy gets a model's p99 under this multiple of its median without a
 *   second execution (a hedge or a retry);
 * - its floors: p99 / p50 of the requests' physical floors (run.ts: each
 *   request's best-placed backend, idle, no jitter): where the users are, and
 *   their last miles. A policy whose answers sit near their floors has about
 *   this ratio however it routes.
 */

import type { SimConfig } from './config.ts';
import { Random } from './random.ts';
import type { RunRecord } from './run.ts';

/** A model's p50 and p99 of some times, ms; a `ServiceTail` or a floor tail alike. */
export interface ServiceTail {
  model: string;
  p50: number;
  p99: number;
  /** p99 / p50. */
  ratio: number;
}

function tailOf(model: string, times: Float64Array): ServiceTail {
  times.sort();
  const at = (q: number) => (times.length === 0 ? Number.NaN : times[Math.min(times.length - 1, Math.max(0, Math.ceil(q * times.length) - 1))]!);
  const p50 = at(0.5);
  const p99 = at(0.99);
  return { model, p50, p99, ratio: p99 / p50 };
}

/** `samples` service times per model, drawn as sim/backend.ts draws them for one request on a reference GPU. */
export function serviceTails(config: SimConfig, samples = 200_000): ServiceTail[] {
  const random = new Random(config.seed).fork(0x7a11);
  const { stallShare, stallFactor } = config.faults;
  return config.models.map((spec) => {
    const times = new Float64Array(samples);
    for (let i = 0; i < samples; i++) {
      let ms = random.lognormal(spec.serviceMs, spec.serviceSigma);
      if (random.unit() < stallShare) ms *= stallFactor;
      times[i] = ms;
    }
    return tailOf(spec.name, times);
  });
}

/** Per model, p50 and p99 of the physical floors of `record`'s requests (the same arrivals, so the same for every policy). */
export function floorTails(record: Pick<RunRecord, 'requests' | 'model' | 'floor'>, config: SimConfig): ServiceTail[] {
  const counts = new Int32Array(config.models.length);
  for (let i = 0; i < record.requests; i++) counts[record.model[i]!]!++;
  const times = config.models.map((_, m) => new Float64Array(counts[m]!));
  counts.fill(0);
  for (let i = 0; i < record.requests; i++) {
    const m = record.model[i]!;
    times[m]![counts[m]!++] = record.floor[i]!;
  }
  return config.models.map((spec, m) => tailOf(spec.name, times[m]!));
}
