/**
 * The last resort (docs/design.md, "The routing brain"): when no backend in the
 * mesh can serve a request, a Hugging Face inference endpoint the operator
 * configured (`HF_ENDPOINT_URL` var, `HF_TOKEN` secret), called through
 * `@huggingface/inference`. Only text embedding (feature-extraction) falls
 * back: the answer is reshaped into the OIP response the mesh's own backends
 * would give, so every consumer route and the receipt work unchanged.
 */

import { InferenceClient } from '@huggingface/inference';
import { MeshError } from '../../shared/errors.ts';
import type { InferResponse } from '../../shared/protocol.ts';
import { tokenize } from '../../shared/tokenizer.ts';
import type { Units } from '../../shared/jwt.ts';
import type { Env } from '../env.ts';

export interface FallbackAnswer {
  /** OIP v2 response bytes, as a mesh backend would have sent them. */
  body: Uint8Array;
  units: Units;
  /** Host of the endpoint, named as the receipt's `backend`. */
  endpoint: string;
  ms: number;
}

/** True when the operator configured a Hugging Face endpoint. */
export function fallbackConfigured(env: Env): boolean {
  return Boolean(env.HF_ENDPOINT_URL);
}

const FALLBACK_CODES = new Set(['no_capacity', 'model_not_found', 'backend_failed', 'backend_timeout']);

/** True when `err` means no mesh backend can serve, and a text request may go to Hugging Face instead. */
export function mayFallBack(env: Env, err: unknown, texts: readonly string[] | undefined): boolean {
  return texts !== undefined && fallbackConfigured(env) && err instanceof MeshError && FALLBACK_CODES.has(err.code);
}

function rows(output: unknown, n: number): number[][] {
  const isRow = (v: unknown): v is number[] => Array.isArray(v) && v.every((x) => typeof x === 'number');
  if (n === 1 && isRow(output)) return [output];
  if (Array.isArray(output) && output.length === n && output.every(isRow)) return output;
  throw new MeshError('backend_failed', 'The Hugging Face endpoint answered in a shape that is not one embedding per input.');
}

/** Embeds `texts` on the configured endpoint; the answer as OIP bytes with output `outputName`. */
export async function embedOnHuggingFace(env: Env, model: string, texts: string[], outputName: string, timeoutMs: number): Promise<FallbackAnswer> {
  const endpointUrl = env.HF_ENDPOINT_URL!;
  const client = new InferenceClient(env.HF_TOKEN, { endpointUrl });
  const started = Date.now();
  let output: unknown;
  try {
    output = await client.featureExtraction({ inputs: texts.length === 1 ? texts[0]! : texts }, { signal: AbortSignal.timeout(timeoutMs) });
  } catch (cause) {
    throw new MeshError('backend_failed', `No mesh backend could serve "${model}" and the Hugging Face fallback failed too.`, { cause });
  }
  const embeddings = rows(output, texts.length);
  const width = embeddings[0]?.length ?? 0;
  const response: InferResponse = {
    model_name: model,
    model_version: 'huggingface',
    outputs: [{ name: outputName, datatype: 'FP32', shape: [embeddings.length, width], data: embeddings.flat() }],
  };
  return {
    body: new TextEncoder().encode(JSON.stringify(response)),
    units: { input: texts.reduce((n, t) => n + tokenize(t).length, 0), output: texts.length },
    endpoint: new URL(endpointUrl).host,
    ms: Date.now() - started,
  };
}
