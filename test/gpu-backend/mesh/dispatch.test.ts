/**
 * Dispatch tokens: every way to get an inference without the edge's
 * permission is refused with a 401 (`invalid_token`, or `unauthorized` when
 * there is no token), and the backend keeps serving real requests. Time-based
 * checks also run against the verifier with a frozen clock.
 */

import { SignJWT, base64url, createLocalJWKSet, errors, exportSPKI, importJWK, type CryptoKey } from 'jose';
import { describe, expect, it } from 'vitest';
import { MeshError } from '../../../shared/errors.ts';
import { TYP } from '../../../shared/jwt.ts';
import { DispatchVerifier } from '../../../gpu-backend/src/mesh/dispatch.ts';
import { BACKEND_ID, EDGE_URL, dispatchToken, errorCode, meshKey, type Harness, useDemoHarness } from '../helpers.ts';

let h: Harness;
useDemoHarness((built) => (h = built));

const BODY = JSON.stringify({ inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 16], data: new Array(16).fill(0.25) }] });
const INFER = '/v2/models/classifier/infer';
const now = () => Math.floor(Date.now() / 1000);

function unsigned(header: object, claims: object): string {
  const enc = (o: object) => base64url.encode(JSON.stringify(o));
  return `${enc(header)}.${enc(claims)}.`;
}

async function claimsFor(body = BODY, model = 'classifier') {
  const { sha256Hex } = await import('../../../receipts/hash.ts');
  return { iss: EDGE_URL, aud: BACKEND_ID, sub: 'c', jti: crypto.randomUUID(), iat: now(), exp: now() + 30, model, body_sha256: await sha256Hex(body) };
}

async function expect401(res: Response, code: 'invalid_token' | 'unauthorized') {
  expect(res.status).toBe(401);
  expect(await errorCode(res)).toBe(code);
  expect(res.headers.get('www-authenticate')).toMatch(code === 'invalid_token' ? /^Bearer error="invalid_token"$/ : /^Bearer/);
}

describe('dispatch token attacks on /infer', () => {
  const attacks: [string, () => Promise<string | null>, 'invalid_token' | 'unauthorized'][] = [
    ['no token', async () => null, 'unauthorized'],
    ['alg none', async () => unsigned({ alg: 'none', typ: TYP.dispatch }, await claimsFor()), 'invalid_token'],
    [
      'HS256 keyed with the mesh public key (alg confusion)',
      async () =>
        new SignJWT(await claimsFor())
          .setProtectedHeader({ alg: 'HS256', typ: TYP.dispatch, kid: h.mesh.kid })
          .sign(base64url.decode(h.mesh.publicJwk.x!)),
      'invalid_token',
    ],
    [
      'HS256 keyed with the mesh public key as PEM (alg confusion)',
      async () => {
        const pem = await exportSPKI((await importJWK(h.mesh.publicJwk, 'EdDSA', { extractable: true })) as CryptoKey);
        return new SignJWT(await claimsFor())
          .setProtectedHeader({ alg: 'HS256', typ: TYP.dispatch, kid: h.mesh.kid })
          .sign(new TextEncoder().encode(pem));
      },
      'invalid_token',
    ],
    ['wrong typ (a receipt)', () => dispatchToken({ model: 'classifier', body: BODY, key: h.mesh, header: { typ: TYP.receipt } }), 'invalid_token'],
    ['wrong aud', () => dispatchToken({ model: 'classifier', body: BODY, key: h.mesh, claims: { aud: 'backend-other' } }), 'invalid_token'],
    ['wrong iss', () => dispatchToken({ model: 'classifier', body: BODY, key: h.mesh, claims: { iss: 'https://evil.example' } }), 'invalid_token'],
    ['expired', () => dispatchToken({ model: 'classifier', body: BODY, key: h.mesh, iat: now() - 50, exp: now() - 20 }), 'invalid_token'],
    ['exp more than 60 s ahead', () => dispatchToken({ model: 'classifier', body: BODY, key: h.mesh, exp: now() + 3600 }), 'invalid_token'],
    ['iat in the future', () => dispatchToken({ model: 'classifier', body: BODY, key: h.mesh, iat: now() + 600, exp: now() + 630 }), 'invalid_token'],
    ['another body (body_sha256 mismatch)', () => dispatchToken({ model: 'classifier', body: BODY.replace('0.25', '0.5'), key: h.mesh }), 'invalid_token'],
    ['another model', () => dispatchToken({ model: 'embed', body: BODY, key: h.mesh }), 'invalid_token'],
    ['signed by a key not in the JWKS', async () => dispatchToken({ model: 'classifier', body: BODY, key: await meshKey(h.mesh.kid) }), 'invalid_token'],
    ['no body_sha256 claim', () => dispatchToken({ model: 'classifier', body: BODY, key: h.mesh, claims: { body_sha256: undefined } }), 'invalid_token'],
    ['no jti claim', () => dispatchToken({ model: 'classifier', body: BODY, key: h.mesh, claims: { jti: undefined } }), 'invalid_token'],
    ['garbage', async () => 'not.a.jwt', 'invalid_token'],
  ];

  for (const [name, token, code] of attacks) {
    it(`refuses ${name} with 401 ${code}`, async () => {
      await expect401(await h.post(INFER, undefined, { raw: BODY, token: await token() }), code);
    });
  }

  it('refuses a non-Bearer Authorization header with 401 unauthorized', async () => {
    const res = await h.backend.app.request(INFER, { method: 'POST', headers: { authorization: 'Basic dXNlcjpwYXNz' }, body: BODY });
    await expect401(res, 'unauthorized');
  });

  it('refuses a valid token whose body was swapped in transit, and the token is not spent by that', async () => {
    const token = await dispatchToken({ model: 'classifier', body: BODY, key: h.mesh });
    const swapped = BODY.replace('0.25', '0.75');
    await expect401(await h.post(INFER, undefined, { raw: swapped, token }), 'invalid_token');
    // Even a body that differs only by whitespace:
    await expect401(await h.post(INFER, undefined, { raw: `${BODY} `, token }), 'invalid_token');
    expect((await h.post(INFER, undefined, { raw: BODY, token })).status).toBe(200);
  });

  it('refuses a replayed jti', async () => {
    const token = await dispatchToken({ model: 'classifier', body: BODY, key: h.mesh });
    expect((await h.post(INFER, undefined, { raw: BODY, token })).status).toBe(200);
    await expect401(await h.post(INFER, undefined, { raw: BODY, token }), 'invalid_token');
  });

  it('still serves valid requests after all of that', async () => {
    const res = await h.post(INFER, undefined, { raw: BODY });
    expect(res.status).toBe(200);
    expect(res.headers.get('x-provider-attestation')).toBeTruthy();
  });
});

