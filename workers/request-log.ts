/**
 * One request, observed (docs/api.md section 2.12): the request id, sent
 * back as `x-request-id` on every response, errors included; one JSON log
 * line when the request ends; and one data point in the Workers Analytics
 * Engine dataset `MESH_ANALYTICS`. The middleware runs first, around every
 * route; what it cannot see from the outside (the key, the model, who
 * answered, the receipt) the request path writes into `c.get('facts')`.
 *
 * An inference request (a POST to an INFERENCE_ROUTES route) is also counted for the
 * status page's recent traffic (directory/traffic-report.ts), sent to the
 * directories in the background.
 *
 * Nothing here waits: `console.log` and `writeDataPoint` are synchronous and
 * the runtime ships both after the response. A missing or failing dataset
 * never fails the request. Only ids and numbers are recorded: never a key,
 * a token or an input.
 */

import type { Context, MiddlewareHandler } from 'hono';
import { matchedRoutes } from 'hono/route';
import { isMeshError } from '../shared/errors.ts';
import type { AppEnv, RequestFacts } from './context.ts';
import { settings, type Env } from './env.ts';
import { resolvePop } from './geo/pop.ts';
import { isolateTrafficReport } from './directory/traffic-report.ts';

export const REQUEST_ID_HEADER = 'x-request-id';

/** The routes whose requests the status page counts as traffic, whatever their answer (docs/api.md section 2.15). */
export const INFERENCE_ROUTES: ReadonlySet<string> = new Set([
  '/v2/models/:model/infer',
  '/v2/models/:model/versions/:version/infer',
  '/v1/embeddings',
  '/models/:model',
  '/models/:model/pipeline/:task',
]);

/** The longest string kept in a log field or a data point's blob. */
const FIELD_MAX = 256;
/** Analytics Engine's limit on an index, bytes. */
const INDEX_MAX_BYTES = 96;

/** The log line of one request (docs/api.md section 2.12); absent fields are left out. */
export interface RequestRecord {
  level: 'info' | 'error';
  msg: 'request';
  request_id: string;
  method: string;
  /** The route's pattern (`/v2/models/:model/infer`); absent when no route matched. */
  route?: string;
  status: number;
  /** From the request's arrival to its response, as the Worker's clock sees it. */
  latency_ms: number;
  key_id?: string;
  sub?: string;
  model?: string;
  pop: string;
  region?: string;
  backend?: string;
  provider?: string;
  attempts?: number;
  /** The backends called, in the order they were sent to: the first choice, then retries and the hedge. */
  tried?: string[];
  cache?: 'hit' | 'miss' | 'bypass';
  receipt?: string;
  /** The error code the response carries, if any. */
  error?: string;
}

/** The request's facts, for the request path to fill in; a detached object when the middleware did not run (an app built without it). */
export function factsOf(c: Context<AppEnv>): RequestFacts {
  return c.get('facts') ?? {};
}

/** The middleware: first in the app's chain (workers/app.ts). */
export const requestLog: MiddlewareHandler<AppEnv> = async (c, next) => {
  const started = Date.now();
  // Always the edge's own: a client cannot choose or collide the id that keys logs and analytics.
  const id = crypto.randomUUID();
  const facts: RequestFacts = {};
  c.set('requestId', id);
  c.set('facts', facts);
  await next();
  try {
    c.res.headers.set(REQUEST_ID_HEADER, id);
  } catch {
    // Immutable headers (a response passed through as fetched): Hono copies it.
    c.header(REQUEST_ID_HEADER, id);
  }
  // Observing never costs the request its answer.
  try {
    const record = recordOf(c, id, facts, Date.now() - started);
    const line = JSON.stringify(record);
    if (record.level === 'error') console.error(line);
    else console.log(line);
    writePoint(c.env, record);
    if (record.method === 'POST' && record.route !== undefined && INFERENCE_ROUTES.has(record.route)) noteTraffic(c, record);
  } catch (err) {
    console.error(JSON.stringify({ level: 'error', msg: 'request log failed', request_id: id, error: String(err) }));
  }
};

