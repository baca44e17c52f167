/**
 * A hostile provider for integration tests (issue 12): a real provider
 * process, admitted by the operator with its own Ed25519 key, that hosts
 * several backend identities in one Node process and lies in the ways an
 * attacker would. Each identity is a real GPU backend (`createBackend`: ONNX
 * Runtime inference of the demo models, real dispatch-token checks) on its own
 * loopback port, wrapped so that its answers lie, with heartbeats this module
 * signs itself (so it can also send heartbeats that lie).
 *
 * This module is both halves:
 * - the client, `startHostileProvider(...)`, run by a test: it admits the
 *   provider (`POST /admin/providers`), spawns the process and drives it over
 *   a control route on loopback;
 * - the process itself, when Node runs this file with HOSTILE_PROVIDER_CONFIG
 *   set (only the process loads the backend and ONNX Runtime).
 *
 * Answer lies (`AnswerLie`, per identity, switchable at runtime):
 * - `none`: honest;
 * - `units-x1000`: the attestation re-signed with units x1000;
 * - `no-attestation`: the `x-provider-attestation` header dropped;
 * - `foreign-key`: the attestation re-signed with a key the operator never
 *   admitted (under the provider's own `kid`);
 * - `other-bytes`: the body changed after the attestation was signed;
 * - `other-jti`: the attestation re-signed for another dispatch (the previous
 *   one this identity received, or a made-up one);
 * - `other-model`: the attestation re-signed naming another model;
 * - `oversize`: the honest answer padded with JSON whitespace to
 *   OVERSIZE_BYTES, attested honestly over those bytes;
 * - `huge-shape`: `outputs[0].shape[0] = 1e9` with the data unchanged,
 *   attested honestly over those bytes;
 * - `html-400`: a 400 with an HTML body;
 * - `always-400`: a well-formed `ALWAYS_400_BODY` 400 to every request;
 * - `bad-metadata`: `GET /v2/models/{m}` answers malformed metadata of about
 *   BAD_METADATA_BYTES; its inferences lie as `no-attestation`;
 * - `malformed-metadata`: the same, small (unknown datatypes, shapes of
 *   strings, outputs not a list);
 * - `relay`: the dispatch token and body it received are forwarded to another
 *   backend (`relayTo`) on `relayRoutes` (its inference route, and its
 *   repository unload route): what a provider does with tokens of a backend
 *   id it claimed. When the inference relay is answered, the answer comes back
 *   with an attestation re-signed by this provider (the victim works, the
 *   attacker bills); else the edge gets a 502.
 *
 * Answers computed wrongly (or differently), each attested honestly over the
 * bytes sent (output_sha256 re-computed, signed with the provider's own key,
 * units unchanged): only re-executing the request can tell.
 * - `perturb`: in every answer one float element is changed materially:
 *   element 0 of the first float output (flattened) becomes `perturbValue(x)`;
 * - `perturb-some`: the same on a fraction of answers, `perturbRate` (default
 *   DEFAULT_PERTURB_RATE), drawn per answer;
 * - `float-noise`: honest, on other hardware: every float element of every
 *   output becomes `Math.fround(x * (1 + e))`, e uniform within
 *   +-FLOAT_NOISE. Never a lie; it must never be disputed.
 * Each perturbed answer is counted (`perturbed`) and its dispatch jti kept
 * (`perturbedJtis`, the last KEEP_PERTURBED): the consumer's receipt carries
 * the attestation, whose `jti` is that dispatch's.
 *
 * Place lies (per identity, switchable at runtime): `claim` announces other
 * coordinates in its heartbeats than its region's; `delayMs` holds every
 * response of its server (inference, metadata, the location probe
 * `POST /v2/mesh/probe`, everything) that long before returning it, as a
 * machine far away would answer.
 *
 * Heartbeats: every `heartbeatIntervalMs` per identity that is heartbeating,
 * with `ready` as set (default false: the edge routes nothing to it), signed
 * by the provider key with `body_sha256` and `seq`; the load/unload actions
 * in the edge's replies are ignored. An identity may announce
 * another provider's backend id (`backendId`) in any region. One-shot
 * heartbeat attacks (`HeartbeatAttack`): `replay` (the last accepted beat,
 * token and body, again), `body-mismatch` (a token for one body, another body
 * sent), `oversize` (a valid beat padded past HEARTBEAT_OVERSIZE_BYTES),
 * `unknown-issuer` (a provider id nobody admitted) and `bad-signature` (this
 * provider's id, signed by another key).
 *
 * Counters per identity (`state()`): inference and metadata requests
 * received, beats accepted and refused (with the last ones), relays made,
 * answers perturbed (with their dispatch jtis).
 */

