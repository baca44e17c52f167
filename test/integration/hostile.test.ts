/**
 * Hostile providers on a real local mesh (issue 12): the Worker in workerd
 * (wrangler dev), two honest providers (fra-1 in eu-west, iad-1 in us-east)
 * and one admitted hostile provider (test/helpers/hostile-provider.ts): one
 * process, one key, many backend identities, each a real backend that lies
 * in one way. One test per attack, each saying what the consumer, the honest
 * provider and the edge's routing see; the last one settles everything and
 * checks it with the offline verifier.
 *
 * Layout: each lying identity sits alone (ready) in a region with no honest
 * backend, and the consumer enters at a PoP of that region
 * (`x-mesh-dev-colo`), so the lie is the first candidate and a retry lands on
 * an honest backend. Only one identity is ready at a time; the others
 * heartbeat `ready: false`. An ejection (5 consecutive failures,
 * workers/routing/outliers.ts) lasts 30 s and at most half of a region (at
 * least one backend) is ejected at once, so a test that needs an ejection in
 * a region waits until the last one there is over. Requests are paced so that
 * the retries they cause stay within the retry budget
 * (workers/routing/retry-budget.ts: 20% of requests plus 3 a second over 10 s).
 *
 * A request counts as served when it got a 200 with exactly one
 * `x-mesh-receipt` that verifies against the edge's JWKS, names an honest
 * provider and backend (the one that answered), and carries the units the
 * mesh meters (shared/metering.ts: tokens of the texts, [CLS] included, and
 * one output unit per text).
 *
 * Run: npx vitest run --project integration test/integration/hostile.test.ts
 * (HOSTILE_LOG=<file> keeps every line the edge, the backends and the
 * hostile provider printed; each test prints one `[hostile]` line).
 */

import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createLocalJWKSet, importJWK, jwtVerify, SignJWT, type JSONWebKeySet, type JWTVerifyGetKey } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { meter } from '../../shared/metering.ts';
import { priceOf } from '../../workers/inference/pricing.ts';
import { TYP, type ReceiptClaims } from '../../shared/jwt.ts';
import { ROOT, startMesh, type BackendSpec, type LocalMesh } from '../../scripts/local-mesh.ts';
import { runCli } from '../helpers/cli.ts';
import { ALWAYS_400_BODY, startHostileProvider, type HostileProvider, type IdentitySpec } from '../helpers/hostile-provider.ts';
import { downloadBatch, settle } from '../helpers/settlement.ts';

const HONEST: BackendSpec[] = [
  { id: 'fra-1', region: 'eu-west', provider: 'provider-fra' },
  { id: 'iad-1', region: 'us-east', provider: 'provider-iad' },
];
const HONEST_PROVIDERS = new Set(HONEST.map((b) => b.provider));
const HONEST_IDS = new Set(HONEST.map((b) => b.id));
const HOSTILE = 'provider-hostile';
/** A PoP in each region that has no honest backend: the nearest region to it is its own. */
const POP_OF: Record<string, string> = {
  'ap-southeast': 'SIN',
  'ap-southeast-3': 'CGK',
  'ap-northeast': 'NRT',
  'ap-south': 'BOM',
  'sa-east': 'GRU',
  'af-south': 'JNB',
  'us-west': 'SEA',
};
const SNAPSHOT_REFRESH_MS = 500;
/** workers/routing/outliers.ts defaults. */
const EJECT_AFTER = 5;
const EJECTION_MS = 30_000;
/** workers/routing/retry-budget.ts defaults. */
const BUDGET = { ratio: 0.2, floor: 30, windowMs: 10_000 };
/** The embed model as the operator's catalogue meters it (wrangler.toml MESH_MODELS). */
const EMBED_RULE = { meter: 'tokens', maxTokens: 128 } as const;

let fra1Url = '';
const identity = (name: string, region: string, lie: IdentitySpec['lie'], extra: Partial<IdentitySpec> = {}): IdentitySpec => ({
  name,
  backendId: `hostile-${name}`,
  region,
  lie,
  ...extra,
});
/** The hostile provider's identities, in the order the tests use them. */
function identities(): IdentitySpec[] {
  return [
    // Also serves classifier, which no honest backend does.
    identity('metadata', 'ap-south', 'bad-metadata', { models: ['embed', 'classifier'] }),
    identity('units', 'ap-southeast', 'units-x1000'),
    identity('no-attestation', 'ap-southeast-3', 'no-attestation'),
    identity('foreign-key', 'ap-northeast', 'foreign-key'),
    identity('other-bytes', 'ap-south', 'other-bytes'),
    identity('other-jti', 'sa-east', 'other-jti'),
    identity('other-model', 'af-south', 'other-model'),
    identity('oversize', 'us-west', 'oversize'),
    identity('huge-shape', 'ap-southeast', 'huge-shape'),
    identity('html-400', 'ap-southeast-3', 'html-400'),
    identity('always-400', 'ap-northeast', 'always-400'),
    identity('forwarder', 'sa-east', 'relay', { relayTo: fra1Url, relayRoutes: ['infer', 'unload'] }),
    identity('evicted', 'af-south', 'no-attestation'),
    identity('heartbeats', 'ap-south', 'no-attestation'),
    // Announces the honest fra-1's id from another region, and relays what it gets to the real fra-1.
    identity('claimer', 'ap-northeast', 'relay', { backendId: 'fra-1', relayTo: fra1Url, heartbeating: false }),
  ];
}

