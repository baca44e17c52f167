/**
 * The hostile provider's answer modes and place lies on a real local mesh
 * (issue 13): one honest backend (fra-1, eu-west) and one hostile identity,
 * ready alone in ap-northeast, reached by entering at its PoP (NRT,
 * `x-mesh-dev-colo`). Every request asks `x-mesh-verify: none`, so the edge
 * never re-executes: what is checked is the harness itself. And each is
 * pinned to its PoP's region, so that a hedge (which on loopback may beat
 * the nearer backend) never brings the other provider's answer.
 * - `perturb`: answers wrong by `perturbValue` in one element, yet served
 *   with a receipt whose attestation verifies (only re-execution can tell);
 * - `float-noise`: answers within the relative FLOAT_NOISE of the honest
 *   one (plus float32 rounding), never identical to it;
 * - `perturb-some`: some, not all, answers perturbed, each counted and its
 *   dispatch jti kept;
 * - `delayMs` and `claim`: every response held (timed on the identity's own
 *   routes: how the edge routes around a slow backend is not this file's
 *   concern), heartbeats announcing the claimed place.
 *
 * Run: npx vitest run --project integration test/integration/hostile-modes.test.ts
 */

import { createHash } from 'node:crypto';
import { createLocalJWKSet, importJWK, jwtVerify, type JSONWebKeySet, type JWTVerifyGetKey } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TYP, type AttestationClaims, type ReceiptClaims } from '../../shared/jwt.ts';
import { FLOAT_NOISE, perturbValue, startHostileProvider, type HostileProvider } from '../helpers/hostile-provider.ts';
import { useMesh } from '../helpers/mesh.ts';

const HOSTILE = 'provider-hostile';
const NAME = 'modes';
const BACKEND_ID = `hostile-${NAME}`;
const SNAPSHOT_REFRESH_MS = 500;
/** What two honest CPU backends may differ by (thread counts change summation order). */
const HONEST_SLACK = 1e-6;
/** Float32 rounding of a value of magnitude |x|: half an ulp, relative. */
const F32_HALF_ULP = 2 ** -24;

const { mesh, logs } = useMesh({
  backends: [{ id: 'fra-1', region: 'eu-west', provider: 'provider-fra' }],
  edgeVars: { BACKEND_TTL_SECONDS: '3', SNAPSHOT_REFRESH_MS: String(SNAPSHOT_REFRESH_MS) },
  backendEnv: { HEARTBEAT_INTERVAL_MS: '500', MODELS: 'embed' },
});

let hostile: HostileProvider;
let jwks: JWTVerifyGetKey;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function adminBackends(): Promise<{ id: string; provider: string; ready: boolean; lat: number; lon: number }[]> {
  const res = await fetch(`${mesh().edgeUrl}/admin/backends`, { headers: { authorization: `Bearer ${mesh().adminToken}` } });
  return ((await res.json()) as { backends: { id: string; provider: string; ready: boolean; lat: number; lon: number }[] }).backends;
}

beforeAll(async () => {
  try {
    const m = mesh();
    jwks = createLocalJWKSet((await (await fetch(`${m.edgeUrl}/.well-known/jwks.json`)).json()) as JSONWebKeySet);
    hostile = await startHostileProvider({
      edgeUrl: m.edgeUrl,
      adminToken: m.adminToken,
      providerId: HOSTILE,
      identities: [{ name: NAME, backendId: BACKEND_ID, region: 'ap-northeast', lie: 'none', ready: true }],
      heartbeatIntervalMs: 500,
      log: (line) => logs.push(line),
    });
    // Ready in the directory, then in the edge's snapshot (a stale one is refreshed by a request, in the background).
    const deadline = Date.now() + 15_000;
    while (!(await adminBackends()).some((b) => b.id === BACKEND_ID && b.ready)) {
      if (Date.now() > deadline) throw new Error(`${BACKEND_ID} never showed ready in /admin/backends`);
      await sleep(100);
    }
    await sleep(SNAPSHOT_REFRESH_MS + 50);
    await (await fetch(`${m.edgeUrl}/v1/models`, { headers: { authorization: `Bearer ${m.consumerKey}` } })).text();
    await sleep(300);
  } catch (err) {
    console.error(logs.slice(-200).join('\n'));
    throw err;
  }
}, 120_000);

afterAll(async () => {
  await hostile?.stop();
});

interface Answer {
  data: number[];
  receipt: ReceiptClaims;
  attestation: AttestationClaims;
}

/** The region each PoP this file enters at is pinned to. */
const REGION_OF: Record<string, string> = { FRA: 'eu-west', NRT: 'ap-northeast' };