import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, createPrivateKey, randomUUID, sign, type KeyObject } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import path from 'node:path';
import type { JWK } from 'jose';
import { HEARTBEAT_AUDIENCE, TYP, decodePayload, type AttestationClaims } from '../../shared/jwt.ts';
import { generateEd25519 } from '../../shared/keys.ts';
import { regionById } from '../../shared/regions.ts';
import { freePorts, ROOT } from '../../scripts/local-mesh.ts';

export type AnswerLie =
  | 'none'
  | 'units-x1000'
  | 'no-attestation'
  | 'foreign-key'
  | 'other-bytes'
  | 'other-jti'
  | 'other-model'
  | 'oversize'
  | 'huge-shape'
  | 'html-400'
  | 'always-400'
  | 'bad-metadata'
  | 'malformed-metadata'
  | 'relay'
  | 'perturb'
  | 'perturb-some'
  | 'float-noise';

export type HeartbeatAttack = 'replay' | 'body-mismatch' | 'oversize' | 'unknown-issuer' | 'bad-signature';

export type RelayRoute = 'infer' | 'unload';

/** Bytes of an `oversize` answer: above the edge's MAX_RESPONSE_BYTES default (16 MiB). */
export const OVERSIZE_BYTES = 20 * 1024 * 1024;
/** Bytes of an `oversize` heartbeat: above the edge's 64 KiB heartbeat cap. */
export const HEARTBEAT_OVERSIZE_BYTES = 80 * 1024;
/** Rough size of `bad-metadata` metadata. */
export const BAD_METADATA_BYTES = 2 * 1024 * 1024;
/** The exact body of every `always-400` answer. */
export const ALWAYS_400_BODY = {
  error: { code: 'invalid_tensor', message: 'Input "text" is not a valid tensor (refused by the hostile provider).' },
} as const;
/** The body of every `html-400` answer. */
export const HTML_400_BODY = '<!DOCTYPE html><html><head><title>400 Bad Request</title></head><body><h1>Bad Request</h1><p>nginx</p></body></html>';
/** The `shape[0]` of a `huge-shape` answer. */
export const HUGE_ROWS = 1e9;
/** The share of `perturb-some` answers perturbed when the identity sets no `perturbRate`. */
export const DEFAULT_PERTURB_RATE = 0.05;
/** The largest relative change `float-noise` makes to a float element (before float32 rounding). */
export const FLOAT_NOISE = 1e-5;
/** How many jtis of perturbed answers an identity keeps. */
export const KEEP_PERTURBED = 1000;
/** The OIP datatypes whose elements the answer lies perturb and `float-noise` touches. */
const FLOAT_TYPES = new Set(['FP16', 'BF16', 'FP32', 'FP64']);

/** What `perturb` and `perturb-some` make of the element they change: far beyond any float tolerance. */
export function perturbValue(x: number): number {
  return x + 0.25 * (Math.abs(x) + 1);
}

/** Coordinates an identity announces in its heartbeats. */
export interface Place {
  lat: number;
  lon: number;
}

/** What `set` may change at runtime; `claim: null` announces the region's own place again. */
export interface IdentityPatch {
  ready?: boolean;
  lie?: AnswerLie;
  heartbeating?: boolean;
  perturbRate?: number;
  claim?: Place | null;
  delayMs?: number;
}

export interface IdentitySpec {
  /** The harness's handle for it (control routes, state). */
  name: string;
  /** The backend id it announces in heartbeats (its own, or another provider's it claims). */
  backendId: string;
  region: string;
  lie?: AnswerLie;
  /** `ready` in its heartbeats (default false). */
  ready?: boolean;
  /** Whether it heartbeats at all (default true). */
  heartbeating?: boolean;
  /** Models it loads and announces (default: the provider's `models`). */
  models?: string[];
  /** `relay`: the base URL of the backend the tokens go to. */
  relayTo?: string;
  /** `relay`: the routes of `relayTo` each token is sent to (default inference only). */
  relayRoutes?: RelayRoute[];
  /** `perturb-some`: the share of answers perturbed, in [0, 1] (default DEFAULT_PERTURB_RATE). */
  perturbRate?: number;
  /** Coordinates announced in heartbeats instead of the region's own. */
  claim?: Place;
  /** Every response of its server is held this many ms before it is returned (default 0). */
  delayMs?: number;
}

export interface BeatResult {
  at: number;
  status: number;
  body: string;
  contentType: string | null;
}

export interface RelayResult {
  at: number;
  route: RelayRoute;
  status: number;
  body: string;
}

