/**
 * The PoP's answer cache (docs/api.md section 2.13): a deterministic model's
 * checked OIP answers, kept with the Cache API in the PoP that computed them,
 * under the key of cache-key.ts. This module decides what the cache does for
 * one request (`planCache`: hit, miss or bypass, with one `cache.match` and
 * no Durable Object call), and stores an answer once its attestation has
 * verified (`storeAnswer`, in `waitUntil`). What a hit answers is
 * cache-hit.ts.
 *
 * An entry is the backend's answer bytes as they came, with its content type,
 * its `Inference-Header-Content-Length` when it is binary, a `cache-control`
 * max-age of the model's `cache_ttl`, and `x-mesh-entry`: the version that
 * computed it, its outputs' shapes (to meter a hit without parsing it), the
 * `jti` of the receipt that paid for it (a hit's `origin`), and the provider
 * that computed it and when: an entry is not served once that provider is
 * quarantined, removed (it has no live backend), or proven to have lied
 * since (docs/api.md section 6.3), so a provider caught lying stops
 * answering from the cache too.
 */

import type { Context } from 'hono';
import { HEADER_LENGTH_HEADER } from '../../shared/binary.ts';
import type { ReceiptClaims } from '../../shared/jwt.ts';
import type { InferRequest } from '../../shared/protocol.ts';
import type { AppEnv } from '../context.ts';
import { getSnapshot } from '../directory/snapshot.ts';
import { settings } from '../env.ts';
import type { KeyClaims } from '../../shared/jwt.ts';
import type { Pop } from '../geo/pop.ts';
import { allowedRegions } from './candidates.ts';
import { cacheKey } from './cache-key.ts';
import type { CatalogueModel } from './catalogue.ts';

/** The named cache that holds answers (one per PoP, as every Cache API cache). */
const CACHE_NAME = 'mesh-answers';
/** The largest answer stored, bytes: a larger one is computed each time. */
export const MAX_CACHED_ANSWER_BYTES = 1024 * 1024;
/** The entry's own header: what a hit needs besides the bytes. */
const ENTRY_HEADER = 'x-mesh-entry';
/** The longest `x-mesh-entry` read back. */
const MAX_ENTRY_HEADER = 8192;

/** What `x-mesh-cache` says, and the request log's `cache`. */
export type CacheState = 'hit' | 'miss' | 'bypass';

/** An answer from the cache, with what its entry says of it. */
export interface CachedAnswer {
  /** The backend's OIP answer bytes, as they were stored. */
  oip: Uint8Array;
  /** Their JSON header's length, when the answer is in the binary tensor extension. */
  headerLength?: string;
  /** The model version that computed it. */
  version: string;
  /** Its outputs' shapes, in order. */
  shapes: number[][];
  /** The `jti` of the receipt of the computation that produced it. */
  origin: string;
  /** The provider that computed it. */
  provider: string;
  /** When it was stored, ms. */
  storedAt: number;
}

/** What the cache does for one request. */
export interface CachePlan {
  state: CacheState;
  /** The entry's key: the answer is looked up under it (hit), or may be stored under it (miss). */
  key?: string;
  hit?: CachedAnswer;
}

/** What the plan needs of the request. */
export interface Cacheable {
  consumer: KeyClaims;
  model: string;
  version?: string;
  request: InferRequest;
  /** The consumer asked for a fresh answer another way than `cache-control` (Hugging Face's `options.use_cache: false`). */
  noCache?: boolean;
}

let opened: Promise<Cache> | undefined;

/** The isolate's handle on the answers' cache. */
function answers(): Promise<Cache> {
  opened ??= caches.open(CACHE_NAME).catch((err: unknown) => {
    opened = undefined;
    throw err;
  });
  return opened;
}

/**
 * The consumer's `cache-control` directives that the edge honours:
 * `no-store` (neither looked up nor stored) and `no-cache` (not looked up: a
 * fresh answer, which is stored). Others are ignored.
 */
export function consumerDirective(header: string | undefined): 'no-store' | 'no-cache' | undefined {
  if (!header) return undefined;
  const names = header.split(',').map((d) => d.split('=')[0]!.trim().toLowerCase());
  if (names.includes('no-store')) return 'no-store';
  if (names.includes('no-cache')) return 'no-cache';
  return undefined;
}

/**
 * What the cache does for this request: bypass (the model is not
 * deterministic, the request is redundant-mode, the consumer said `no-store`,
 * or the request has no key), miss (no usable entry, or the consumer asked
 * for a fresh answer: the answer may be stored), or hit. An entry is used
 * only while its version is one the mesh still serves (a backend announced it
 * in the snapshot's memory), so a version taken out of service stops
 * answering from the cache too.
 */