let mesh: LocalMesh;
let hostile: HostileProvider;
let dir: string;
let jwks: JWTVerifyGetKey;
const logs: string[] = [];
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const countBy = (xs: string[]) => xs.reduce<Record<string, number>>((o, x) => ({ ...o, [x]: (o[x] ?? 0) + 1 }), {});

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'mesh-hostile-'));
  try {
    mesh = await startMesh({
      port: 0,
      backendPortBase: 0,
      dir,
      backends: HONEST,
      log: (line) => logs.push(line),
      edgeVars: { BACKEND_TTL_SECONDS: '3', SNAPSHOT_REFRESH_MS: String(SNAPSHOT_REFRESH_MS), BACKEND_TIMEOUT_MS: '5000' },
      backendEnv: { HEARTBEAT_INTERVAL_MS: '500', MODELS: 'embed' },
      readyTimeoutMs: 90_000,
    });
    fra1Url = mesh.backends.find((b) => b.id === 'fra-1')!.url;
    jwks = createLocalJWKSet((await (await fetch(`${mesh.edgeUrl}/.well-known/jwks.json`)).json()) as JSONWebKeySet);
    hostile = await startHostileProvider({
      edgeUrl: mesh.edgeUrl,
      adminToken: mesh.adminToken,
      providerId: HOSTILE,
      identities: identities(),
      heartbeatIntervalMs: 500,
      log: (line) => logs.push(line),
    });
  } catch (err) {
    console.error(logs.slice(-200).join('\n'));
    throw err;
  }
}, 180_000);

afterAll(async () => {
  await hostile?.stop();
  await mesh?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
  // HOSTILE_LOG=<file> keeps every line the edge, the backends and the hostile provider printed.
  if (process.env.HOSTILE_LOG) await writeFile(process.env.HOSTILE_LOG, logs.join('\n') + '\n');
});

// ---------------------------------------------------------------------------
// Consumers

interface Sample {
  pop: string;
  at: number;
  status: number;
  body: string;
  /** `x-mesh-receipt` headers received. */
  receipts: number;
  receipt?: string;
  claims?: ReceiptClaims;
  answeredBy: string | undefined;
  /** Why this is not a served request (empty when it is). */
  problems: string[];
}

/** Every request of the file and when the hostile provider saw an attempt: the retry budget's window. */
const sent: number[] = [];
const hostileAttempts: number[] = [];
const samples: Sample[] = [];
let requestNo = 0;

async function hostileInfers(): Promise<number> {
  const { identities: all } = await hostile.state();
  return Object.values(all).reduce((n, i) => n + i.infer, 0);
}

/** Waits until one more retry fits the edge's retry budget with a margin. */
async function paceRetries(): Promise<void> {
  for (;;) {
    const since = Date.now() - BUDGET.windowMs - 500;
    const retries = hostileAttempts.filter((t) => t > since).length;
    const requests = sent.filter((t) => t > since).length;
    if (retries + 2 <= BUDGET.floor + BUDGET.ratio * requests - 2) return;
    await sleep(250);
  }
}

function problemsOfAnswer(route: 'oip' | 'openai', texts: string[], body: string): string[] {
  try {
    if (route === 'oip') {
      const out = (JSON.parse(body) as { outputs: { shape: number[]; data: unknown[] }[] }).outputs[0]!;
      if (out.shape[0] !== texts.length || out.shape[1] !== 256 || out.data.length !== texts.length * 256) return [`answer shape ${JSON.stringify(out.shape)}`];
    } else {
      const out = JSON.parse(body) as { data: { embedding: number[] }[] };
      if (out.data.length !== texts.length || out.data.some((d) => d.embedding.length !== 256)) return ['answer rows'];
    }
    return [];
  } catch (err) {
    return [`answer unreadable: ${(err as Error).message}`];
  }
}