function recordOf(c: Context<AppEnv>, id: string, facts: RequestFacts, latencyMs: number): RequestRecord {
  const status = c.res.status;
  // The route that answered: a handler, or a middleware that refused the request (`/admin/*`); this
  // middleware's own `*` when nothing else did.
  const answered = matchedRoutes(c)[c.req.routeIndex];
  const route = answered === undefined || answered.path === '*' || answered.path === '/*' ? undefined : answered.path;
  const thrown = c.error;
  // Only middleware ran and nothing threw: the app's not-found answer.
  const unrouted = answered === undefined || answered.method === 'ALL';
  const error = facts.error ?? (isMeshError(thrown) ? thrown.code : thrown ? 'internal' : unrouted && status === 404 ? 'not_found' : undefined);
  // Undefined fields drop out of the JSON line.
  return {
    level: status >= 500 ? 'error' : 'info',
    msg: 'request',
    request_id: id,
    method: bounded(c.req.method),
    route,
    status,
    latency_ms: latencyMs,
    pop: facts.pop ?? popOf(c),
    key_id: opt(facts.keyId),
    sub: opt(facts.sub),
    model: opt(facts.model),
    region: opt(facts.region),
    backend: opt(facts.backend),
    provider: opt(facts.provider),
    attempts: facts.attempts,
    tried: facts.tried?.map(bounded),
    cache: facts.cache,
    receipt: facts.receipt,
    error: opt(error),
  };
}

/** Counts an inference request for the status page and flushes the isolate's counts when due (in `waitUntil`). */
function noteTraffic(c: Context<AppEnv>, r: RequestRecord): void {
  isolateTrafficReport.note({ pop: r.pop, region: r.region, provider: r.provider, status: r.status, latencyMs: r.latency_ms });
  let ctx: { waitUntil(p: Promise<unknown>): void };
  try {
    ctx = c.executionCtx;
  } catch {
    return; // An app called without a context (a test's): the counts wait for a request that has one.
  }
  isolateTrafficReport.flush(c.env, ctx, Date.now(), settings(c.env).statusFlushMs);
}

/** The PoP when the request path did not resolve one; never throws (an unknown dev colo is the route's 400 to give). */
function popOf(c: Context<AppEnv>): string {
  try {
    return resolvePop(c.req.raw, settings(c.env).dev).code;
  } catch {
    return 'unknown';
  }
}

function bounded(s: string): string {
  return s.length > FIELD_MAX ? s.slice(0, FIELD_MAX) : s;
}

function opt(s: string | undefined): string | undefined {
  return s === undefined ? undefined : bounded(s);
}

/** Within Analytics Engine's index limit: ASCII cut at the limit, anything else where no UTF-16 unit can take more than 3 bytes. */
function indexOf(s: string): string {
  return /^[\x00-\x7f]*$/.test(s) ? s.slice(0, INDEX_MAX_BYTES) : s.slice(0, INDEX_MAX_BYTES / 3);
}

/**
 * The data point's layout (docs/api.md section 2.12). Blobs and doubles are
 * positional (`blob1` ... in SQL): add at the end, never reorder.
 */
export function dataPoint(r: RequestRecord): AnalyticsEngineDataPoint {
  const route = r.route === undefined ? r.method : `${r.method} ${r.route}`;
  return {
    indexes: [indexOf(r.model ?? route)],
    blobs: [
      route,
      r.model ?? '',
      r.pop,
      r.region ?? '',
      r.backend ?? '',
      r.provider ?? '',
      r.error ?? '',
      r.cache ?? '',
      r.sub ?? '',
      r.key_id ?? '',
      r.request_id,
      r.receipt ?? '',
    ].map(bounded),
    doubles: [r.status, r.latency_ms, r.attempts ?? 0],
  };
}

/** Said once per isolate: a dataset that throws would otherwise add a line to every request's. */
let writeFailureLogged = false;

function writePoint(env: Env, record: RequestRecord): void {
  // Typed as always bound, but an env built without it (a test's, a config without the binding) has none.
  const dataset: AnalyticsEngineDataset | undefined = env.MESH_ANALYTICS;
  if (!dataset) return;
  try {
    dataset.writeDataPoint(dataPoint(record));
  } catch (err) {
    if (writeFailureLogged) return;
    writeFailureLogged = true;
    console.error(JSON.stringify({ level: 'error', msg: 'analytics: writeDataPoint failed; requests go on without their data points', error: String(err) }));
  }
}
