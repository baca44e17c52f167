/**
 * The mesh's signing keys and how they rotate: which key signs receipts,
 * dispatch tokens and operator keys at any moment, what `/.well-known/jwks.json`
 * and `/.well-known/jwks-archive.json` publish, and `sign()`, the hot-path
 * compact-JWS signer. Everything is parsed and imported once per isolate.
 *
 * The settings (`MESH_SIGNING_KEYS`, `MESH_RETIRED_KEYS`,
 * `RECEIPT_DISPUTE_DAYS`), which key signs when, what is published, and the
 * rotation procedure are docs/key-rotation.md. In short: the key that signs at
 * time t is the first in `MESH_SIGNING_KEYS` whose `use_from` is absent or
 * <= t and that is not retired; every key in that list is published from the
 * moment it is there and verifies operator keys; a retired key (public half,
 * `retired_at`) stays in `jwks.json` for the dispute window and in
 * `jwks-archive.json` forever. A kid in both lists (retirement half deployed:
 * vars and secrets deploy separately) is published and verifies but never
 * signs. Both vars may be JSON strings or JSON values.
 */

import type { JWK, JWTPayload } from 'jose';
import { MeshError } from '../shared/errors.ts';
import type { Env } from './env.ts';

/** The JWKS `max-age`: a new key must be published at least this long before it signs. */
export const JWKS_MAX_AGE_S = 300;
const DEFAULT_DISPUTE_DAYS = 90;

/** A public JWK as the archive publishes it: retired keys carry `retired_at`. */
export type ArchivedJwk = JWK & { retired_at?: string };

/** A key that signs: its `kid` and private key. */
export interface ActiveKey {
  readonly kid: string;
  readonly key: CryptoKey;
}

export interface SigningKeys {
  /** The kid of the key that signs now (re-evaluated when a pending key's `use_from` passes). */
  readonly kid: string;
  /** The private key that signs now; always the one named by `kid` at the same instant. */
  readonly key: CryptoKey;
  /** The key that signs at `now` (ms since the epoch, default now); `not_ready` when none may. */
  active(now?: number): ActiveKey;
  /** What `/.well-known/jwks.json` publishes now: active and pending keys, retired keys within the dispute window. */
  readonly publicJwks: { keys: JWK[] };
  /** What `/.well-known/jwks.json` publishes at `now` (ms). */
  jwks(now?: number): { keys: JWK[] };
  /** What `/.well-known/jwks-archive.json` publishes: every key, retired ones with `retired_at`. */
  readonly archiveJwks: { keys: ArchivedJwk[] };
  /** Every key in `MESH_SIGNING_KEYS` (active, pending and still-listed old ones), for verifying what this edge issued. */
  verifyKeys: Map<string, CryptoKey>;
  /** How long after `retired_at` a retired key stays published, ms. */
  readonly disputeWindowMs: number;
}

interface Signer extends ActiveKey {
  /** ms since the epoch; undefined: usable from the start. */
  useFrom: number | undefined;
}

interface Retired {
  kid: string;
  retiredAt: number;
  publicJwk: JWK;
}

/** A cached answer that holds for `now` in [since, until). */
interface Span<T> {
  since: number;
  until: number;
  value: T;
}

const ISO_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:\d{2})$/;
const B64URL_32 = /^[A-Za-z0-9_-]{43}$/;
const DAY_MS = 24 * 3600 * 1000;

function notReady(message: string, cause?: unknown): MeshError {
  return new MeshError('not_ready', message, cause === undefined ? undefined : { cause });
}

function publicPart(jwk: JWK): JWK {
  const { kty, crv, x, kid } = jwk;
  return { kty, crv, x, kid, alg: 'EdDSA', use: 'sig' };
}

function parseTime(value: unknown, what: string): number {
  const ms = typeof value === 'string' && ISO_TIME.test(value) ? Date.parse(value) : NaN;
  if (!Number.isFinite(ms)) throw notReady(`${what} must be an ISO 8601 time with a zone, like "2030-01-31T12:00:00Z".`);
  return ms;
}

