/** Test helpers inside workerd: keys signed with the test mesh key, providers, heartbeats, counted Durable Object calls. */

import { createExecutionContext, waitOnExecutionContext } from 'cloudflare:test';
import { env, exports } from 'cloudflare:workers';
import { importJWK, jwtVerify, SignJWT, type JWK } from 'jose';
import { sha256Hex } from '../../receipts/index.ts';
import { generateEd25519, issueKey } from '../../shared/keys.ts';
import type { Heartbeat } from '../../shared/heartbeat.ts';
import { regionById } from '../../shared/regions.ts';
import { HEARTBEAT_AUDIENCE, TYP, type DispatchClaims, type KeyRole } from '../../shared/jwt.ts';
import { meter } from '../../shared/metering.ts';
import type { InferRequest } from '../../shared/protocol.ts';
import { app } from '../../workers/app.ts';
import type { Env } from '../../workers/env.ts';
import { offered } from '../../workers/inference/catalogue.ts';

export const BASE = 'https://mesh.test';

export async function meshKey() {
  const jwk = (JSON.parse(env.MESH_SIGNING_KEYS!) as { keys: JWK[] }).keys[0]!;
  return { key: await importJWK(jwk, 'EdDSA'), kid: jwk.kid! };
}

export async function keyFor(role: KeyRole, sub = `${role}-1`, extra: { regions?: string[]; ttlSeconds?: number } = {}) {
  const { key, kid } = await meshKey();
  return issueKey(key, kid, { issuer: env.MESH_ISSUER, sub, role, ...extra });
}

export function call(path: string, init: RequestInit & { token?: string; colo?: string } = {}) {
  const headers = new Headers(init.headers);
  if (init.token) headers.set('authorization', `Bearer ${init.token}`);
  if (init.colo) headers.set('x-mesh-dev-colo', init.colo);
  return exports.default.fetch(new Request(BASE + path, { ...init, headers }));
}

export async function admitProvider(id: string) {
  const pair = await generateEd25519(`${id}-key`);
  const res = await call('/admin/providers', {
    method: 'POST',
    token: await keyFor('admin'),
    body: JSON.stringify({ id, publicJwk: pair.publicJwk }),
  });
  if (res.status !== 201 && res.status !== 200) throw new Error(`admit failed: ${res.status} ${await res.text()}`);
  return { id, key: await importJWK(pair.privateJwk, 'EdDSA'), kid: pair.privateJwk.kid! };
}

export function heartbeatBody(backendId: string, region: string, over: Partial<Heartbeat> = {}): Heartbeat {
  return {
    backendId,
    url: `http://127.0.0.1:1/${backendId}`,
    region,
    // Where the region is, unless a test says otherwise (the edge checks the claim fits the region).
    lat: regionById(region)?.lat ?? 0,
    lon: regionById(region)?.lon ?? 0,
    executionProvider: 'cpu',
    ready: true,
    models: [{ name: 'embed', version: '1', warm: true, maxBatchSize: 32, p50Ms: 5 }],
    capacity: { slots: 4, inFlight: 0, queued: 0 },
    ...over,
  };
}

type Signer = { id: string; key: CryptoKey | Uint8Array; kid: string };

/** Heartbeat seqs: strictly increasing in this module, seeded by the clock like the backend's. */
let lastSeq = Date.now();
export const nextSeq = () => ++lastSeq;

/**
 * A heartbeat token for `sub`, bound to the exact `body` string that will be
 * sent (`body_sha256`), with the next `seq` unless one is given.
 */
export async function heartbeatToken(
  provider: Signer,
  sub: string,
  body: string,
  opts: { ttl?: number; seq?: number; bodySha256?: string; claims?: Record<string, unknown> } = {},
) {
  const iat = Math.floor(Date.now() / 1000);
  const claims = { body_sha256: opts.bodySha256 ?? (await sha256Hex(body)), seq: opts.seq ?? nextSeq(), ...opts.claims };
  return new SignJWT(claims)
    .setProtectedHeader({ alg: 'EdDSA', typ: TYP.heartbeat, kid: provider.kid })
    .setIssuer(provider.id)
    .setSubject(sub)
    .setAudience(HEARTBEAT_AUDIENCE)
    .setIssuedAt(iat)
    .setExpirationTime(iat + (opts.ttl ?? 60))
    .sign(provider.key);
}

/**
 * A fake backend's answer to the dispatch `req` for `embed` (one row of two
 * floats), as a real backend gives it: the dispatch token checked against the
 * mesh key (its `typ`, and its audience when `audience` is given), the answer
 * attested with `provider`'s key for `backendId`, with `units` or, by default,
 * the units the mesh meters for the request and this answer.
 */
