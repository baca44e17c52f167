/**
 * Proof of location on a real local mesh (docs/api.md section 3.2): two
 * backends of two providers, both claiming Singapore (region ap-southeast, at
 * its coordinates). The honest one is reached directly over loopback; the
 * liar announces a fault proxy (test/helpers/fault-proxy.ts) that holds every
 * response chunk 150 ms, so from SIN it looks about 15,000 km of fibre away:
 * no backend at its claim answers SIN that slowly at its best. Requests, and
 * the edge's signed probes (`POST /v2/mesh/probe`), enter at SIN (MESH_DEV's
 * x-mesh-dev-colo, counted because LOCATION_SIMULATED_POPS=1) until both
 * verdicts settle. Then `/admin/backends` shows the honest backend
 * `verified` and the liar `refuted` with its evidence (SIN, its minimum
 * round trip, the ceiling it exceeds), a request pinned to ap-southeast never
 * reaches the liar, and every receipt verifies and carries `location`.
 * Prints one `[location]` line with the round trips measured.
 */

import { decodeJwt, type JSONWebKeySet } from 'jose';
import { afterAll, expect, it } from 'vitest';
import { verifyReceipt } from '../../receipts/index.ts';
import type { ReceiptClaims } from '../../shared/jwt.ts';
import type { LocationVerdict } from '../../workers/geo/location.ts';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.ts';
import { useMesh } from '../helpers/mesh.ts';

const HONEST = 'sg-honest';
const LIAR = 'sg-liar';
/** What the liar's proxy adds to each round trip (held once, on the response). */
const ADDED_MS = 150;
const SNAPSHOT_REFRESH_MS = 300;
/** The verdicts must settle within this long: verifying takes 5 probes from SIN, one per backend per 10 s, then a flush and a refresh. */
const SETTLE_MS = 55_000;

let proxy: FaultProxy | undefined;
const local = useMesh({
  backends: [
    { id: HONEST, region: 'ap-southeast', provider: 'provider-honest' },
    { id: LIAR, region: 'ap-southeast', provider: 'provider-liar' },
  ],
  edgeVars: { LOCATION_SIMULATED_POPS: '1', SNAPSHOT_REFRESH_MS: String(SNAPSHOT_REFRESH_MS) },
  backendEnv: { HEARTBEAT_INTERVAL_MS: '500', MODELS: 'embed', HTTP_THREADS: '2' },
  publicUrl: async (spec, port) => {
    if (spec.id !== LIAR) return `http://127.0.0.1:${port}`;
    proxy = await startFaultProxy({ target: { host: '127.0.0.1', port }, fault: { kind: 'latency', ms: ADDED_MS, direction: 'response' } });
    return proxy.url;
  },
});
const logs = local.logs;

afterAll(async () => {
  await proxy?.close();
});

