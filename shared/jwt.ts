/**
 * Every JWT the mesh uses, in one place: its `typ`, who issues it, who it is
 * for, and its claims. Each kind has its own `typ`, so a token of one kind is
 * never accepted as another (a receipt is not a dispatch token). All are
 * EdDSA (Ed25519); verifiers pass `ALGORITHMS` explicitly.
 */

export const ALGORITHMS = ['EdDSA'];

export const TYP = {
  /** Operator-issued bearer keys: consumer API keys, admin and billing tokens. */
  key: 'mesh-key+jwt',
  /** Edge -> backend: permission to run one inference. */
  dispatch: 'mesh-dispatch+jwt',
  /** Backend -> edge: heartbeat, signed by the provider key. */
  heartbeat: 'mesh-heartbeat+jwt',
  /** Backend -> edge: what it computed, signed by the provider key. */
  attestation: 'mesh-attestation+jwt',
  /** Edge -> consumer and billing: what was served and charged. */
  receipt: 'mesh-receipt+jwt',
  /** Edge -> billing: a closed settlement batch (docs/api.md section 5). */
  batch: 'mesh-batch+jwt',
  /** Edge -> billing webhook: one signed delivery of a closed batch. */
  webhook: 'mesh-webhook+jwt',
  /** Edge -> billing and auditors: a fraud proof (docs/api.md section 6). */
  dispute: 'mesh-dispute+jwt',
} as const;

/** Audience of operator-issued bearer keys. */
export const KEY_AUDIENCE = 'mesh-api';
/** Audience of heartbeat tokens. */
export const HEARTBEAT_AUDIENCE = 'mesh-edge';
/** Dispatch tokens live at most this long (docs/api.md section 3). */
export const DISPATCH_TTL_MAX_S = 60;
/** Dispatch tokens the edge signs live this long. */
export const DISPATCH_TTL_S = 30;
/** Heartbeat tokens live at most this long. */
export const HEARTBEAT_TTL_MAX_S = 120;

/** `provider`: a provider's view of its own backends on the status page (docs/api.md section 2.15); `sub` is the provider id. */
export type KeyRole = 'consumer' | 'admin' | 'billing' | 'provider';

/** Claims of an operator-issued key (`typ: mesh-key+jwt`). `sub` is the consumer (or operator) id. */
export interface KeyClaims {
  iss: string;
  aud: typeof KEY_AUDIENCE;
  sub: string;
  role: KeyRole;
  jti: string;
  iat: number;
  exp: number;
  /** Data residency: when present, the consumer may only be served in these regions. */
  regions?: string[];
  /** The key was issued with settings (limits, budget, CORS): the edge leases them from its KeyAccount (docs/api.md section 2.14). */
  acct?: true;
}

/**
 * What a dispatch token allows: `infer` runs one inference of `model`;
 * `control` changes the backend's repository (index, load, unload `model`).
 * A token of one purpose is never accepted for the other.
 */
export type DispatchPurpose = 'infer' | 'control';

/** Claims of a dispatch token (`typ: mesh-dispatch+jwt`). */
export interface DispatchClaims {
  iss: string;
  aud: string; // backend id
  sub: string; // consumer id
  jti: string;
  iat: number;
  exp: number;
  purpose: DispatchPurpose;
  model: string;
  /** The version the edge expects the backend to serve (infer tokens): the backend refuses the token when it serves another. */
  model_version?: string;
  body_sha256: string;
}

/** Claims of a heartbeat token (`typ: mesh-heartbeat+jwt`). */
export interface HeartbeatClaims {
  iss: string; // provider id
  sub: string; // backend id
  aud: typeof HEARTBEAT_AUDIENCE;
  iat: number;
  exp: number;
  /** Hex SHA-256 of the exact heartbeat body bytes: the token is good for that body only. */
  body_sha256: string;
  /** Strictly increasing per backend (the edge refuses one not above the last it accepted): a heartbeat is never replayed. */
  seq: number;
}

/** Claims of a provider attestation (`typ: mesh-attestation+jwt`, docs/api.md section 3). */
export interface AttestationClaims {
  iss: string; // provider id
  sub: string; // backend id
  iat: number;
  jti: string; // the dispatch token's jti
  model: string;
  output_sha256: string;
  units: Units;
}

