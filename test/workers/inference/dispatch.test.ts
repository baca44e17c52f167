/**
 * What the edge accepts from a backend, one attempt at a time: `dispatch()`
 * against a stubbed `fetch` standing in for the backend (the integration
 * tests, test/integration/hostile.test.ts, run the same lies through a real
 * provider process). Each lie must make the attempt fail, never reach a
 * receipt: no attestation, one over other bytes, for another dispatch, model
 * or backend, other units, an oversize or malformed answer, a malformed 4xx.
 * One signed by another key passes the answer's path (only its claims are
 * read there) and fails the signature check that follows (attestation.ts).
 */

import { env } from 'cloudflare:test';
import { importJWK, SignJWT, decodeJwt, type JWK } from 'jose';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { sha256Hex } from '../../../receipts/index.ts';
import { generateEd25519 } from '../../../shared/keys.ts';
import { TYP, type DispatchClaims, type Units } from '../../../shared/jwt.ts';
import { meter } from '../../../shared/metering.ts';
import type { InferRequest, InferResponse } from '../../../shared/protocol.ts';
import { tokenize } from '../../../shared/tokenizer.ts';
import type { BackendEntry } from '../../../workers/directory/backend.ts';
import { signingKeys } from '../../../workers/keys.ts';
import { signatureProblem } from '../../../workers/inference/attestation.ts';
import { dispatch, type DispatchRequest } from '../../../workers/inference/dispatch.ts';

afterEach(() => vi.restoreAllMocks());

const provider = await generateEd25519('prov-d-key');
const stranger = await generateEd25519('stranger-key');
const providerKey = await importJWK(provider.privateJwk, 'EdDSA');
const strangerKey = await importJWK(stranger.privateJwk, 'EdDSA');

const backend: BackendEntry = {
  id: 'b-1',
  provider: 'prov-d',
  providerKey: provider.publicJwk as JWK,
  region: 'eu-west',
  url: 'http://127.0.0.1:1',
  lat: 50,
  lon: 8,
  executionProvider: 'cpu',
  ready: true,
  models: [{ name: 'embed', version: '3', warm: true, maxBatchSize: 8, p50Ms: 1 }],
  capacity: { slots: 1, inFlight: 0, queued: 0 },
  lastSeen: 0,
  expiresAt: Date.now() + 60_000,
};

const texts = ['hello world', 'a b c'];
const request: InferRequest = { inputs: [{ name: 'text', shape: [2], datatype: 'BYTES', data: texts }] };
const rule = { meter: 'tokens' as const };
const honestUnits: Units = { input: tokenize(texts[0]!).length + tokenize(texts[1]!).length, output: 2 };
const metadata = { name: 'embed', versions: ['3'], platform: 'onnx', inputs: [], outputs: [{ name: 'embedding', datatype: 'FP32' as const, shape: [-1, 2] }] };
const answer: InferResponse = { model_name: 'embed', model_version: '3', outputs: [{ name: 'embedding', datatype: 'FP32', shape: [2, 2], data: [0.1, 0.2, 0.3, 0.4] }] };

async function baseRequest(over: Partial<DispatchRequest> = {}): Promise<DispatchRequest> {
  const body = new TextEncoder().encode(JSON.stringify(request));
  return {
    keys: await signingKeys(env),
    issuer: env.MESH_ISSUER,
    consumer: 'consumer-1',
    model: 'embed',
    body,
    bodySha256: await sha256Hex(body),
    timeoutMs: 5_000,
    maxResponseBytes: 64 * 1024,
    expect: { model: 'embed', rows: 2, metadata },
    meter: (a) => meter(rule, request.inputs, a.outputs),
    ...over,
  };
}

interface Lie {
  key?: CryptoKey | Uint8Array;
  jti?: string;
  model?: string;
  units?: unknown;
  /** Attest these bytes but send others. */
  sendBytes?: Uint8Array;
  noAttestation?: boolean;
  typ?: string;
  sub?: string;
  body?: unknown;
  status?: number;
  contentType?: string;
}

/** Stubs the backend: answers the dispatch with `lie` applied; returns the dispatch claims it saw. */
function stubBackend(lie: Lie = {}): DispatchClaims[] {
  const seen: DispatchClaims[] = [];
  vi.spyOn(globalThis, 'fetch').mockImplementation(async (_input: RequestInfo | URL, init?: RequestInit) => {
    const token = new Headers(init?.headers).get('authorization')!.slice('Bearer '.length);
    const claims = decodeJwt(token) as unknown as DispatchClaims;
    seen.push(claims);
    const raw = lie.body === undefined ? answer : lie.body;
    const bytes = typeof raw === 'string' ? new TextEncoder().encode(raw) : new TextEncoder().encode(JSON.stringify(raw));
    const headers = new Headers({ 'content-type': lie.contentType ?? 'application/json' });
    if (!lie.noAttestation) {
      const att = await new SignJWT({
        jti: lie.jti ?? claims.jti,
        model: lie.model ?? claims.model,
        output_sha256: await sha256Hex(bytes),
        units: (lie.units ?? honestUnits) as Units,
      })
        .setProtectedHeader({ alg: 'EdDSA', typ: lie.typ ?? TYP.attestation, kid: 'k' })
        .setIssuer(backend.provider)
        .setSubject(lie.sub ?? backend.id)
        .setIssuedAt()
        .sign(lie.key ?? providerKey);
      headers.set('x-provider-attestation', att);
    }
    return new Response(lie.sendBytes ?? bytes, { status: lie.status ?? 200, headers });
  });
  return seen;
}

