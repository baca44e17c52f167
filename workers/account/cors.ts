/**
 * CORS for browser consumers (docs/api.md section 2.14): which paths are the
 * consumer routes, the preflight answer (any origin: a preflight carries no
 * key, so the key's origins are enforced on the request itself), and the
 * headers an actual response gets when its key allows the request's origin.
 */

import type { Context } from 'hono';
import { cors } from 'hono/cors';
import type { AppEnv } from '../context.ts';
import type { KeyCors } from './settings.ts';

/** Response headers a browser script may read. */
export const EXPOSED_HEADERS = ['retry-after', 'x-request-id', 'x-mesh-receipt', 'x-mesh-region', 'x-mesh-backend', 'x-mesh-cache', 'server-timing'] as const;
/** Request headers a browser may send to the consumer routes. */
export const ALLOWED_HEADERS = ['authorization', 'content-type', 'inference-header-content-length', 'x-mesh-region', 'x-mesh-verify', 'x-wait-for-model'] as const;
/** How long a browser may reuse a preflight answer, seconds. */
export const PREFLIGHT_MAX_AGE_S = 600;

/** The consumer routes (docs/api.md sections 2.4 to 2.7): the paths CORS applies to. */
export function isConsumerPath(path: string): boolean {
  return (
    path.startsWith('/v2/models/') ||
    path === '/v1/embeddings' ||
    path === '/v1/models' ||
    path.startsWith('/v1/models/') ||
    path.startsWith('/models/')
  );
}

export function allowsOrigin(settings: KeyCors, origin: string): boolean {
  return settings.origins.includes('*') || settings.origins.includes(origin);
}

/** The preflight answer: 204 allowing the request's origin, the consumer routes' methods and headers. */
export const preflight = cors({
  origin: (origin) => origin || null,
  allowMethods: ['GET', 'POST'],
  allowHeaders: [...ALLOWED_HEADERS],
  exposeHeaders: [...EXPOSED_HEADERS],
  maxAge: PREFLIGHT_MAX_AGE_S,
});

/** Lets a browser at `origin` read the response (the key allows it). */
export function allowResponse(c: Context<AppEnv>, origin: string): void {
  const set = (headers: Headers) => {
    headers.set('access-control-allow-origin', origin);
    headers.set('access-control-expose-headers', EXPOSED_HEADERS.join(', '));
    headers.append('vary', 'origin');
  };
  try {
    set(c.res.headers);
  } catch {
    // Immutable headers (a response passed through as fetched): answer a copy.
    c.res = new Response(c.res.body, c.res);
    set(c.res.headers);
  }
}
