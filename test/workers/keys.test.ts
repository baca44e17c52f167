/**
 * Signing-key rotation (workers/keys.ts, docs/key-rotation.md) and the direct
 * compact-JWS signer, inside workerd: pending keys are published before they
 * sign, the switch happens at `use_from`, old keys keep verifying, retired keys
 * stay in the JWKS for the dispute window and in the archive forever.
 */

import { env } from 'cloudflare:workers';
import { base64url as joseB64url, CompactSign, createLocalJWKSet, decodeProtectedHeader, importJWK, jwtVerify, SignJWT, type JWK } from 'jose';
import { describe, expect, it } from 'vitest';
import { MeshError } from '../../shared/errors.ts';
import { generateEd25519, issueKey } from '../../shared/keys.ts';
import { ALGORITHMS, KEY_AUDIENCE, TYP, type ReceiptClaims } from '../../shared/jwt.ts';
import { app } from '../../workers/app.ts';
import type { Env } from '../../workers/env.ts';
import { base64url, base64urlPortable, sign, signingKeys } from '../../workers/keys.ts';
import { signReceipt } from '../../workers/inference/receipts.ts';

const DAY = 24 * 3600 * 1000;
const iso = (ms: number) => new Date(ms).toISOString();

interface MeshEnvOptions {
  signing: JWK[];
  retired?: JWK[];
  disputeDays?: string;
}

function meshEnv(o: MeshEnvOptions): Env {
  return {
    ...env,
    MESH_SIGNING_KEYS: JSON.stringify({ keys: o.signing }),
    ...(o.retired ? { MESH_RETIRED_KEYS: JSON.stringify({ keys: o.retired }) } : {}),
    ...(o.disputeDays !== undefined ? { RECEIPT_DISPUTE_DAYS: o.disputeDays } : {}),
  } as Env;
}

async function pair(kid: string, useFrom?: number) {
  const p = await generateEd25519(kid);
  return { ...p, signing: useFrom === undefined ? p.privateJwk : { ...p.privateJwk, use_from: iso(useFrom) } };
}

function retiredJwk(p: { publicJwk: JWK }, retiredAt: number): JWK {
  return { ...p.publicJwk, retired_at: iso(retiredAt) } as JWK;
}

async function get(path: string, e: Env) {
  const res = await app.request(`https://mesh.test${path}`, {}, e);
  return { res, body: (await res.json()) as { keys: (JWK & { retired_at?: string })[] } & Record<string, unknown> };
}

const kids = (jwks: { keys: JWK[] }) => jwks.keys.map((k) => k.kid);

function receiptClaims(extra: Partial<ReceiptClaims> = {}): ReceiptClaims {
  return {
    iss: 'https://mesh.test',
    sub: 'consumer-1',
    jti: crypto.randomUUID(),
    iat: Math.floor(Date.now() / 1000),
    model: 'embed',
    model_version: '1',
    provider: 'prov-1',
    backend: 'backend-eu-1',
    region: 'eu-west',
    pop: 'AMS',
    units: { input: 12, output: 384 },
    amount: 1234,
    input_sha256: 'a'.repeat(64),
    output_sha256: 'b'.repeat(64),
    latency_ms: 17,
    cache: 'miss',
    verify: 'none',
    attestation: 'x'.repeat(350),
    ...extra,
  };
}

async function verifyReceipt(token: string, jwks: { keys: JWK[] }) {
  return jwtVerify(token, createLocalJWKSet(jwks), { algorithms: ALGORITHMS, typ: TYP.receipt, issuer: 'https://mesh.test' });
}

async function expectNotReady(e: Env, message: RegExp) {
  const err = await signingKeys(e).then(
    () => undefined,
    (x: unknown) => x,
  );
  expect(err).toBeInstanceOf(MeshError);
  expect(err).toMatchObject({ code: 'not_ready', status: 503 });
  expect((err as Error).message).toMatch(message);
  const ready = await app.request('https://mesh.test/v2/health/ready', {}, e);
  expect(ready.status).toBe(503);
  expect(await ready.json()).toMatchObject({ ready: false });
}

