/**
 * What a ledger shard accepts from its callers: the claims it keeps of a
 * receipt (a reason instead when the message is not one) and the ids that
 * name disputes and providers. Pure checks, no storage.
 */

import { decodePayload, type ReceiptClaims } from '../../shared/jwt.ts';

/** Longest id the ledger stores (jti, provider, dispute id). */
export const MAX_ID = 256;

/**
 * The claims of a receipt the ledger stores; `second` is the redundant run's
 * provider, when there is a valid one. `provider` is empty for a cache hit's
 * receipt (docs/api.md section 2.13), which pays no provider.
 */
export interface StoredReceipt {
  jti: string;
  sub: string;
  provider: string;
  amount: number;
  second: string | null;
}

function isId(v: unknown): v is string {
  return typeof v === 'string' && v.length > 0 && v.length <= MAX_ID;
}

/** Parses the claims the ledger keeps; a reason when the message is not a receipt. */
export function parseReceipt(jwt: unknown): StoredReceipt | string {
  if (typeof jwt !== 'string' || jwt.split('.').length !== 3) return 'not a compact JWS';
  const claims = decodePayload<Partial<ReceiptClaims>>(jwt);
  if (!claims || typeof claims !== 'object') return 'payload is not JSON';
  if (!isId(claims.jti)) return 'jti missing';
  if (typeof claims.sub !== 'string' || claims.sub.length === 0) return 'sub missing';
  // A cache hit names no provider (it pays none); every other receipt names one.
  const hit = claims.cache === 'hit';
  if (hit ? claims.provider !== undefined : typeof claims.provider !== 'string' || claims.provider.length === 0) {
    return hit ? 'a cache hit names a provider' : 'provider missing';
  }
  if (!Number.isSafeInteger(claims.amount) || claims.amount! < 0) return 'amount is not a non-negative integer';
  const second: unknown = claims.second && typeof claims.second === 'object' ? (claims.second as { provider?: unknown }).provider : undefined;
  return { jti: claims.jti, sub: claims.sub, provider: claims.provider ?? '', amount: claims.amount!, second: isId(second) ? second : null };
}

/** `value` when it is an id of 1 to MAX_ID characters; throws naming `what` otherwise. */
export function checkId(what: string, value: unknown): string {
  if (!isId(value)) throw new Error(`${what} must be a string of 1 to ${MAX_ID} characters.`);
  return value;
}
