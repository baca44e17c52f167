/**
 * The edge app: every route, and the one place errors become HTTP responses
 * (`{ error: { code, message } }`, or the OpenAI or Hugging Face shape on
 * those routes: workers/errors.ts, docs/api.md section 2.9).
 */

import { Hono } from 'hono';
import { isMeshError, MeshError } from '../shared/errors.ts';
import type { AppEnv } from './context.ts';
import { errorAnswer, routeFamily } from './errors.ts';
import { adminRoutes } from './routes/admin.ts';
import { disputeRoutes } from './routes/disputes.ts';
import { oipRoutes } from './routes/oip.ts';
import { healthRoutes } from './routes/health.ts';
import { huggingfaceRoutes } from './routes/huggingface.ts';
import { openaiRoutes } from './routes/openai.ts';
import { providerRoutes } from './routes/providers.ts';
import { requestLog } from './request-log.ts';
import { keyAccounts } from './account/middleware.ts';
import { settlementRoutes } from './routes/settlement.ts';
import { statusRoutes } from './routes/status.ts';

export const app = new Hono<AppEnv>()
  // First: every response gets its x-request-id, every request its log line (docs/api.md section 2.12).
  .use(requestLog)
  // Consumer routes: CORS preflights, and each request's admission ended with its response (docs/api.md section 2.14).
  .use(keyAccounts)
  .route('/', healthRoutes)
  .route('/', oipRoutes)
  .route('/', openaiRoutes)
  .route('/', huggingfaceRoutes)
  .route('/', providerRoutes)
  .route('/', settlementRoutes)
  .route('/', disputeRoutes)
  .route('/', statusRoutes)
  .route('/', adminRoutes);

app.notFound((c) => {
  const { status, body, headers } = errorAnswer(new MeshError('not_found', `No route for ${c.req.method} ${c.req.path}.`), routeFamily(c.req.path));
  return c.json(body, status as 404, headers);
});

app.onError((err, c) => {
  if (!isMeshError(err)) console.error(`unhandled error on ${c.req.method} ${c.req.path}:`, err);
  const known = isMeshError(err) ? err : new MeshError('internal', 'Something went wrong on our side.');
  // The body's shape is the route family's: the mesh's, OpenAI's or Hugging Face's (workers/errors.ts).
  const { status, body, headers } = errorAnswer(known, routeFamily(c.req.path));
  return c.json(body, status as 400, headers);
});
