/**
 * Re-execution and redundant mode against stubbed backends (`fetch` stands in
 * for them; test/integration/verification.test.ts runs real provider
 * processes): who is asked to check (another provider, the same version, the
 * same request as the consumer's, so nothing marks it), what a disagreement
 * files (proven against the odd one out with a referee, unresolved without
 * one), and what a redundant pair answers.
 */

import { env } from 'cloudflare:test';
import { decodeJwt, importJWK, SignJWT, type JWK } from 'jose';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { DEFAULT_RULE, sha256Hex, verifyDispute, type Jwks } from '../../../receipts/index.ts';
import { generateEd25519 } from '../../../shared/keys.ts';
import { TYP, type DispatchClaims, type ReceiptClaims } from '../../../shared/jwt.ts';
import { meter } from '../../../shared/metering.ts';
import type { InferRequest } from '../../../shared/protocol.ts';
import { isMeshError } from '../../../shared/errors.ts';
import type { BackendEntry } from '../../../workers/directory/backend.ts';
import type { CatalogueModel } from '../../../workers/inference/catalogue.ts';
import { dispatch } from '../../../workers/inference/dispatch.ts';
import { signReceipt } from '../../../workers/inference/receipts.ts';
import { signingKeys } from '../../../workers/keys.ts';
import type { Scored } from '../../../workers/routing/score.ts';
import type { DisputeDocument, Execution } from '../../../workers/verification/disputes.ts';
import { runPair } from '../../../workers/verification/redundant.ts';
import { reexecute, type CheckContext } from '../../../workers/verification/reexecute.ts';
import { call, keyFor } from '../helpers.ts';

afterEach(() => vi.restoreAllMocks());

const MODEL = 'classifier';
const entry: CatalogueModel = { name: MODEL, meter: 'requests', price: { input: 0, output: 3 }, rule: DEFAULT_RULE };
const request: InferRequest = { inputs: [{ name: 'features', shape: [1, 2], datatype: 'FP32', data: [0.5, 0.25] }] };
const body = new TextEncoder().encode(JSON.stringify(request));
const TRUTH = [0.1, 0.2, 0.7];

interface Fake {
  backend: BackendEntry;
  key: CryptoKey | Uint8Array;
  /** What it answers. */
  data: number[];
}

let run = 0;

/** Admits `n` providers (fresh ids per test) and gives each a backend; `versions` per backend (default '1'). */
async function fakes(specs: { provider: string; data?: number[]; version?: string }[]): Promise<Fake[]> {
  run++;
  const keys = new Map<string, { key: CryptoKey | Uint8Array; jwk: JWK }>();
  for (const p of new Set(specs.map((s) => s.provider))) {
    const id = `rx${run}-${p}`;
    const pair = await generateEd25519(`${id}-key`);
    const res = await call('/admin/providers', { method: 'POST', token: await keyFor('admin'), body: JSON.stringify({ id, publicJwk: pair.publicJwk }) });
    expect(res.status).toBeLessThan(300);
    keys.set(p, { key: await importJWK(pair.privateJwk, 'EdDSA'), jwk: pair.publicJwk as JWK });
  }
  return specs.map((s, i) => {
    const provider = `rx${run}-${s.provider}`;
    const id = `${provider}-b${i}`;
    return {
      key: keys.get(s.provider)!.key,
      data: s.data ?? TRUTH,
      backend: {
        id,
        provider,
        providerKey: keys.get(s.provider)!.jwk,
        region: 'eu-west',
        url: `http://${id}.backend.test`,
        lat: 50.1,
        lon: 8.7,
        executionProvider: 'cpu',
        ready: true,
        models: [{ name: MODEL, version: s.version ?? '1', warm: true, maxBatchSize: 8, p50Ms: 1 }],
        capacity: { slots: 4, inFlight: 0, queued: 0 },
        lastSeen: 0,
        expiresAt: Date.now() + 60_000,
      },
    };
  });
}

interface Seen {
  backend: string;
  path: string;
  body: string;
  claims: DispatchClaims;
}

/** Stubs every backend of `all`: each answers its `data`, attested with its provider's key. */
function stubBackends(all: Fake[]): Seen[] {
  const seen: Seen[] = [];
  vi.spyOn(globalThis, 'fetch').mockImplementation(async (input: RequestInfo | URL, init?: RequestInit) => {
    const url = new URL(String(input));
    const fake = all.find((f) => new URL(f.backend.url).host === url.host)!;
    const token = new Headers(init?.headers).get('authorization')!.slice('Bearer '.length);
    const claims = decodeJwt(token) as unknown as DispatchClaims;
    seen.push({ backend: fake.backend.id, path: url.pathname, body: new TextDecoder().decode(init?.body as Uint8Array), claims });
    const bytes = new TextEncoder().encode(
      JSON.stringify({ model_name: MODEL, model_version: claims.model_version, outputs: [{ name: 'probabilities', datatype: 'FP32', shape: [1, 3], data: fake.data }] }),
    );
    const att = await new SignJWT({ jti: claims.jti, model: claims.model, output_sha256: await sha256Hex(bytes), units: { input: 1, output: 1 } })
      .setProtectedHeader({ alg: 'EdDSA', typ: TYP.attestation, kid: 'k' })
      .setIssuer(fake.backend.provider)
      .setSubject(fake.backend.id)
      .setIssuedAt()
      .sign(fake.key);
    return new Response(bytes, { headers: { 'content-type': 'application/json', 'x-provider-attestation': att } });
  });
  return seen;
}

