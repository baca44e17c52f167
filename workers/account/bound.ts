/**
 * The most one request can count and cost before it is dispatched (docs/api.md
 * section 2.14): what a key's tokens-per-minute slice and budget reserve for
 * it. Input units are exact (the meter of shared/metering.ts over the request).
 * Output units are exact where the meter fixes them from the request (`tokens`
 * and `rows`: its rows; `requests`: one); for `elements` they are the output
 * shapes in the model's metadata, a batching model's leading dimension being
 * the request's rows, and where a shape is open (or there is no metadata) the
 * most elements an answer may carry. The price is the highest of the model's,
 * its fallback's and its cache price, per side, twice for `x-mesh-verify:
 * redundant`. So the receipt's units and amount never exceed the bound.
 */

import type { ReceiptClaims } from '../../shared/jwt.ts';
import { inputUnits, requestRows } from '../../shared/metering.ts';
import type { InferRequest, ModelMetadata } from '../../shared/protocol.ts';
import { MAX_ANSWER_ELEMENTS } from '../inference/answer.ts';
import type { CatalogueModel } from '../inference/catalogue.ts';
import { priceOf } from '../inference/pricing.ts';

export interface Bound {
  /** Metered units, input and output together. */
  units: number;
  /** micro-USD. */
  microUsd: number;
}

/** False only when the metadata says the model has no batch dimension (`max_batch_size` 0), as the answer check reads it. */
function batches(metadata: ModelMetadata & { parameters?: Record<string, unknown> }): boolean {
  return metadata.parameters?.max_batch_size !== 0;
}

/** The most output units an answer to `request` can be metered at. */
export function outputBound(entry: CatalogueModel, request: InferRequest, metadata: ModelMetadata | undefined): number {
  switch (entry.meter) {
    case 'tokens':
    case 'rows':
      return requestRows(request.inputs);
    case 'requests':
      return 1;
    case 'elements': {
      if (!metadata) return MAX_ANSWER_ELEMENTS;
      const rows = requestRows(request.inputs);
      const asked = request.outputs?.length ? new Set(request.outputs.map((o) => o.name)) : undefined;
      let n = 0;
      for (const o of metadata.outputs) {
        if (asked && !asked.has(o.name)) continue;
        let e = 1;
        for (let i = 0; i < o.shape.length; i++) {
          const d = o.shape[i]!;
          if (d >= 0) e *= d;
          else if (i === 0 && batches(metadata)) e *= rows;
          else return MAX_ANSWER_ELEMENTS;
        }
        n += e;
      }
      return Math.min(n, MAX_ANSWER_ELEMENTS);
    }
  }
}

/** The bound of one request to `entry` in verification mode `verify`. */
export function requestBound(entry: CatalogueModel, request: InferRequest, metadata: ModelMetadata | undefined, verify: ReceiptClaims['verify']): Bound {
  const input = inputUnits(entry, request.inputs);
  const output = outputBound(entry, request, metadata);
  // The fallback may answer instead (never in redundant mode), or the answer cache, each at its own price.
  const others = [verify === 'redundant' ? undefined : entry.fallback?.price, entry.cache?.price];
  const price = { ...entry.price };
  for (const p of others) {
    if (!p) continue;
    price.input = Math.max(price.input, p.input);
    price.output = Math.max(price.output, p.output);
  }
  const once = priceOf(price, { input, output });
  return { units: input + output, microUsd: verify === 'redundant' ? once * 2 : once };
}