describe('signing-key rotation', () => {
  it('publishes a pending key before it signs; the old key keeps signing', async () => {
    const old = await pair('mesh-2030-01');
    const next = await pair('mesh-2030-02', Date.now() + 3600_000);
    const e = meshEnv({ signing: [next.signing, old.signing] });

    const { res, body } = await get('/.well-known/jwks.json', e);
    expect(res.status).toBe(200);
    expect(res.headers.get('cache-control')).toBe('public, max-age=300');
    expect(kids(body)).toEqual(['mesh-2030-02', 'mesh-2030-01']);
    for (const k of body.keys) {
      expect(k).toEqual({ kty: 'OKP', crv: 'Ed25519', x: expect.any(String), kid: k.kid, alg: 'EdDSA', use: 'sig' });
    }

    const keys = await signingKeys(e);
    expect(keys.kid).toBe('mesh-2030-01');
    const receipt = await signReceipt(keys, receiptClaims());
    expect(decodeProtectedHeader(receipt)).toEqual({ alg: 'EdDSA', typ: TYP.receipt, kid: 'mesh-2030-01' });
    await verifyReceipt(receipt, body);

    // Operator keys it issues name the old kid too, and verify against every listed key.
    const bearer = await issueKey(keys.key, keys.kid, { issuer: 'https://mesh.test', sub: 'c-1', role: 'consumer' });
    expect(decodeProtectedHeader(bearer).kid).toBe('mesh-2030-01');
    expect([...keys.verifyKeys.keys()]).toEqual(['mesh-2030-02', 'mesh-2030-01']);
  });

  it('signs with the new key once use_from has passed; the old key is still published and still verifies', async () => {
    const old = await pair('mesh-2030-01');
    const next = await pair('mesh-2030-02', Date.now() - 60_000);
    const e = meshEnv({ signing: [next.signing, old.signing] });
    const keys = await signingKeys(e);
    expect(keys.kid).toBe('mesh-2030-02');

    const { body: jwks } = await get('/.well-known/jwks.json', e);
    expect(kids(jwks)).toEqual(['mesh-2030-02', 'mesh-2030-01']);
    const fresh = await signReceipt(keys, receiptClaims());
    expect(decodeProtectedHeader(fresh).kid).toBe('mesh-2030-02');
    await verifyReceipt(fresh, jwks);

    // A receipt the old key signed before the switch still verifies against the published JWKS.
    const before = await new SignJWT({ ...receiptClaims() })
      .setProtectedHeader({ alg: 'EdDSA', typ: TYP.receipt, kid: 'mesh-2030-01' })
      .sign(await importJWK(old.privateJwk, 'EdDSA'));
    await verifyReceipt(before, jwks);

    // And a bearer key the old key issued still verifies with the edge's verify keys.
    const bearer = await issueKey(await importJWK(old.privateJwk, 'EdDSA'), 'mesh-2030-01', {
      issuer: 'https://mesh.test',
      sub: 'c-1',
      role: 'consumer',
    });
    const { payload } = await jwtVerify(bearer, (h) => keys.verifyKeys.get(h.kid!)!, {
      algorithms: ALGORITHMS,
      typ: TYP.key,
      audience: KEY_AUDIENCE,
    });
    expect(payload.sub).toBe('c-1');
  });

  it('switches at use_from on the same cached keys object (injected time)', async () => {
    const t = Date.now() + DAY;
    const old = await pair('k-old');
    const mid = await pair('k-mid', t - 3600_000);
    const next = await pair('k-next', t);
    const keys = await signingKeys(meshEnv({ signing: [next.signing, mid.signing, old.signing] }));
    expect(keys.kid).toBe('k-old');
    expect(keys.active(t - 3600_001).kid).toBe('k-old');
    expect(keys.active(t - 3600_000).kid).toBe('k-mid');
    expect(keys.active(t - 1).kid).toBe('k-mid');
    expect(keys.active(t).kid).toBe('k-next');
    expect(keys.active(t + 10 * DAY).kid).toBe('k-next');
    // Going back re-evaluates rather than trusting the cached answer.
    expect(keys.active(t - 2 * DAY).kid).toBe('k-old');
    expect(keys.active(t - 1).kid).toBe('k-mid');
    // `kid` and `key` name the same key at the same instant.
    expect(keys.active(t).key).not.toBe(keys.active(t - 1).key);
  });

  it('switches by itself on the real clock, no reload', async () => {
    const old = await pair('clock-old');
    const next = await pair('clock-new', Date.now() + 150);
    const keys = await signingKeys(meshEnv({ signing: [next.signing, old.signing] }));
    expect(keys.kid).toBe('clock-old');
    expect(decodeProtectedHeader(await sign(keys, TYP.receipt, { a: 1 })).kid).toBe('clock-old');
    await new Promise((r) => setTimeout(r, 250));
    expect(await signingKeys(meshEnv({ signing: [next.signing, old.signing] }))).toBe(keys);
    expect(keys.kid).toBe('clock-new');
    expect(decodeProtectedHeader(await sign(keys, TYP.receipt, { a: 1 })).kid).toBe('clock-new');
  });

  it('keeps lists without use_from as they were: the first key signs', async () => {
    const a = await pair('a');
    const b = await pair('b');
    const keys = await signingKeys(meshEnv({ signing: [a.signing, b.signing] }));
    expect(keys.kid).toBe('a');
    expect(kids(keys.publicJwks)).toEqual(['a', 'b']);
  });

  it('publishes retired keys for the dispute window, and every key in the archive', async () => {
    const now = Date.now();
    const current = await pair('k-2030-03');
    const recent = await pair('k-2030-02');
    const ancient = await pair('k-2029-01');
    const e = meshEnv({ signing: [current.signing], retired: [retiredJwk(recent, now - 10 * DAY), retiredJwk(ancient, now - 100 * DAY)] });

    const { body: jwks } = await get('/.well-known/jwks.json', e);
    expect(kids(jwks)).toEqual(['k-2030-03', 'k-2030-02']);
    expect(jwks.keys[1]).toEqual({ kty: 'OKP', crv: 'Ed25519', x: recent.publicJwk.x, kid: 'k-2030-02', alg: 'EdDSA', use: 'sig' });

    const { res, body: archive } = await get('/.well-known/jwks-archive.json', e);
    expect(res.status).toBe(200);
    expect(res.headers.get('cache-control')).toMatch(/^public, max-age=\d+$/);
    expect(archive.keys).toEqual([
      { kty: 'OKP', crv: 'Ed25519', x: current.publicJwk.x, kid: 'k-2030-03', alg: 'EdDSA', use: 'sig' },
      { kty: 'OKP', crv: 'Ed25519', x: recent.publicJwk.x, kid: 'k-2030-02', alg: 'EdDSA', use: 'sig', retired_at: iso(now - 10 * DAY) },
      { kty: 'OKP', crv: 'Ed25519', x: ancient.publicJwk.x, kid: 'k-2029-01', alg: 'EdDSA', use: 'sig', retired_at: iso(now - 100 * DAY) },
    ]);
    for (const k of [...jwks.keys, ...archive.keys]) expect(k).not.toHaveProperty('d');

    // A receipt the long-retired key signed no longer verifies against jwks.json, but does against the archive.
    const old = await new SignJWT({ ...receiptClaims() })
      .setProtectedHeader({ alg: 'EdDSA', typ: TYP.receipt, kid: 'k-2029-01' })
      .sign(await importJWK(ancient.privateJwk, 'EdDSA'));
    await expect(verifyReceipt(old, jwks)).rejects.toThrow();
    await verifyReceipt(old, archive);

    // Retired keys never sign and never verify bearer keys.
    const keys = await signingKeys(e);
    expect(keys.kid).toBe('k-2030-03');
    expect([...keys.verifyKeys.keys()]).toEqual(['k-2030-03']);
    // The recent one leaves jwks.json when its window closes (injected time).
    expect(kids(keys.jwks(now - 10 * DAY + 90 * DAY - 1))).toEqual(['k-2030-03', 'k-2030-02']);
    expect(kids(keys.jwks(now - 10 * DAY + 90 * DAY))).toEqual(['k-2030-03']);
    expect(kids(keys.jwks(now - 200 * DAY))).toEqual(['k-2030-03', 'k-2030-02', 'k-2029-01']);
  });

  it('takes the dispute window from RECEIPT_DISPUTE_DAYS', async () => {
    const now = Date.now();
    const current = await pair('cur');
    const recent = await pair('ret');
    const retired = [retiredJwk(recent, now - 10 * DAY)];
    expect(kids(await signingKeys(meshEnv({ signing: [current.signing], retired, disputeDays: '30' })).then((k) => k.publicJwks))).toEqual(['cur', 'ret']);
    const short = await signingKeys(meshEnv({ signing: [current.signing], retired, disputeDays: '5' }));
    expect(short.disputeWindowMs).toBe(5 * DAY);
    expect(kids(short.publicJwks)).toEqual(['cur']);
    expect(kids(short.archiveJwks)).toEqual(['cur', 'ret']);
    await expectNotReady(meshEnv({ signing: [current.signing], retired, disputeDays: 'ninety' }), /RECEIPT_DISPUTE_DAYS/);
  });

  it('reads the vars as JSON values too (a wrangler.toml table, a number)', async () => {
    const now = Date.now();
    const current = await pair('cur');
    const recent = await pair('ret');
    const e = { ...env, MESH_SIGNING_KEYS: JSON.stringify({ keys: [current.signing] }), MESH_RETIRED_KEYS: { keys: [retiredJwk(recent, now - 10 * DAY)] }, RECEIPT_DISPUTE_DAYS: 30 } as unknown as Env;
    const keys = await signingKeys(e);
    expect(keys.disputeWindowMs).toBe(30 * DAY);
    expect(kids(keys.publicJwks)).toEqual(['cur', 'ret']);
    expect(await signingKeys(e)).toBe(keys);
  });

  it('accepts a key being retired while it is still in the secret: published, verifying, never signing', async () => {
    const now = Date.now();
    const next = await pair('new', now - 1000);
    const old = await pair('old');
    const keys = await signingKeys(meshEnv({ signing: [next.signing, old.signing], retired: [retiredJwk(old, now)] }));
    expect(keys.kid).toBe('new');
    expect(kids(keys.publicJwks)).toEqual(['new', 'old']);
    expect(keys.verifyKeys.has('old')).toBe(true);
    expect(keys.archiveJwks.keys.find((k) => k.kid === 'old')).toMatchObject({ retired_at: iso(now) });
    // Retiring the only key that may sign leaves none.
    await expectNotReady(meshEnv({ signing: [old.signing], retired: [retiredJwk(old, now)] }), /No key .* may sign/);
    // The same kid must name the same key in both lists.
    const impostor = await pair('old');
    await expectNotReady(meshEnv({ signing: [next.signing, old.signing], retired: [retiredJwk(impostor, now)] }), /different keys/);
  });

  it('refuses a retired key that carries its private part', async () => {
    const current = await pair('cur');
    const leaked = await pair('leaked');
    await expectNotReady(
      meshEnv({ signing: [current.signing], retired: [{ ...leaked.privateJwk, retired_at: iso(Date.now()) } as JWK] }),
      /public keys only.*"leaked".*"d"/,
    );
    const jwks = await app.request('https://mesh.test/.well-known/jwks.json', {}, meshEnv({ signing: [current.signing], retired: [{ ...leaked.privateJwk, retired_at: iso(Date.now()) } as JWK] }));
    expect(jwks.status).toBe(503);
    expect(await jwks.json()).toMatchObject({ error: { code: 'not_ready' } });
  });

  it('is not ready when no key may sign yet, or a key list is malformed', async () => {
    const a = await pair('a', Date.now() + 3600_000);
    const b = await pair('b', Date.now() + 7200_000);
    await expectNotReady(meshEnv({ signing: [a.signing, b.signing] }), /No key in MESH_SIGNING_KEYS may sign yet/);
    await expectNotReady(meshEnv({ signing: [{ ...a.privateJwk, use_from: 'tomorrow' } as JWK] }), /use_from.*ISO 8601/);
    await expectNotReady(meshEnv({ signing: [{ ...a.privateJwk, use_from: '2030-01-01T00:00:00' } as JWK] }), /ISO 8601/);
    await expectNotReady(meshEnv({ signing: [a.privateJwk, a.privateJwk] }), /twice/);
    await expectNotReady(meshEnv({ signing: [a.publicJwk] }), /private JWK with a kid/);
    await expectNotReady(meshEnv({ signing: [{ ...a.privateJwk, x: b.publicJwk.x }] }), /not the public half/);
    const c = await pair('c');
    await expectNotReady(meshEnv({ signing: [c.signing], retired: [{ ...a.publicJwk }] }), /retired_at/);
  });
});

