/**
 * Sending one inference to one backend: the dispatch token that authorises it
 * (docs/api.md section 3.4), the call with its timeout, and the checks on what
 * comes back (docs/api.md section 3.5): a bounded body, the attestation's
 * claims bound to the bytes received (its signature is checked after the
 * answer, attestation.ts), an answer that fits the request and the model, and
 * units equal to the mesh's own count. Returns a result the caller branches
 * on; it never throws for a backend's fault.
 */

import { sha256Hex } from '../../receipts/index.ts';
import { HEADER_LENGTH_HEADER } from '../../shared/binary.ts';
import { DISPATCH_TTL_S, TYP, type Units } from '../../shared/jwt.ts';
import type { InferResponse } from '../../shared/protocol.ts';
import type { BackendEntry } from '../directory/backend.ts';
import { readWithin } from '../body.ts';
import { sign, type SigningKeys } from '../keys.ts';
import { checkAnswer, checkRejection, MAX_REJECTION_BYTES, type AnswerExpectation } from './answer.ts';
import { attestationClaims } from './attestation.ts';

export interface DispatchRequest {
  keys: SigningKeys;
  issuer: string;
  consumer: string;
  model: string;
  version?: string;
  body: Uint8Array;
  bodySha256: string;
  /** The JSON header's length when `body` uses the binary tensor extension (shared/binary.ts); sent as Inference-Header-Content-Length. */
  headerLength?: number;
  timeoutMs: number;
  /** The largest answer read, bytes; a larger one fails the attempt unread. */
  maxResponseBytes: number;
  /** What the answer must fit. */
  expect: AnswerExpectation;
  /** The mesh's own count of the units of this request and `answer` (shared/metering.ts). */
  meter: (answer: InferResponse) => Units;
  /**
   * Cancels the call when the caller aborts it (a hedge that lost). The call's
   * deadline aborts the same controller: one per attempt, no listener between two.
   */
  controller?: AbortController;
  /** Called when the backend's response headers arrive (it has started answering). */
  onResponse?: () => void;
  /** The edge's id of the consumer's request, sent as `x-request-id` so that the backend's log line names it too. */
  requestId?: string;
}

export type DispatchResult =
  | {
      kind: 'ok';
      body: Uint8Array;
      outputSha256: string;
      attestation: string;
      /** The units the mesh counted, which the attestation states too. */
      units: Units;
      /** The answer, parsed and checked. */
      answer: InferResponse;
      /** Edge-measured time of the call. */
      ms: number;
      /** The backend's own time (its `server-timing: backend;dur=`), when it says. */
      backendMs: number | undefined;
      /** The answer's JSON header length, when it is in the binary tensor extension. */
      headerLength?: string;
    }
  /** The backend refused the request itself (bad tensor, too large): the consumer's error, passed through as this well-formed error. */
  | { kind: 'rejected'; status: number; code: string; message: string }
  /**
   * The backend failed (down, slow, 5xx, lying): try another. `metadataMismatch`:
   * the answer was well-formed but did not fit the model's metadata as the edge has it.
   */
  | { kind: 'failed'; reason: string; timeout: boolean; metadataMismatch?: boolean };

/** Backend statuses that may be the consumer's fault, passed through when well-formed. */
const PASS_THROUGH = new Set([400, 413]);

/** `backend;dur=<ms>` from a `server-timing` header. */
function backendDuration(headers: Headers): number | undefined {
  const m = /(?:^|,)\s*backend;dur=([0-9.]+)/.exec(headers.get('server-timing') ?? '');
  return m ? Number(m[1]) : undefined;
}

/** The version of `model` a dispatch names when the consumer named none: the first one `backend` announces. */
export function announcedVersion(backend: BackendEntry, model: string): string | undefined {
  return backend.models.find((m) => m.name === model)?.version;
}