export async function planCache(c: Context<AppEnv>, call: Cacheable, entry: CatalogueModel, verify: ReceiptClaims['verify'], pop: Pop): Promise<CachePlan> {
  if (!entry.cache || verify === 'redundant') return { state: 'bypass' };
  const directive = consumerDirective(c.req.header('cache-control'));
  if (directive === 'no-store') return { state: 'bypass' };
  // The pin and the residency are checked as on a miss (the same refusals), though a hit is served by no region.
  allowedRegions(c, call.consumer);
  const key = await cacheKey(call.model, call.version, call.request, pop.simulated ? pop.code : undefined);
  if (!key) return { state: 'bypass' };
  if (directive === 'no-cache' || call.noCache) return { state: 'miss', key };
  let found: Response | undefined;
  try {
    found = await (await answers()).match(key);
  } catch (err) {
    console.warn(`answer cache: lookup failed: ${(err as Error).message}`);
    return { state: 'miss', key };
  }
  if (!found) return { state: 'miss', key };
  const hit = await readEntry(found);
  if (!hit) {
    console.warn(`answer cache: an entry for ${call.model} does not read back; computing the answer`);
    return { state: 'miss', key };
  }
  // The snapshot is in memory: authentication has read it.
  const snapshot = await getSnapshot(c.env, c.executionCtx, settings(c.env).snapshotRefreshMs);
  if (!snapshot.recentModels.has(`${call.model}@${hit.version}`)) return { state: 'miss', key };
  // A provider with no live backend may have been removed; one with no standing here is established with a clean record.
  const standing = snapshot.providers.get(hit.provider);
  const distrusted =
    !snapshot.liveProviders.has(hit.provider) ||
    snapshot.quarantined.has(hit.provider) ||
    (standing !== undefined && standing.lastProvenAt !== null && standing.lastProvenAt >= hit.storedAt);
  if (distrusted) return { state: 'miss', key };
  return { state: 'hit', key, hit };
}

/** An entry's answer and metadata; undefined when it does not read back as one. */
async function readEntry(res: Response): Promise<CachedAnswer | undefined> {
  const meta = res.headers.get(ENTRY_HEADER);
  const oip = new Uint8Array(await res.arrayBuffer());
  if (meta === null || meta.length > MAX_ENTRY_HEADER) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(meta);
  } catch {
    return undefined;
  }
  const { version, shapes, origin, provider, storedAt } = parsed as Record<string, unknown>;
  const isShape = (s: unknown) => Array.isArray(s) && s.every((d) => Number.isSafeInteger(d) && (d as number) >= 0);
  const isId = (v: unknown): v is string => typeof v === 'string' && v !== '';
  if (typeof version !== 'string' || !isId(origin) || !isId(provider) || !Number.isSafeInteger(storedAt) || !Array.isArray(shapes) || !shapes.every(isShape)) {
    return undefined;
  }
  const headerLength = res.headers.get(HEADER_LENGTH_HEADER);
  return { oip, ...(headerLength !== null ? { headerLength } : {}), version, shapes: shapes as number[][], origin, provider, storedAt: storedAt as number };
}

/**
 * Stores a checked answer whose attestation verified (the caller's
 * condition, as that the backend computed it: never an error, a fallback's
 * or a refused answer). One larger than MAX_CACHED_ANSWER_BYTES is not
 * stored. Never throws: a failure is logged and the next request computes.
 */
export async function storeAnswer(key: string, answer: Omit<CachedAnswer, 'storedAt'>, ttlSeconds: number): Promise<void> {
  if (answer.oip.byteLength > MAX_CACHED_ANSWER_BYTES) return;
  const storedAt = Date.now();
  const headers: Record<string, string> = {
    'content-type': answer.headerLength === undefined ? 'application/json' : 'application/octet-stream',
    'cache-control': `public, max-age=${ttlSeconds}`,
    [ENTRY_HEADER]: JSON.stringify({ version: answer.version, shapes: answer.shapes, origin: answer.origin, provider: answer.provider, storedAt }),
  };
  if (answer.headerLength !== undefined) headers[HEADER_LENGTH_HEADER] = answer.headerLength;
  try {
    await (await answers()).put(key, new Response(answer.oip, { headers }));
  } catch (err) {
    console.warn(`answer cache: store failed: ${(err as Error).message}`);
  }
}