export interface IdentityState {
  name: string;
  backendId: string;
  region: string;
  /** Where it listens (and what it announces). */
  url: string;
  lie: AnswerLie;
  ready: boolean;
  heartbeating: boolean;
  /** Inference requests received. */
  infer: number;
  /** Metadata requests (`GET /v2/models/{m}`) received. */
  metadata: number;
  beatsAccepted: number;
  beatsRefused: number;
  /** The last few beats, oldest first. */
  beats: BeatResult[];
  relayed: RelayResult[];
  perturbRate: number;
  /** The coordinates its heartbeats announce instead of its region's (null: the region's). */
  claim: Place | null;
  delayMs: number;
  /** Answers perturbed (`perturb`, `perturb-some`). */
  perturbed: number;
  /** Dispatch jtis of the last KEEP_PERTURBED perturbed answers, oldest first. */
  perturbedJtis: string[];
}

export interface HostileState {
  providerId: string;
  identities: Record<string, IdentityState>;
}

/** What the process is started with (HOSTILE_PROVIDER_CONFIG). */
interface ProcessConfig {
  edgeUrl: string;
  providerId: string;
  providerKey: JWK;
  modelRepository: string;
  models: string[];
  heartbeatIntervalMs: number;
  controlPort: number;
  identities: (IdentitySpec & { port: number })[];
}

const CONFIG_VAR = 'HOSTILE_PROVIDER_CONFIG';
const READY_LINE = 'HOSTILE_PROVIDER_READY';
const KEEP_BEATS = 20;

// ---------------------------------------------------------------------------
// Signing (both halves): compact EdDSA JWS with Node's own Ed25519

function b64url(data: string | Uint8Array): string {
  return Buffer.from(data).toString('base64url');
}

