import { env } from 'cloudflare:test';
import { jwtVerify, importJWK, type JWK } from 'jose';
import { describe, expect, it } from 'vitest';
import { KEY_AUDIENCE, TYP, type KeyClaims } from '../../shared/jwt.ts';
import { call, keyFor } from './helpers.ts';

async function issue(body: unknown, token?: string) {
  return call('/admin/keys', { method: 'POST', token: token ?? (await keyFor('admin')), body: JSON.stringify(body) });
}

describe('POST /admin/keys', () => {
  it('issues a verifiable consumer key with residency', async () => {
    const res = await issue({ sub: 'acme', role: 'consumer', regions: ['eu-west'], ttlSeconds: 3600 });
    expect(res.status).toBe(201);
    const { key, jti, exp } = (await res.json()) as { key: string; jti: string; exp: number };
    const jwk = (JSON.parse(env.MESH_SIGNING_KEYS!) as { keys: JWK[] }).keys[0]!;
    const { payload } = await jwtVerify<KeyClaims>(key, await importJWK({ kty: jwk.kty, crv: jwk.crv, x: jwk.x }, 'EdDSA'), {
      algorithms: ['EdDSA'],
      typ: TYP.key,
      audience: KEY_AUDIENCE,
      issuer: env.MESH_ISSUER,
    });
    expect(payload).toMatchObject({ sub: 'acme', role: 'consumer', regions: ['eu-west'], jti, exp });
    expect(exp - payload.iat).toBe(3600);
  });

  it('refuses bad requests and non-admins', async () => {
    expect((await issue({ sub: 'a', role: 'root' })).status).toBe(400);
    expect((await issue({ sub: 'a', regions: ['mars'] })).status).toBe(400);
    expect((await issue({ sub: 'a', ttlSeconds: -1 })).status).toBe(400);
    expect((await issue({ sub: 'a' }, await keyFor('billing'))).status).toBe(403);
  });
});

describe('POST /admin/keys/revoke', () => {
  it('makes a working key fail with 401 from then on', async () => {
    const { key } = (await (await issue({ sub: 'soon-revoked' })).json()) as { key: string };
    const ask = () => call('/v1/models', { token: key });
    expect((await ask()).status).toBe(200);
    const res = await call('/admin/keys/revoke', { method: 'POST', token: await keyFor('admin'), body: JSON.stringify({ key }) });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ revoked: true });
    const after = await ask();
    expect(after.status).toBe(401);
    expect(await after.json()).toMatchObject({ error: { code: 'invalid_token' } });
    // The revocation lives in the OperatorRegistry, so other isolates pick it up with their snapshot.
    expect(await env.OPERATOR_REGISTRY.getByName('global').revokedKeys()).toContain(JSON.parse(atob(key.split('.')[1]!.replace(/-/g, '+').replace(/_/g, '/'))).jti);
  });

  it('needs a jti or a key', async () => {
    const res = await call('/admin/keys/revoke', { method: 'POST', token: await keyFor('admin'), body: '{}' });
    expect(res.status).toBe(400);
  });
});

describe('edge input checks', () => {
  it('refuses malformed tensors and oversize bodies before any backend is involved', async () => {
    const key = await keyFor('consumer');
    const bad = await call('/v2/models/embed/infer', {
      method: 'POST',
      token: key,
      body: JSON.stringify({ inputs: [{ name: 'input_ids', shape: [1, 3], datatype: 'INT64', data: [1, 2] }] }),
    });
    expect(bad.status).toBe(400);
    expect(await bad.json()).toMatchObject({ error: { code: 'shape_mismatch' } });
    const notJson = await call('/v2/models/embed/infer', { method: 'POST', token: key, body: '{"inputs":' });
    expect(notJson.status).toBe(400);
    expect(await notJson.json()).toMatchObject({ error: { code: 'invalid_json' } });
    const huge = await call('/v2/models/embed/infer', { method: 'POST', token: key, body: 'x'.repeat(8 * 1024 * 1024 + 1) });
    expect(huge.status).toBe(413);
    expect(await huge.json()).toMatchObject({ error: { code: 'body_too_large' } });
    const verify = await call('/v2/models/embed/infer', { method: 'POST', token: key, body: '{}', headers: { 'x-mesh-verify': 'always' } });
    expect(verify.status).toBe(400);
  });
});