/** One consumer request for `embed` entering at `pop`; the sample says whether it was served as it must be. */
async function consume(pop: string, o: { route?: 'oip' | 'openai'; headers?: Record<string, string> } = {}): Promise<Sample> {
  const route = o.route ?? 'oip';
  await paceRetries();
  const n = ++requestNo;
  const texts = Array.from({ length: 1 + (n % 2) }, (_, i) => `hostile-provider test ${n}.${i}: the quick brown fox jumps over the lazy dog`);
  const body =
    route === 'oip'
      ? JSON.stringify({ inputs: [{ name: 'text', shape: [texts.length], datatype: 'BYTES', data: texts }] })
      : JSON.stringify({ model: 'embed', input: texts });
  const before = await hostileInfers();
  const at = Date.now();
  sent.push(at);
  const res = await fetch(`${mesh.edgeUrl}${route === 'oip' ? '/v2/models/embed/infer' : '/v1/embeddings'}`, {
    method: 'POST',
    // No sampled re-execution (test/integration/verification.test.ts covers it): every attempt here is one the test made.
    headers: {
      authorization: `Bearer ${mesh.consumerKey}`,
      'content-type': 'application/json',
      'x-mesh-dev-colo': pop,
      'x-mesh-verify': 'none',
      ...o.headers,
    },
    body,
    signal: AbortSignal.timeout(30_000),
  });
  const text = await res.text();
  const after = await hostileInfers();
  for (let i = before; i < after; i++) hostileAttempts.push(Date.now());
  const header = res.headers.get('x-mesh-receipt');
  const sample: Sample = {
    pop,
    at,
    status: res.status,
    body: text,
    receipts: header === null ? 0 : header.split(',').length,
    answeredBy: res.headers.get('x-mesh-backend') ?? undefined,
    problems: [],
  };
  samples.push(sample);
  if (res.status !== 200) sample.problems.push(`HTTP ${res.status}: ${text.slice(0, 300)}`);
  if (sample.receipts !== 1) sample.problems.push(`${sample.receipts} receipts`);
  if (header !== null && sample.receipts === 1) {
    sample.receipt = header;
    try {
      sample.claims = (await jwtVerify<ReceiptClaims>(header, jwks, { algorithms: ['EdDSA'], typ: TYP.receipt, issuer: mesh.edgeUrl })).payload;
    } catch (err) {
      sample.problems.push(`receipt does not verify: ${(err as Error).message}`);
    }
  }
  const claims = sample.claims;
  if (claims) {
    if (!HONEST_PROVIDERS.has(claims.provider ?? '') || !HONEST_IDS.has(claims.backend ?? '')) {
      sample.problems.push(`receipt names ${claims.provider}/${claims.backend}`);
    }
    if (claims.backend !== sample.answeredBy) sample.problems.push(`receipt names ${claims.backend}, x-mesh-backend ${sample.answeredBy}`);
    const units = meter(EMBED_RULE, [{ datatype: 'BYTES', shape: [texts.length], data: texts }], []);
    if (claims.units.input !== units.input || claims.units.output !== units.output) {
      sample.problems.push(`receipt units ${JSON.stringify(claims.units)}, the mesh counts ${JSON.stringify(units)}`);
    }
  }
  if (res.status === 200) sample.problems.push(...problemsOfAnswer(route, texts, text));
  return sample;
}

// ---------------------------------------------------------------------------
// The hostile provider's identities

async function adminBackends(): Promise<{ id: string; provider: string; region: string; url: string; ready: boolean }[]> {
  const res = await fetch(`${mesh.edgeUrl}/admin/backends`, { headers: { authorization: `Bearer ${mesh.adminToken}` } });
  return ((await res.json()) as { backends: { id: string; provider: string; region: string; url: string; ready: boolean }[] }).backends;
}

/**
 * Makes the edge's isolate take a fresh snapshot of the directories: a
 * request that finds its snapshot stale refreshes it in the background (and
 * is itself routed on the stale one), so one cheap request after a refresh
 * period, and a moment, leave the next request on a fresh snapshot.
 */
async function freshSnapshot(): Promise<void> {
  await sleep(SNAPSHOT_REFRESH_MS + 50);
  await (await fetch(`${mesh.edgeUrl}/v1/models`, { headers: { authorization: `Bearer ${mesh.consumerKey}` } })).text();
  await sleep(300);
}

/** Sets an identity's `ready`, and waits until the directory says so and the edge's snapshot has it. */
async function setReady(name: string, ready: boolean): Promise<void> {
  const { beat } = await hostile.set(name, { ready });
  expect(beat?.status, `${name}'s heartbeat: ${beat?.body}`).toBe(200);
  const id = hostile.identities.get(name)!.backendId;
  const deadline = Date.now() + 10_000;
  while (!(await adminBackends()).some((b) => b.id === id && b.provider === HOSTILE && b.ready === ready)) {
    if (Date.now() > deadline) throw new Error(`${name} never showed ready=${ready} in /admin/backends`);
    await sleep(100);
  }
  await freshSnapshot();
}