describe('sign(): the direct compact JWS', () => {
  it('is byte-for-byte what jose signs, and jose verifies it', async () => {
    const p = await pair('direct');
    const keys = await signingKeys(meshEnv({ signing: [p.signing] }));
    const joseKey = await importJWK(p.privateJwk, 'EdDSA');
    for (const claims of [
      { ...receiptClaims() },
      { ...receiptClaims({ sub: 'consumer-ü-东京-🙂', model: 'emb\u2028ed "quoted" \\ </script>' }) },
      { iss: 'https://mesh.test', aud: 'b-1', sub: 'c', jti: 'j', iat: 1_800_000_000, exp: 4_000_000_000, purpose: 'infer', model: 'm', body_sha256: 'f'.repeat(64) },
      {},
    ]) {
      for (const typ of [TYP.receipt, TYP.dispatch]) {
        const ours = await sign(keys, typ, claims);
        const viaSignJwt = await new SignJWT(claims).setProtectedHeader({ alg: 'EdDSA', typ, kid: 'direct' }).sign(joseKey);
        const viaCompact = await new CompactSign(new TextEncoder().encode(JSON.stringify(claims)))
          .setProtectedHeader({ alg: 'EdDSA', typ, kid: 'direct' })
          .sign(joseKey);
        expect(ours).toBe(viaSignJwt);
        expect(ours).toBe(viaCompact);
        const { payload, protectedHeader } = await jwtVerify(ours, await importJWK(p.publicJwk, 'EdDSA'), { algorithms: ALGORITHMS, typ });
        expect(protectedHeader).toEqual({ alg: 'EdDSA', typ, kid: 'direct' });
        expect(payload).toEqual(claims);
      }
    }
  });

  it('encodes base64url like jose, natively and portably', () => {
    for (let n = 0; n <= 70; n++) {
      const bytes = crypto.getRandomValues(new Uint8Array(n));
      const expected = joseB64url.encode(bytes);
      expect(base64url(bytes)).toBe(expected);
      expect(base64urlPortable(bytes)).toBe(expected);
    }
    const big = new Uint8Array(100_000).map((_, i) => (i * 7919) & 0xff);
    expect(base64urlPortable(big)).toBe(joseB64url.encode(big));
  });

  it('signs with the test mesh key through the real env', async () => {
    const keys = await signingKeys(env);
    expect(keys.kid).toBe('test-mesh-key');
    const token = await sign(keys, TYP.receipt, { ...receiptClaims() });
    expect(decodeProtectedHeader(token).kid).toBe('test-mesh-key');
  });
});