/**
 * One `embed` request for one text entering at `pop`, pinned to its region, with `x-mesh-verify: none`, computed by
 * a backend (`no-store`: not from the PoP's answer cache); checks its receipt and attestation.
 */
async function ask(pop: string, text: string): Promise<Answer> {
  const m = mesh();
  const res = await fetch(`${m.edgeUrl}/v2/models/embed/infer`, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${m.consumerKey}`,
      'content-type': 'application/json',
      'x-mesh-dev-colo': pop,
      'x-mesh-region': REGION_OF[pop]!,
      'x-mesh-verify': 'none',
      'cache-control': 'no-store',
    },
    body: JSON.stringify({ inputs: [{ name: 'text', shape: [1], datatype: 'BYTES', data: [text] }] }),
    signal: AbortSignal.timeout(30_000),
  });
  const bytes = new Uint8Array(await res.arrayBuffer());
  const body = Buffer.from(bytes).toString('utf8');
  expect(res.status, body.slice(0, 300)).toBe(200);
  const header = res.headers.get('x-mesh-receipt');
  expect(header, 'one receipt').toMatch(/^[^,]+$/);
  const receipt = (await jwtVerify<ReceiptClaims>(header!, jwks, { algorithms: ['EdDSA'], typ: TYP.receipt, issuer: m.edgeUrl })).payload;
  expect(receipt.verify).toBe('none');
  const sha = createHash('sha256').update(bytes).digest('hex');
  expect(receipt.output_sha256).toBe(sha);
  expect(receipt.attestation, 'the receipt carries the attestation').toBeTypeOf('string');
  const attestation = decodeJwt<AttestationClaims>(receipt.attestation!);
  expect(attestation.output_sha256, 'attested over the bytes served').toBe(sha);
  const out = (JSON.parse(body) as { outputs: { datatype: string; shape: number[]; data: number[] }[] }).outputs[0]!;
  expect([out.datatype, out.shape, out.data.length]).toEqual(['FP32', [1, 256], 256]);
  return { data: out.data, receipt, attestation };
}

function decodeJwt<T>(jwt: string): T {
  return JSON.parse(Buffer.from(jwt.split('.')[1]!, 'base64url').toString('utf8')) as T;
}

/** The attestation verifies with the key the operator admitted for the hostile provider, for its backend. */
async function attestedByHostile(a: Answer): Promise<void> {
  expect([a.receipt.provider, a.receipt.backend]).toEqual([HOSTILE, BACKEND_ID]);
  const key = await importJWK(hostile.publicJwk, 'EdDSA');
  const { payload } = await jwtVerify<AttestationClaims>(a.receipt.attestation!, key, {
    algorithms: ['EdDSA'],
    typ: TYP.attestation,
    issuer: HOSTILE,
    subject: BACKEND_ID,
  });
  expect(payload.units).toEqual(a.receipt.units);
  expect(payload.model).toBe('embed');
}

/** fra-1's answer to the same text (entering at FRA). */
async function honest(text: string): Promise<number[]> {
  const a = await ask('FRA', text);
  expect([a.receipt.provider, a.receipt.backend]).toEqual(['provider-fra', 'fra-1']);
  return a.data;
}

const state = async () => (await hostile.state()).identities[NAME]!;
/** Differs from the honest answer as `perturb` makes it: element 0 moved by perturbValue, the rest honest. */
const isPerturbed = (got: number[], want: number[]) => Math.abs(got[0]! - perturbValue(want[0]!)) <= HONEST_SLACK * 10;
const maxDiff = (a: number[], b: number[]) => a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i]!)), 0);

describe('answers computed wrongly, attested honestly (x-mesh-verify: none)', () => {
  it('the identity answers honestly first: the same answer as fra-1', async () => {
    const text = 'hostile modes: the honest baseline';
    const [want, got] = [await honest(text), await ask('NRT', text)];
    await attestedByHostile(got);
    expect(maxDiff(got.data, want)).toBeLessThanOrEqual(HONEST_SLACK);
  });

  it('perturb: every answer has element 0 moved by 0.25 (|x| + 1), the rest honest, and passes the edge with an attestation that verifies', async () => {
    await hostile.set(NAME, { lie: 'perturb' });
    const before = await state();
    for (let i = 0; i < 3; i++) {
      const text = `hostile modes: perturb ${i}`;
      const want = await honest(text);
      const got = await ask('NRT', text);
      await attestedByHostile(got);
      expect(got.data[0]).toBeCloseTo(perturbValue(want[0]!), 5);
      expect(Math.abs(got.data[0]! - want[0]!)).toBeGreaterThanOrEqual(0.25);
      expect(maxDiff(got.data.slice(1), want.slice(1))).toBeLessThanOrEqual(HONEST_SLACK);
      expect((await state()).perturbedJtis.at(-1)).toBe(got.attestation.jti);
    }
    expect((await state()).perturbed - before.perturbed).toBe(3);
  });

  it('float-noise: every element within the relative 1e-5 of the honest answer (plus float32 rounding), never identical; nothing counted as perturbed', async () => {
    await hostile.set(NAME, { lie: 'float-noise' });
    const before = await state();
    for (let i = 0; i < 3; i++) {
      const text = `hostile modes: float noise ${i}`;
      const want = await honest(text);
      const got = await ask('NRT', text);
      await attestedByHostile(got);
      const over = got.data
        .map((y, j) => ({ j, y, x: want[j]! }))
        .filter(({ x, y }) => Math.abs(y - x) > FLOAT_NOISE * Math.abs(x) + F32_HALF_ULP * Math.abs(y) + HONEST_SLACK);
      expect(over).toEqual([]);
      expect(got.data.filter((y, j) => y !== want[j]).length, 'elements changed').toBeGreaterThan(128);
      expect((await state()).perturbedJtis).not.toContain(got.attestation.jti);
    }
    expect((await state()).perturbed).toBe(before.perturbed);
  });

  it('perturb-some at perturbRate 0.5: some but not all of 40 answers perturbed, each counted with its jti', async () => {
    const { state: set } = await hostile.set(NAME, { lie: 'perturb-some', perturbRate: 0.5 });
    expect(set.perturbRate).toBe(0.5);
    const text = 'hostile modes: perturb some';
    const want = await honest(text);
    const before = await state();
    const answers: Answer[] = [];
    for (let i = 0; i < 40; i++) answers.push(await ask('NRT', text));
    const after = await state();
    const lies = answers.filter((a) => isPerturbed(a.data, want));
    const honestOnes = answers.filter((a) => maxDiff(a.data, want) <= HONEST_SLACK);
    console.log(`[hostile-modes] perturb-some: ${lies.length} of ${answers.length} perturbed`);
    expect(lies.length + honestOnes.length, 'every answer is either honest or perturbed').toBe(40);
    expect(lies.length).toBeGreaterThan(0);
    expect(lies.length).toBeLessThan(40);
    expect(after.perturbed - before.perturbed).toBe(lies.length);
    const kept = new Set(after.perturbedJtis);
    expect(lies.every((a) => kept.has(a.attestation.jti))).toBe(true);
    expect(honestOnes.some((a) => kept.has(a.attestation.jti))).toBe(false);
    for (const a of answers) await attestedByHostile(a);
  });
});

describe('lies about place', () => {
  it('delayMs holds every response (probe, metadata, inference); claim is the place heartbeats announce', async () => {
    const url = hostile.identities.get(NAME)!.url;
    await hostile.set(NAME, { lie: 'none', delayMs: 400 });
    const timed = async (f: () => Promise<Response>) => {
      const t0 = performance.now();
      const res = await f();
      await res.arrayBuffer();
      return { status: res.status, ms: performance.now() - t0 };
    };
    const probe = await timed(() =>
      fetch(`${url}/v2/mesh/probe`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ nonce: 'a'.repeat(22) }) }),
    );
    const metadata = await timed(() => fetch(`${url}/v2/models/embed`));
    // Without a dispatch token: refused, and held all the same.
    const infer = await timed(() => fetch(`${url}/v2/models/embed/infer`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' }));
    expect([probe.status, metadata.status, infer.status]).toEqual([200, 200, 401]);
    for (const r of [probe, metadata, infer]) expect(r.ms).toBeGreaterThanOrEqual(395);

    // Yokohama: another place in the same region, which the edge accepts.
    const { beat, state: s } = await hostile.set(NAME, { delayMs: 0, claim: { lat: 35.44, lon: 139.64 } });
    expect([s.delayMs, s.claim]).toEqual([0, { lat: 35.44, lon: 139.64 }]);
    expect(beat?.status, beat?.body).toBe(200);
    const entry = (await adminBackends()).find((b) => b.id === BACKEND_ID)!;
    expect([entry.lat, entry.lon]).toEqual([35.44, 139.64]);
    const back = await hostile.set(NAME, { claim: null });
    expect(back.state.claim).toBeNull();
    expect(back.beat?.status).toBe(200);
    const again = (await adminBackends()).find((b) => b.id === BACKEND_ID)!;
    expect([again.lat, again.lon]).toEqual([35.68, 139.69]);
  });
});