async function infersOf(name: string): Promise<number> {
  return (await hostile.state()).identities[name]!.infer;
}

/** Region -> when its last ejection was caused (at most one may be ejected at once in these one- or two-backend regions). */
const ejectedAt = new Map<string, number>();

async function regionFree(region: string): Promise<void> {
  const last = ejectedAt.get(region);
  if (last !== undefined) await sleep(Math.max(0, last + EJECTION_MS + 1_000 - Date.now()));
}

interface Run {
  samples: Sample[];
  /** Inference calls the identity received. */
  calls: number;
  /** Requests sent after its last call. */
  quiet: number;
}

/**
 * Sends requests from the identity's PoP until it has stopped receiving them
 * (3 requests in a row without a call, after at least `minCalls`), at most
 * `max`; stops at the first request that was not served when `served`.
 */
async function until(name: string, o: { route?: 'oip' | 'openai'; minCalls: number; max: number; stopOnProblem: boolean }): Promise<Run> {
  const spec = hostile.identities.get(name)!;
  const pop = POP_OF[spec.region]!;
  const start = await infersOf(name);
  const run: Run = { samples: [], calls: 0, quiet: 0 };
  for (let i = 0; i < o.max && run.quiet < 3; i++) {
    const s = await consume(pop, o.route ? { route: o.route } : {});
    run.samples.push(s);
    const calls = (await infersOf(name)) - start;
    run.quiet = calls === run.calls && calls >= o.minCalls ? run.quiet + 1 : 0;
    run.calls = calls;
    if (o.stopOnProblem && s.problems.length > 0) break;
  }
  return run;
}

/**
 * The common case of a lying answer: with the identity ready and first, every
 * consumer request is still served (by an honest backend, after a retry),
 * and the identity stops getting requests after the usual count.
 */
async function lyingAnswer(name: string, route: 'oip' | 'openai' = 'oip'): Promise<void> {
  const { region } = hostile.identities.get(name)!;
  await regionFree(region);
  await setReady(name, true);
  let run: Run;
  try {
    run = await until(name, { route, minCalls: EJECT_AFTER, max: 20, stopOnProblem: true });
  } finally {
    await setReady(name, false);
  }
  ejectedAt.set(region, Date.now());
  console.log(`[hostile] ${name}: requests=${run.samples.length} calls=${run.calls} answered_by=${JSON.stringify(run.samples.map((s) => s.answeredBy ?? s.status))}`);
  expect(run.samples.map((s) => s.problems)).toEqual(run.samples.map(() => []));
  expect(run.calls).toBeGreaterThanOrEqual(EJECT_AFTER);
  expect(run.calls).toBeLessThanOrEqual(EJECT_AFTER + 2);
  expect(run.quiet, 'the identity stopped receiving requests').toBe(3);
}

// ---------------------------------------------------------------------------

