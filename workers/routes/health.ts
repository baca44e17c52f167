/** Unauthenticated routes: edge liveness and readiness (API.md section 2) and the JWKS (section 4). */

import { Hono } from 'hono';
import type { AppEnv } from '../context.ts';
import { signingKeys } from '../keys.ts';

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
    return c.json(keys.publicJwks, 200, { 'cache-control': 'public, max-age=300' });
  });
