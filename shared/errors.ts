/**
 * The one error type of the mesh. Every failure a caller can act on is a
 * `MeshError` with a stable snake_case `code` and the HTTP `status` it maps to;
 * the edge and the backend each turn it into `{ error: { code, message } }` in
 * exactly one place (their `onError`; the edge's OpenAI and Hugging Face
 * routes answer it in those APIs' shapes, workers/errors.ts). Callers switch
 * on `code`, never on text.
 */

export type MeshErrorCode =
  // 400
  | 'invalid_json'
  | 'invalid_request'
  | 'invalid_tensor'
  | 'unknown_input'
  | 'missing_input'
  | 'shape_mismatch'
  | 'datatype_mismatch'
  | 'invalid_image'
  | 'unknown_region'
  // 401 / 403
  | 'unauthorized'
  | 'invalid_token'
  | 'forbidden'
  | 'unknown_provider'
  // 404 / 405 / 413 / 429
  | 'not_found'
  | 'model_not_found'
  | 'model_not_ready'
  | 'body_too_large'
  | 'rate_limited'
  // 429 / 402: a key's own limits and budget (docs/api.md section 2.14)
  | 'concurrency_limited'
  | 'budget_exhausted'
  | 'receipt_not_found'
  // 202: not an error; the answer is not there yet (docs/api.md section 5.5)
  | 'receipt_pending'
  | 'batch_not_found'
  | 'batch_open'
  | 'already_settled'
  | 'dispute_not_found'
  // 5xx
  | 'no_capacity'
  | 'backend_failed'
  | 'backend_timeout'
  | 'verification_failed'
  | 'not_ready'
  | 'not_implemented'
  | 'internal';

/** The HTTP status each code maps to, so a code never drifts from its status. */
const STATUS_OF: Record<MeshErrorCode, number> = {
  invalid_json: 400,
  invalid_request: 400,
  invalid_tensor: 400,
  unknown_input: 400,
  missing_input: 400,
  shape_mismatch: 400,
  datatype_mismatch: 400,
  invalid_image: 400,
  unknown_region: 400,
  unauthorized: 401,
  invalid_token: 401,
  forbidden: 403,
  unknown_provider: 403,
  not_found: 404,
  model_not_found: 404,
  model_not_ready: 503,
  body_too_large: 413,
  rate_limited: 429,
  concurrency_limited: 429,
  budget_exhausted: 402,
  receipt_not_found: 404,
  receipt_pending: 202,
  batch_not_found: 404,
  batch_open: 404,
  already_settled: 409,
  dispute_not_found: 404,
  no_capacity: 503,
  backend_failed: 502,
  backend_timeout: 504,
  verification_failed: 502,
  not_ready: 503,
  not_implemented: 501,
  internal: 500,
};

export class MeshError extends Error {
  override readonly name = 'MeshError';
  readonly code: MeshErrorCode;
  readonly status: number;
  /** Seconds the client should wait before retrying (429/503), sent as `retry-after`. */
  readonly retryAfter: number | undefined;
  /** The request field at fault, when one is (the OpenAI routes send it as `param`). */
  readonly param: string | undefined;

  constructor(code: MeshErrorCode, message: string, options: { cause?: unknown; retryAfter?: number; param?: string } = {}) {
    super(message, { cause: options.cause });
    this.code = code;
    this.status = STATUS_OF[code];
    this.retryAfter = options.retryAfter;
    this.param = options.param;
  }
}

/** True for a code of the list above (a backend's error may carry any snake_case code). */
export function isMeshErrorCode(code: string): code is MeshErrorCode {
  return Object.hasOwn(STATUS_OF, code);
}

/** The JSON body of every error response (docs/api.md section 2). */
export interface ErrorBody {
  error: { code: MeshErrorCode | string; message: string };
}

export function errorBody(err: MeshError): ErrorBody {
  return { error: { code: err.code, message: err.message } };
}

export function isMeshError(err: unknown): err is MeshError {
  return err instanceof MeshError;
}