describe('a hostile provider lying in its answers', () => {
  // First: the edge has no metadata of embed cached yet, so it asks the first candidate.
  it('malformed, huge model metadata is not served to consumers nor used', async () => {
    await setReady('metadata', true);
    try {
      const res = await fetch(`${mesh.edgeUrl}/v2/models/embed`, {
        headers: { authorization: `Bearer ${mesh.consumerKey}`, 'x-mesh-dev-colo': 'BOM' },
      });
      const text = await res.text();
      expect((await hostile.state()).identities.metadata!.metadata, 'the edge asked the hostile identity first').toBeGreaterThanOrEqual(1);
      expect(res.status).toBe(200);
      expect(text.length).toBeLessThan(64 * 1024);
      expect(JSON.parse(text)).toMatchObject({
        name: 'embed',
        inputs: expect.arrayContaining([{ name: 'text', datatype: 'BYTES', shape: [-1] }]),
        outputs: [{ name: 'embedding', datatype: 'FP32', shape: [-1, 256] }],
      });
      // The OpenAI route builds its request from the metadata the edge keeps.
      const s = await consume('BOM', { route: 'openai' });
      expect(s.problems).toEqual([]);
    } finally {
      await setReady('metadata', false);
    }
  });

  it('malformed metadata of a model only the hostile provider serves gets the consumer a clean 502, nothing of the backend', async () => {
    await hostile.set('metadata', { lie: 'malformed-metadata' });
    await setReady('metadata', true);
    try {
      const asked = (await hostile.state()).identities.metadata!.metadata;
      const res = await fetch(`${mesh.edgeUrl}/v2/models/classifier`, {
        headers: { authorization: `Bearer ${mesh.consumerKey}`, 'x-mesh-dev-colo': 'BOM' },
      });
      const text = await res.text();
      expect((await hostile.state()).identities.metadata!.metadata).toBe(asked + 1);
      expect(res.status, text).toBe(502);
      expect(JSON.parse(text)).toMatchObject({ error: { code: 'backend_failed' } });
      expect(text).not.toMatch(/NOT_A_TYPE|hostile|127\.0\.0\.1/);
    } finally {
      await setReady('metadata', false);
    }
  });

  it('attested units inflated x1000 are refused; the receipt carries the metered units', () => lyingAnswer('units'));
  it('an answer without an attestation is refused', () => lyingAnswer('no-attestation'));
  it('an attestation signed by a key the operator never admitted is answered (its claims fit), then disputed after the answer: not paid, and ejected', async () => {
    // The signature is checked after the answer has left (workers/inference/attestation.ts): the consumer is
    // served by the liar with a receipt naming it, that receipt is disputed, and the failures eject it.
    const name = 'foreign-key';
    const { region } = hostile.identities.get(name)!;
    await regionFree(region);
    await setReady(name, true);
    let run: Run;
    try {
      run = await until(name, { minCalls: EJECT_AFTER, max: 20, stopOnProblem: false });
    } finally {
      await setReady(name, false);
    }
    ejectedAt.set(region, Date.now());
    const byLiar = run.samples.filter((s) => s.claims?.provider === HOSTILE);
    console.log(`[hostile] ${name}: requests=${run.samples.length} calls=${run.calls} answered_by=${JSON.stringify(run.samples.map((s) => s.answeredBy ?? s.status))}`);
    expect(run.samples.filter((s) => s.status !== 200 || s.receipts !== 1)).toEqual([]);
    // Its receipts name it (that is what happened); nothing else is wrong with any answer.
    const id = hostile.identities.get(name)!.backendId;
    expect(run.samples.flatMap((s) => s.problems.filter((p) => !p.startsWith(`receipt names ${HOSTILE}/${id}`)))).toEqual([]);
    expect(byLiar.length).toBeGreaterThanOrEqual(EJECT_AFTER - 1);
    expect(byLiar.every((s) => s.claims!.backend === id)).toBe(true);
    expect(run.calls).toBeLessThanOrEqual(EJECT_AFTER + 2);
    expect(run.quiet, 'the identity stopped receiving requests').toBe(3);
  });
  it('an attestation over other bytes (the body changed after signing) is refused', () => lyingAnswer('other-bytes'));
  it('an attestation for another dispatch (jti) is refused', () => lyingAnswer('other-jti'));
  it('an attestation naming another model is refused', () => lyingAnswer('other-model'));
  it('an answer larger than MAX_RESPONSE_BYTES (20 MiB) is refused', () => lyingAnswer('oversize'));
});

