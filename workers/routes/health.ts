/**
 * Unauthenticated routes: edge liveness and readiness (docs/api.md section 2), the
 * JWKS (section 4: the keys receipts can be verified with now) and the JWKS
 * archive (every key the mesh ever signed with, retired ones with `retired_at`).
 */

import { Hono } from 'hono';
import type { AppEnv } from '../context.ts';
import { JWKS_MAX_AGE_S, signingKeys } from '../keys.ts';

const CACHEABLE = { 'cache-control': `public, max-age=${JWKS_MAX_AGE_S}` };

export const healthRoutes = new Hono<AppEnv>()
  .get('/v2/health/live', (c) => c.json({ live: true }))
  .get('/v2/health/ready', async (c) => {
    try {
      await signingKeys(c.env);
      return c.json({ ready: true });
    } catch (err) {
      return c.json({ ready: false, reason: (err as Error).message }, 503);
    }
  })
  .get('/.well-known/jwks.json', async (c) => {
    const keys = await signingKeys(c.env);
    return c.json(keys.publicJwks, 200, CACHEABLE);
  })
  .get('/.well-known/jwks-archive.json', async (c) => {
    const keys = await signingKeys(c.env);
    return c.json(keys.archiveJwks, 200, CACHEABLE);
  });
