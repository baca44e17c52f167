/**
 * Test fixtures for the GPU backend: demo models generated into a temp dir,
 * a mesh key (standing for the edge's JWKS) to sign dispatch tokens, a fresh
 * provider key, and a backend built by `createBackend` around real ONNX
 * Runtime sessions, with heartbeats sent to a recording fake `fetch`.
 */

import { mkdtemp, rm } from 'node:fs/promises';
import fc from 'fast-check';
import { afterAll, beforeAll, expect } from 'vitest';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { SignJWT, createLocalJWKSet, exportJWK, generateKeyPair, type CryptoKey, type JWK, type JWTHeaderParameters } from 'jose';
import { sha256Hex } from '../../receipts/hash.ts';
import { DISPATCH_TTL_S, TYP, type DispatchPurpose } from '../../shared/jwt.ts';
import { createBackend, type Backend, type BackendOverrides } from '../../gpu-backend/src/backend.ts';
import { loadConfig } from '../../gpu-backend/src/config.ts';
import { generateDemoModels } from '../../gpu-backend/src/demo-models/generate.ts';
import { memoryLogger } from '../../gpu-backend/src/log.ts';
import type { CreateSession } from '../../gpu-backend/src/serving/model-session.ts';
import { generateProviderKey, type ProviderJwk } from '../../gpu-backend/src/mesh/provider-key.ts';

export const EDGE_URL = 'http://edge.test';
export const BACKEND_ID = 'backend-test-1';
export const PROVIDER_ID = 'provider-test';

/** A temp model repository with the demo models; `cleanup()` removes it. */
export async function demoRepository(): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(path.join(tmpdir(), 'mesh-models-'));
  await generateDemoModels(dir);
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

export interface MeshKey {
  privateKey: CryptoKey;
  publicJwk: JWK;
  kid: string;
}

export async function meshKey(kid = 'mesh-key-1'): Promise<MeshKey> {
  const { privateKey, publicKey } = await generateKeyPair('EdDSA', { extractable: true });
  const publicJwk = { ...(await exportJWK(publicKey)), kid, alg: 'EdDSA', use: 'sig' };
  return { privateKey, publicJwk, kid };
}

export interface DispatchOptions {
  model: string;
  body: string | Uint8Array;
  key: MeshKey;
  /** Default `infer`; the repository routes need `control` (`purposeOf`). */
  purpose?: DispatchPurpose;
  claims?: Record<string, unknown>;
  header?: Partial<JWTHeaderParameters>;
  iat?: number;
  exp?: number;
}

/** Signs a dispatch token as the edge would: right typ, iss, aud, purpose, model and body hash unless overridden. */
export async function dispatchToken(o: DispatchOptions): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const iat = o.iat ?? now;
  const claims = {
    iss: EDGE_URL,
    aud: BACKEND_ID,
    sub: 'consumer-1',
    jti: crypto.randomUUID(),
    iat,
    exp: o.exp ?? iat + DISPATCH_TTL_S,
    purpose: o.purpose ?? 'infer',
    model: o.model,
    body_sha256: await sha256Hex(o.body),
    ...o.claims,
  };
  return new SignJWT(claims)
    .setProtectedHeader({ alg: 'EdDSA', typ: TYP.dispatch, kid: o.key.kid, ...o.header })
    .sign(o.key.privateKey);
}

export interface Harness {
  backend: Backend;
  mesh: MeshKey;
  provider: { privateJwk: ProviderJwk; publicJwk: JWK };
  log: ReturnType<typeof memoryLogger>;
  /** Every heartbeat sent: `raw` is the exact body bytes, `body` their JSON. */
  heartbeats: { url: string; authorization: string; raw: Uint8Array; body: Record<string, unknown> }[];
  /** POSTs `body` to `path` with a valid dispatch token for `model` and the route's purpose (or the given token/headers). */
  post(
    path: string,
    body: unknown,
    options?: { model?: string; token?: string | null; raw?: string | Uint8Array; headers?: Record<string, string> },
  ): Promise<Response>;
  get(path: string): Promise<Response>;
}

export interface HarnessOptions {
  repo: string;
  env?: Record<string, string>;
  overrides?: BackendOverrides;
  /** The reply the fake edge gives heartbeats. */
  heartbeatReply?: () => unknown;
  load?: boolean;
}