/** A JWKS from a secret or var: a JSON string, or (a wrangler.toml table) the object itself. */
function parseJwks(source: unknown, name: string): Record<string, unknown>[] {
  let parsed: unknown = source;
  if (typeof source === 'string') {
    try {
      parsed = JSON.parse(source);
    } catch (cause) {
      throw notReady(`${name} is not valid JSON.`, cause);
    }
  }
  if (typeof parsed !== 'object' || parsed === null) throw notReady(`${name} must be a JWKS, { "keys": [...] }.`);
  const list = Array.isArray((parsed as { keys?: unknown }).keys) ? (parsed as { keys: unknown[] }).keys : [parsed];
  if (!list.every((k) => typeof k === 'object' && k !== null && !Array.isArray(k))) throw notReady(`Every key in ${name} must be a JWK object.`);
  return list as Record<string, unknown>[];
}

function isBlank(value: unknown): boolean {
  return value === undefined || value === null || (typeof value === 'string' && value.trim() === '');
}

function parseDisputeDays(value: unknown): number {
  if (isBlank(value)) return DEFAULT_DISPUTE_DAYS;
  const days = typeof value === 'number' || typeof value === 'string' ? Number(value) : NaN;
  if (!Number.isFinite(days) || days < 0) throw notReady('RECEIPT_DISPUTE_DAYS must be a non-negative number of days.');
  return days;
}

async function importSigner(jwk: Record<string, unknown>): Promise<{ signer: Signer; verifyKey: CryptoKey; publicJwk: JWK }> {
  const { kid, kty, crv, x, d } = jwk;
  if (kty !== 'OKP' || crv !== 'Ed25519' || typeof kid !== 'string' || !kid || typeof x !== 'string' || typeof d !== 'string') {
    throw notReady('Every key in MESH_SIGNING_KEYS must be an Ed25519 private JWK with a kid.');
  }
  const useFrom = jwk.use_from === undefined ? undefined : parseTime(jwk.use_from, `"use_from" of key "${kid}" in MESH_SIGNING_KEYS`);
  let key: CryptoKey;
  let verifyKey: CryptoKey;
  try {
    key = await crypto.subtle.importKey('jwk', { kty, crv, x, d }, { name: 'Ed25519' }, false, ['sign']);
    verifyKey = await crypto.subtle.importKey('jwk', { kty, crv, x }, { name: 'Ed25519' }, true, ['verify']);
  } catch (cause) {
    throw notReady(`Key "${kid}" in MESH_SIGNING_KEYS is not a valid Ed25519 key.`, cause);
  }
  // A private key whose `x` is not its own public key would publish a key that verifies nothing.
  const probe = new TextEncoder().encode(`mesh-key-check:${kid}`);
  if (!(await crypto.subtle.verify('Ed25519', verifyKey, await crypto.subtle.sign('Ed25519', key, probe), probe))) {
    throw notReady(`Key "${kid}" in MESH_SIGNING_KEYS: "x" is not the public half of "d".`);
  }
  return { signer: { kid, key, useFrom }, verifyKey, publicJwk: publicPart(jwk as JWK) };
}

function parseRetired(jwk: Record<string, unknown>): Retired {
  const { kid, kty, crv, x } = jwk;
  const label = typeof kid === 'string' && kid ? `"${kid}"` : 'without a kid';
  if (jwk.d !== undefined) {
    throw notReady(
      `MESH_RETIRED_KEYS holds public keys only, but key ${label} carries its private part ("d"). Remove "d" from the var and destroy that private key.`,
    );
  }
  if (kty !== 'OKP' || crv !== 'Ed25519' || typeof kid !== 'string' || !kid || typeof x !== 'string' || !B64URL_32.test(x)) {
    throw notReady('Every key in MESH_RETIRED_KEYS must be an Ed25519 public JWK with a kid.');
  }
  const retiredAt = parseTime(jwk.retired_at, `"retired_at" of key "${kid}" in MESH_RETIRED_KEYS`);
  return { kid, retiredAt, publicJwk: publicPart(jwk as JWK) };
}

