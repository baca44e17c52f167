import { env } from 'cloudflare:test';
import { SignJWT } from 'jose';
import { describe, expect, it } from 'vitest';
import { KEY_AUDIENCE, TYP } from '../../shared/jwt.ts';
import { call, keyFor, meshKey } from './helpers.ts';

const body = JSON.stringify({ inputs: [{ name: 'x', shape: [1], datatype: 'FP32', data: [1] }] });

async function forge(header: Record<string, unknown>, claims: Record<string, unknown>) {
  const { key, kid } = await meshKey();
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ role: 'consumer', ...claims })
    .setProtectedHeader({ alg: 'EdDSA', typ: TYP.key, kid, ...header } as never)
    .sign(key);
}

const base = () => ({ iss: env.MESH_ISSUER, aud: KEY_AUDIENCE, sub: 'c1', jti: 'j1', iat: Math.floor(Date.now() / 1000), exp: Math.floor(Date.now() / 1000) + 600 });

async function status(token?: string) {
  const res = await call('/v2/models/embed/infer', { method: 'POST', body, ...(token ? { token } : {}) });
  const json = (await res.json()) as { error?: { code: string } };
  return [res.status, json.error?.code];
}

describe('consumer keys', () => {
  it('refuses a missing key with 401 unauthorized', async () => {
    expect(await status()).toEqual([401, 'unauthorized']);
  });
  it('refuses keys that are not exactly what the operator issues', async () => {
    const { exp: _exp, ...noExp } = base();
    const cases = {
      garbage: 'not.a.jwt',
      expired: await forge({}, { ...base(), exp: Math.floor(Date.now() / 1000) - 10 }),
      noExp: await forge({}, noExp),
      wrongAudience: await forge({}, { ...base(), aud: 'someone-else' }),
      wrongIssuer: await forge({}, { ...base(), iss: 'https://evil.example' }),
      receiptTyp: await forge({ typ: TYP.receipt }, base()),
      unknownKid: await forge({ kid: 'rotated-away' }, base()),
      alienRole: await forge({}, { ...base(), role: 'root' }),
    };
    for (const [name, token] of Object.entries(cases)) {
      expect([name, ...(await status(token))]).toEqual([name, 401, 'invalid_token']);
    }
    const none = `${btoa(JSON.stringify({ alg: 'none', typ: TYP.key })).replace(/=/g, '')}.${btoa(JSON.stringify(base())).replace(/=/g, '')}.`;
    expect(await status(none)).toEqual([401, 'invalid_token']);
  });
  it('accepts an issued consumer key (then fails later for want of a backend, not of auth)', async () => {
    const [code] = await status(await keyFor('consumer'));
    expect(code).toBe(404);
  });
  it('gives a billing key no access to inference', async () => {
    expect(await status(await keyFor('billing'))).toEqual([403, 'forbidden']);
  });
  it('enforces data residency against a region pin', async () => {
    const key = await keyFor('consumer', 'eu-only', { regions: ['eu-west'] });
    const res = await call('/v2/models/embed/infer', { method: 'POST', body, token: key, headers: { 'x-mesh-region': 'us-east' } });
    expect(res.status).toBe(403);
    const bad = await call('/v2/models/embed/infer', { method: 'POST', body, token: key, headers: { 'x-mesh-region': 'atlantis' } });
    expect(bad.status).toBe(400);
    expect(await bad.json()).toMatchObject({ error: { code: 'unknown_region' } });
  });
});
