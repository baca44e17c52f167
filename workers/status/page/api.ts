/**
 * Reading `GET /v1/mesh/status` with plain `fetch`, same origin only, and
 * saying what came back: the status, a refusal of the token (401 or 403,
 * with the server's message: the page asks for a token again), or a failure
 * to keep the last data through (network, timeout, 5xx, a body that is not a
 * status).
 */

import type { MeshStatus } from '../view.ts';

export const STATUS_PATH = '/v1/mesh/status';

export type StatusResult =
  | { kind: 'ok'; status: MeshStatus }
  | { kind: 'refused'; message: string }
  | { kind: 'failed'; message: string };

/** True when `body` has the arrays and fields the page draws from (a light check, not a schema). */
export function isMeshStatus(body: unknown): body is MeshStatus {
  if (typeof body !== 'object' || body === null) return false;
  const b = body as Record<string, unknown>;
  return (
    typeof b['at'] === 'number' &&
    typeof b['pop'] === 'string' &&
    typeof b['windowSeconds'] === 'number' &&
    typeof b['viewer'] === 'object' &&
    ['regions', 'backends', 'pops', 'batches', 'unavailable'].every((k) => Array.isArray(b[k]))
  );
}

/** The message of an `{ error: { code, message } }` body, or a fallback naming the status. */
export function errorMessage(body: unknown, status: number): string {
  const error = (body as { error?: { code?: unknown; message?: unknown } } | null)?.error;
  if (error && typeof error.message === 'string') return typeof error.code === 'string' ? `${error.message} (${error.code})` : error.message;
  return `HTTP ${status}`;
}

/** One poll: the status, or why not. Never throws. */
export async function fetchStatus(token: string, timeoutMs = 8_000): Promise<StatusResult> {
  // `cache` is typed for the browser here and unknown to Node's fetch types, which the node tests compile this with.
  const init: RequestInit & { cache?: 'no-store' } = {
    headers: { authorization: `Bearer ${token}`, accept: 'application/json' },
    cache: 'no-store',
    credentials: 'omit',
    referrerPolicy: 'no-referrer',
    signal: AbortSignal.timeout(timeoutMs),
  };
  let res: Response;
  try {
    res = await fetch(STATUS_PATH, init);
  } catch (err) {
    const timedOut = err instanceof DOMException && err.name === 'TimeoutError';
    return { kind: 'failed', message: timedOut ? `no answer in ${timeoutMs / 1000} s` : 'the mesh could not be reached' };
  }
  let body: unknown;
  try {
    body = await res.json();
  } catch {
    body = undefined;
  }
  if (res.status === 401 || res.status === 403) return { kind: 'refused', message: errorMessage(body, res.status) };
  if (!res.ok) return { kind: 'failed', message: errorMessage(body, res.status) };
  if (!isMeshStatus(body)) return { kind: 'failed', message: 'the answer was not a mesh status' };
  return { kind: 'ok', status: body };
}