class MeshSigningKeys implements SigningKeys {
  readonly verifyKeys: Map<string, CryptoKey>;
  readonly archiveJwks: { keys: ArchivedJwk[] };
  readonly disputeWindowMs: number;
  /** Keys that may sign, in list order (retired ones left out). */
  readonly #signers: Signer[];
  /** Published whatever the time: every key in MESH_SIGNING_KEYS. */
  readonly #current: JWK[];
  /** Retired keys no longer in MESH_SIGNING_KEYS, published until `until`. */
  readonly #retired: { jwk: JWK; until: number }[];
  #active: Span<Signer | undefined> = { since: 0, until: 0, value: undefined };
  #jwks: Span<{ keys: JWK[] }> = { since: 0, until: 0, value: { keys: [] } };

  constructor(opts: { signers: Signer[]; current: JWK[]; retired: { jwk: JWK; until: number }[]; archive: ArchivedJwk[]; verifyKeys: Map<string, CryptoKey>; disputeWindowMs: number }) {
    this.#signers = opts.signers;
    this.#current = opts.current;
    this.#retired = opts.retired;
    this.archiveJwks = { keys: opts.archive };
    this.verifyKeys = opts.verifyKeys;
    this.disputeWindowMs = opts.disputeWindowMs;
  }

  get kid(): string {
    return this.active().kid;
  }

  get key(): CryptoKey {
    return this.active().key;
  }

  get publicJwks(): { keys: JWK[] } {
    return this.jwks();
  }

  active(now: number = Date.now()): ActiveKey {
    let span = this.#active;
    if (!(now >= span.since && now < span.until)) span = this.#active = this.#activeAt(now);
    if (!span.value) {
      throw notReady('No key in MESH_SIGNING_KEYS may sign yet: every key has a "use_from" in the future.');
    }
    return span.value;
  }

  /** The first usable key and the span it stays the signer: until an earlier-listed pending key's use_from. */
  #activeAt(now: number): Span<Signer | undefined> {
    let until = Infinity;
    for (const s of this.#signers) {
      if (s.useFrom === undefined || s.useFrom <= now) return { since: s.useFrom ?? -Infinity, until, value: s };
      until = Math.min(until, s.useFrom);
    }
    return { since: -Infinity, until, value: undefined };
  }

  jwks(now: number = Date.now()): { keys: JWK[] } {
    let span = this.#jwks;
    if (!(now >= span.since && now < span.until)) {
      let since = -Infinity;
      let until = Infinity;
      const keys = [...this.#current];
      for (const r of this.#retired) {
        if (r.until > now) {
          keys.push(r.jwk);
          until = Math.min(until, r.until);
        } else {
          since = Math.max(since, r.until);
        }
      }
      span = this.#jwks = { since, until, value: { keys } };
    }
    return span.value;
  }
}

async function load(source: string, retiredSource: unknown, disputeDays: unknown): Promise<SigningKeys> {
  const disputeWindowMs = parseDisputeDays(disputeDays) * DAY_MS;
  const list = parseJwks(source, 'MESH_SIGNING_KEYS');
  if (list.length === 0) throw notReady('MESH_SIGNING_KEYS holds no key.');
  const retired = isBlank(retiredSource) ? [] : parseJwks(retiredSource, 'MESH_RETIRED_KEYS').map(parseRetired);
  const retiredByKid = new Map<string, Retired>();
  for (const r of retired) {
    if (retiredByKid.has(r.kid)) throw notReady(`MESH_RETIRED_KEYS lists kid "${r.kid}" twice.`);
    retiredByKid.set(r.kid, r);
  }

  const verifyKeys = new Map<string, CryptoKey>();
  const signers: Signer[] = [];
  const current: JWK[] = [];
  const archive: ArchivedJwk[] = [];
  for (const jwk of list) {
    const { signer, verifyKey, publicJwk } = await importSigner(jwk);
    if (verifyKeys.has(signer.kid)) throw notReady(`MESH_SIGNING_KEYS lists kid "${signer.kid}" twice.`);
    verifyKeys.set(signer.kid, verifyKey);
    current.push(publicJwk);
    // A key being retired may still be in the secret (var and secret deploy separately): it verifies and is published, never signs.
    const r = retiredByKid.get(signer.kid);
    if (r && r.publicJwk.x !== publicJwk.x) {
      throw notReady(`Kid "${signer.kid}" names different keys in MESH_SIGNING_KEYS and MESH_RETIRED_KEYS.`);
    }
    if (!r) signers.push(signer);
    archive.push(r ? { ...publicJwk, retired_at: new Date(r.retiredAt).toISOString() } : publicJwk);
  }
  const published: { jwk: JWK; until: number }[] = [];
  for (const r of retired) {
    if (verifyKeys.has(r.kid)) continue;
    published.push({ jwk: r.publicJwk, until: r.retiredAt + disputeWindowMs });
    archive.push({ ...r.publicJwk, retired_at: new Date(r.retiredAt).toISOString() });
  }

  const keys = new MeshSigningKeys({ signers, current, retired: published, archive, verifyKeys, disputeWindowMs });
  keys.active(); // not_ready now, rather than on the first request, when no key may sign
  return keys;
}

