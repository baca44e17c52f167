/**
 * The offline verifier: what a billing system runs to check, with nothing but
 * the mesh's public JWKS, that receipts, settlement batches and inclusion
 * proofs are exactly what the mesh signed (docs/api.md sections 4 and 5). It
 * recomputes every number it can: the Merkle root over the receipts in leaf
 * order, the totals (with the same `totalsOf` the ledger uses), the count.
 *
 * Imports only this library, shared/jwt.ts and jose, so it runs in Node, in
 * workerd and in the `mesh-verify` CLI alike. Every failure is a `VerifyError`
 * with a stable snake_case `code` and a message that names the first thing
 * that is wrong.
 */

import { createLocalJWKSet, decodeProtectedHeader, errors, jwtVerify, type JWK, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import { fromHex, leafHash, merkleRoot, equalHashes, toHex, verifyInclusion, type Hash } from './merkle.ts';
import { totalsEqual, totalsOf } from './totals.ts';
import { ALGORITHMS, TYP, decodePayload, type BatchClaims, type BatchTotals, type ReceiptClaims } from '../shared/jwt.ts';

export type Jwks = { keys: JWK[] };

export type VerifyErrorCode =
  /** Not a compact JWS, or its header or payload does not parse. */
  | 'malformed'
  /** The header's `alg` is not one of `ALGORITHMS` (EdDSA). */
  | 'wrong_alg'
  /** The header's `typ` is not the kind expected (a batch offered as a receipt, say). */
  | 'wrong_typ'
  /** No key in the JWKS for the header's `kid` (or no `kid`). */
  | 'unknown_kid'
  /** More than one key in the JWKS matches the header's `kid`. */
  | 'ambiguous_kid'
  /** The JWKS itself is not a usable set of public keys. */
  | 'bad_jwks'
  /** The signature does not verify with the key named by `kid`. */
  | 'bad_signature'
  /** `iss` is not the expected issuer (or a receipt's differs from its batch's). */
  | 'wrong_issuer'
  /** A required claim is absent. */
  | 'missing_claim'
  /** A claim is present but of the wrong type or value. */
  | 'invalid_claim'
  /** `iat` is more than `MAX_CLOCK_SKEW_S` in the future. */
  | 'issued_in_future'
  /** The token carries an `exp` that has passed (receipts and batches do not normally carry one). */
  | 'expired'
  /** The batch's `count` is not the number of receipts given. */
  | 'count_mismatch'
  /** Two receipts of a batch have the same `jti`. */
  | 'duplicate_receipt'
  /** The Merkle root over the receipts is not the batch's `merkle_root`. */
  | 'root_mismatch'
  /** The totals recomputed from the receipts are not the batch's `totals`. */
  | 'totals_mismatch'
  /** The batch disputes a receipt id that is not one of its receipts. */
  | 'unknown_disputed'
  /** An inclusion proof names another batch or another tree size than the batch given. */
  | 'proof_mismatch'
  /** The inclusion proof does not lead from the receipt to the batch's root. */
  | 'not_included'
  /** The batch penalizes a provider but one of that provider's receipts in it (as provider or second) is not disputed. */
  | 'penalty_not_applied'
  /** A batch penalty names a dispute that was not given, or that is not proven against the penalized provider. */
  | 'penalty_unjustified'
  /** A disputed receipt of a batch is justified by no proven fraud proof given (reported by `mesh-verify batch --disputes`). */
  | 'unproven_disputed'
  /** A document's `id` is not the id its signed token carries. */
  | 'id_mismatch'
  /** A fraud proof's run: its attestation's header or claims are not the run's, or (for a mismatch) its signature does not verify with the run's key. */
  | 'bad_attestation'
  /** A mismatch fraud proof lacks the answer bytes of one of its runs. */
  | 'output_missing'
  /** A fraud proof's answer bytes do not hash to the run's output_sha256. */
  | 'output_mismatch'
  /** The verdict, accused or withheld ids recomputed from a fraud proof are not the ones it claims. */
  | 'verdict_mismatch'
  /** A fraud proof's run and its receipt disagree (provider, backend, attestation, model, or the receipt it checks). */
  | 'receipt_mismatch';

/** A verification failure: `code` to switch on, `message` to show a person. */
export class VerifyError extends Error {
  override readonly name = 'VerifyError';
  readonly code: VerifyErrorCode;

  constructor(code: VerifyErrorCode, message: string, options: { cause?: unknown } = {}) {
    super(message, options);
    this.code = code;
  }
}

export interface VerifyOptions {
  /** The mesh's issuer URL; when given, every token's `iss` must equal it. */
  issuer?: string;
  /** The time to verify at (the `iat` future check, any `exp`); default now. */
  currentDate?: Date;
}

/** docs/api.md section 5 `GET /v1/receipts/{jti}/proof`. */
export interface InclusionProof {
  batch_id: string;
  leaf_index: number;
  tree_size: number;
  audit_path: string[];
}

/** How far in the future an `iat` may be (clock skew between the edge and the verifier). */
const MAX_CLOCK_SKEW_S = 300;

/**
 * The receipt claims of docs/api.md section 4.2 that every receipt carries.
 * A computed answer's receipt (`cache: "miss"`) also carries
 * COMPUTED_CLAIMS; a cache hit's carries `origin` and none of HIT_ABSENT.
 */
const RECEIPT_REQUIRED_CLAIMS = [
  'iss',
  'sub',
  'jti',
  'iat',
  'model',
  'model_version',
  'pop',
  'units',
  'amount',
  'input_sha256',
  'output_sha256',
  'latency_ms',
  'cache',
  'verify',
] as const;

/** Who computed the answer: required on every receipt but a cache hit's, which names no one. */
const COMPUTED_CLAIMS = ['provider', 'backend', 'region'] as const;
/** What a cache hit's receipt never carries (docs/api.md section 2.13): no backend ran, no provider is paid. */
const HIT_ABSENT = [...COMPUTED_CLAIMS, 'attestation', 'second', 'location', 'upstream_model', 'checks'] as const;

/** The batch claims of docs/api.md section 5. */
const BATCH_REQUIRED_CLAIMS = ['batch_id', 'epoch_start', 'epoch_end', 'count', 'merkle_root', 'totals', 'disputed'] as const;

/** Receipts whose signatures are checked at once in `verifyBatch`. */
const PARALLEL = 64;

/** Verifies one receipt JWT: signature, header, every claim of docs/api.md section 4. */
export async function verifyReceipt(jwt: string, jwks: Jwks, opts: VerifyOptions = {}): Promise<ReceiptClaims> {
  return checkReceipt(jwt, keySet(jwks), opts, 'receipt');
}

/**
 * Verifies a settlement batch against its receipts (in leaf order): the batch
 * JWT, every receipt, no duplicate `jti`, the count, the Merkle root, that
 * every disputed id is one of the receipts, that every receipt of a
 * penalized provider is disputed, and the totals (a redundant receipt's
 * payout split with its `second` provider). Whether the disputes are
 * justified by fraud proofs is `verifyBatchDisputes` (receipts/dispute.ts).
 */
export async function verifyBatch(
  batchJwt: string,
  receipts: readonly string[],
  jwks: Jwks,
  opts: VerifyOptions = {},
): Promise<{ claims: BatchClaims; receipts: ReceiptClaims[] }> {
  const getKey = keySet(jwks);
  const claims = await checkBatch(batchJwt, getKey, opts);
  const id = claims.batch_id;
  if (!Array.isArray(receipts)) throw new VerifyError('malformed', 'receipts must be an array of receipt JWTs');
  if (claims.count !== receipts.length) {
    throw new VerifyError('count_mismatch', `count mismatch: batch ${id} says ${claims.count} receipts, ${receipts.length} given`);
  }

  const verified: ReceiptClaims[] = [];
  const indexOf = new Map<string, number>();
  for (let start = 0; start < receipts.length; start += PARALLEL) {
    const window = receipts.slice(start, start + PARALLEL);
    const results = await Promise.allSettled(window.map((jwt, k) => checkReceipt(jwt, getKey, opts, `receipt ${start + k}`)));
    for (let k = 0; k < results.length; k++) {
      const result = results[k]!;
      if (result.status === 'rejected') throw result.reason;
      const r = result.value;
      const i = start + k;
      const seen = indexOf.get(r.jti);
      if (seen !== undefined) {
        throw new VerifyError('duplicate_receipt', `receipt ${i} (jti ${r.jti}) duplicates receipt ${seen}`);
      }
      if (claims.iss !== undefined && r.iss !== claims.iss) {
        throw new VerifyError('wrong_issuer', `receipt ${i} (jti ${r.jti}): issuer ${JSON.stringify(r.iss)} differs from the batch's ${JSON.stringify(claims.iss)}`);
      }
      indexOf.set(r.jti, i);
      verified.push(r);
    }
  }

  const root = merkleRoot(receipts.map(leafHash));
  if (!equalHashes(root, fromHex(claims.merkle_root)!)) {
    throw new VerifyError('root_mismatch', `merkle root mismatch: batch ${id} says ${claims.merkle_root}, receipts give ${toHex(root)}`);
  }

  for (const jti of claims.disputed) {
    if (!indexOf.has(jti)) throw new VerifyError('unknown_disputed', `batch ${id} disputes receipt ${jti}, which is not one of its receipts`);
  }
  const disputed = new Set(claims.disputed);
  checkPenaltiesApplied(claims, verified, disputed);

  const totals = totalsOf(
    verified.map((r) => ({ jti: r.jti, sub: r.sub, provider: r.provider, amount: r.amount, second: r.second?.provider })),
    disputed,
  );
  if (!totalsEqual(totals, claims.totals)) {
    throw new VerifyError('totals_mismatch', `totals mismatch for ${firstDifference(claims.totals, totals)}`);
  }
  return { claims, receipts: verified };
}

/**
 * A batch's penalties are applied: every receipt of a penalized provider (as
 * `provider` or redundant `second`) is disputed.
 */
function checkPenaltiesApplied(claims: BatchClaims, receipts: readonly ReceiptClaims[], disputed: ReadonlySet<string>): void {
  if (claims.penalties === undefined || claims.penalties.length === 0) return;
  const penalized = new Map(claims.penalties.map((p) => [p.provider, p.dispute]));
  receipts.forEach((r, i) => {
    if (disputed.has(r.jti)) return;
    for (const p of [r.provider, r.second?.provider]) {
      if (p === undefined || !penalized.has(p)) continue;
      throw new VerifyError(
        'penalty_not_applied',
        `batch ${claims.batch_id} penalizes provider ${p} (dispute ${penalized.get(p)}), but its receipt ${i} (jti ${r.jti}) is not disputed`,
      );
    }
  });
}

/**
 * Verifies that `receiptJwt` is leaf `proof.leaf_index` of the batch
 * `batchJwt`: both signatures, that the proof is for this batch and its size,
 * and the RFC 9162 audit path from the receipt's leaf hash to `merkle_root`.
 */
export async function verifyInclusionProof(
  receiptJwt: string,
  proof: InclusionProof,
  batchJwt: string,
  jwks: Jwks,
  opts: VerifyOptions = {},
): Promise<{ receipt: ReceiptClaims; batch: BatchClaims }> {
  const getKey = keySet(jwks);
  const receipt = await checkReceipt(receiptJwt, getKey, opts, 'receipt');
  const batch = await checkBatch(batchJwt, getKey, opts);
  const path = checkProofShape(proof);
  if (proof.batch_id !== batch.batch_id) {
    throw new VerifyError('proof_mismatch', `proof is for batch ${proof.batch_id}, not batch ${batch.batch_id}`);
  }
  if (proof.tree_size !== batch.count) {
    throw new VerifyError('proof_mismatch', `proof says tree size ${proof.tree_size}, batch ${batch.batch_id} has ${batch.count} receipts`);
  }
  if (batch.iss !== undefined && receipt.iss !== batch.iss) {
    throw new VerifyError('wrong_issuer', `receipt (jti ${receipt.jti}): issuer ${JSON.stringify(receipt.iss)} differs from the batch's ${JSON.stringify(batch.iss)}`);
  }
  if (!verifyInclusion(leafHash(receiptJwt), proof.leaf_index, proof.tree_size, path, fromHex(batch.merkle_root)!)) {
    throw new VerifyError(
      'not_included',
      `receipt (jti ${receipt.jti}) is not leaf ${proof.leaf_index} of batch ${batch.batch_id}: the audit path does not lead to its merkle root ${batch.merkle_root}`,
    );
  }
  return { receipt, batch };
}

// --- tokens ----------------------------------------------------------------

// The helpers below are exported for the rest of this library (receipts/dispute.ts), not re-exported by its index.

/** The key lookup of a JWKS, or `bad_jwks`. */
export function keySet(jwks: Jwks): JWTVerifyGetKey {
  if (typeof jwks !== 'object' || jwks === null || !Array.isArray(jwks.keys)) {
    throw new VerifyError('bad_jwks', 'JWKS must be an object with a "keys" array');
  }
  try {
    return createLocalJWKSet(jwks);
  } catch (err) {
    throw new VerifyError('bad_jwks', `JWKS is not usable: ${(err as Error).message}`, { cause: err });
  }
}

/** `application/` prefix and case do not matter in `typ` (RFC 7515 section 4.1.9), as in jose. */
export function normalizeTyp(typ: string): string {
  const t = typ.toLowerCase();
  return t.startsWith('application/') ? t.slice('application/'.length) : t;
}

/** Signature and header checks common to every mesh-signed token (receipts, batches, disputes); returns the verified payload. */
export async function verifyJws(
  jwt: string,
  typ: string,
  requiredClaims: readonly string[],
  getKey: JWTVerifyGetKey,
  opts: VerifyOptions,
  label: string,
): Promise<JWTPayload> {
  if (typeof jwt !== 'string' || jwt.split('.').length !== 3) throw new VerifyError('malformed', `${label}: not a compact JWS`);
  let header: ReturnType<typeof decodeProtectedHeader>;
  try {
    header = decodeProtectedHeader(jwt);
  } catch (err) {
    throw new VerifyError('malformed', `${label}: header does not parse`, { cause: err });
  }
  if (typeof header.alg !== 'string' || !ALGORITHMS.includes(header.alg)) {
    throw new VerifyError('wrong_alg', `${label}: alg ${JSON.stringify(header.alg)} is not allowed (only ${ALGORITHMS.join(', ')})`);
  }
  if (typeof header.typ !== 'string' || normalizeTyp(header.typ) !== typ) {
    throw new VerifyError('wrong_typ', `${label}: typ is ${JSON.stringify(header.typ)}, expected "${typ}"`);
  }
  if (typeof header.kid !== 'string' || header.kid === '') throw new VerifyError('unknown_kid', `${label}: header has no kid`);
  const kid = header.kid;
  let payload: JWTPayload;
  try {
    ({ payload } = await jwtVerify(jwt, getKey, {
      algorithms: ALGORITHMS,
      typ,
      ...(opts.issuer !== undefined ? { issuer: opts.issuer } : {}),
      requiredClaims: [...requiredClaims],
      ...(opts.currentDate !== undefined ? { currentDate: opts.currentDate } : {}),
    }));
  } catch (err) {
    throw fromJose(err, label, kid, opts);
  }
  const now = (opts.currentDate ?? new Date()).getTime() / 1000;
  if (payload.iat !== undefined) {
    if (typeof payload.iat !== 'number' || !Number.isFinite(payload.iat) || payload.iat < 0) {
      throw new VerifyError('invalid_claim', `${label}: iat must be a non-negative number of seconds`);
    }
    if (payload.iat > now + MAX_CLOCK_SKEW_S) {
      throw new VerifyError('issued_in_future', `${label}: issued at ${payload.iat}, more than ${MAX_CLOCK_SKEW_S} s after now (${Math.floor(now)})`);
    }
  }
  return payload;
}

function fromJose(err: unknown, label: string, kid: string, opts: VerifyOptions): unknown {
  if (err instanceof errors.JWSSignatureVerificationFailed) return new VerifyError('bad_signature', `${label}: signature does not verify (kid ${kid})`, { cause: err });
  if (err instanceof errors.JWKSNoMatchingKey) return new VerifyError('unknown_kid', `${label}: no EdDSA key with kid ${JSON.stringify(kid)} in the JWKS`, { cause: err });
  if (err instanceof errors.JWKSMultipleMatchingKeys) return new VerifyError('ambiguous_kid', `${label}: several keys in the JWKS match kid ${JSON.stringify(kid)}`, { cause: err });
  if (err instanceof errors.JOSEAlgNotAllowed || err instanceof errors.JOSENotSupported) return new VerifyError('wrong_alg', `${label}: ${err.message}`, { cause: err });
  if (err instanceof errors.JWKSInvalid || err instanceof errors.JWKInvalid) return new VerifyError('bad_jwks', `${label}: JWKS key for kid ${JSON.stringify(kid)} is not usable: ${err.message}`, { cause: err });
  if (err instanceof errors.JWTExpired) return new VerifyError('expired', `${label}: ${err.message}`, { cause: err });
  if (err instanceof errors.JWTClaimValidationFailed) {
    if (err.claim === 'typ') return new VerifyError('wrong_typ', `${label}: ${err.message}`, { cause: err });
    if (err.reason === 'missing') return new VerifyError('missing_claim', `${label}: missing claim "${err.claim}"`, { cause: err });
    if (err.claim === 'iss') {
      return new VerifyError('wrong_issuer', `${label}: issuer is ${JSON.stringify(err.payload.iss)}, expected ${JSON.stringify(opts.issuer)}`, { cause: err });
    }
    return new VerifyError('invalid_claim', `${label}: ${err.message}`, { cause: err });
  }
  if (err instanceof errors.JOSEError) return new VerifyError('malformed', `${label}: ${err.message}`, { cause: err });
  return err;
}

/** The label of receipt `where` for messages: its (not yet verified) jti when it has one. */
function receiptLabel(jwt: string, where: string): string {
  const jti = typeof jwt === 'string' ? decodePayload<{ jti?: unknown }>(jwt)?.jti : undefined;
  return isNonEmptyString(jti) ? `${where} (jti ${jti})` : where;
}

/** Verifies one receipt (`where` names it in messages) against a key lookup from `keySet`. */
export async function checkReceipt(jwt: string, getKey: JWTVerifyGetKey, opts: VerifyOptions, where: string): Promise<ReceiptClaims> {
  const label = receiptLabel(jwt, where);
  const p = (await verifyJws(jwt, TYP.receipt, RECEIPT_REQUIRED_CLAIMS, getKey, opts, label)) as Record<string, unknown>;
  const bad = (what: string) => new VerifyError('invalid_claim', `${label}: ${what}`);
  if (p.cache !== 'hit' && p.cache !== 'miss') throw bad('cache must be "hit" or "miss"');
  if (p.cache === 'hit') {
    // A cache hit: served at the PoP from an answer computed earlier (origin), by no backend and paying no provider.
    for (const c of HIT_ABSENT) if (p[c] !== undefined) throw bad(`a cache hit's receipt carries no ${c}`);
    if (!isNonEmptyString(p.origin)) throw new VerifyError(p.origin === undefined ? 'missing_claim' : 'invalid_claim', `${label}: a cache hit's receipt names its origin (a receipt id)`);
  } else {
    for (const c of COMPUTED_CLAIMS) if (p[c] === undefined) throw new VerifyError('missing_claim', `${label}: missing claim "${c}"`);
    if (p.origin !== undefined) throw bad('origin is only on a cache hit\'s receipt');
  }
  for (const c of ['iss', 'sub', 'jti', 'model'] as const) if (!isNonEmptyString(p[c])) throw bad(`${c} must be a non-empty string`);
  if (p.cache === 'miss' && !isNonEmptyString(p.provider)) throw bad('provider must be a non-empty string');
  for (const c of ['model_version', 'pop'] as const) if (typeof p[c] !== 'string') throw bad(`${c} must be a string`);
  if (p.cache === 'miss') for (const c of ['backend', 'region'] as const) if (typeof p[c] !== 'string') throw bad(`${c} must be a string`);
  const units = p.units as Record<string, unknown> | null;
  if (typeof units !== 'object' || units === null || Array.isArray(units) || !isCount(units.input) || !isCount(units.output)) {
    throw bad('units must be { input, output }, integers >= 0');
  }
  if (!isCount(p.amount)) throw bad('amount must be an integer >= 0 (micro-USD)');
  for (const c of ['input_sha256', 'output_sha256'] as const) if (!isSha256Hex(p[c])) throw bad(`${c} must be 64 hex digits`);
  if (typeof p.latency_ms !== 'number' || !Number.isFinite(p.latency_ms) || p.latency_ms < 0) throw bad('latency_ms must be a number >= 0');
  if (p.verify !== 'none' && p.verify !== 'sampled' && p.verify !== 'redundant') throw bad('verify must be "none", "sampled" or "redundant"');
  if (p.attestation !== undefined && !isNonEmptyString(p.attestation)) throw bad('attestation must be a JWS string when present');
  if (p.checks !== undefined && !isNonEmptyString(p.checks)) throw bad('checks must be a receipt id when present');
  if (p.second !== undefined) {
    const s = p.second as Record<string, unknown> | null;
    if (typeof s !== 'object' || s === null || Array.isArray(s) || !isNonEmptyString(s.provider) || typeof s.backend !== 'string' || typeof s.attestation !== 'string') {
      throw bad('second must be { provider, backend, attestation } when present');
    }
  }
  return p as unknown as ReceiptClaims;
}

async function checkBatch(jwt: string, getKey: JWTVerifyGetKey, opts: VerifyOptions): Promise<BatchClaims> {
  const id = typeof jwt === 'string' ? decodePayload<{ batch_id?: unknown }>(jwt)?.batch_id : undefined;
  const label = typeof id === 'string' ? `batch ${id}` : 'batch';
  const p = (await verifyJws(jwt, TYP.batch, BATCH_REQUIRED_CLAIMS, getKey, opts, label)) as Record<string, unknown>;
  const bad = (what: string) => new VerifyError('invalid_claim', `${label}: ${what}`);
  if (!isNonEmptyString(p.batch_id)) throw bad('batch_id must be a non-empty string');
  if (p.iss !== undefined && !isNonEmptyString(p.iss)) throw bad('iss must be a non-empty string');
  if (p.shard !== undefined && !isCount(p.shard)) throw bad('shard must be an integer >= 0');
  if (!isCount(p.epoch_start) || !isCount(p.epoch_end) || p.epoch_start > p.epoch_end) {
    throw bad('epoch_start and epoch_end must be integers (ms) with epoch_start <= epoch_end');
  }
  if (!isCount(p.count)) throw bad('count must be an integer >= 0');
  if (!isSha256Hex(p.merkle_root)) throw bad('merkle_root must be 64 hex digits');
  if (!isTotals(p.totals)) throw bad('totals must be { providers, consumers, withheld? }, each mapping ids to integers >= 0');
  const disputed = p.disputed;
  if (!Array.isArray(disputed) || !disputed.every(isNonEmptyString)) throw bad('disputed must be an array of receipt ids');
  if (new Set(disputed).size !== disputed.length) throw bad('disputed lists a receipt id twice');
  if (p.penalties !== undefined) {
    const penalties = p.penalties;
    const isPenalty = (e: unknown) =>
      typeof e === 'object' && e !== null && !Array.isArray(e) && isNonEmptyString((e as Record<string, unknown>).provider) && isNonEmptyString((e as Record<string, unknown>).dispute);
    if (!Array.isArray(penalties) || !penalties.every(isPenalty)) throw bad('penalties must be an array of { provider, dispute }');
    for (let i = 1; i < penalties.length; i++) {
      if (!(penalties[i - 1].provider < penalties[i].provider)) throw bad('penalties must be sorted by provider, one entry per provider');
    }
  }
  return p as unknown as BatchClaims;
}

function checkProofShape(proof: InclusionProof): Hash[] {
  const bad = (what: string) => new VerifyError('malformed', `proof: ${what}`);
  if (typeof proof !== 'object' || proof === null) throw bad('must be { batch_id, leaf_index, tree_size, audit_path }');
  if (!isNonEmptyString(proof.batch_id)) throw bad('batch_id must be a non-empty string');
  if (!isCount(proof.tree_size) || proof.tree_size < 1) throw bad('tree_size must be an integer >= 1');
  if (!isCount(proof.leaf_index) || proof.leaf_index >= proof.tree_size) throw bad(`leaf_index must be an integer in [0, ${proof.tree_size})`);
  if (!Array.isArray(proof.audit_path)) throw bad('audit_path must be an array of hex hashes');
  return proof.audit_path.map((h, i) => {
    const hash = typeof h === 'string' ? fromHex(h) : undefined;
    if (!hash) throw bad(`audit_path[${i}] is not 64 hex digits`);
    return hash;
  });
}

// --- values ----------------------------------------------------------------

export function isNonEmptyString(v: unknown): v is string {
  return typeof v === 'string' && v.length > 0;
}

export function isCount(v: unknown): v is number {
  return Number.isSafeInteger(v) && (v as number) >= 0;
}

const SHA256_HEX = /^[0-9a-fA-F]{64}$/;

export function isSha256Hex(v: unknown): v is string {
  return typeof v === 'string' && SHA256_HEX.test(v);
}

function isTotals(v: unknown): v is BatchTotals {
  const isMap = (m: unknown) => typeof m === 'object' && m !== null && !Array.isArray(m) && Object.values(m).every(isCount);
  if (typeof v !== 'object' || v === null) return false;
  const t = v as BatchTotals;
  return isMap(t.providers) && isMap(t.consumers) && (t.withheld === undefined || isMap(t.withheld));
}

/** Names the first entry (providers, consumers, then withheld; ids in order) where two totals differ. */
function firstDifference(signed: BatchTotals, computed: BatchTotals): string {
  const show = (n: number | undefined) => (n === undefined ? 'nothing' : String(n));
  const kinds: [string, Record<string, number>, Record<string, number>][] = [
    ['provider', signed.providers, computed.providers],
    ['consumer', signed.consumers, computed.consumers],
  ];
  if (signed.withheld !== undefined && computed.withheld !== undefined) kinds.push(['withheld of provider', signed.withheld, computed.withheld]);
  for (const [kind, a, b] of kinds) {
    const ids = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort();
    for (const id of ids) {
      const x = Object.hasOwn(a, id) ? a[id] : undefined;
      const y = Object.hasOwn(b, id) ? b[id] : undefined;
      if (x !== y) return `${kind} ${id}: batch says ${show(x)}, receipts give ${show(y)}`;
    }
  }
  return 'the batch (totals differ)';
}