export async function dispatch(backend: BackendEntry, req: DispatchRequest): Promise<DispatchResult> {
  const jti = crypto.randomUUID();
  const iat = Math.floor(Date.now() / 1000);
  // The version this backend announced for the model, unless the consumer named one: the backend refuses the token for any other.
  const version = req.version ?? announcedVersion(backend, req.model);
  const token = await sign(req.keys, TYP.dispatch, {
    iss: req.issuer,
    aud: backend.id,
    sub: req.consumer,
    jti,
    iat,
    exp: iat + DISPATCH_TTL_S,
    purpose: 'infer',
    model: req.model,
    ...(version !== undefined ? { model_version: version } : {}),
    body_sha256: req.bodySha256,
  });
  const path = `/v2/models/${encodeURIComponent(req.model)}${req.version ? `/versions/${encodeURIComponent(req.version)}` : ''}/infer`;
  const started = Date.now();
  let res: Response;
  let body: Uint8Array | undefined;
  // One controller for the deadline and the caller's cancellation, and a timer
  // cleared as soon as the call ends: `AbortSignal.timeout` would leave a timer
  // pending in the request's context for the whole timeout after every call.
  const controller = req.controller ?? new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort(new DOMException(`no answer within ${req.timeoutMs} ms`, 'TimeoutError'));
  }, req.timeoutMs);
  try {
    res = await fetch(backend.url + path, {
      method: 'POST',
      body: req.body,
      headers: {
        'content-type': req.headerLength === undefined ? 'application/json' : 'application/octet-stream',
        authorization: `Bearer ${token}`,
        ...(req.headerLength !== undefined ? { [HEADER_LENGTH_HEADER]: String(req.headerLength) } : {}),
        ...(req.requestId !== undefined ? { 'x-request-id': req.requestId } : {}),
      },
      signal: controller.signal,
    });
    req.onResponse?.();
    const limit = PASS_THROUGH.has(res.status) ? MAX_REJECTION_BYTES : req.maxResponseBytes;
    body = await readWithin(res, limit);
    if (body === undefined) return { kind: 'failed', reason: `HTTP ${res.status} answer larger than ${limit} bytes`, timeout: false };
  } catch (err) {
    return { kind: 'failed', reason: timedOut ? `no answer within ${req.timeoutMs} ms` : (err as Error).message, timeout: timedOut };
  } finally {
    clearTimeout(timer);
  }
  const ms = Date.now() - started;
  if (PASS_THROUGH.has(res.status)) {
    const rejection = checkRejection(body);
    if (typeof rejection === 'string') return { kind: 'failed', reason: `HTTP ${res.status}: ${rejection}`, timeout: false };
    return { kind: 'rejected', status: res.status, ...rejection };
  }
  if (res.status !== 200) return { kind: 'failed', reason: `HTTP ${res.status}`, timeout: false };
  const attestation = res.headers.get('x-provider-attestation');
  if (!attestation) return { kind: 'failed', reason: 'no attestation', timeout: false };
  const outputSha256 = await sha256Hex(body);
  // Its claims now; its signature after the answer has left (attestation.ts).
  const checked = attestationClaims(attestation, backend, { jti, model: req.model, outputSha256 });
  if (typeof checked === 'string') return { kind: 'failed', reason: checked, timeout: false };
  const answerHeader = res.headers.get(HEADER_LENGTH_HEADER);
  const answer = checkAnswer(body, req.expect, answerHeader);
  if (typeof answer === 'string') {
    const { metadata, ...structural } = req.expect;
    const metadataMismatch = metadata !== undefined && typeof checkAnswer(body, structural, answerHeader) !== 'string';
    return { kind: 'failed', reason: answer, timeout: false, metadataMismatch };
  }
  const units = req.meter(answer);
  const claimed = checked.units as Partial<Units> | undefined;
  if (claimed?.input !== units.input || claimed.output !== units.output) {
    return {
      kind: 'failed',
      reason: `attested units ${JSON.stringify(claimed)?.slice(0, 100)} differ from the mesh's count ${JSON.stringify(units)}`,
      timeout: false,
    };
  }
  const ok = { kind: 'ok' as const, body, outputSha256, attestation, units, answer, ms, backendMs: backendDuration(res.headers) };
  return answerHeader === null ? ok : { ...ok, headerLength: answerHeader };
}
