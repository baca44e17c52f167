/**
 * The building blocks of the OpenAPI 3.1 document (`GET /openapi.json`,
 * workers/openapi/document.ts): JSON Schema helpers, and `operation`, which
 * expands a route's short description (`Op`) into an OpenAPI operation with
 * the errors it can answer, in its route family's shape. The family comes
 * from `routeFamily`, the same function that shapes the route's errors
 * (workers/errors.ts), and each status's codes from the codes' own statuses
 * (shared/errors.ts), so the document cannot drift from either. Written for
 * a small bundle: the document is code that builds it, once per isolate.
 */

import { MeshError, type MeshErrorCode } from '../../shared/errors.ts';
import { openaiType, routeFamily, type RouteFamily } from '../errors.ts';

export type Schema = { [key: string]: unknown };

export const str = (extra: Schema = {}): Schema => ({ type: 'string', ...extra });
export const int = (extra: Schema = {}): Schema => ({ type: 'integer', ...extra });
export const num = (extra: Schema = {}): Schema => ({ type: 'number', ...extra });
export const bool: Schema = { type: 'boolean' };
export const arr = (items: Schema, extra: Schema = {}): Schema => ({ type: 'array', items, ...extra });
export const ref = (name: string): Schema => ({ $ref: `#/components/schemas/${name}` });
export const nullable = (s: Schema): Schema => ({ anyOf: [s, { type: 'null' }] });
export const oneOfValues = (...values: unknown[]): Schema => ({ enum: values });
export const binary: Schema = { type: 'string', contentMediaType: 'application/octet-stream' };

/**
 * An object schema: the keys of `required` must be present, those of
 * `optional` may be; `closed` objects refuse any other key (the route
 * answers 400 for an unknown field), open ones ignore it.
 */
export function obj(required: Record<string, Schema>, optional: Record<string, Schema> = {}, closed = false): Schema {
  const names = Object.keys(required);
  return {
    type: 'object',
    properties: { ...required, ...optional },
    ...(names.length ? { required: names } : {}),
    ...(closed ? { additionalProperties: false } : {}),
  };
}

/** A schema with a description. */
export const about = (s: Schema, description: string): Schema => ({ ...s, description });

/** Ids: providers, backends, consumers (`sub`), model names (docs/api.md, Conventions). */
export const ID = str({ pattern: '^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$' });
export const HEX64 = str({ pattern: '^[0-9a-f]{64}$' });
export const JWT = str({ pattern: '^[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]*\\.[A-Za-z0-9_-]*$', description: 'a compact JWS' });
/** Unix ms. */
export const MS = int({ minimum: 0 });

/**
 * Every mesh error code. Typed as a record of every `MeshErrorCode`, so that a
 * code added to shared/errors.ts fails the typecheck here until it is
 * documented.
 */
const CODES: Record<MeshErrorCode, 0> = {
  invalid_json: 0,
  invalid_request: 0,
  invalid_tensor: 0,
  unknown_input: 0,
  missing_input: 0,
  shape_mismatch: 0,
  datatype_mismatch: 0,
  invalid_image: 0,
  unknown_region: 0,
  unauthorized: 0,
  invalid_token: 0,
  forbidden: 0,
  unknown_provider: 0,
  not_found: 0,
  model_not_found: 0,
  model_not_ready: 0,
  body_too_large: 0,
  rate_limited: 0,
  concurrency_limited: 0,
  budget_exhausted: 0,
  receipt_not_found: 0,
  receipt_pending: 0,
  batch_not_found: 0,
  batch_open: 0,
  already_settled: 0,
  dispute_not_found: 0,
  no_capacity: 0,
  backend_failed: 0,
  backend_timeout: 0,
  verification_failed: 0,
  not_ready: 0,
  not_implemented: 0,
  internal: 0,
};
export const ERROR_CODES = Object.keys(CODES) as MeshErrorCode[];

/** The codes answered with `status` (on the Hugging Face routes a 429 is also every 503). */
export function codesOf(status: number, family: RouteFamily = 'mesh'): MeshErrorCode[] {
  const statusOf = (code: MeshErrorCode) => {
    const s = new MeshError(code, '').status;
    return family === 'huggingface' && s === 503 ? 429 : s;
  };
  return ERROR_CODES.filter((code) => statusOf(code) === status);
}

/** A backend's own code, passed through on the OIP routes' 400 and 413 (workers/inference/answer.ts). */
const BACKEND_CODE = str({ pattern: '^[a-z][a-z0-9_]{0,63}$', description: "a code of this status, or the backend's own snake_case code" });

/** The error body of `family` for `status` (docs/api.md section 2.9); `backendCode`: a backend's verdict passed through. */
export function errorSchema(family: RouteFamily, status: number, backendCode = false): Schema {
  const code = backendCode ? BACKEND_CODE : { type: 'string', enum: codesOf(status, family) };
  if (family === 'openai') {
    return obj({ error: obj({ message: str(), type: { const: openaiType(status) }, param: { type: ['string', 'null'] }, code }, {}, true) }, {}, true);
  }
  if (family === 'huggingface') return obj({ error: str(), code }, {}, true);
  return obj({ error: obj({ code, message: str() }, {}, true) }, {}, true);
}

/** `status`: admin, billing or a provider's key (docs/api.md section 2.15). */
export type Auth = 'consumer' | 'billing' | 'admin' | 'heartbeat' | 'status';
export type Method = 'get' | 'post' | 'put' | 'patch' | 'delete';

