/**
 * What an inference costs the consumer, in integer micro-USD (docs/api.md
 * section 4.3, `amount`): the catalogue's per-unit price times the units the
 * mesh metered, rounded up once per request.
 */

import type { Units } from '../../shared/jwt.ts';

/** A model's price in the catalogue (catalogue.ts): micro-USD per unit. */
export interface Price {
  input: number;
  output: number;
}

/** The amount charged for `units` at `price`, integer micro-USD. */
export function priceOf(price: Price, units: Units): number {
  return Math.max(0, Math.ceil(units.input * price.input + units.output * price.output - 1e-9));
}