describe('a hostile provider lying about identity: heartbeats and dispatch tokens', () => {
  it('a heartbeat claiming another provider\'s backend id, from another region, is refused (403) and gets no traffic', async () => {
    const { beat } = await hostile.set('claimer', { heartbeating: true, ready: true });
    console.log(`[hostile] claim of fra-1 from ap-northeast: ${beat?.status} ${beat?.body}`);
    try {
      expect(beat?.status, beat?.body).toBe(403);
      expect(JSON.parse(beat!.body)).toMatchObject({ error: { code: 'forbidden' } });
      await freshSnapshot();
      const fra1 = (await adminBackends()).filter((b) => b.id === 'fra-1');
      expect(fra1.map((b) => [b.provider, b.region])).toEqual([['provider-fra', 'eu-west']]);
      // Consumers near the claimed region are served by honest backends, never through the claimer.
      const runs = [await consume('NRT'), await consume('NRT'), await consume('NRT')];
      expect(runs.map((s) => s.problems)).toEqual([[], [], []]);
      const state = (await hostile.state()).identities.claimer!;
      expect(state.infer).toBe(0);
      expect(state.beatsAccepted).toBe(0);
    } finally {
      await hostile.set('claimer', { heartbeating: false, ready: false });
    }
  });

  it('a replayed heartbeat (same token, same body) is refused (401 invalid_token)', async () => {
    const res = await hostile.heartbeatAttack('heartbeats', 'replay');
    console.log(`[hostile] heartbeat replay: ${res.status} ${res.body}`);
    expect(res.status, res.body).toBe(401);
    expect(JSON.parse(res.body)).toMatchObject({ error: { code: 'invalid_token' } });
  });

  it('a heartbeat whose body is not the one its token was signed for is refused (401) and changes nothing', async () => {
    const res = await hostile.heartbeatAttack('heartbeats', 'body-mismatch');
    console.log(`[hostile] heartbeat body mismatch: ${res.status} ${res.body}`);
    expect(res.status, res.body).toBe(401);
    expect(JSON.parse(res.body)).toMatchObject({ error: { code: 'invalid_token' } });
    const own = hostile.identities.get('heartbeats')!;
    const entry = (await adminBackends()).find((b) => b.id === own.backendId);
    expect(entry?.url).toBe(own.url);
  });

  it('a heartbeat over 64 KiB is refused before parsing (413 body_too_large)', async () => {
    const res = await hostile.heartbeatAttack('heartbeats', 'oversize');
    console.log(`[hostile] heartbeat oversize: ${res.status} ${res.body}`);
    expect(res.status, res.body).toBe(413);
    expect(JSON.parse(res.body)).toMatchObject({ error: { code: 'body_too_large' } });
  });

  it('an unknown issuer and a bad signature are answered identically', async () => {
    const unknown = await hostile.heartbeatAttack('heartbeats', 'unknown-issuer');
    const forged = await hostile.heartbeatAttack('heartbeats', 'bad-signature');
    console.log(`[hostile] heartbeat unknown issuer: ${unknown.status} ${unknown.body}; bad signature: ${forged.status} ${forged.body}`);
    expect(unknown.status, unknown.body).toBe(401);
    expect(JSON.parse(unknown.body)).toMatchObject({ error: { code: 'invalid_token' } });
    expect([forged.status, forged.contentType, forged.body]).toEqual([unknown.status, unknown.contentType, unknown.body]);
    // The identity's own heartbeats are still accepted.
    const { beat } = await hostile.set('heartbeats', {});
    expect(beat?.status).toBe(200);
  });

  it('a dispatch token forwarded to the honest backend (inference and unload) is refused there (401) and costs it no work', async () => {
    const metric = async (name: string) => {
      const text = await (await fetch(`${fra1Url}/metrics`)).text();
      return text
        .split('\n')
        .filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `))
        .reduce((n, l) => n + Number(l.split(' ').at(-1)), 0);
    };
    const [inferBefore, refusedBefore] = [await metric('nv_inference_count'), await metric('mesh_dispatch_rejected_total')];
    const relayedBefore = (await hostile.state()).identities.forwarder!.relayed.length;
    await setReady('forwarder', true);
    let s: Sample;
    try {
      s = await consume('GRU');
    } finally {
      await setReady('forwarder', false);
    }
    expect(s.problems).toEqual([]);
    const state = (await hostile.state()).identities.forwarder!;
    expect(state.infer).toBe(1);
    const relayed = state.relayed.slice(relayedBefore);
    expect(relayed.map((r) => [r.route, r.status])).toEqual([
      ['infer', 401],
      ['unload', 401],
    ]);
    for (const r of relayed) expect(JSON.parse(r.body)).toMatchObject({ error: { code: 'invalid_token' } });
    // fra-1 refused both tokens, ran only the consumer's own request if it was the one that served it, and still serves embed.
    expect((await metric('mesh_dispatch_rejected_total')) - refusedBefore).toBeGreaterThanOrEqual(2);
    const rows = s.claims?.backend === 'fra-1' ? s.claims.units.output : 0;
    expect((await metric('nv_inference_count')) - inferBefore).toBe(rows);
    expect((await fetch(`${fra1Url}/v2/models/embed/ready`)).status).toBe(200);
  });

  it('an inference token for the honest backend\'s own id (what a claim of its id would have yielded) is refused by its repository routes', async () => {
    // The token the edge would send to whoever heartbeats as fra-1; the test signs it with the local mesh key.
    const body = JSON.stringify({ inputs: [{ name: 'text', shape: [1], datatype: 'BYTES', data: ['captured'] }] });
    const now = Math.floor(Date.now() / 1000);
    const token = await new SignJWT({ purpose: 'infer', model: 'embed', body_sha256: createHash('sha256').update(body).digest('hex') })
      .setProtectedHeader({ alg: 'EdDSA', typ: TYP.dispatch, kid: mesh.meshPrivateJwk.kid! })
      .setIssuer(mesh.edgeUrl)
      .setAudience('fra-1')
      .setSubject('local-consumer')
      .setJti(crypto.randomUUID())
      .setIssuedAt(now)
      .setExpirationTime(now + 30)
      .sign(await importJWK(mesh.meshPrivateJwk, 'EdDSA'));
    const res = await fetch(`${fra1Url}/v2/repository/models/embed/unload`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body,
    });
    const text = await res.text();
    expect(res.status, text).toBe(401);
    expect(JSON.parse(text)).toMatchObject({ error: { code: 'invalid_token', message: expect.stringMatching(/purpose/) } });
    expect((await fetch(`${fra1Url}/v2/models/embed/ready`)).status).toBe(200);
  });
});

describe('a hostile provider lying in its answers (second round, in regions whose ejection is over)', () => {
  it('an answer claiming 1e9 rows with little data is refused (OpenAI route)', () => lyingAnswer('huge-shape', 'openai'));
  it('a 400 with an HTML body is not passed through: the attempt fails', () => lyingAnswer('html-400'));

  it('a well-formed 400 passes through while within the baseline; a backend refusing everything is then treated as failing', async () => {
    const { region } = hostile.identities.get('always-400')!;
    await regionFree(region);
    await setReady('always-400', true);
    let run: Run;
    try {
      run = await until('always-400', { minCalls: 10, max: 30, stopOnProblem: false });
    } finally {
      await setReady('always-400', false);
    }
    ejectedAt.set(region, Date.now());
    const refused = run.samples.filter((s) => s.status === 400);
    console.log(`[hostile] always-400: requests=${run.samples.length} calls=${run.calls} refused=${refused.length} answered_by=${JSON.stringify(run.samples.map((s) => s.answeredBy ?? s.status))}`);
    // The first answers are the backend's verdict, passed through exactly and without a receipt.
    expect(run.samples[0]!.status).toBe(400);
    for (const s of refused) {
      expect(JSON.parse(s.body)).toEqual(ALWAYS_400_BODY);
      expect(s.receipts).toBe(0);
    }
    // Then, after about 10 of its answers, it is failing: consumers are served by an honest backend.
    expect(refused.length).toBeGreaterThanOrEqual(8);
    expect(refused.length).toBeLessThanOrEqual(12);
    const rest = run.samples.filter((s) => s.status !== 400);
    expect(rest.map((s) => s.problems)).toEqual(rest.map(() => []));
    expect(run.samples.slice(-3).every((s) => s.status === 200)).toBe(true);
    expect(run.calls).toBeLessThanOrEqual(20);
    expect(run.quiet, 'the identity stopped receiving requests').toBe(3);
  });
});

describe('labels and removal', () => {
  it('x-mesh-verify: redundant is answered by two honest providers that agree, priced as two executions', async () => {
    const s = await consume('FRA', { headers: { 'x-mesh-verify': 'redundant' } });
    expect(s.problems).toEqual([]);
    const claims = s.claims!;
    expect(claims.verify).toBe('redundant');
    expect(HONEST_PROVIDERS.has(claims.second!.provider) && claims.second!.provider !== claims.provider).toBe(true);
    expect(claims.amount).toBe(2 * priceOf({ input: 0.1, output: 0 }, claims.units));
  });

  it('DELETE /admin/providers/{id} removes the hostile provider: its backends leave the directory and routing within a refresh, and its heartbeats are refused', async () => {
    await setReady('evicted', true);
    // It is routable: the first request from its PoP tries it.
    const first = await consume('JNB');
    expect(first.problems).toEqual([]);
    expect(await infersOf('evicted')).toBe(1);

    const removedAt = Date.now();
    const res = await fetch(`${mesh.edgeUrl}/admin/providers/${HOSTILE}`, { method: 'DELETE', headers: { authorization: `Bearer ${mesh.adminToken}` } });
    expect(res.status, await res.text()).toBeLessThan(300);
    let goneAfter = Infinity;
    while (Date.now() - removedAt < 5_000) {
      if (!(await adminBackends()).some((b) => b.provider === HOSTILE)) {
        goneAfter = Date.now() - removedAt;
        break;
      }
      await sleep(100);
    }
    expect(goneAfter).toBeLessThan(2_000);
    const providers = (await (await fetch(`${mesh.edgeUrl}/admin/providers`, { headers: { authorization: `Bearer ${mesh.adminToken}` } })).json()) as {
      providers: { id: string }[];
    };
    expect(providers.providers.map((p) => p.id)).not.toContain(HOSTILE);

    await freshSnapshot();
    const after = [await consume('JNB'), await consume('JNB'), await consume('JNB')];
    expect(after.map((s) => s.problems)).toEqual([[], [], []]);
    expect(await infersOf('evicted')).toBe(1);

    // Its identities keep heartbeating: every beat after the removal is refused, and none brings a backend back.
    await sleep(1_500);
    const state = await hostile.state();
    const beatsAfter = Object.values(state.identities)
      .filter((i) => i.heartbeating)
      .flatMap((i) => i.beats.filter((b) => b.at > removedAt + 200).map((b) => `${i.name}:${b.status}`));
    console.log(`[hostile] removal: gone from /admin/backends after ${goneAfter} ms; beats after it: ${JSON.stringify(countBy(beatsAfter.map((b) => b.split(':')[1]!)))}`);
    expect(beatsAfter.length).toBeGreaterThan(0);
    expect(beatsAfter.filter((b) => /:(2\d\d|0)$/.test(b))).toEqual([]);
    expect((await adminBackends()).filter((b) => b.provider === HOSTILE)).toEqual([]);
  });
});

describe('settlement', () => {
  it('pays the hostile provider nothing, pays each honest provider the sum of its receipts, and mesh-verify checks every batch', async () => {
    const answered = samples.filter((s) => s.claims !== undefined);
    expect(answered.length).toBeGreaterThan(0);
    // No consumer receipt names the hostile provider but those of the identity whose attestations fail after the answer.
    const liars = answered.filter((s) => s.claims!.provider === HOSTILE);
    expect(liars.map((s) => s.claims!.backend).filter((b) => b !== hostile.identities.get('foreign-key')!.backendId)).toEqual([]);
    const jtis = answered.map((s) => s.claims!.jti);
    const settled = await settle(mesh.edgeUrl, mesh.adminToken, jtis);
    const missing = jtis.filter((j) => !settled.seen.has(j));
    const doubled = [...settled.seen].filter(([, n]) => n > 1).map(([j]) => j);
    console.log(
      `[hostile] settlement: requests=${samples.length} answered=${answered.length} batches=${settled.batches.length} receipts=${settled.receipts.length} missing=${missing.length} doubled=${doubled.length}`,
    );
    expect(missing).toEqual([]);
    expect(doubled).toEqual([]);
    // Its receipts are all disputed: the consumer is charged, the provider paid nothing.
    const disputed = new Set(settled.batches.flatMap((b) => b.disputed));
    expect(settled.receipts.filter((r) => r.provider === HOSTILE && !disputed.has(r.jti)).map((r) => r.jti)).toEqual([]);
    expect(liars.every((s) => disputed.has(s.claims!.jti))).toBe(true);
    for (const b of settled.batches) expect(b.totals.providers[HOSTILE] ?? 0).toBe(0);
    for (const consumer of new Set(settled.receipts.map((r) => r.sub))) {
      const charged = settled.batches.reduce((n, b) => n + (b.totals.consumers[consumer] ?? 0), 0);
      expect(charged, consumer).toBe(settled.receipts.filter((r) => r.sub === consumer).reduce((n, r) => n + r.amount, 0));
    }
    // A redundant receipt (docs/api.md section 6.4) pays its first provider amount - floor(amount / 2), its second floor(amount / 2).
    const owedOn = (r: ReceiptClaims, provider: string) =>
      (r.provider === provider ? r.amount - (r.second ? Math.floor(r.amount / 2) : 0) : 0) + (r.second?.provider === provider ? Math.floor(r.amount / 2) : 0);
    for (const provider of HONEST_PROVIDERS) {
      const paid = settled.batches.reduce((n, b) => n + (b.totals.providers[provider] ?? 0), 0);
      const owed = settled.receipts.filter((r) => !disputed.has(r.jti)).reduce((n, r) => n + owedOn(r, provider), 0);
      expect(paid, provider).toBe(owed);
    }

    // The offline verifier, as a billing system runs it, on every batch and its receipts.
    const work = await mkdtemp(path.join(tmpdir(), 'mesh-hostile-verify-'));
    try {
      const auth = { authorization: `Bearer ${mesh.adminToken}` };
      await writeFile(path.join(work, 'jwks.json'), await (await fetch(`${mesh.edgeUrl}/.well-known/jwks.json`)).text());
      // The fraud proofs (docs/api.md section 6.2): the foreign-key answers' signature disputes justify every disputed receipt.
      const proofs = path.join(work, 'disputes');
      await mkdir(proofs);
      const { disputes } = (await (await fetch(`${mesh.edgeUrl}/v1/disputes?limit=1000`, { headers: auth })).json()) as { disputes: { id: string; kind: string }[] };
      expect(disputes.length).toBeGreaterThanOrEqual(liars.length);
      expect(new Set(disputes.map((d) => d.kind))).toEqual(new Set(['signature']));
      for (const d of disputes) await writeFile(path.join(proofs, `${d.id}.json`), await (await fetch(`${mesh.edgeUrl}/v1/disputes/${d.id}`, { headers: auth })).text());
      const ids = new Set(settled.batches.map((b) => b.batch_id));
      for (const id of ids) {
        const files = await downloadBatch(mesh.edgeUrl, mesh.adminToken, id, work);
        const run = await runCli(path.join(ROOT, 'bin', 'mesh-verify.ts'), [
          'batch',
          files.batch,
          '--receipts',
          files.receipts,
          '--disputes',
          proofs,
          '--jwks',
          path.join(work, 'jwks.json'),
          '--issuer',
          mesh.edgeUrl,
        ]);
        expect(run.code, `${id}: ${run.stdout}${run.stderr}`).toBe(0);
        expect(run.stdout).toMatch(/ok/i);
      }
      const one = await runCli(path.join(ROOT, 'bin', 'mesh-verify.ts'), ['receipt', answered[0]!.receipt!, '--jwks', path.join(work, 'jwks.json')]);
      expect(one.code, one.stdout + one.stderr).toBe(0);
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  }, 90_000);
});
