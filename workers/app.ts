/**
 * The edge app: every route, and the one place errors become HTTP responses
 * (`{ error: { code, message } }`, docs/api.md section 2).
 */

import { Hono } from 'hono';
import { errorBody, isMeshError, MeshError } from '../shared/errors.ts';
import type { AppEnv } from './context.ts';
import { adminRoutes } from './routes/admin.ts';
import { disputeRoutes } from './routes/disputes.ts';
import { oipRoutes } from './routes/oip.ts';
import { healthRoutes } from './routes/health.ts';
import { huggingfaceRoutes } from './routes/huggingface.ts';
import { openaiRoutes } from './routes/openai.ts';
import { providerRoutes } from './routes/providers.ts';
import { settlementRoutes } from './routes/settlement.ts';

export const app = new Hono<AppEnv>()
  .route('/', healthRoutes)
  .route('/', oipRoutes)
  .route('/', openaiRoutes)
  .route('/', huggingfaceRoutes)
  .route('/', providerRoutes)
  .route('/', settlementRoutes)
  .route('/', disputeRoutes)
  .route('/', adminRoutes);

app.notFound((c) => c.json(errorBody(new MeshError('not_found', `No route for ${c.req.method} ${c.req.path}.`)), 404));

app.onError((err, c) => {
  if (isMeshError(err)) {
    const headers: Record<string, string> = {};
    if (err.retryAfter !== undefined) headers['retry-after'] = String(err.retryAfter);
    if (err.status === 401) headers['www-authenticate'] = `Bearer error="${err.code === 'unauthorized' ? 'invalid_request' : 'invalid_token'}"`;
    return c.json(errorBody(err), err.status as 400, headers);
  }
  console.error(`unhandled error on ${c.req.method} ${c.req.path}:`, err);
  return c.json(errorBody(new MeshError('internal', 'Something went wrong on our side.')), 500);
});
