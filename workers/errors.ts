/**
 * The error answer of each route family (docs/api.md section 2.9): what
 * `app.onError` sends for a `MeshError`. The mesh's own routes answer
 * `{ error: { code, message } }`; the OpenAI routes answer OpenAI's
 * `{ error: { message, type, param, code } }`; the Hugging Face routes answer
 * Hugging Face's `{ error, code }` and never 503, which `@huggingface/inference`
 * retries at once and without end (a 429 with `retry-after` instead). Also
 * turns a backend's 4xx verdict, which the inference path passes on as a
 * response, back into the `MeshError` it stands for, so that those routes
 * shape it too.
 */

import { errorBody, isMeshErrorCode, MeshError } from '../shared/errors.ts';

export type RouteFamily = 'mesh' | 'openai' | 'huggingface';

/** The family a request path belongs to: it decides the error's shape. */
export function routeFamily(path: string): RouteFamily {
  if (path === '/v1/embeddings' || path === '/v1/models' || path.startsWith('/v1/models/')) return 'openai';
  if (path.startsWith('/models/')) return 'huggingface';
  return 'mesh';
}

/** OpenAI's error `type` for an HTTP status. */
export function openaiType(status: number): string {
  switch (status) {
    case 401:
      return 'authentication_error';
    case 403:
      return 'permission_error';
    case 404:
      return 'not_found_error';
    case 429:
      return 'rate_limit_error';
    default:
      return status >= 500 ? 'server_error' : 'invalid_request_error';
  }
}

export interface ErrorAnswer {
  status: number;
  body: unknown;
  headers: Record<string, string>;
}

/** The status, body and headers of `err` as `family` answers it. */
export function errorAnswer(err: MeshError, family: RouteFamily): ErrorAnswer {
  let status = err.status;
  const headers: Record<string, string> = {};
  if (err.retryAfter !== undefined) headers['retry-after'] = String(err.retryAfter);
  if (status === 401) headers['www-authenticate'] = `Bearer error="${err.code === 'unauthorized' ? 'invalid_request' : 'invalid_token'}"`;
  switch (family) {
    case 'openai':
      return { status, headers, body: { error: { message: err.message, type: openaiType(status), param: err.param ?? null, code: err.code } } };
    case 'huggingface':
      if (status === 503) {
        status = 429;
        headers['retry-after'] ??= '1';
      }
      return { status, headers, body: { error: err.message, code: err.code } };
    default:
      return { status, headers, body: errorBody(err) };
  }
}

/**
 * `res` when it is an answer; when it is a backend's 4xx verdict on the
 * request (`{ error: { code, message } }`, 400 or 413, inference/run.ts),
 * throws it as a `MeshError`: its own code when that is a mesh code of the same
 * status, else `body_too_large` (413) or `invalid_request` (400), its message kept.
 */
export async function throwIfRejected(res: Response): Promise<Response> {
  if (res.ok) return res;
  const { error } = (await res.json()) as { error: { code: string; message: string } };
  const own = isMeshErrorCode(error.code) ? new MeshError(error.code, error.message) : undefined;
  if (own && own.status === res.status) throw own;
  throw new MeshError(res.status === 413 ? 'body_too_large' : 'invalid_request', error.message);
}
