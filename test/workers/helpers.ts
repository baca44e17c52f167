/** Test helpers inside workerd: keys signed with the test mesh key, providers, heartbeats. */

import { env, exports } from 'cloudflare:workers';
import { importJWK, SignJWT, type JWK } from 'jose';
import { generateEd25519, issueKey } from '../../shared/keys.ts';
import type { Heartbeat } from '../../shared/heartbeat.ts';
import { HEARTBEAT_AUDIENCE, TYP, type KeyRole } from '../../shared/jwt.ts';

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
    lat: 0,
    lon: 0,
    executionProvider: 'cpu',
    ready: true,
    models: [{ name: 'embed', version: '1', warm: true, maxBatchSize: 32, p50Ms: 5 }],
    capacity: { slots: 4, inFlight: 0, queued: 0 },
    ...over,
  };
}

export async function heartbeatToken(provider: { id: string; key: CryptoKey | Uint8Array; kid: string }, sub: string, ttl = 60) {
  const iat = Math.floor(Date.now() / 1000);
  return new SignJWT({})
    .setProtectedHeader({ alg: 'EdDSA', typ: TYP.heartbeat, kid: provider.kid })
    .setIssuer(provider.id)
    .setSubject(sub)
    .setAudience(HEARTBEAT_AUDIENCE)
    .setIssuedAt(iat)
    .setExpirationTime(iat + ttl)
    .sign(provider.key);
}

export async function sendHeartbeat(provider: { id: string; key: CryptoKey | Uint8Array; kid: string }, body: Heartbeat) {
  return call('/v1/providers/heartbeat', {
    method: 'POST',
    token: await heartbeatToken(provider, body.backendId),
    body: JSON.stringify(body),
  });
}