/** Builds a backend over the repository with real ORT sessions, and loads its models. */
export async function harness(options: HarnessOptions): Promise<Harness> {
  const mesh = await meshKey();
  const provider = await generateProviderKey('provider-key-1');
  const config = loadConfig({
    BACKEND_ID,
    PROVIDER_ID,
    PROVIDER_KEY: JSON.stringify(provider.privateJwk),
    REGION: 'eu-west',
    EDGE_URL,
    MODEL_REPOSITORY: options.repo,
    PORT: '0',
    HEARTBEAT_INTERVAL_MS: '100',
    MAX_BODY_BYTES: String(64 * 1024),
    // Runs on the main thread whatever this machine's cores (`auto` would pick workers from 4); tests that want workers say so.
    INFERENCE_THREAD: 'main',
    ...options.env,
  });
  const log = memoryLogger();
  const heartbeats: Harness['heartbeats'] = [];
  const fakeFetch = (async (url: string | URL | Request, init?: RequestInit) => {
    const headers = new Headers(init?.headers);
    const raw = new Uint8Array(await new Response(init?.body).arrayBuffer());
    heartbeats.push({ url: String(url), authorization: headers.get('authorization') ?? '', raw, body: JSON.parse(new TextDecoder().decode(raw)) });
    const reply = options.heartbeatReply?.() ?? { ok: true, ttlSeconds: 10, actions: [] };
    return new Response(JSON.stringify(reply), { status: 200, headers: { 'content-type': 'application/json' } });
  }) as typeof fetch;
  const backend = await createBackend(config, log, {
    getKey: createLocalJWKSet({ keys: [mesh.publicJwk] }),
    fetch: fakeFetch,
    ...options.overrides,
  });
  if (options.load !== false) await backend.repository.loadAll(config.models);

  const post: Harness['post'] = async (p, body, o = {}) => {
    const raw = o.raw ?? JSON.stringify(body);
    const headers: Record<string, string> = { 'content-type': 'application/json', ...o.headers };
    const token = o.token === undefined ? await dispatchToken({ model: o.model ?? modelOf(p), body: raw, key: mesh, purpose: purposeOf(p) }) : o.token;
    if (token !== null) headers.authorization = `Bearer ${token}`;
    return backend.app.request(p, { method: 'POST', headers, body: raw });
  };
  const get: Harness['get'] = (p) => Promise.resolve(backend.app.request(p));
  return { backend, mesh, provider, log, heartbeats, post, get };
}

/** The purpose of the dispatch token a route needs: `control` for /v2/repository/..., else `infer`. */
export function purposeOf(p: string): DispatchPurpose {
  return p.startsWith('/v2/repository/') ? 'control' : 'infer';
}

/** The model a route is about: /v2/models/<m>/... or /v2/repository/models/<m>/..., `*` for the index. */
function modelOf(p: string): string {
  const m = /\/models\/([^/]+)/.exec(p);
  return m ? decodeURIComponent(m[1]!) : '*';
}

/** A JSON error body's code. */
export async function errorCode(res: Response): Promise<string> {
  const body = (await res.json()) as { error?: { code?: string } };
  return body.error?.code ?? `(no error code; status ${res.status})`;
}

/**
 * Real ORT sessions whose `run` waits while the gate is closed (`close()`,
 * then `open()`). `runs` counts every run (warm-ups included); `feeds` keeps
 * the values of every input each run was given, so a test can tell which
 * requests ran.
 */
export function gatedSessions() {
  const gate = {
    closed: undefined as Promise<void> | undefined,
    open: () => {},
    runs: 0,
    feeds: [] as Record<string, number[]>[],
  };
  const close = () => {
    gate.closed = new Promise<void>((resolve) => (gate.open = () => { gate.closed = undefined; resolve(); }));
  };
  const create: CreateSession = async (p, o) => {
    const session = await ort.InferenceSession.create(p, o);
    const run = session.run.bind(session);
    (session as { run: unknown }).run = async (...args: Parameters<typeof run>) => {
      gate.runs++;
      const feeds: Record<string, number[]> = {};
      for (const [name, t] of Object.entries(args[0] as Record<string, ort.Tensor>)) feeds[name] = Array.from(t.data as ArrayLike<number | bigint>, Number);
      gate.feeds.push(feeds);
      while (gate.closed) await gate.closed;
      return run(...args);
    };
    return session;
  };
  return { gate, close, open: () => gate.open(), create };
}