async function context(candidates: Fake[], waits: Promise<unknown>[] = []): Promise<CheckContext & { waits: Promise<unknown>[] }> {
  return {
    env,
    request: {
      keys: await signingKeys(env),
      issuer: env.MESH_ISSUER,
      consumer: 'consumer-rx',
      model: MODEL,
      body,
      bodySha256: await sha256Hex(body),
      timeoutMs: 5_000,
      maxResponseBytes: 64 * 1024,
      expect: { model: MODEL, rows: 1 },
      meter: (a) => meter(entry, request.inputs, a.outputs),
    },
    entry,
    candidates: candidates.map((f) => ({ backend: f.backend, model: f.backend.models[0]! }) as Scored),
    regionSize: () => 4,
    pop: 'FRA',
    modelVersion: '1',
    waits,
  };
}

/** The consumer's answer from `fake`, with its signed receipt, as run.ts hands it over. */
async function answered(ctx: CheckContext, fake: Fake): Promise<Execution> {
  const result = await dispatch(fake.backend, ctx.request);
  if (result.kind !== 'ok') throw new Error(`the stub did not answer: ${JSON.stringify(result)}`);
  const jti = crypto.randomUUID();
  const claims: ReceiptClaims = {
    iss: env.MESH_ISSUER,
    sub: 'consumer-rx',
    jti,
    iat: Math.floor(Date.now() / 1000),
    model: MODEL,
    model_version: '1',
    provider: fake.backend.provider,
    backend: fake.backend.id,
    region: 'eu-west',
    pop: 'FRA',
    units: result.units,
    amount: 3,
    input_sha256: ctx.request.bodySha256,
    output_sha256: result.outputSha256,
    latency_ms: 1,
    cache: 'miss',
    verify: 'sampled',
    attestation: result.attestation,
  };
  return { backend: fake.backend, attestation: result.attestation, outputSha256: result.outputSha256, oip: result.body, receipt: await signReceipt(ctx.request.keys, claims), receiptJti: jti };
}

/** Disputes that involve any of `fakes`' providers. */
async function disputesOf(all: Fake[]) {
  const providers = new Set(all.map((f) => f.backend.provider));
  return (await env.OPERATOR_REGISTRY.getByName('global').listDisputes('', 1000)).filter((d) => d.providers.some((p) => providers.has(p)));
}

async function document(id: string): Promise<DisputeDocument> {
  return (await (await env.SETTLEMENT_ARCHIVE.get(`disputes/${id}.json`))!.json()) as DisputeDocument;
}

const jwks = async () => (await (await call('/.well-known/jwks.json')).json()) as Jwks;
const lie = TRUTH.map((x, i) => (i === 0 ? x + 0.5 : x));