function sha256Hex(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

function signJws(header: Record<string, unknown>, claims: object, key: KeyObject): string {
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  return `${input}.${sign(null, Buffer.from(input), key).toString('base64url')}`;
}

function privateKeyOf(jwk: JWK): KeyObject {
  return createPrivateKey({ key: jwk as import('node:crypto').JsonWebKey, format: 'jwk' });
}

// ---------------------------------------------------------------------------
// Answers (the process): OIP v2 response JSON

interface OipAnswer {
  outputs?: { name: string; datatype: string; shape: number[]; data: unknown[] }[];
}

/** The same nesting with every finite number mapped (anything else kept). */
function mapNumbers(data: unknown[], f: (x: number) => number): unknown[] {
  return data.map((v) => (Array.isArray(v) ? mapNumbers(v, f) : typeof v === 'number' && Number.isFinite(v) ? f(v) : v));
}

// ---------------------------------------------------------------------------
// The client

export interface HostileProviderOptions {
  edgeUrl: string;
  adminToken: string;
  /** Default `provider-hostile`. */
  providerId?: string;
  identities: IdentitySpec[];
  /** Default gpu-backend/models (startMesh generates it). */
  modelRepository?: string;
  /** Models each identity loads (default embed). */
  models?: string[];
  /** Default 500 ms. */
  heartbeatIntervalMs?: number;
  /** Where the process's lines go (default: dropped). */
  log?: (line: string) => void;
  /** Give up if not ready after this long (default 90 s). */
  readyTimeoutMs?: number;
}

export interface HostileProvider {
  providerId: string;
  /** The key the operator admitted (its attestations and heartbeats verify with it). */
  publicJwk: JWK;
  controlUrl: string;
  /** The identities as started (with their URLs). */
  identities: Map<string, IdentitySpec & { url: string }>;
  state(): Promise<HostileState>;
  /** Changes an identity; when it heartbeats, one beat is sent at once and its result returned. */
  set(name: string, patch: IdentityPatch): Promise<{ state: IdentityState; beat?: BeatResult }>;
  /** Sends one lying heartbeat for the identity and returns the edge's answer. */
  heartbeatAttack(name: string, kind: HeartbeatAttack): Promise<BeatResult>;
  stop(): Promise<void>;
}

/** Throws a clear error when a spec or patch sets a new option out of its range. */
function checkPatch(p: IdentityPatch, what: string): void {
  if (p.perturbRate !== undefined && !(typeof p.perturbRate === 'number' && p.perturbRate >= 0 && p.perturbRate <= 1)) {
    throw new Error(`${what}: perturbRate must be a number in [0, 1], got ${JSON.stringify(p.perturbRate)}`);
  }
  if (p.delayMs !== undefined && !(typeof p.delayMs === 'number' && Number.isFinite(p.delayMs) && p.delayMs >= 0)) {
    throw new Error(`${what}: delayMs must be a finite number >= 0, got ${JSON.stringify(p.delayMs)}`);
  }
  const c = p.claim;
  if (
    c !== undefined &&
    c !== null &&
    !(typeof c === 'object' && typeof c.lat === 'number' && typeof c.lon === 'number' && Math.abs(c.lat) <= 90 && Math.abs(c.lon) <= 180)
  ) {
    throw new Error(`${what}: claim must be { lat: [-90, 90], lon: [-180, 180] } or null, got ${JSON.stringify(c)}`);
  }
}

async function control<T>(url: string, init?: RequestInit): Promise<T> {
  const res = await fetch(url, { ...init, signal: AbortSignal.timeout(30_000) });
  const text = await res.text();
  if (!res.ok) throw new Error(`hostile provider control ${url}: HTTP ${res.status} ${text}`);
  return JSON.parse(text) as T;
}

/** Admits a new hostile provider, starts its process and resolves once every heartbeating identity has been accepted once. */
export async function startHostileProvider(opts: HostileProviderOptions): Promise<HostileProvider> {
  const providerId = opts.providerId ?? 'provider-hostile';
  const log = opts.log ?? (() => {});
  for (const spec of opts.identities) checkPatch(spec, `identity ${spec.name}`);
  const pair = await generateEd25519(`${providerId}-key`);
  const admitted = await fetch(`${opts.edgeUrl}/admin/providers`, {
    method: 'POST',
    headers: { authorization: `Bearer ${opts.adminToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ id: providerId, publicJwk: pair.publicJwk }),
  });
  if (!admitted.ok) throw new Error(`admitting ${providerId} failed: ${admitted.status} ${await admitted.text()}`);

  const [controlPort, ...ports] = await freePorts(1 + opts.identities.length);
  const identities = opts.identities.map((spec, i) => ({ ...spec, port: ports[i]! }));
  const config: ProcessConfig = {
    edgeUrl: opts.edgeUrl,
    providerId,
    providerKey: pair.privateJwk,
    modelRepository: opts.modelRepository ?? path.join(ROOT, 'gpu-backend', 'models'),
    models: opts.models ?? ['embed'],
    heartbeatIntervalMs: opts.heartbeatIntervalMs ?? 500,
    controlPort: controlPort!,
    identities,
  };
  const child: ChildProcess = spawn(process.execPath, [import.meta.filename], {
    cwd: ROOT,
    env: { ...process.env, [CONFIG_VAR]: JSON.stringify(config) },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  const controlUrl = `http://127.0.0.1:${controlPort}`;
  let exited: string | undefined;
  let ready = false;
  const readyLine = new Promise<void>((resolve) => {
    for (const stream of [child.stdout!, child.stderr!]) {
      let buf = '';
      stream.setEncoding('utf8');
      stream.on('data', (chunk: string) => {
        buf += chunk;
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl).trimEnd();
          buf = buf.slice(nl + 1);
          if (line.startsWith(READY_LINE)) {
            ready = true;
            resolve();
          }
          if (line) log(`[hostile] ${line}`);
        }
      });
    }
  });
  child.once('exit', (code, sig) => {
    exited = `exited (${sig ?? code})`;
    log(`[hostile] process ${exited}`);
  });

  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const done = new Promise<void>((r) => child.once('exit', () => r()));
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      child.kill('SIGKILL');
    }
    await done;
  };

  const client: HostileProvider = {
    providerId,
    publicJwk: pair.publicJwk,
    controlUrl,
    identities: new Map(identities.map((i) => [i.name, { ...i, url: `http://127.0.0.1:${i.port}` }])),
    state: () => control<HostileState>(`${controlUrl}/state`),
    set: (name, patch) =>
      control(`${controlUrl}/identities/${encodeURIComponent(name)}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(patch),
      }),
    heartbeatAttack: (name, kind) =>
      control(`${controlUrl}/identities/${encodeURIComponent(name)}/heartbeat-attack`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ kind }),
      }),
    stop,
  };

  try {
    const deadline = Date.now() + (opts.readyTimeoutMs ?? 90_000);
    await Promise.race([
      readyLine,
      new Promise<void>((_, reject) => {
        const tick = setInterval(() => {
          if (ready) clearInterval(tick);
          else if (exited) {
            clearInterval(tick);
            reject(new Error(`hostile provider ${exited} before it was ready`));
          } else if (Date.now() > deadline) {
            clearInterval(tick);
            reject(new Error('hostile provider not ready in time'));
          }
        }, 100);
      }),
    ]);
    // Every identity that heartbeats has been accepted once.
    for (;;) {
      const s = await client.state();
      const waiting = Object.values(s.identities).filter((i) => i.heartbeating && i.beatsAccepted === 0);
      if (waiting.length === 0) break;
      if (exited) throw new Error(`hostile provider ${exited}`);
      if (Date.now() > deadline) {
        throw new Error(`hostile identities never accepted: ${waiting.map((i) => `${i.name} (${JSON.stringify(i.beats.at(-1))})`).join(', ')}`);
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    return client;
  } catch (err) {
    await stop();
    throw err;
  }
}

// ---------------------------------------------------------------------------
// The process

interface Identity {
  spec: IdentitySpec & { port: number };
  url: string;
  lie: AnswerLie;
  ready: boolean;
  heartbeating: boolean;
  perturbRate: number;
  claim: Place | null;
  delayMs: number;
  counters: { infer: number; metadata: number; beatsAccepted: number; beatsRefused: number; perturbed: number };
  beats: BeatResult[];
  relayed: RelayResult[];
  perturbedJtis: string[];
  /** The last dispatch it received. */
  lastDispatch?: { token: string; body: Uint8Array; jti: string | undefined };
  /** The last beat the edge accepted, exactly as sent. */
  lastAccepted?: { token: string; body: string };
  seq: number;
  backend: { app: { fetch(req: Request): Response | Promise<Response> }; snapshot(): Record<string, unknown> & { ready: boolean } };
}

async function runProcess(config: ProcessConfig): Promise<void> {
  // Only the process loads the backend (and ONNX Runtime).
  const { createBackend } = await import('../../gpu-backend/src/backend.ts');
  const { loadConfig } = await import('../../gpu-backend/src/config.ts');
  const { stdioLogger } = await import('../../gpu-backend/src/log.ts');
  const { serve } = await import('@hono/node-server');

  const providerKey = privateKeyOf(config.providerKey);
  const kid = config.providerKey.kid!;
  const rogue = privateKeyOf((await generateEd25519(kid)).privateJwk);
  const heartbeatUrl = new URL('/v1/providers/heartbeat', config.edgeUrl).href;
  const identities = new Map<string, Identity>();

  for (const spec of config.identities) {
    const url = `http://127.0.0.1:${spec.port}`;
    const backendConfig = loadConfig({
      BACKEND_ID: spec.backendId,
      PROVIDER_ID: config.providerId,
      PROVIDER_KEY: JSON.stringify(config.providerKey),
      HOST: '127.0.0.1',
      PORT: String(spec.port),
      PUBLIC_URL: url,
      REGION: spec.region,
      EDGE_URL: config.edgeUrl,
      MESH_ISSUER: config.edgeUrl,
      MODEL_REPOSITORY: config.modelRepository,
      MODELS: (spec.models ?? config.models).join(','),
      EXECUTION_PROVIDERS: 'cpu',
      INFERENCE_THREAD: 'main',
      INTRA_OP_THREADS: '1',
      HTTP_THREADS: '0',
      HEARTBEAT_INTERVAL_MS: String(config.heartbeatIntervalMs),
    });
    const backend = await createBackend(backendConfig, stdioLogger(`hostile ${spec.name}`));
    await backend.repository.loadAll(spec.models ?? config.models);
    const identity: Identity = {
      spec,
      url,
      lie: spec.lie ?? 'none',
      ready: spec.ready ?? false,
      heartbeating: spec.heartbeating ?? true,
      perturbRate: spec.perturbRate ?? DEFAULT_PERTURB_RATE,
      claim: spec.claim ?? null,
      delayMs: spec.delayMs ?? 0,
      counters: { infer: 0, metadata: 0, beatsAccepted: 0, beatsRefused: 0, perturbed: 0 },
      beats: [],
      relayed: [],
      perturbedJtis: [],
      seq: 0,
      backend: backend as unknown as Identity['backend'],
    };
    identities.set(spec.name, identity);
    await new Promise<void>((resolve, reject) => {
      const server = serve({ fetch: (req: Request) => delayed(identity, req), hostname: '127.0.0.1', port: spec.port });
      server.once('listening', () => resolve());
      server.once('error', reject);
    });
  }

  // --- answers

  /** Every response of an identity, held `delayMs` (read when the response is ready) before it is returned. */
  async function delayed(id: Identity, req: Request): Promise<Response> {
    const res = await handle(id, req);
    if (id.delayMs > 0) await new Promise((r) => setTimeout(r, id.delayMs));
    return res;
  }

  async function handle(id: Identity, req: Request): Promise<Response> {
    const { pathname } = new URL(req.url);
    const infer = req.method === 'POST' && /^\/v2\/models\/[^/]+(?:\/versions\/[^/]+)?\/infer$/.test(pathname);
    const metadata = req.method === 'GET' && /^\/v2\/models\/[^/]+(?:\/versions\/[^/]+)?$/.test(pathname);
    if (metadata) {
      id.counters.metadata++;
      if (id.lie === 'bad-metadata' || id.lie === 'malformed-metadata') return badMetadata(pathname, id.lie === 'bad-metadata');
    }
    if (!infer) return id.backend.app.fetch(req);
    id.counters.infer++;
    const body = new Uint8Array(await req.arrayBuffer());
    const authorization = req.headers.get('authorization') ?? '';
    const token = authorization.replace(/^Bearer\s+/i, '');
    const previous = id.lastDispatch;
    const jti = decodePayload<{ jti?: string }>(token)?.jti;
    id.lastDispatch = { token, body, jti };
    if (id.lie === 'relay') return relay(id, pathname, token, body);
    if (id.lie === 'html-400') return new Response(HTML_400_BODY, { status: 400, headers: { 'content-type': 'text/html' } });
    if (id.lie === 'always-400') return Response.json(ALWAYS_400_BODY, { status: 400 });
    const honest = await id.backend.app.fetch(new Request(req.url, { method: 'POST', headers: req.headers, body }));
    const attestation = honest.headers.get('x-provider-attestation');
    if (honest.status !== 200 || !attestation || id.lie === 'none') return honest;
    const bytes = new Uint8Array(await honest.arrayBuffer());
    const claims = decodePayload<AttestationClaims>(attestation)!;
    const headers = new Headers(honest.headers);
    headers.delete('content-length');
    const reply = (b: Uint8Array | string, att: string | undefined) => {
      if (att === undefined) headers.delete('x-provider-attestation');
      else headers.set('x-provider-attestation', att);
      return new Response(b, { status: 200, headers });
    };
    const attest = (c: AttestationClaims, key = providerKey) => signJws({ alg: 'EdDSA', typ: TYP.attestation, kid }, c, key);
    switch (id.lie) {
      case 'units-x1000':
        return reply(bytes, attest({ ...claims, units: { input: claims.units.input * 1000, output: claims.units.output * 1000 } }));
      case 'no-attestation':
      case 'bad-metadata':
      case 'malformed-metadata':
        return reply(bytes, undefined);
      case 'foreign-key':
        return reply(bytes, attest(claims, rogue));
      case 'other-bytes': {
        const answer = JSON.parse(Buffer.from(bytes).toString('utf8')) as { outputs: { data: number[] }[] };
        answer.outputs[0]!.data[0] = (answer.outputs[0]!.data[0] ?? 0) + 1;
        return reply(JSON.stringify(answer), attestation);
      }
      case 'other-jti':
        return reply(bytes, attest({ ...claims, jti: previous?.jti ?? randomUUID() }));
      case 'other-model':
        return reply(bytes, attest({ ...claims, model: claims.model === 'classifier' ? 'embed' : 'classifier' }));
      case 'oversize': {
        const big = Buffer.alloc(Math.max(OVERSIZE_BYTES, bytes.length + 1), 0x20);
        big.set(bytes, 0);
        return reply(big, attest({ ...claims, output_sha256: sha256Hex(big) }));
      }
      case 'huge-shape': {
        const answer = JSON.parse(Buffer.from(bytes).toString('utf8')) as { outputs: { shape: number[] }[] };
        answer.outputs[0]!.shape[0] = HUGE_ROWS;
        const lied = JSON.stringify(answer);
        return reply(lied, attest({ ...claims, output_sha256: sha256Hex(lied) }));
      }
      case 'perturb':
      case 'perturb-some': {
        if (id.lie === 'perturb-some' && !(Math.random() < id.perturbRate)) return reply(bytes, attestation);
        const answer = JSON.parse(Buffer.from(bytes).toString('utf8')) as OipAnswer;
        if (!perturbFirst(answer)) return reply(bytes, attestation);
        id.counters.perturbed++;
        id.perturbedJtis.push(jti ?? claims.jti);
        if (id.perturbedJtis.length > KEEP_PERTURBED) id.perturbedJtis.shift();
        const lied = JSON.stringify(answer);
        return reply(lied, attest({ ...claims, output_sha256: sha256Hex(lied) }));
      }
      case 'float-noise': {
        const answer = JSON.parse(Buffer.from(bytes).toString('utf8')) as OipAnswer;
        for (const out of answer.outputs ?? []) {
          if (FLOAT_TYPES.has(out.datatype)) out.data = mapNumbers(out.data, (x) => Math.fround(x * (1 + (Math.random() * 2 - 1) * FLOAT_NOISE)));
        }
        const noisy = JSON.stringify(answer);
        return reply(noisy, attest({ ...claims, output_sha256: sha256Hex(noisy) }));
      }
      default:
        return honest;
    }
  }

  /** Changes element 0 (flattened) of the first float output that has one; false when none has. */
  function perturbFirst(answer: OipAnswer): boolean {
    for (const out of answer.outputs ?? []) {
      if (!FLOAT_TYPES.has(out.datatype) || !Array.isArray(out.data)) continue;
      let holder: unknown[] = out.data;
      while (Array.isArray(holder[0])) holder = holder[0] as unknown[];
      const x = holder[0];
      if (typeof x !== 'number' || !Number.isFinite(x)) continue;
      holder[0] = perturbValue(x);
      return true;
    }
    return false;
  }

  function badMetadata(pathname: string, huge: boolean): Response {
    const name = decodeURIComponent(pathname.split('/')[3] ?? 'model');
    const junk = { name: 'x'.repeat(200), datatype: 'NOT_A_TYPE', shape: [1e12, -7, 'rows'] };
    const count = huge ? Math.ceil(BAD_METADATA_BYTES / JSON.stringify(junk).length) : 1;
    const body = JSON.stringify({
      name,
      versions: '1',
      platform: 'onnxruntime_onnx',
      inputs: [{ name: 'text', datatype: 'BYTES', shape: 'any' }, ...Array.from({ length: count }, () => junk)],
      outputs: { embedding: 'yes' },
    });
    return new Response(body, { status: 200, headers: { 'content-type': 'application/json' } });
  }

  async function relay(id: Identity, pathname: string, token: string, body: Uint8Array): Promise<Response> {
    const target = id.spec.relayTo!;
    const model = pathname.split('/')[3]!;
    const routes = id.spec.relayRoutes ?? ['infer'];
    let answer: Response | undefined;
    for (const route of routes) {
      const to = route === 'infer' ? `${target}${pathname}` : `${target}/v2/repository/models/${model}/unload`;
      try {
        const res = await fetch(to, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body });
        const bytes = new Uint8Array(await res.arrayBuffer());
        id.relayed.push({ at: Date.now(), route, status: res.status, body: Buffer.from(bytes.subarray(0, 2000)).toString('utf8') });
        const att = res.headers.get('x-provider-attestation');
        if (route === 'infer' && res.status === 200 && att) {
          // The victim did the work; this provider bills it.
          const claims = decodePayload<AttestationClaims>(att)!;
          const mine = signJws({ alg: 'EdDSA', typ: TYP.attestation, kid }, { ...claims, iss: config.providerId, sub: id.spec.backendId }, providerKey);
          answer = new Response(bytes, { status: 200, headers: { 'content-type': 'application/json; charset=utf-8', 'x-provider-attestation': mine } });
        }
      } catch (err) {
        id.relayed.push({ at: Date.now(), route, status: 0, body: (err as Error).message });
      }
    }
    return answer ?? Response.json({ error: { code: 'backend_failed', message: 'The relayed request was refused.' } }, { status: 502 });
  }

  // --- heartbeats

  function heartbeatBody(id: Identity): string {
    const snap = id.backend.snapshot();
    const region = regionById(id.spec.region)!;
    return JSON.stringify({
      ...snap,
      backendId: id.spec.backendId,
      url: id.url,
      region: region.id,
      lat: id.claim?.lat ?? region.lat,
      lon: id.claim?.lon ?? region.lon,
      ready: id.ready && snap.ready,
    });
  }

  function nextSeq(id: Identity): number {
    id.seq = Math.max(id.seq + 1, Date.now());
    return id.seq;
  }

  function heartbeatToken(id: Identity, body: string, over: { iss?: string; key?: KeyObject; bodySha256?: string } = {}): string {
    const iat = Math.floor(Date.now() / 1000);
    return signJws(
      { alg: 'EdDSA', typ: TYP.heartbeat, kid },
      {
        iss: over.iss ?? config.providerId,
        sub: id.spec.backendId,
        aud: HEARTBEAT_AUDIENCE,
        iat,
        exp: iat + 60,
        body_sha256: over.bodySha256 ?? sha256Hex(body),
        seq: nextSeq(id),
      },
      over.key ?? providerKey,
    );
  }

  async function post(token: string, body: string): Promise<BeatResult> {
    try {
      const res = await fetch(heartbeatUrl, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body,
        signal: AbortSignal.timeout(10_000),
      });
      return { at: Date.now(), status: res.status, body: (await res.text()).slice(0, 2000), contentType: res.headers.get('content-type') };
    } catch (err) {
      return { at: Date.now(), status: 0, body: (err as Error).message, contentType: null };
    }
  }

  function record(id: Identity, beat: BeatResult): void {
    if (beat.status >= 200 && beat.status < 300) id.counters.beatsAccepted++;
    else id.counters.beatsRefused++;
    id.beats.push(beat);
    if (id.beats.length > KEEP_BEATS) id.beats.shift();
  }

  /** One regular beat; beats of one identity never overlap. */
  const beating = new Map<Identity, Promise<BeatResult>>();
  function beat(id: Identity): Promise<BeatResult> {
    const run = (beating.get(id) ?? Promise.resolve()).then(async () => {
      const body = heartbeatBody(id);
      const token = heartbeatToken(id, body);
      const result = await post(token, body);
      record(id, result);
      if (result.status >= 200 && result.status < 300) id.lastAccepted = { token, body };
      return result;
    });
    beating.set(id, run.catch(() => undefined as unknown as BeatResult));
    return run;
  }

  async function attack(id: Identity, kind: HeartbeatAttack): Promise<BeatResult> {
    const body = heartbeatBody(id);
    switch (kind) {
      case 'replay': {
        if (!id.lastAccepted) throw new Error(`${id.spec.name} has no accepted beat to replay`);
        return post(id.lastAccepted.token, id.lastAccepted.body);
      }
      case 'body-mismatch': {
        // Signed for the real body; sent re-pointed at another URL.
        const token = heartbeatToken(id, body);
        const other = JSON.stringify({ ...(JSON.parse(body) as object), url: 'http://127.0.0.1:9/' });
        return post(token, other);
      }
      case 'oversize': {
        // A valid heartbeat, padded with JSON whitespace past the cap.
        const big = body + ' '.repeat(Math.max(0, HEARTBEAT_OVERSIZE_BYTES - body.length));
        return post(heartbeatToken(id, big), big);
      }
      case 'unknown-issuer':
        return post(heartbeatToken(id, body, { iss: `${config.providerId}-never-admitted`, key: rogue }), body);
      case 'bad-signature':
        return post(heartbeatToken(id, body, { key: rogue }), body);
    }
  }

  const tick = setInterval(() => {
    for (const id of identities.values()) if (id.heartbeating) void beat(id);
  }, config.heartbeatIntervalMs);
  tick.unref();

  // --- control (loopback)

  function stateOf(id: Identity): IdentityState {
    return {
      name: id.spec.name,
      backendId: id.spec.backendId,
      region: id.spec.region,
      url: id.url,
      lie: id.lie,
      ready: id.ready,
      heartbeating: id.heartbeating,
      ...id.counters,
      beats: id.beats,
      relayed: id.relayed,
      perturbRate: id.perturbRate,
      claim: id.claim,
      delayMs: id.delayMs,
      perturbedJtis: id.perturbedJtis,
    };
  }

  async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
    let text = '';
    for await (const chunk of req) text += String(chunk);
    return text ? (JSON.parse(text) as Record<string, unknown>) : {};
  }

  const send = (res: ServerResponse, status: number, value: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(value));
  };

  const controlServer = createServer((req, res) => {
    void (async () => {
      try {
        const parts = (req.url ?? '/').split('?')[0]!.split('/').filter(Boolean).map(decodeURIComponent);
        if (req.method === 'GET' && parts[0] === 'state') {
          return send(res, 200, { providerId: config.providerId, identities: Object.fromEntries([...identities].map(([n, i]) => [n, stateOf(i)])) });
        }
        const id = parts[0] === 'identities' ? identities.get(parts[1] ?? '') : undefined;
        if (req.method === 'POST' && id && parts.length === 2) {
          const patch = (await readJson(req)) as IdentityPatch;
          try {
            checkPatch(patch, `identity ${id.spec.name}`);
          } catch (err) {
            return send(res, 400, { error: (err as Error).message });
          }
          if (typeof patch.lie === 'string') id.lie = patch.lie;
          if (typeof patch.ready === 'boolean') id.ready = patch.ready;
          if (typeof patch.heartbeating === 'boolean') id.heartbeating = patch.heartbeating;
          if (patch.perturbRate !== undefined) id.perturbRate = patch.perturbRate;
          if (patch.claim !== undefined) id.claim = patch.claim === null ? null : { lat: patch.claim.lat, lon: patch.claim.lon };
          if (patch.delayMs !== undefined) id.delayMs = patch.delayMs;
          const beatResult = id.heartbeating ? await beat(id) : undefined;
          return send(res, 200, { state: stateOf(id), ...(beatResult ? { beat: beatResult } : {}) });
        }
        if (req.method === 'POST' && id && parts[2] === 'heartbeat-attack') {
          const { kind } = await readJson(req);
          return send(res, 200, await attack(id, kind as HeartbeatAttack));
        }
        send(res, 404, { error: `no control route ${req.method} ${req.url}` });
      } catch (err) {
        send(res, 500, { error: (err as Error).message });
      }
    })();
  });
  await new Promise<void>((resolve) => controlServer.listen(config.controlPort, '127.0.0.1', resolve));

  for (const id of identities.values()) if (id.heartbeating) void beat(id);
  console.log(`${READY_LINE} ${identities.size} identities; control on http://127.0.0.1:${config.controlPort}`);
}

if (process.env[CONFIG_VAR] && path.resolve(process.argv[1] ?? '') === import.meta.filename) {
  runProcess(JSON.parse(process.env[CONFIG_VAR]!) as ProcessConfig).catch((err: unknown) => {
    console.error('hostile provider failed to start:', err);
    process.exit(1);
  });
}
