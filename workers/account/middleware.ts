/**
 * The key-account middleware of the consumer routes (docs/api.md section
 * 2.13): answers CORS preflights, and once a request's response is ready ends
 * its admission (account/admission.ts) and, when its key's CORS origins allow
 * the request's Origin, lets the browser read the response, errors included.
 * Other paths pass through untouched.
 */

import type { MiddlewareHandler } from 'hono';
import type { AppEnv } from '../context.ts';
import { finishAccess } from './admission.ts';
import { allowResponse, isConsumerPath, preflight } from './cors.ts';

export const keyAccounts: MiddlewareHandler<AppEnv> = async (c, next) => {
  if (!isConsumerPath(c.req.path)) return next();
  if (c.req.method === 'OPTIONS') return preflight(c, next);
  try {
    await next();
  } finally {
    finishAccess(c, c.res);
  }
  const origin = c.get('keyAccess')?.origin;
  if (origin !== undefined) allowResponse(c, origin);
};
