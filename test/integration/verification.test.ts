/**
 * Verified providers on a real local mesh (issue 13, docs/api.md section 6):
 * the Worker in workerd, three honest providers (sg-1, fra-1, iad-1, each its
 * own provider) and one admitted hostile provider whose one backend, `rogue`
 * in sa-east, is the nearest to consumers entering at GRU, so it answers
 * their requests. Each test switches what it does (test/helpers/hostile-provider.ts):
 *
 * 1. `float-noise` (an honest provider on other hardware) with every answer
 *    re-executed: never disputed;
 * 2. `perturb-some` (5% of answers changed, attested honestly) at the default
 *    sample rate of a new provider: detected, and the number of requests it
 *    took is compared with 1 - (1 - s f)^n;
 * 3. the same liar until it is quarantined: its payout for the open epoch is
 *    withheld, it gets no traffic, the offline verifier checks every batch's
 *    disputed list against the fraud proofs, and the operator clears it;
 * 4. `perturb` (every answer changed) under `x-mesh-verify: redundant`: no
 *    tampered answer ever reaches the consumer.
 *
 * Each test prints one `[verification]` line with its figures.
 * Run: npx vitest run --project integration test/integration/verification.test.ts
 */

import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createLocalJWKSet, jwtVerify, type JSONWebKeySet, type JWTVerifyGetKey } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compareAnswerBytes, DEFAULT_RULE } from '../../receipts/compare.ts';
import { decodePayload, TYP, type DisputeClaims, type ReceiptClaims } from '../../shared/jwt.ts';
import { ROOT } from '../../scripts/local-mesh.ts';
import { NEW_PROVIDER_RATE } from '../../workers/verification/sampling.ts';
import { runCli } from '../helpers/cli.ts';
import { startHostileProvider, type HostileProvider } from '../helpers/hostile-provider.ts';
import { useMesh } from '../helpers/mesh.ts';
import { downloadBatch, settle, type Settled } from '../helpers/settlement.ts';

const HOSTILE = 'provider-rogue';
const ROGUE = 'rogue-1';
const QUARANTINE_AFTER = 3;
const LIE_RATE = 0.05;

const { mesh, logs } = useMesh({
  edgeVars: {
    BACKEND_TTL_SECONDS: '3',
    SNAPSHOT_REFRESH_MS: '500',
    SETTLEMENT_EPOCH_SECONDS: '3600',
    VERIFY_QUARANTINE_AFTER: String(QUARANTINE_AFTER),
  },
  backendEnv: { HEARTBEAT_INTERVAL_MS: '500', MODELS: 'embed' },
});

let hostile: HostileProvider;
let jwks: JWTVerifyGetKey;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

beforeAll(async () => {
  const m = mesh();
  jwks = createLocalJWKSet((await (await fetch(`${m.edgeUrl}/.well-known/jwks.json`)).json()) as JSONWebKeySet);
  try {
    hostile = await startHostileProvider({
      edgeUrl: m.edgeUrl,
      adminToken: m.adminToken,
      providerId: HOSTILE,
      identities: [{ name: 'rogue', backendId: ROGUE, region: 'sa-east', lie: 'float-noise', ready: true }],
      heartbeatIntervalMs: 500,
      log: (line) => logs.push(line),
    });
  } catch (err) {
    console.error(logs.slice(-200).join('\n'));
    throw err;
  }
}, 120_000);

afterAll(async () => {
  await hostile?.stop();
  if (process.env.VERIFICATION_LOG) await writeFile(process.env.VERIFICATION_LOG, logs.join('\n') + '\n');
});

// ---------------------------------------------------------------------------

interface Answer {
  status: number;
  body: string;
  backend: string | undefined;
  claims?: ReceiptClaims;
}

let n = 0;

/** One consumer request for `embed` entering at `pop`. */
async function infer(pop = 'GRU', headers: Record<string, string> = {}, text?: string): Promise<Answer> {
  const m = mesh();
  const texts = [text ?? `verification test ${++n}: the quick brown fox jumps over the lazy dog`];
  const res = await fetch(`${m.edgeUrl}/v2/models/embed/infer`, {
    method: 'POST',
    headers: { authorization: `Bearer ${m.consumerKey}`, 'content-type': 'application/json', 'x-mesh-dev-colo': pop, ...headers },
    body: JSON.stringify({ inputs: [{ name: 'text', shape: [1], datatype: 'BYTES', data: texts }] }),
    signal: AbortSignal.timeout(30_000),
  });
  const body = await res.text();
  const receipt = res.headers.get('x-mesh-receipt');
  const answer: Answer = { status: res.status, body, backend: res.headers.get('x-mesh-backend') ?? undefined };
  if (receipt) answer.claims = (await jwtVerify<ReceiptClaims>(receipt, jwks, { algorithms: ['EdDSA'], typ: TYP.receipt, issuer: m.edgeUrl })).payload;
  return answer;
}