describe('DispatchVerifier with a frozen clock', () => {
  const T = 1_900_000_000;
  async function setup(maxLiveTokens?: number) {
    const key = await meshKey();
    let clock = T * 1000;
    const verifier = new DispatchVerifier({
      backendId: BACKEND_ID,
      issuer: EDGE_URL,
      getKey: createLocalJWKSet({ keys: [key.publicJwk] }),
      now: () => clock,
      ...(maxLiveTokens ? { maxLiveTokens } : {}),
    });
    const body = new TextEncoder().encode('{}');
    const token = (exp = T + 30) => dispatchToken({ model: 'm', body, key, iat: T, exp });
    return { verifier, body, token, setClock: (s: number) => (clock = s * 1000) };
  }

  it('check accepts a token as often as asked; spend takes its jti once (HTTP threads check, the main thread spends)', async () => {
    const { verifier, body, token } = await setup();
    const t = await token();
    const claims = await verifier.check(`Bearer ${t}`, body, 'm');
    expect(await verifier.check(`Bearer ${t}`, body, 'm')).toEqual(claims);
    verifier.spend(claims);
    expect(() => verifier.spend(claims)).toThrow(/already used/);
    await expect(verifier.verify(`Bearer ${t}`, body, 'm')).rejects.toThrow(/already used/);
  });

  it('keeps the jose error as cause, with its code', async () => {
    const { verifier, body, token, setClock } = await setup();
    const t = await token();
    setClock(T + 36); // 30 s lifetime + 5 s clock tolerance, then one more
    const err = await verifier.verify(`Bearer ${t}`, body, 'm').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MeshError);
    expect((err as MeshError).code).toBe('invalid_token');
    expect((err as MeshError).cause).toBeInstanceOf(errors.JWTExpired);
    expect(((err as MeshError).cause as errors.JOSEError).code).toBe('ERR_JWT_EXPIRED');
  });

  it('accepts exp 60 s ahead, refuses 120 s ahead', async () => {
    const { verifier, body, token } = await setup();
    await expect(verifier.verify(`Bearer ${await token(T + 60)}`, body, 'm')).resolves.toMatchObject({ model: 'm' });
    await expect(verifier.verify(`Bearer ${await token(T + 120)}`, body, 'm')).rejects.toMatchObject({ code: 'invalid_token' });
  });

  it('refuses with 503 rather than forget live jtis when full, and takes tokens again once they expire', async () => {
    const { verifier, body, token, setClock } = await setup(2);
    await verifier.verify(`Bearer ${await token()}`, body, 'm');
    await verifier.verify(`Bearer ${await token()}`, body, 'm');
    const third = await token(T + 60);
    await expect(verifier.verify(`Bearer ${third}`, body, 'm')).rejects.toMatchObject({ code: 'no_capacity', status: 503 });
    setClock(T + 40); // the first two expired (30 s + 5 s tolerance); the third lives until T + 60
    await expect(verifier.verify(`Bearer ${third}`, body, 'm')).resolves.toMatchObject({ model: 'm' });
  });
});