export interface Units {
  input: number;
  output: number;
}

/** Claims of a receipt (`typ: mesh-receipt+jwt`, docs/api.md section 4). */
export interface ReceiptClaims {
  iss: string;
  sub: string;
  jti: string;
  iat: number;
  model: string;
  model_version: string;
  /**
   * Who computed the answer: the provider, its backend and the backend's
   * region. Present on every receipt but a cache hit's (`cache: "hit"`),
   * which names none: no backend computed it and no provider is paid for it
   * (docs/api.md section 2.13).
   */
  provider?: string;
  backend?: string;
  region?: string;
  pop: string;
  units: Units;
  amount: number;
  input_sha256: string;
  output_sha256: string;
  latency_ms: number;
  /** `hit`: answered from the PoP's answer cache (docs/api.md section 2.13); `miss`: computed. */
  cache: 'hit' | 'miss';
  verify: 'none' | 'sampled' | 'redundant';
  /** Only on a cache hit: the `jti` of the receipt of the computation whose answer it served. */
  origin?: string;
  attestation?: string;
  /** Set when the Hugging Face fallback answered: the upstream model id that computed it (`model` stays the mesh's name). */
  upstream_model?: string;
  /**
   * Proof of location of the answering backend when the edge answered
   * (docs/api.md section 3.2): its claimed place checked against measured
   * round trips. Absent for the fallback and in receipts older than it.
   */
  location?: 'verified' | 'unverified' | 'refuted';
  /**
   * Set on the receipt of a verification run (docs/api.md section 6): the
   * jti of the receipt whose answer this run re-executed. Its `sub` is the
   * operator's verification account, never the consumer.
   */
  checks?: string;
  /**
   * `verify: "redundant"` receipts: the second backend that computed the same
   * answer. `amount` covers both executions; the payout is split between
   * `provider` and `second.provider` (receipts/totals.ts).
   */
  second?: { provider: string; backend: string; attestation: string };
}

/** Per-provider payout and per-consumer charge of a batch, integer micro-USD. */
export interface BatchTotals {
  /** provider id -> payout: the sum of `amount` over its receipts, disputed ones withheld. */
  providers: Record<string, number>;
  /** consumer id (`sub`) -> charge: the sum of `amount` over its receipts. */
  consumers: Record<string, number>;
  /**
   * provider id -> the payout withheld by disputes (the sum of `amount` over
   * its disputed receipts). Absent in batches signed before disputes existed.
   */
  withheld?: Record<string, number>;
}

/** Claims of a settlement batch (`typ: mesh-batch+jwt`, docs/api.md section 5). */
export interface BatchClaims {
  iss: string;
  iat: number;
  batch_id: string;
  /** The ledger shard that holds this batch (receipts are sharded by jti). */
  shard: number;
  /** The batch covers receipts appended in [epoch_start, epoch_end), Unix time in ms. */
  epoch_start: number;
  epoch_end: number;
  /** Number of receipts (leaves). */
  count: number;
  /** RFC 9162 Merkle tree head over the receipts in append order, hex. */
  merkle_root: string;
  totals: BatchTotals;
  /** Receipt ids withheld from payout by verification. */
  disputed: string[];
  /**
   * Providers penalized in this batch by a proven fraud (docs/api.md section
   * 6.3): every receipt of `provider` in the batch is in `disputed`, and
   * `dispute` is the fraud proof that justifies it. Sorted by provider;
   * absent in batches signed before penalties existed.
   */
  penalties?: { provider: string; dispute: string }[];
}

/** How two answers of one model are compared (docs/api.md section 6.2). */
export interface CompareRule {
  /** Floating-point outputs agree element-wise when |a - b| <= abs + rel * max(|a|, |b|). Integers, booleans and strings must be equal. */
  float: { abs: number; rel: number };
}