async function api<T>(route: string, init: RequestInit = {}): Promise<T> {
  const m = mesh();
  const res = await fetch(`${m.edgeUrl}${route}`, {
    ...init,
    headers: { authorization: `Bearer ${m.adminToken}`, 'content-type': 'application/json', ...init.headers },
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${route}: HTTP ${res.status} ${text}`);
  return JSON.parse(text) as T;
}

interface Summary {
  id: string;
  kind: string;
  verdict: string;
  accused: string | null;
  providers: string[];
  withheld: string[];
}

const disputes = async (provider?: string) =>
  (await api<{ disputes: Summary[] }>(`/v1/disputes?limit=1000${provider ? `&provider=${provider}` : ''}`)).disputes;
const events = async () => (await api<{ events: { provider: string; kind: string; dispute: string | null }[] }>('/v1/verification/events?limit=1000')).events;
const setRate = (rate: number | null) => api(`/admin/providers/${HOSTILE}/verification`, { method: 'PUT', body: JSON.stringify({ sample_rate: rate }) });

/** Waits for `done` (polled) up to `ms`. */
async function until<T>(what: string, ms: number, poll: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await poll();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(250);
  }
}

/** The verification receipts (the operator's account) that re-executed the receipts in `checked`. */
const checksOf = (settled: Settled, checked: ReadonlySet<string>) => settled.receipts.filter((r) => r.sub === 'mesh-verification' && r.checks && checked.has(r.checks));

// ---------------------------------------------------------------------------

describe('optimistic verification with real processes', () => {
  it('never disputes an honest provider whose floats differ in the last bits, with every answer re-executed', async () => {
    await setRate(1);
    const N = 200;
    const ours: string[] = [];
    for (let i = 0; i < N; i++) {
      const a = await infer();
      expect(a.status, a.body.slice(0, 200)).toBe(200);
      ours.push(a.claims!.jti);
    }
    const answeredByRogue = (await hostile.state()).identities.rogue!.infer;
    // Every re-execution has run (each pays a verification receipt) before we count disputes.
    const mine = new Set(ours);
    const settled = await until('the re-executions', 30_000, async () => {
      const s = await settle(mesh().edgeUrl, mesh().adminToken, ours);
      return checksOf(s, mine).length >= N * 0.95 ? s : undefined;
    });
    const checks = checksOf(settled, mine);
    expect(checks.every((r) => r.provider !== HOSTILE)).toBe(true);
    expect(await disputes()).toEqual([]);
    console.log(
      `[verification] honest float noise: ${N} answers (rogue answered ${answeredByRogue}), ${checks.length} re-executed on ${[...new Set(checks.map((r) => r.backend))].join(', ')}, 0 disputes`,
    );
    await setRate(null);
  }, 120_000);

  let detectedAfter = 0;

  it(`detects a provider lying on ${LIE_RATE * 100}% of its answers at the default sample rate of a new provider`, async () => {
    await hostile.set('rogue', { lie: 'perturb-some', perturbRate: LIE_RATE });
    const s = NEW_PROVIDER_RATE;
    const bound = Math.ceil(Math.log(0.0001) / Math.log(1 - s * LIE_RATE)); // 99.99% detection
    const sent: string[] = [];
    let proven: Summary | undefined;
    // The bound counts the liar's answers: on a loaded machine the edge may send some requests to the honest backend.
    let byRogue = 0;
    while (!proven && byRogue < bound && sent.length < 3 * bound) {
      const a = await infer();
      expect(a.status, a.body.slice(0, 200)).toBe(200);
      sent.push(a.claims!.jti);
      if (a.backend === ROGUE) byRogue++;
      if (sent.length % 10 === 0) proven = (await disputes(HOSTILE)).find((d) => d.verdict === 'proven');
    }
    proven ??= await until('a proven dispute', 10_000, async () => (await disputes(HOSTILE)).find((d) => d.verdict === 'proven'));
    expect(proven).toMatchObject({ kind: 'mismatch', accused: HOSTILE });
    detectedAfter = sent.indexOf(proven.withheld[0]!) + 1;
    expect(detectedAfter).toBeGreaterThan(0);
    const state = (await hostile.state()).identities.rogue!;
    // The accused run is one whose answer the provider changed (its attestation names the dispatch).
    const doc = await api<{ dispute: string }>(`/v1/disputes/${proven.id}`);
    const claims = decodePayload<DisputeClaims>(doc.dispute)!;
    const accusedRun = claims.runs.find((r) => r.provider === HOSTILE)!;
    expect(state.perturbedJtis).toContain(decodePayload<{ jti: string }>(accusedRun.attestation)!.jti);
    // No honest provider is ever accused.
    expect((await disputes()).filter((d) => d.accused !== null && d.accused !== HOSTILE)).toEqual([]);
    const p = (k: number) => (1 - (1 - s * LIE_RATE) ** k).toFixed(3);
    console.log(
      `[verification] lie rate f=${LIE_RATE}, sample rate s=${s}: detected after ${detectedAfter} requests, ${byRogue} of those sent answered by the liar (P(detect within n) = 1-(1-sf)^n: ${p(detectedAfter)} at n=${detectedAfter}, 0.95 at n=${Math.ceil(Math.log(0.05) / Math.log(1 - s * LIE_RATE))}, 0.9999 at n=${bound}); ${state.perturbed} of its ${state.infer} answers so far were lies`,
    );
  }, 180_000);

  it('quarantines the liar after repeated proofs, withholds its payout for the epoch, and the verifier checks every disputed receipt against its fraud proof', async () => {
    const sent: string[] = [];
    const quarantined = async () => (await events()).find((e) => e.provider === HOSTILE && e.kind === 'quarantined');
    let event: Awaited<ReturnType<typeof quarantined>>;
    while (!(event = await quarantined()) && sent.length < 1500) {
      for (let i = 0; i < 10; i++) {
        const a = await infer();
        expect(a.status).toBe(200);
        sent.push(a.claims!.jti);
      }
    }
    expect(event, `not quarantined after ${sent.length} more requests`).toBeDefined();
    const proven = (await disputes(HOSTILE)).filter((d) => d.verdict === 'proven' && d.accused === HOSTILE);
    expect(proven.length).toBeGreaterThanOrEqual(QUARANTINE_AFTER);

    // Quarantined: within a snapshot refresh, requests from GRU go to honest providers.
    await sleep(1500);
    for (let i = 0; i < 10; i++) {
      const a = await infer();
      expect(a.status).toBe(200);
      expect(a.backend).not.toBe(ROGUE);
    }

    // Its payout for the open epoch is withheld: every receipt of it in the batches closed now is disputed.
    const settled = await settle(mesh().edgeUrl, mesh().adminToken, sent);
    const ids = new Set(settled.receipts.filter((r) => r.provider === HOSTILE && sent.includes(r.jti)).map((r) => settled.batchOf.get(r.jti)));
    const epoch = settled.batches.filter((b) => ids.has(b.batch_id));
    expect(epoch.length).toBeGreaterThan(0);
    for (const b of epoch) {
      expect(b.penalties?.map((p) => p.provider)).toContain(HOSTILE);
      expect(b.totals.providers[HOSTILE] ?? 0).toBe(0);
      expect(b.totals.withheld?.[HOSTILE]).toBeGreaterThan(0);
    }
    const withheld = epoch.reduce((x, b) => x + (b.totals.withheld?.[HOSTILE] ?? 0), 0);
    const charged = epoch.reduce((x, b) => x + (b.totals.consumers['local-consumer'] ?? 0), 0);

    // The offline verifier: every batch against its receipts and the fraud proofs of its disputed list.
    const work = await mkdtemp(path.join(tmpdir(), 'mesh-verification-'));
    try {
      const m = mesh();
      const auth = { authorization: `Bearer ${m.adminToken}` };
      await writeFile(path.join(work, 'jwks.json'), await (await fetch(`${m.edgeUrl}/.well-known/jwks.json`)).text());
      const proofs = path.join(work, 'disputes');
      await mkdir(proofs);
      for (const d of await disputes()) {
        await writeFile(path.join(proofs, `${d.id}.json`), await (await fetch(`${m.edgeUrl}/v1/disputes/${d.id}`, { headers: auth })).text());
      }
      const one = await runCli(path.join(ROOT, 'bin', 'mesh-verify.ts'), ['dispute', path.join(proofs, `${proven[0]!.id}.json`), '--jwks', path.join(work, 'jwks.json')]);
      expect(one.code, one.stdout + one.stderr).toBe(0);
      for (const b of epoch) {
        const files = await downloadBatch(m.edgeUrl, m.adminToken, b.batch_id, work);
        const run = await runCli(path.join(ROOT, 'bin', 'mesh-verify.ts'), [
          'batch',
          files.batch,
          '--receipts',
          files.receipts,
          '--disputes',
          proofs,
          '--jwks',
          path.join(work, 'jwks.json'),
        ]);
        expect(run.code, `${b.batch_id}: ${run.stdout}${run.stderr}`).toBe(0);
      }
    } finally {
      await rm(work, { recursive: true, force: true });
    }

    // The operator clears it: it gets traffic again.
    await api(`/admin/providers/${HOSTILE}/clear`, { method: 'POST' });
    await until('traffic back to the cleared provider', 10_000, async () => ((await infer()).backend === ROGUE ? true : undefined));
    console.log(
      `[verification] quarantined after ${QUARANTINE_AFTER} proven disputes (${sent.length} more requests); epoch payout withheld ${withheld} µUSD of ${charged} charged; cleared by the operator`,
    );
  }, 300_000);

  it('redundant mode never returns a tampered answer: a liar in the pair is a 502, honest pairs answer', async () => {
    await hostile.set('rogue', { lie: 'perturb' });
    const outcomes: string[] = [];
    for (let i = 0; i < 12; i++) {
      const text = `redundant ${i}: the quick brown fox jumps over the lazy dog`;
      const a = await infer('GRU', { 'x-mesh-verify': 'redundant' }, text);
      if (a.status === 502) {
        expect(JSON.parse(a.body)).toMatchObject({ error: { code: 'verification_failed' } });
        expect(a.claims).toBeUndefined();
        outcomes.push('502');
        continue;
      }
      expect(a.status, a.body.slice(0, 200)).toBe(200);
      // The answer agrees with an honest backend's for the same input (pinned to eu-west: fra-1).
      const honest = await infer('FRA', { 'x-mesh-verify': 'none', 'x-mesh-region': 'eu-west' }, text);
      expect(compareAnswerBytes(new TextEncoder().encode(a.body), new TextEncoder().encode(honest.body), DEFAULT_RULE)).toEqual({ agree: true });
      expect(a.claims).toMatchObject({ verify: 'redundant' });
      expect(a.claims!.provider).not.toBe(HOSTILE);
      expect(a.claims!.second!.provider).not.toBe(HOSTILE);
      outcomes.push('200');
    }
    // The liar was in the first pairs (it is the nearest); each disagreement was refereed and proven against it.
    expect(outcomes[0]).toBe('502');
    const proven = await until('disagreements proven against the liar', 10_000, async () => {
      const d = (await disputes(HOSTILE)).filter((x) => x.verdict === 'proven' && x.accused === HOSTILE);
      return d.length >= outcomes.filter((o) => o === '502').length ? d : undefined;
    });
    expect(proven.length).toBeGreaterThan(0);

    // Quarantined again by those proofs: the pair is two honest providers, and they answer.
    await until('the liar quarantined again', 10_000, async () =>
      (await events()).filter((e) => e.provider === HOSTILE && e.kind === 'quarantined').length >= 2 ? true : undefined,
    );
    await sleep(1000);
    const text = 'redundant, honest pair: the quick brown fox jumps over the lazy dog';
    const a = await infer('GRU', { 'x-mesh-verify': 'redundant' }, text);
    expect(a.status, a.body.slice(0, 200)).toBe(200);
    expect(a.claims!.provider).not.toBe(HOSTILE);
    expect(a.claims!.second).toMatchObject({ provider: expect.not.stringMatching(HOSTILE) });
    const honest = await infer('FRA', { 'x-mesh-verify': 'none', 'x-mesh-region': 'eu-west' }, text);
    expect(compareAnswerBytes(new TextEncoder().encode(a.body), new TextEncoder().encode(honest.body), DEFAULT_RULE)).toEqual({ agree: true });
    expect(a.claims!.amount).toBe(2 * honest.claims!.amount);
    console.log(
      `[verification] redundant with an always-lying provider: ${outcomes.join(' ')} (never a tampered answer; ${proven.length} disagreements proven against it); after its quarantine an honest pair answers`,
    );
  }, 180_000);
});
