/**
 * What an inference costs the consumer, in integer micro-USD (docs/api.md section
 * 4, `amount`). Prices are per unit: tokens in for the embedding model, items
 * out for the classifier. Fractions are rounded up once per request.
 */

import type { Units } from '../../shared/jwt.ts';

interface Price {
  /** micro-USD per input unit. */
  input: number;
  /** micro-USD per output unit. */
  output: number;
}

const PRICES: Readonly<Record<string, Price>> = {
  // $0.10 per million tokens embedded.
  embed: { input: 0.1, output: 0 },
  // $5 per million items classified.
  classifier: { input: 0, output: 5 },
};

/** Price of a model not in the table. */
const DEFAULT_PRICE: Price = { input: 0.1, output: 1 };

/** The amount charged for `units` of `model`, integer micro-USD. */
export function priceOf(model: string, units: Units): number {
  const p = PRICES[model] ?? DEFAULT_PRICE;
  return Math.ceil(units.input * p.input + units.output * p.output - 1e-9);
}