interface AdminBackend {
  id: string;
  location?: LocationVerdict;
  heartbeatColo?: string;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Inference requests a backend has seen (answered, failed or refused), from its own /metrics, reached directly. */
async function inferencesAt(url: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  let total = 0;
  for (const line of text.split('\n')) {
    if (/^(nv_inference_request_success|nv_inference_request_failure|mesh_dispatch_rejected_total)[{ ]/.test(line)) total += Number(line.split(' ').at(-1));
  }
  return total;
}

async function adminBackends(): Promise<AdminBackend[]> {
  const mesh = local.mesh();
  const res = await fetch(`${mesh.edgeUrl}/admin/backends`, { headers: { authorization: `Bearer ${mesh.adminToken}` } });
  expect(res.status).toBe(200);
  return ((await res.json()) as { backends: AdminBackend[] }).backends;
}

interface Answer {
  status: number;
  backend: string | null;
  receipt: string | null;
}

let n = 0;
async function infer(headers: Record<string, string> = {}): Promise<Answer> {
  const mesh = local.mesh();
  const res = await fetch(`${mesh.edgeUrl}/v2/models/embed/infer`, {
    method: 'POST',
    headers: { authorization: `Bearer ${mesh.consumerKey}`, 'content-type': 'application/json', 'x-mesh-dev-colo': 'SIN', ...headers },
    body: JSON.stringify({ inputs: [{ name: 'text', datatype: 'BYTES', shape: [1], data: [`where are you, ${n++}?`] }] }),
  });
  await res.arrayBuffer();
  return { status: res.status, backend: res.headers.get('x-mesh-backend'), receipt: res.headers.get('x-mesh-receipt') };
}

it('verifies the honest backend, refutes the one 150 ms away, keeps pinned traffic off it, and says so in receipts', async () => {
  const mesh = local.mesh();
  const started = Date.now();
  const answers: Answer[] = [];
  let verdicts = new Map<string, AdminBackend>();
  // Requests from SIN, two at a time (so both backends are dispatched to), until both verdicts settle.
  let lastPoll = 0;
  while (Date.now() - started < SETTLE_MS) {
    answers.push(...(await Promise.all([infer(), infer()])));
    await sleep(100);
    if (Date.now() - lastPoll < 1_000) continue;
    lastPoll = Date.now();
    verdicts = new Map((await adminBackends()).map((b) => [b.id, b]));
    if (verdicts.get(HONEST)?.location?.state === 'verified' && verdicts.get(LIAR)?.location?.state === 'refuted') break;
  }
  const settledMs = Date.now() - started;
  const honest = verdicts.get(HONEST)?.location;
  const liar = verdicts.get(LIAR)?.location;
  const line =
    `[location] settled after ${settledMs} ms, ${answers.length} requests from SIN; ` +
    `${HONEST}: ${JSON.stringify(honest)}; ${LIAR}: ${JSON.stringify(liar)}; ` +
    `heartbeat colos: ${verdicts.get(HONEST)?.heartbeatColo}, ${verdicts.get(LIAR)?.heartbeatColo}; liar's proxy saw ${proxy?.stats.requests} requests`;
  console.log(line);
  const context = `${line}\n${logs.filter((l) => /probe|location|rtt/i.test(l)).slice(-30).join('\n')}`;
  expect(answers.every((a) => a.status === 200), context).toBe(true);

  // The honest backend: 5 signed probes from SIN, their best within the ceiling for its claimed place.
  expect(honest?.state, context).toBe('verified');
  expect(honest!.evidence).toMatchObject({ pop: 'SIN' });
  expect(honest!.evidence!.probeSamples).toBeGreaterThanOrEqual(5);
  expect(honest!.evidence!.probeMinRttMs).toBeLessThanOrEqual(honest!.evidence!.ceilingMs!);
  expect(honest!.evidence!.minRttMs).toBeLessThanOrEqual(honest!.evidence!.ceilingMs!);
  // The liar: SIN, near its claim, never saw it answer faster than the added 150 ms: above the ceiling.
  expect(liar?.state, context).toBe('refuted');
  expect(liar!.evidence).toMatchObject({ pop: 'SIN', failed: 'ceiling' });
  expect(liar!.evidence!.samples).toBeGreaterThanOrEqual(5);
  expect(liar!.evidence!.minRttMs).toBeGreaterThanOrEqual(ADDED_MS - 5);
  expect(liar!.evidence!.minRttMs).toBeGreaterThan(liar!.evidence!.ceilingMs!);
  expect(liar!.evidence!.distanceKm).toBeLessThan(1_000);

  // Once the edge's snapshot has the verdicts: pinned requests never reach the refuted backend
  // (not even as a hedge or retry: the liar's own counters do not move).
  await sleep(SNAPSHOT_REFRESH_MS + 100);
  await infer();
  await sleep(300);
  const liarUrl = mesh.backends.find((b) => b.id === LIAR)!.url;
  const before = await inferencesAt(liarUrl);
  expect(before, 'the liar served unpinned requests before its verdict').toBeGreaterThan(0);
  const pinned: Answer[] = [];
  for (let i = 0; i < 10; i++) pinned.push(...(await Promise.all([infer({ 'x-mesh-region': 'ap-southeast' }), infer({ 'x-mesh-region': 'ap-southeast' })])));
  expect(pinned.map((a) => a.status)).toEqual(pinned.map(() => 200));
  expect(pinned.map((a) => a.backend)).toEqual(pinned.map(() => HONEST));
  await sleep(200);
  expect(await inferencesAt(liarUrl), 'inference requests the liar saw while pinned traffic ran').toBe(before);

  // Every receipt verifies and carries the answering backend's location verdict; the pinned ones say verified.
  const jwks = (await (await fetch(`${mesh.edgeUrl}/.well-known/jwks.json`)).json()) as JSONWebKeySet;
  const claimsOf = async (a: Answer) => verifyReceipt(a.receipt!, jwks);
  for (const a of [...answers.slice(-10), ...pinned]) {
    const claims: ReceiptClaims = await claimsOf(a);
    expect(claims.backend).toBe(a.backend);
    expect(['verified', 'unverified', 'refuted']).toContain(claims.location);
  }
  for (const a of pinned) expect((await claimsOf(a)).location).toBe('verified');
  // The first receipts, issued before any verdict, say unverified.
  const early = answers.slice(0, 4).map((a) => decodeJwt(a.receipt!) as unknown as ReceiptClaims);
  expect(early.every((c) => c.location === 'unverified')).toBe(true);
}, 75_000);
