/** The Hono environment of the edge app: bindings plus per-request variables. */

import type { KeyAccess } from './account/access.ts';
import type { Env } from './env.ts';

/**
 * What one request did, for its log line and analytics data point
 * (workers/request-log.ts, docs/api.md section 2.12). The request-log
 * middleware creates it empty; authentication and the inference path fill in
 * what they learn, by plain assignment. Never a key, token or input: ids only.
 */
export interface RequestFacts {
  /** The bearer key's `jti` (its id, as revocation names it) and `sub`, once the key verified. */
  keyId?: string;
  sub?: string;
  model?: string;
  /** The PoP the inference resolved (docs/api.md section 1); the log resolves it otherwise. */
  pop?: string;
  /** Who answered: the backend's region, id and provider (`huggingface` for the fallback). */
  region?: string;
  backend?: string;
  provider?: string;
  /** Backend calls made for the answer: first try, retries and the hedge. */
  attempts?: number;
  /** The backends called, in the order they were sent to (the first choice first); at most the attempts' bound. */
  tried?: string[];
  /** What the answer cache did (docs/api.md section 2.13): `hit`, `miss` or `bypass`, as `x-mesh-cache` says. */
  cache?: 'hit' | 'miss' | 'bypass';
  /** The jti of the receipt the answer carries. */
  receipt?: string;
  /** A code the response carries that no thrown MeshError names (a backend's 4xx passed through). */
  error?: string;
}

export interface Variables {
  /** This request's id, sent back as `x-request-id` (docs/api.md section 2.12). */
  requestId: string;
  facts: RequestFacts;
  /** The request's hold on its key's account, when the key has one (workers/account/access.ts). */
  keyAccess?: KeyAccess;
}

export type AppEnv = { Bindings: Env; Variables: Variables };