/** One execution a fraud proof holds. */
export interface DisputeRun {
  /** `answer`: the run that was checked; `check`: its re-execution; `referee`: the third run that decided. */
  role: 'answer' | 'check' | 'referee';
  provider: string;
  backend: string;
  /** The provider's Ed25519 public key as the operator admitted it when the dispute was made. */
  public_jwk: { kty: 'OKP'; crv: 'Ed25519'; x: string; kid?: string };
  /** The provider's attestation of this run, as it came. */
  attestation: string;
  /** SHA-256 (hex) of the run's OIP answer bytes, as received by the edge (equal to the attestation's claim). */
  output_sha256: string;
  /** The receipt (mesh-signed) that pays, or would have paid, this run. */
  receipt: string;
}

/**
 * Claims of a fraud proof (`typ: mesh-dispute+jwt`, docs/api.md section 6).
 * `mismatch`: runs of the same input on different providers disagree under
 * `rule`; `proven` when a third run agrees with the others and not the
 * accused. `signature`: one run whose attestation does not verify with its
 * provider's admitted key (always `proven`).
 */
export interface DisputeClaims {
  iss: string;
  iat: number;
  /** The dispute id. */
  jti: string;
  kind: 'mismatch' | 'signature';
  verdict: 'proven' | 'unresolved';
  /** The provider proven at fault; null when unresolved. */
  accused: string | null;
  model: string;
  model_version: string;
  /** SHA-256 (hex) of the OIP request bytes every run was sent. */
  input_sha256: string;
  rule: CompareRule;
  runs: DisputeRun[];
  /** Receipt ids this dispute withholds from payout itself (the accused's runs). */
  withheld: string[];
}


/** Claims of a webhook delivery token (`typ: mesh-webhook+jwt`): binds one POST body to one billing URL. */
export interface WebhookClaims {
  iss: string;
  aud: string; // the billing URL
  jti: string;
  iat: number;
  exp: number;
  batch_id: string;
  body_sha256: string;
}

/**
 * Decodes a compact JWS payload without verifying it. Only for reading claims
 * of a token whose signature is checked elsewhere (or not needed to be).
 */
export function decodePayload<T>(jws: string): T | undefined {
  const start = jws.indexOf('.') + 1;
  const end = jws.indexOf('.', start);
  if (start === 0 || end < 0) return undefined;
  try {
    return JSON.parse(utf8.decode(base64urlBytes(jws.slice(start, end)))) as T;
  } catch {
    return undefined;
  }
}

/** A compact JWS split and decoded once: its protected header, its payload, and what its signature covers. */
export interface DecodedJws {
  header: Record<string, unknown>;
  payload: Record<string, unknown>;
  /** `base64url(header) + "." + base64url(payload)`, the bytes the signature is over (as text). */
  signingInput: string;
  signature: Uint8Array;
}

/**
 * Splits and decodes a compact JWS (three base64url parts, a JSON object
 * header and payload) without verifying it; undefined when it is not one.
 * For a caller that checks the signature over `signingInput` itself, later.
 */
export function decodeCompact(jws: string): DecodedJws | undefined {
  const first = jws.indexOf('.');
  const second = jws.indexOf('.', first + 1);
  if (first <= 0 || second < 0 || jws.indexOf('.', second + 1) >= 0) return undefined;
  try {
    const header = JSON.parse(utf8.decode(base64urlBytes(jws.slice(0, first)))) as unknown;
    const payload = JSON.parse(utf8.decode(base64urlBytes(jws.slice(first + 1, second)))) as unknown;
    if (!isObject(header) || !isObject(payload)) return undefined;
    return { header, payload, signingInput: jws.slice(0, second), signature: base64urlBytes(jws.slice(second + 1)) };
  } catch {
    return undefined;
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false });
type FromBase64 = (s: string, o: { alphabet: 'base64url' }) => Uint8Array;
const nativeFromBase64 = (Uint8Array as unknown as { fromBase64?: FromBase64 }).fromBase64;

/** base64url (padding optional) to bytes: the runtime's `Uint8Array.fromBase64` where it has one (workerd), else `atob`. */
function base64urlBytes(part: string): Uint8Array {
  if (nativeFromBase64) return nativeFromBase64(part, { alphabet: 'base64url' });
  const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
  const bin = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return bytes;
}
