/**
 * `GET /openapi.json`: the edge's OpenAPI 3.1 document (workers/openapi/),
 * unauthenticated and cacheable like the JWKS; serialised once per isolate.
 */

import { Hono } from 'hono';
import type { AppEnv } from '../context.ts';
import { JWKS_MAX_AGE_S } from '../keys.ts';
import { openApiText } from '../openapi/document.ts';

export const openapiRoutes = new Hono<AppEnv>().get(
  '/openapi.json',
  (c) =>
    new Response(openApiText(), {
      headers: { 'content-type': 'application/json; charset=utf-8', 'cache-control': `public, max-age=${JWKS_MAX_AGE_S}` },
    }),
);