describe('reexecute: a sampled answer run again elsewhere', () => {
  it('asks the best backend of another provider that runs the same version, with the very request the consumer sent, and files nothing when they agree', async () => {
    // a2 is the answering provider's own; v2 runs another version; b is the one to ask.
    const [a, a2, v2, b] = await fakes([{ provider: 'a' }, { provider: 'a' }, { provider: 'v', version: '2' }, { provider: 'b', data: TRUTH.map((x) => x * (1 + 1e-6)) }]);
    const seen = stubBackends([a!, a2!, v2!, b!]);
    const ctx = await context([a!, a2!, v2!, b!]);
    const answer = await answered(ctx, a!);
    await reexecute(ctx, answer);
    expect(seen.map((s) => s.backend)).toEqual([a!.backend.id, b!.backend.id]);
    const [original, check] = seen;
    expect(check!.path).toBe(original!.path);
    expect(check!.body).toBe(original!.body);
    expect({ sub: check!.claims.sub, model: check!.claims.model, version: check!.claims.model_version, purpose: check!.claims.purpose }).toEqual({
      sub: original!.claims.sub,
      model: original!.claims.model,
      version: original!.claims.model_version,
      purpose: original!.claims.purpose,
    });
    expect(check!.claims.jti).not.toBe(original!.claims.jti);
    expect(await disputesOf([a!, b!])).toEqual([]);
  });

  it('proves a lying answer with a referee: the dispute accuses its provider and withholds its receipt, and checks offline', async () => {
    const [a, b, c] = await fakes([{ provider: 'a', data: lie }, { provider: 'b' }, { provider: 'c' }]);
    stubBackends([a!, b!, c!]);
    const ctx = await context([a!, b!, c!]);
    const answer = await answered(ctx, a!);
    await reexecute(ctx, answer);
    const [d] = await disputesOf([a!, b!, c!]);
    expect(d).toMatchObject({ kind: 'mismatch', verdict: 'proven', accused: a!.backend.provider, withheld: [answer.receiptJti] });
    const report = await verifyDispute(await document(d!.id), await jwks(), { issuer: env.MESH_ISSUER });
    expect(report.runs.map((r) => r.role)).toEqual(['answer', 'check', 'referee']);
    const standing = (await env.OPERATOR_REGISTRY.getByName('global').standings()).find((s) => s.id === a!.backend.provider);
    expect(standing).toMatchObject({ strikes: 1 });
  });

  it('accuses the checker, not the answer, when the checker is the one that lied', async () => {
    const [a, b, c] = await fakes([{ provider: 'a' }, { provider: 'b', data: lie }, { provider: 'c' }]);
    stubBackends([a!, b!, c!]);
    const ctx = await context([a!, b!, c!]);
    const answer = await answered(ctx, a!);
    await reexecute(ctx, answer);
    const [d] = await disputesOf([a!, b!, c!]);
    expect(d).toMatchObject({ verdict: 'proven', accused: b!.backend.provider });
    expect(d!.withheld).toHaveLength(1);
    expect(d!.withheld[0]).not.toBe(answer.receiptJti);
    const claims = (await verifyDispute(await document(d!.id), await jwks())).runs.find((r) => r.role === 'check')!;
    expect(d!.withheld).toEqual([claims.receipt]);
  });

  it("asks a backend ejected from the request's candidates when no other provider is left: the check is off the answer's path", async () => {
    const [a, b] = await fakes([{ provider: 'a' }, { provider: 'b' }]);
    const seen = stubBackends([a!, b!]);
    // b is ejected: not among the request's candidates, only among those with ejected backends.
    const all = await context([a!, b!]);
    const check: CheckContext = { ...(await context([a!])), withEjected: () => all.candidates };
    await reexecute(check, await answered(check, a!));
    expect(seen.map((x) => x.backend)).toEqual([a!.backend.id, b!.backend.id]);
    // Without that list, nobody checks it.
    const alone = await context([a!]);
    await reexecute(alone, await answered(alone, a!));
    expect(seen.map((x) => x.backend)).toEqual([a!.backend.id, b!.backend.id, a!.backend.id]);
  });

  it('files an unresolved dispute, accusing nobody, when no third provider can referee', async () => {
    const [a, b] = await fakes([{ provider: 'a', data: lie }, { provider: 'b' }]);
    stubBackends([a!, b!]);
    const ctx = await context([a!, b!]);
    await reexecute(ctx, await answered(ctx, a!));
    expect(await disputesOf([a!, b!])).toMatchObject([{ verdict: 'unresolved', accused: null, withheld: [] }]);
  });
});

describe('runPair: x-mesh-verify: redundant', () => {
  it('answers when two providers agree', async () => {
    const [a, a2, b] = await fakes([{ provider: 'a' }, { provider: 'a' }, { provider: 'b' }]);
    const seen = stubBackends([a!, a2!, b!]);
    const ctx = await context([a!, a2!, b!]);
    const out = await runPair(ctx, (p) => ctx.waits.push(p));
    expect(out.kind).toBe('agreed');
    if (out.kind !== 'agreed') return;
    expect([out.first.backend.id, out.second.backend.id]).toEqual([a!.backend.id, b!.backend.id]);
    expect(seen.map((s) => s.backend).sort()).toEqual([a!.backend.id, b!.backend.id].sort());
  });

  it('answers 502 verification_failed when they differ, and the refereed dispute follows', async () => {
    const [a, b, c] = await fakes([{ provider: 'a', data: lie }, { provider: 'b' }, { provider: 'c' }]);
    stubBackends([a!, b!, c!]);
    const ctx = await context([a!, b!, c!]);
    const err = await runPair(ctx, (p) => ctx.waits.push(p)).catch((e: unknown) => e);
    expect(isMeshError(err) && err.code).toBe('verification_failed');
    await Promise.all(ctx.waits);
    expect(await disputesOf([a!, b!, c!])).toMatchObject([{ verdict: 'proven', accused: a!.backend.provider }]);
  });

  it('answers 503 no_capacity when only one provider serves the model', async () => {
    const [a, a2] = await fakes([{ provider: 'a' }, { provider: 'a' }]);
    stubBackends([a!, a2!]);
    const ctx = await context([a!, a2!]);
    const err = await runPair(ctx, (p) => ctx.waits.push(p)).catch((e: unknown) => e);
    expect(isMeshError(err) && err.code).toBe('no_capacity');
  });
});
