/**
 * Location probes (`POST /v2/mesh/probe`, gpu-backend/src/mesh/probe.ts): the
 * backend answers `{ nonce, signature }`, the signature the provider key's
 * Ed25519 over `mesh-probe:<backendId>:<nonce>`, checkable with the admitted
 * public key through WebCrypto (as the edge checks it); no token is needed; a
 * body that is not `{ "nonce": <16-64 base64url chars> }` is a 400 and one
 * over 1 KiB a 413. On an HTTP worker the probe is answered on the worker
 * itself, never forwarded to the main thread.
 */

import { describe, expect, it } from 'vitest';
import type { JWK } from 'jose';
import { createWorkerApp } from '../../../gpu-backend/src/http/app.ts';
import { Attestor } from '../../../gpu-backend/src/mesh/attestation.ts';
import { PROBE_MAX_BODY_BYTES, ProbeSigner } from '../../../gpu-backend/src/mesh/probe.ts';
import { generateProviderKey, importProviderKey } from '../../../gpu-backend/src/mesh/provider-key.ts';
import { Lifecycle } from '../../../gpu-backend/src/lifecycle.ts';
import { memoryLogger } from '../../../gpu-backend/src/log.ts';
import type { InferencePort } from '../../../gpu-backend/src/serving/executor.ts';
import type { DispatchVerifier } from '../../../gpu-backend/src/mesh/dispatch.ts';
import { BACKEND_ID, errorCode, type Harness, useDemoHarness } from '../helpers.ts';

let h: Harness;
useDemoHarness((built) => (h = built));

const NONCE = 'AbCdEfGhIjKlMnOp_-0123456789';

/** Verifies a probe signature the way the edge does: WebCrypto Ed25519 with the public JWK. */
async function verifies(publicJwk: JWK, backendId: string, nonce: string, signature: string): Promise<boolean> {
  const key = await crypto.subtle.importKey('jwk', { kty: 'OKP', crv: 'Ed25519', x: publicJwk.x! }, { name: 'Ed25519' }, false, ['verify']);
  return crypto.subtle.verify({ name: 'Ed25519' }, key, Buffer.from(signature, 'base64url'), new TextEncoder().encode(`mesh-probe:${backendId}:${nonce}`));
}

function probe(app: { request: (path: string, init: RequestInit) => Response | Promise<Response> }, body: string, headers: Record<string, string> = {}) {
  return Promise.resolve(app.request('/v2/mesh/probe', { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body }));
}

describe('ProbeSigner', () => {
  it('signs mesh-probe:<backendId>:<nonce> with the provider key, and only that text', async () => {
    const pair = await generateProviderKey('probe-key');
    const signer = new ProbeSigner({ key: await importProviderKey(pair.privateJwk), backendId: 'sg-1' });
    const { nonce, signature } = signer.answer({ nonce: NONCE });
    expect(nonce).toBe(NONCE);
    expect(signature).toMatch(/^[A-Za-z0-9_-]{86}$/);
    expect(await verifies(pair.publicJwk, 'sg-1', NONCE, signature)).toBe(true);
    // Another backend's id, another nonce, another key: no.
    expect(await verifies(pair.publicJwk, 'sg-2', NONCE, signature)).toBe(false);
    expect(await verifies(pair.publicJwk, 'sg-1', `${NONCE}x`, signature)).toBe(false);
    const other = await generateProviderKey('other-key');
    expect(await verifies(other.publicJwk, 'sg-1', NONCE, signature)).toBe(false);
  });

  it('signs at most its per-second allowance, then answers 429 rate_limited until the next second', async () => {
    const pair = await generateProviderKey('probe-rate');
    let now = 1_900_000_000_000;
    const signer = new ProbeSigner({ key: await importProviderKey(pair.privateJwk), backendId: 'sg-1', now: () => now, perSecond: 3 });
    for (let i = 0; i < 3; i++) expect(signer.answer({ nonce: NONCE }).nonce).toBe(NONCE);
    expect(() => signer.answer({ nonce: NONCE })).toThrow(expect.objectContaining({ code: 'rate_limited', retryAfter: 1 }));
    now += 1000;
    expect(signer.answer({ nonce: NONCE }).nonce).toBe(NONCE);
  });
});