export async function attestedEmbedAnswer(
  req: Request,
  provider: Signer,
  backendId: string,
  opts: { audience?: string; units?: { input: number; output: number } } = {},
): Promise<Response> {
  const token = req.headers.get('authorization')!.slice('Bearer '.length);
  const signing = (JSON.parse(env.MESH_SIGNING_KEYS!) as { keys: JWK[] }).keys[0]!;
  const meshPublic = await importJWK({ kty: signing.kty, crv: signing.crv, x: signing.x }, 'EdDSA');
  const { payload } = await jwtVerify<DispatchClaims>(token, meshPublic, {
    algorithms: ['EdDSA'],
    typ: TYP.dispatch,
    ...(opts.audience !== undefined ? { audience: opts.audience } : {}),
  });
  const body = JSON.stringify({ model_name: 'embed', model_version: '1', outputs: [{ name: 'embedding', datatype: 'FP32', shape: [1, 2], data: [0.6, 0.8] }] });
  const units = opts.units ?? meter(offered(env, 'embed'), ((await req.clone().json()) as InferRequest).inputs, [{ shape: [1, 2] }]);
  const attestation = await new SignJWT({ jti: payload.jti, model: 'embed', output_sha256: await sha256Hex(body), units })
    .setProtectedHeader({ alg: 'EdDSA', typ: TYP.attestation, kid: provider.kid })
    .setIssuer(provider.id)
    .setSubject(backendId)
    .setIssuedAt()
    .sign(provider.key);
  return new Response(body, { headers: { 'content-type': 'application/json', 'x-provider-attestation': attestation, 'server-timing': 'backend;dur=1' } });
}

/** Sends one heartbeat as a backend does: a fresh token over the exact JSON sent. */
export async function sendHeartbeat(provider: Signer, body: Heartbeat) {
  const text = JSON.stringify(body);
  return call('/v1/providers/heartbeat', { method: 'POST', token: await heartbeatToken(provider, body.backendId, text), body: text });
}

/**
 * `ns` with every method call on its stubs going through `around`, which gets
 * the object's name, the method, its arguments and `invoke` (the real call).
 */
export function wrapStubs(
  ns: DurableObjectNamespace,
  around: (name: string, method: string, args: unknown[], invoke: () => unknown) => unknown,
): DurableObjectNamespace {
  return new Proxy(ns, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver);
      if (prop !== 'getByName' || typeof value !== 'function') return value;
      return (name: string, opts?: unknown) => {
        const stub = Reflect.apply(value, target, [name, opts]) as object;
        return new Proxy(stub, {
          get(s, method) {
            const m = Reflect.get(s, method);
            if (typeof m !== 'function') return m;
            // Reflect.apply: on an RPC stub, `m.apply` would name a remote method.
            return (...args: unknown[]) => around(name, String(method), args, () => Reflect.apply(m, s, args));
          },
        });
      };
    },
  });
}

/**
 * The test `env` with `vars` replaced (a new env object gets its own parsed
 * settings) and every Durable Object stub method call recorded in `calls` as
 * `Class(name).method`.
 */
export function envWith(vars: Record<string, string>, calls: string[] = []): Env {
  const counted = (ns: unknown, cls: string) =>
    wrapStubs(ns as DurableObjectNamespace, (name, method, _args, invoke) => {
      calls.push(`${cls}(${name}).${method}`);
      return invoke();
    });
  return {
    ...env,
    ...vars,
    REGION_DIRECTORY: counted(env.REGION_DIRECTORY, 'RegionDirectory'),
    OPERATOR_REGISTRY: counted(env.OPERATOR_REGISTRY, 'OperatorRegistry'),
  } as unknown as Env;
}

/** Like `call`, through the app with `e` (see `envWith`). */
export async function callWith(e: Env, path: string, init: RequestInit & { token?: string } = {}) {
  const headers = new Headers(init.headers);
  if (init.token) headers.set('authorization', `Bearer ${init.token}`);
  const ctx = createExecutionContext();
  const res = await app.fetch(new Request(BASE + path, { ...init, headers }), e, ctx);
  await waitOnExecutionContext(ctx);
  return res;
}

/** Like `sendHeartbeat`, through the app with `e`. */
export async function sendHeartbeatWith(e: Env, provider: Signer, body: Heartbeat) {
  const text = JSON.stringify(body);
  return callWith(e, '/v1/providers/heartbeat', { method: 'POST', token: await heartbeatToken(provider, body.backendId, text), body: text });
}
