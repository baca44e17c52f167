/** What a consumer route hands the inference path (run.ts) once it has authenticated and translated the request. */

import type { KeyClaims, Units } from '../../shared/jwt.ts';
import type { InferRequest, InferResponse, ModelMetadata } from '../../shared/protocol.ts';

/** What a route hands over once it has authenticated and translated the request. */
export interface InferenceCall {
  consumer: KeyClaims;
  model: string;
  version?: string;
  /** Exact bytes of the OIP v2 request for the backend. */
  oipBody: Uint8Array;
  /** The JSON header's length when `oipBody` uses the binary tensor extension. */
  headerLength?: number;
  /** The same request, parsed: what the mesh meters and checks the answer against. */
  request: InferRequest;
  /** The model's metadata, when the route has it: answers are checked against it. */
  metadata?: ModelMetadata;
  /** The consumer's own request bytes, when they differ from `oipBody` (for the receipt's input_sha256). */
  consumerBody?: Uint8Array;
  /**
   * Turns the checked OIP answer into what the consumer receives. Absent:
   * the backend's OIP bytes are passed through unchanged.
   */
  shape?: (answer: InferResponse, units: Units) => { body: string | Uint8Array; contentType: string };
  /** The request's texts, when it is a text-embedding request that may fall back to Hugging Face. */
  texts?: string[];
  /** The output name of the model's embedding, for a fallback answer in OIP form (default `embedding`). */
  outputName?: string;
  /** The consumer asked for a fresh answer (Hugging Face's `options.use_cache: false`): the answer cache is not looked in. */
  noCache?: boolean;
}