describe('POST /v2/mesh/probe', () => {
  it('answers without a token: the nonce and its signature by the provider key, not cacheable', async () => {
    const res = await probe(h.backend.app, JSON.stringify({ nonce: NONCE }));
    expect(res.status).toBe(200);
    expect(res.headers.get('cache-control')).toBe('no-store');
    const body = (await res.json()) as { nonce: string; signature: string };
    expect(Object.keys(body).sort()).toEqual(['nonce', 'signature']);
    expect(body.nonce).toBe(NONCE);
    expect(await verifies(h.provider.publicJwk, BACKEND_ID, NONCE, body.signature)).toBe(true);
  });

  it('takes nonces of 16 and 64 base64url characters, and answers each nonce with its own signature', async () => {
    const short = 'a'.repeat(16);
    const long = '_'.repeat(32) + '-'.repeat(32);
    const answers = await Promise.all([short, long].map(async (nonce) => (await (await probe(h.backend.app, JSON.stringify({ nonce }))).json()) as { nonce: string; signature: string }));
    expect(answers.map((a) => a.nonce)).toEqual([short, long]);
    expect(answers[0]!.signature).not.toBe(answers[1]!.signature);
    expect(await verifies(h.provider.publicJwk, BACKEND_ID, long, answers[1]!.signature)).toBe(true);
  });

  it('refuses anything but {"nonce": <16-64 base64url chars>} with 400', async () => {
    const bad: [string, string][] = [
      ['{"nonce":"' + 'a'.repeat(15) + '"}', 'invalid_request'],
      ['{"nonce":"' + 'a'.repeat(65) + '"}', 'invalid_request'],
      ['{"nonce":"abcdefghijklmnop+/"}', 'invalid_request'],
      ['{"nonce":"abcdefghijklmnop=="}', 'invalid_request'],
      ['{"nonce":"abcdefgh ijklmnop"}', 'invalid_request'],
      ['{"nonce":1234567890123456}', 'invalid_request'],
      ['{}', 'invalid_request'],
      ['["' + 'a'.repeat(20) + '"]', 'invalid_request'],
      ['null', 'invalid_request'],
      ['', 'invalid_json'],
      ['{"nonce":', 'invalid_json'],
    ];
    for (const [body, code] of bad) {
      const res = await probe(h.backend.app, body);
      expect(res.status, body).toBe(400);
      expect(await errorCode(res), body).toBe(code);
    }
  });

  it('refuses a body over 1 KiB with 413, with or without a content-length', async () => {
    const big = JSON.stringify({ nonce: NONCE, pad: 'x'.repeat(PROBE_MAX_BODY_BYTES) });
    const declared = await probe(h.backend.app, big, { 'content-length': String(Buffer.byteLength(big)) });
    expect(declared.status).toBe(413);
    expect(await errorCode(declared)).toBe('body_too_large');
    const streamed = await h.backend.app.request('/v2/mesh/probe', {
      method: 'POST',
      body: new Blob([big]).stream(),
      duplex: 'half',
    } as RequestInit);
    expect(streamed.status).toBe(413);
    expect(await errorCode(streamed)).toBe('body_too_large');
    // Exactly at the limit is fine.
    const padded = JSON.stringify({ nonce: NONCE, pad: '' });
    const fits = JSON.stringify({ nonce: NONCE, pad: 'x'.repeat(PROBE_MAX_BODY_BYTES - padded.length) });
    expect(Buffer.byteLength(fits)).toBe(PROBE_MAX_BODY_BYTES);
    expect((await probe(h.backend.app, fits)).status).toBe(200);
  });

  it('is POST only', async () => {
    expect((await h.get('/v2/mesh/probe')).status).toBe(404);
  });
});

describe('on an HTTP worker', () => {
  it('signs the probe on the worker itself, never forwarding it to the main thread', async () => {
    const pair = await generateProviderKey('worker-probe-key');
    const key = await importProviderKey(pair.privateJwk);
    const forwarded: string[] = [];
    const app = createWorkerApp({
      maxBodyBytes: 64 * 1024,
      dispatch: { check: () => Promise.reject(new Error('no inference here')) } as unknown as Pick<DispatchVerifier, 'check'>,
      attestor: new Attestor({ key, providerId: 'p', backendId: 'w-1' }),
      probe: new ProbeSigner({ key, backendId: 'w-1' }),
      executor: {} as InferencePort,
      lifecycle: new Lifecycle(),
      log: memoryLogger(),
      forward: async (request) => {
        forwarded.push(new URL(request.url).pathname);
        return new Response('{}', { status: 200 });
      },
    });
    const res = await probe(app, JSON.stringify({ nonce: NONCE }));
    expect(res.status).toBe(200);
    const body = (await res.json()) as { nonce: string; signature: string };
    expect(await verifies(pair.publicJwk, 'w-1', NONCE, body.signature)).toBe(true);
    const bad = await probe(app, JSON.stringify({ nonce: 'short' }));
    expect(bad.status).toBe(400);
    expect(await errorCode(bad)).toBe('invalid_request');
    await Promise.resolve(app.request('/v2/health/live'));
    expect(forwarded).toEqual(['/v2/health/live']);
  });
});