/** One success (or documented non-error) answer. */
export interface Answer {
  /** The JSON body's schema; `content` for other types. */
  json?: Schema;
  content?: Record<string, Schema>;
  /** Response header names (components.headers) beyond `x-request-id`, which every answer has. */
  headers?: string[];
  description?: string;
}

/** A route, as the family modules describe it. */
export interface Op {
  summary: string;
  /** The section of docs/api.md that specifies it. */
  see: string;
  auth?: Auth;
  /** Request header parameters (components.parameters, by header name). */
  headers?: string[];
  query?: Record<string, Schema>;
  /** Schemas of the path's `{name}` parameters; a string otherwise. */
  path?: Record<string, Schema>;
  /** The request body, by content type. */
  body?: Record<string, Schema>;
  /** Answers by status: the successes, and any non-error answer of its own shape. */
  ok: Record<number, Answer>;
  /** Error statuses beyond those its auth implies (and 400 for a body, 500 always). */
  errors?: number[];
  /** Its 400 and 413 may be a backend's verdict with the backend's own code (OIP routes). */
  backendCodes?: boolean;
}

const SECURITY: Record<Auth, Record<string, string[]>[]> = {
  consumer: [{ consumerKey: [] }],
  billing: [{ billingKey: [] }, { adminToken: [] }],
  admin: [{ adminToken: [] }],
  heartbeat: [{ heartbeatToken: [] }],
  status: [{ billingKey: [] }, { adminToken: [] }, { providerKey: [] }],
};

/** Headers an error answer may carry besides `x-request-id`. */
function errorHeaders(status: number): string[] {
  if (status === 401) return ['www-authenticate'];
  return status === 202 || status === 404 || status === 429 || status === 503 ? ['retry-after'] : [];
}

const headerRefs = (names: string[] = []) =>
  Object.fromEntries(['x-request-id', ...names].map((h) => [h, { $ref: `#/components/headers/${h}` }]));

function answer(a: Answer, fallback: string): Schema {
  const content = a.content ?? (a.json ? { 'application/json': a.json } : undefined);
  return {
    description: a.description ?? fallback,
    headers: headerRefs(a.headers),
    ...(content ? { content: Object.fromEntries(Object.entries(content).map(([t, schema]) => [t, { schema }])) } : {}),
  };
}

/**
 * The OpenAPI operation object of `op` at `path`. Its error answers are
 * references to `shared` (the document's components.responses), where each
 * family's answer for a status is written once.
 */
export function operation(path: string, op: Op, tag: string, shared: Record<string, Schema>): Schema {
  const family = routeFamily(path);
  const errors = new Set(op.errors);
  if (op.body) errors.add(400);
  if (op.auth) errors.add(401);
  if (op.auth && op.auth !== 'heartbeat') [403, 503].forEach((s) => errors.add(s));
  errors.add(500);
  const responses: Record<string, Schema> = {};
  for (const [status, a] of Object.entries(op.ok)) responses[status] = answer(a, 'OK');
  for (let status of [...errors].sort((a, b) => a - b)) {
    if (family === 'huggingface' && status === 503) status = 429;
    if (responses[status]) continue;
    const backendCodes = op.backendCodes && (status === 400 || status === 413);
    const name = `${family}-${status}${backendCodes ? '-backend' : ''}`;
    shared[name] ??= answer({ json: errorSchema(family, status, backendCodes), headers: errorHeaders(status) }, codesOf(status, family).join(', '));
    responses[status] = { $ref: `#/components/responses/${name}` };
  }
  const params = [
    ...[...path.matchAll(/\{(\w+)\}/g)].map(([, name]) => ({ name, in: 'path', required: true, schema: op.path?.[name!] ?? str() })),
    ...Object.entries(op.query ?? {}).map(([name, schema]) => ({ name, in: 'query', schema })),
    ...(op.headers ?? []).map((h) => ({ $ref: `#/components/parameters/${h}` })),
  ];
  return {
    tags: [tag],
    summary: op.summary,
    description: `docs/api.md section ${op.see}.`,
    ...(op.auth ? { security: SECURITY[op.auth] } : {}),
    ...(params.length ? { parameters: params } : {}),
    ...(op.body
      ? { requestBody: { required: true, content: Object.fromEntries(Object.entries(op.body).map(([t, schema]) => [t, { schema }])) } }
      : {}),
    responses,
  };
}

/** A family module's routes: path -> method -> route. */
export type Paths = Record<string, Partial<Record<Method, Op>>>;

/** A family module: its tag, routes and named schemas. */
export interface Family {
  tag: string;
  paths: Paths;
  schemas?: Record<string, Schema>;
}

/** The headers of every successful inference (docs/api.md section 2.8). */
export const INFERENCE_HEADERS = ['x-mesh-receipt', 'x-mesh-region', 'x-mesh-backend', 'x-mesh-cache', 'server-timing'];
/** The request headers every inference reads (docs/api.md section 2.3). */
export const INFERENCE_PARAMS = ['x-mesh-region', 'x-mesh-verify', 'x-mesh-dev-colo', 'cache-control'];
/** The statuses an inference may answer beyond auth: its checks, the key's budget and limits, the model, the body's size, the backends. */
export const INFERENCE_ERRORS = [400, 402, 404, 413, 429, 502, 503, 504];
