/**
 * What one request holds of its key's account while it runs (the request
 * context's `keyAccess`, docs/api.md section 2.14): set when the key's lease
 * is made live (account/admission.ts), read when the request is admitted,
 * settled and ended.
 */

import type { KeyLease, Ticket } from './lease.ts';

export interface KeyAccess {
  jti: string;
  lease: KeyLease;
  /** The request's Origin, when the key has CORS settings that allow it: the response lets the browser read it. */
  origin?: string;
  /** Set once the request is admitted (one admission per HTTP request, however often a route retries the inference). */
  ticket?: Ticket;
}
