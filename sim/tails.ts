/**
 * What the world's service times alone allow for the p99 goal: per model,
 * p99 / p50 of one request's service time on one reference GPU, with the
 * stalls the world draws (faults.stallShare x stallFactor), and no network,
 * queue, batching or slower site. No routing policy can get a model's p99
 * under this multiple of its median without a second execution (a hedge or
 * a retry); the report shows it beside the measured ratio.
 */

import type { SimConfig } from './config.ts';
import { Random } from './random.ts';

export interface ServiceTail {
  model: string;
  p50: number;
  p99: number;
  /** p99 / p50. */
  ratio: number;
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
    times.sort();
    const at = (q: number) => times[Math.min(samples - 1, Math.ceil(q * samples) - 1)]!;
    const p50 = at(0.5);
    const p99 = at(0.99);
    return { model: spec.name, p50, p99, ratio: p99 / p50 };
  });
}