/** Polls `cond` every 2 ms for up to ~2 s. */
export async function until(cond: () => boolean, what: string, ms = 2000): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 2));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/**
 * Registers `beforeAll`/`afterAll` that build a harness over a fresh demo
 * repository and tear both down; `use` receives the harness once built.
 *
 * @example
 * let h: Harness;
 * useDemoHarness((built) => (h = built));
 */
export function useDemoHarness(use: (h: Harness) => void, options: Omit<HarnessOptions, 'repo'> = {}): void {
  let repo: Awaited<ReturnType<typeof demoRepository>> | undefined;
  let built: Harness | undefined;
  beforeAll(async () => {
    repo = await demoRepository();
    built = await harness({ ...options, repo: repo.dir });
    use(built);
  });
  afterAll(async () => {
    await built?.backend.repository.close();
    await repo?.cleanup();
  });
}

/**
 * Inference bodies for fuzzing (fast-check): any JSON value, near misses of
 * OIP requests for the demo models (wrong names, datatypes, shapes, data,
 * outputs, queue timeouts) and valid ones with a queue timeout override.
 */
export function inferBodies(): fc.Arbitrary<unknown> {
  const datatype = fc.constantFrom('FP32', 'FP64', 'INT64', 'INT32', 'BYTES', 'BOOL', 'UINT8', 'FP16', 7);
  const nearMiss = fc.record(
    {
      inputs: fc.array(
        fc.record(
          {
            name: fc.constantFrom('features', 'input_ids', 'text', 'x', ''),
            datatype,
            shape: fc.array(fc.integer({ min: -1, max: 70 }), { maxLength: 3 }),
            data: fc.array(fc.oneof(fc.double(), fc.integer(), fc.string(), fc.boolean(), fc.constant(null)), { maxLength: 40 }),
          },
          { requiredKeys: [] },
        ),
        { maxLength: 3 },
      ),
      outputs: fc.array(fc.record({ name: fc.constantFrom('probabilities', 'embedding', 'nope') }), { maxLength: 2 }),
      // The queue timeout override (µs): valid, tiny, huge, negative, fractional or not a number.
      parameters: fc.record(
        {
          timeout: fc.oneof(
            fc.integer({ min: 0, max: 3000 }),
            fc.integer({ min: 1, max: 2 ** 53 - 1 }),
            fc.integer({ min: -1000, max: -1 }),
            fc.double(),
            fc.string(),
            fc.constant(null),
            fc.boolean(),
          ),
        },
        { requiredKeys: [] },
      ),
    },
    { requiredKeys: ['inputs'] },
  );
  const valid = fc.record({
    inputs: fc.constant([{ name: 'features', datatype: 'FP32', shape: [1, 16], data: new Array(16).fill(0.5) }]),
    parameters: fc.record({ timeout: fc.oneof(fc.integer({ min: 1, max: 3000 }), fc.integer({ min: 0, max: 2 ** 53 - 1 })) }),
  });
  return fc.oneof(fc.jsonValue(), nearMiss, valid);
}

/**
 * An answer to a fuzzed inference: 200, or a 4xx with a snake_case code; the
 * one 5xx a request may cause is 504 `backend_timeout`, when its own short,
 * valid queue timeout passed while it waited.
 */
export async function expectNo5xx(res: { status: number; json(): Promise<unknown> }, body: unknown): Promise<void> {
  const code = res.status === 200 ? undefined : ((await res.json()) as { error: { code: string } }).error.code;
  if (code !== undefined) expect(code).toMatch(/^[a-z_]+$/);
  const timeout = (body as { parameters?: { timeout?: unknown } } | null)?.parameters?.timeout;
  if (res.status === 504) {
    expect(code).toBe('backend_timeout');
    expect(Number.isSafeInteger(timeout) && (timeout as number) > 0).toBe(true);
  } else {
    expect(res.status === 200 || (res.status >= 400 && res.status < 500)).toBe(true);
  }
}
