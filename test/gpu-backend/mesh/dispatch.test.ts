/**
 * Dispatch tokens: every way to get an inference without the edge's
 * permission is refused with a 401 (`invalid_token`, or `unauthorized` when
 * there is no token), a repository control token included, and one for
 * another version of the model; the backend keeps serving real requests.
 * Time-based checks also run against the verifier with a frozen clock: `exp`
 * at most 60 s after the backend's now, with no clock tolerance on that side.
 */

import { SignJWT, base64url, createLocalJWKSet, exportSPKI, importJWK, type CryptoKey } from 'jose';
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
  return { iss: EDGE_URL, aud: BACKEND_ID, sub: 'c', jti: crypto.randomUUID(), iat: now(), exp: now() + 30, purpose: 'infer', model, body_sha256: await sha256Hex(body) };
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
    ['a repository control token', () => dispatchToken({ model: 'classifier', body: BODY, key: h.mesh, purpose: 'control' }), 'invalid_token'],
    ['no purpose claim', () => dispatchToken({ model: 'classifier', body: BODY, key: h.mesh, claims: { purpose: undefined } }), 'invalid_token'],
    ['an unknown purpose', () => dispatchToken({ model: 'classifier', body: BODY, key: h.mesh, claims: { purpose: 'admin' } }), 'invalid_token'],
    ['another model_version', () => dispatchToken({ model: 'classifier', body: BODY, key: h.mesh, claims: { model_version: '2' } }), 'invalid_token'],
    ['an empty model_version', () => dispatchToken({ model: 'classifier', body: BODY, key: h.mesh, claims: { model_version: '' } }), 'invalid_token'],
    ['a lifetime over 60 s (exp - iat)', () => dispatchToken({ model: 'classifier', body: BODY, key: h.mesh, iat: now() - 10, exp: now() + 55 }), 'invalid_token'],
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

  it('says why a control token is refused, and does not spend the infer permission it lacks', async () => {
    const res = await h.post(INFER, undefined, { raw: BODY, token: await dispatchToken({ model: 'classifier', body: BODY, key: h.mesh, purpose: 'control' }) });
    expect(res.status).toBe(401);
    expect(((await res.json()) as { error: { message: string } }).error.message).toMatch(
      /purpose is "control", good for the repository routes only; this route needs purpose "infer"/,
    );
  });

  it('serves a token that names the version served, and refuses one for another version on either route, naming both', async () => {
    const version = (v: string) => dispatchToken({ model: 'classifier', body: BODY, key: h.mesh, claims: { model_version: v } });
    expect((await h.post(INFER, undefined, { raw: BODY, token: await version('1') })).status).toBe(200);
    expect((await h.post('/v2/models/classifier/versions/1/infer', undefined, { raw: BODY, token: await version('1') })).status).toBe(200);
    for (const p of [INFER, '/v2/models/classifier/versions/1/infer']) {
      const res = await h.post(p, undefined, { raw: BODY, token: await version('2') });
      await expect401(res.clone(), 'invalid_token');
      expect(((await res.json()) as { error: { message: string } }).error.message).toMatch(
        /version "2" of model "classifier", but this request is served at version "1"/,
      );
    }
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
    let asked = 0;
    const jwks = createLocalJWKSet({ keys: [key.publicJwk] });
    const verifier = new DispatchVerifier({
      backendId: BACKEND_ID,
      issuer: EDGE_URL,
      getKey: (header, input) => {
        asked++;
        return jwks(header, input);
      },
      now: () => clock,
      ...(maxLiveTokens ? { maxLiveTokens } : {}),
    });
    const body = new TextEncoder().encode('{}');
    const token = (exp = T + 30, iat = T, claims: Record<string, unknown> = {}) => dispatchToken({ model: 'm', body, key, iat, exp, claims });
    return { verifier, body, token, setClock: (s: number) => (clock = s * 1000), keyLookups: () => asked };
  }

  it('check accepts a token as often as asked; spend takes its jti once (HTTP threads check, the main thread spends)', async () => {
    const { verifier, body, token } = await setup();
    const t = await token();
    const claims = await verifier.check(`Bearer ${t}`, body, 'm', 'infer');
    expect(await verifier.check(`Bearer ${t}`, body, 'm', 'infer')).toEqual(claims);
    verifier.spend(claims);
    expect(() => verifier.spend(claims)).toThrow(/already used/);
    await expect(verifier.verify(`Bearer ${t}`, body, 'm', 'infer')).rejects.toThrow(/already used/);
  });

  it('refuses a token expired past the clock tolerance, saying so', async () => {
    const { verifier, body, token, setClock } = await setup();
    const t = await token();
    setClock(T + 34); // 30 s lifetime + 5 s clock tolerance: expired once exp <= now - 5, as jose had it
    await expect(verifier.check(`Bearer ${t}`, body, 'm', 'infer')).resolves.toMatchObject({ model: 'm' });
    setClock(T + 35);
    const err = await verifier.verify(`Bearer ${t}`, body, 'm', 'infer').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MeshError);
    expect((err as MeshError).code).toBe('invalid_token');
    expect((err as MeshError).message).toMatch(/"exp" claim timestamp check failed \(it has expired\)/);
  });

  it('verifies with the key it resolved once, and asks the JWKS again after KEY_CACHE_MS (30 s)', async () => {
    const { verifier, body, token, setClock, keyLookups } = await setup();
    await verifier.verify(`Bearer ${await token()}`, body, 'm', 'infer');
    await verifier.verify(`Bearer ${await token()}`, body, 'm', 'infer');
    expect(keyLookups()).toBe(1);
    setClock(T + 31);
    await verifier.check(`Bearer ${await token(T + 60, T + 31)}`, body, 'm', 'infer');
    expect(keyLookups()).toBe(2);
  });

  it('accepts exp 60 s ahead, refuses 61 s ahead', async () => {
    const { verifier, body, token } = await setup();
    await expect(verifier.verify(`Bearer ${await token(T + 60)}`, body, 'm', 'infer')).resolves.toMatchObject({ model: 'm' });
    await expect(verifier.verify(`Bearer ${await token(T + 61)}`, body, 'm', 'infer')).rejects.toMatchObject({
      code: 'invalid_token',
      message: expect.stringMatching(/expires 61 s from now; at most 60 s/),
    });
  });

  it('adds no clock tolerance to exp: a token from an edge whose clock is ahead still expires within 60 s of the backend\'s now', async () => {
    const { verifier, body, token } = await setup();
    // Issued 3 s in this backend's future (within the tolerance), living 58 s: it would end 61 s from now.
    await expect(verifier.check(`Bearer ${await token(T + 61, T + 3)}`, body, 'm', 'infer')).rejects.toMatchObject({ code: 'invalid_token' });
    await expect(verifier.check(`Bearer ${await token(T + 60, T + 3)}`, body, 'm', 'infer')).resolves.toMatchObject({ iat: T + 3 });
  });

  it('refuses a token that lives more than 60 s (exp - iat) even when it expires within 60 s', async () => {
    const { verifier, body, token } = await setup();
    await expect(verifier.check(`Bearer ${await token(T + 50, T - 11)}`, body, 'm', 'infer')).rejects.toMatchObject({
      code: 'invalid_token',
      message: expect.stringMatching(/lives 61 s \(exp - iat\); at most 60 s/),
    });
    await expect(verifier.check(`Bearer ${await token(T + 50, T - 10)}`, body, 'm', 'infer')).resolves.toMatchObject({ exp: T + 50 });
  });

  it('keeps the clock tolerance for expiry and for iat in the future', async () => {
    const { verifier, body, token, setClock } = await setup();
    const t = await token(T + 30);
    setClock(T + 34); // expired 4 s ago by this clock: within the 5 s tolerance
    await expect(verifier.check(`Bearer ${t}`, body, 'm', 'infer')).resolves.toMatchObject({ exp: T + 30 });
    setClock(T);
    await expect(verifier.check(`Bearer ${await token(T + 40, T + 5)}`, body, 'm', 'infer')).resolves.toMatchObject({ iat: T + 5 });
    await expect(verifier.check(`Bearer ${await token(T + 40, T + 6)}`, body, 'm', 'infer')).rejects.toMatchObject({ code: 'invalid_token' });
  });

  it('takes a token only for its purpose: infer for inference, control for the repository', async () => {
    const { verifier, body, token } = await setup();
    const infer = await token();
    const control = await token(T + 30, T, { purpose: 'control' });
    await expect(verifier.check(`Bearer ${infer}`, body, 'm', 'control')).rejects.toMatchObject({
      code: 'invalid_token',
      message: expect.stringMatching(/purpose is "infer", good for the inference routes only; this route needs purpose "control"/),
    });
    await expect(verifier.check(`Bearer ${control}`, body, 'm', 'infer')).rejects.toMatchObject({ code: 'invalid_token' });
    await expect(verifier.check(`Bearer ${control}`, body, 'm', 'control')).resolves.toMatchObject({ purpose: 'control' });
    await expect(verifier.check(`Bearer ${await token(T + 30, T, { purpose: 'INFER' })}`, body, 'm', 'infer')).rejects.toMatchObject({
      message: expect.stringMatching(/purpose is "INFER", not a purpose/),
    });
  });

  it('refuses with 503 rather than forget live jtis when full, and takes tokens again once they expire', async () => {
    const { verifier, body, token, setClock } = await setup(2);
    await verifier.verify(`Bearer ${await token()}`, body, 'm', 'infer');
    await verifier.verify(`Bearer ${await token()}`, body, 'm', 'infer');
    const third = await token(T + 60);
    await expect(verifier.verify(`Bearer ${third}`, body, 'm', 'infer')).rejects.toMatchObject({ code: 'no_capacity', status: 503 });
    setClock(T + 40); // the first two expired (30 s + 5 s tolerance); the third lives until T + 60
    await expect(verifier.verify(`Bearer ${third}`, body, 'm', 'infer')).resolves.toMatchObject({ model: 'm' });
  });
});