let cached: { source: string; retired: unknown; disputeDays: unknown; keys: Promise<SigningKeys> } | undefined;

/** The isolate's signing keys; a 503 `not_ready` when the secret (or the retired-key var) is missing or bad. */
export function signingKeys(env: Env): Promise<SigningKeys> {
  const source = env.MESH_SIGNING_KEYS;
  if (!source) {
    return Promise.reject(notReady('The edge has no signing key: set the MESH_SIGNING_KEYS secret (wrangler secret put).'));
  }
  // Optional vars: strings, or JSON values where wrangler.toml gives a table or a number.
  const retired: unknown = env.MESH_RETIRED_KEYS;
  const disputeDays: unknown = env.RECEIPT_DISPUTE_DAYS;
  // Compared by identity: no per-request parsing or string building.
  if (!cached || cached.source !== source || cached.retired !== retired || cached.disputeDays !== disputeDays) {
    const keys = load(source, retired, disputeDays);
    cached = { source, retired, disputeDays, keys };
    keys.catch(() => {
      if (cached?.keys === keys) cached = undefined;
    });
  }
  return cached.keys;
}

// --- Signing: compact JWS built directly on WebCrypto (no per-call header encoding) ---

const encoder = new TextEncoder();
const B64_OPTIONS = { alphabet: 'base64url', omitPadding: true } as const;
type ToBase64 = (this: Uint8Array, options: typeof B64_OPTIONS) => string;
const nativeToBase64 = (Uint8Array.prototype as unknown as { toBase64?: ToBase64 }).toBase64;

/** base64url without padding, portable (`btoa`): the fallback where the runtime lacks `Uint8Array.prototype.toBase64`. */
export function base64urlPortable(bytes: Uint8Array): string {
  let binary = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000) as unknown as number[]);
  }
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** base64url without padding: native `toBase64` where the runtime has it (fastest in workerd), else `btoa`. */
export const base64url: (bytes: Uint8Array) => string = nativeToBase64
  ? (bytes) => nativeToBase64.call(bytes, B64_OPTIONS)
  : base64urlPortable;

/** `base64url(header) + "."` per kid and typ, encoded once. */
const headers = new Map<string, Map<string, string>>();

function encodedHeader(kid: string, typ: string): string {
  let byTyp = headers.get(kid);
  if (!byTyp) {
    if (headers.size >= 64) headers.clear();
    headers.set(kid, (byTyp = new Map()));
  }
  let h = byTyp.get(typ);
  if (h === undefined) {
    h = `${base64url(encoder.encode(JSON.stringify({ alg: 'EdDSA', typ, kid })))}.`;
    byTyp.set(typ, h);
  }
  return h;
}

/**
 * Signs claims as a compact JWS (`{"alg":"EdDSA","typ":typ,"kid":kid}`) with the
 * key that signs now. Byte-for-byte what jose's `SignJWT` produces, built
 * directly: the header is encoded once per (kid, typ), the payload is
 * base64url(UTF-8 JSON), and Ed25519 is one `crypto.subtle.sign`.
 */
export async function sign(keys: SigningKeys, typ: string, claims: JWTPayload): Promise<string> {
  const { kid, key } = keys.active();
  const input = encodedHeader(kid, typ) + base64url(encoder.encode(JSON.stringify(claims)));
  const signature = await crypto.subtle.sign('Ed25519', key, encoder.encode(input));
  return `${input}.${base64url(new Uint8Array(signature))}`;
}