describe('dispatch: the token the edge sends', () => {
  it('is an infer token bound to the model, the version the backend announced, and the body', async () => {
    const seen = stubBackend();
    const req = await baseRequest();
    const result = await dispatch(backend, req);
    expect(result.kind).toBe('ok');
    expect(seen[0]).toMatchObject({ aud: 'b-1', purpose: 'infer', model: 'embed', model_version: '3', body_sha256: req.bodySha256 });
    expect(seen[0]!.exp - seen[0]!.iat).toBeLessThanOrEqual(60);
  });
});

describe('dispatch: what the edge refuses from a backend', () => {
  it('accepts the honest answer, with the units the mesh counted', async () => {
    stubBackend();
    const result = await dispatch(backend, await baseRequest());
    expect(result).toMatchObject({ kind: 'ok', units: honestUnits, answer: { model_name: 'embed' } });
  });

  const lies: [string, Lie, RegExp][] = [
    ['no attestation', { noAttestation: true }, /no attestation/],
    ['an attestation of another typ', { typ: 'mesh-receipt+jwt' }, /header is not EdDSA mesh-attestation/],
    ['an attestation naming another backend', { sub: 'b-2' }, /another provider or backend/],
    ['an attestation over other bytes', { sendBytes: new TextEncoder().encode(JSON.stringify({ ...answer, id: 'x' })) }, /does not match the bytes/],
    ['an attestation for another dispatch', { jti: 'someone-elses' }, /another dispatch/],
    ['an attestation naming another model', { model: 'classifier' }, /another model/],
    ['inflated units', { units: { input: honestUnits.input * 1000, output: 2 } }, /differ from the mesh's count/],
    ['units of another kind', { units: 1e300 }, /differ from the mesh's count/],
    ['rows claimed that were not answered', { units: { input: honestUnits.input, output: 3 } }, /differ from the mesh's count/],
    ['a shape of a billion rows', { body: { ...answer, outputs: [{ name: 'embedding', datatype: 'FP32', shape: [1e9, 2], data: [1, 2] }] } }, /more than|does not match/],
    ['data that does not fill its shape', { body: { ...answer, outputs: [{ name: 'embedding', datatype: 'FP32', shape: [2, 3], data: [1, 2] }] } }, /does not match/],
    ['another row count than asked', { body: { ...answer, outputs: [{ name: 'embedding', datatype: 'FP32', shape: [1, 2], data: [1, 2] }] } }, /1 rows for 2 asked/],
    ['an output the model does not have', { body: { ...answer, outputs: [{ name: 'secret', datatype: 'FP32', shape: [2, 2], data: [1, 2, 3, 4] }] } }, /not an output of the model/],
    ['strings in a float output', { body: { ...answer, outputs: [{ name: 'embedding', datatype: 'FP32', shape: [2, 1], data: ['a', 'b'] }] } }, /not FP32/],
    ['an answer that is not JSON', { body: '<html>' }, /not JSON/],
    ['an answer for another model', { body: { ...answer, model_name: 'classifier' } }, /another model/],
    ['a 500', { status: 500 }, /HTTP 500/],
    ['a 400 in HTML', { status: 400, body: '<h1>bad</h1>', contentType: 'text/html' }, /not JSON/],
    ['a 400 of another shape', { status: 400, body: { message: 'no' } }, /not \{ error/],
  ];
  for (const [name, lie, reason] of lies) {
    it(`refuses ${name}`, async () => {
      stubBackend(lie);
      const result = await dispatch(backend, await baseRequest());
      expect(result.kind).toBe('failed');
      if (result.kind === 'failed') expect(result.reason).toMatch(reason);
    });
  }

  it("lets an attestation signed by another provider's key through on the answer's path, and its signature fails after", async () => {
    stubBackend({ key: strangerKey });
    const result = await dispatch(backend, await baseRequest());
    expect(result.kind).toBe('ok');
    if (result.kind !== 'ok') return;
    expect(await signatureProblem(result.attestation, backend)).toMatch(/does not verify with prov-d's admitted key/);
    stubBackend();
    const honest = await dispatch(backend, await baseRequest());
    expect(honest.kind === 'ok' && (await signatureProblem(honest.attestation, backend))).toBeUndefined();
  });

  it('refuses an answer larger than the cap, without reading it all', async () => {
    let pulled = 0;
    vi.spyOn(globalThis, 'fetch').mockImplementation(async () => {
      const body = new ReadableStream<Uint8Array>({ pull: (c) => void (pulled++, c.enqueue(new Uint8Array(16 * 1024))) });
      return new Response(body, { status: 200 });
    });
    const result = await dispatch(backend, await baseRequest({ maxResponseBytes: 64 * 1024 }));
    expect(result).toMatchObject({ kind: 'failed', reason: expect.stringMatching(/larger than 65536 bytes/) });
    expect(pulled).toBeLessThan(10);
  });

  it('checks the outputs against the model metadata when it has it, and says when only the metadata disagrees', async () => {
    stubBackend();
    const wider = { ...metadata, outputs: [{ name: 'embedding', datatype: 'FP32' as const, shape: [-1, 4] }] };
    const result = await dispatch(backend, await baseRequest({ expect: { model: 'embed', rows: 2, metadata: wider } }));
    expect(result).toMatchObject({ kind: 'failed', metadataMismatch: true, reason: expect.stringMatching(/the model's is \[-1,4\]/) });
  });

  it('passes a well-formed 4xx on as the error it states', async () => {
    stubBackend({ status: 400, body: { error: { code: 'invalid_tensor', message: 'Input "text" is wrong.' } } });
    const result = await dispatch(backend, await baseRequest());
    expect(result).toEqual({ kind: 'rejected', status: 400, code: 'invalid_tensor', message: 'Input "text" is wrong.' });
  });
});
