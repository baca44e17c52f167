/**
 * Fraud proofs (docs/api.md section 6.2): the mesh-signed record of runs that
 * disagree (`mismatch`) or of an attestation that does not verify
 * (`signature`), and what filing one does:
 *
 * 1. the document (`{ id, dispute: <mesh-dispute+jwt>, outputs }`) is stored
 *    in the archive bucket under `disputes/<id>.json`, where
 *    `GET /v1/disputes/{id}` reads it and `mesh-verify dispute` checks it;
 * 2. the operator registry indexes it and, for a proven mismatch, counts a
 *    strike against the accused (quarantine at `VERIFY_QUARANTINE_AFTER`);
 * 3. the receipts it withholds are disputed in their ledger shards, and a
 *    proven mismatch penalizes the accused in every shard: its payout for
 *    every receipt of the open batches is withheld (section 6.3). A
 *    `signature` dispute withholds its one receipt and nothing more.
 *
 * Filing runs off the answer's path (in `waitUntil`) and never throws: what
 * fails is logged with the whole claims, so nothing is lost silently.
 */

import { Buffer } from 'node:buffer';
import type { CompareRule, DisputeClaims, DisputeRun } from '../../shared/jwt.ts';
import { TYP } from '../../shared/jwt.ts';
import type { BackendEntry } from '../directory/backend.ts';
import { noteStanding } from '../directory/snapshot.ts';
import { settings, type Env } from '../env.ts';
import { sign, signingKeys } from '../keys.ts';
import type { DisputeSummary } from '../operator/standing.ts';
import { allShards, ledgerShard, shardOfReceipt } from '../settlement/ledger.ts';

/** One execution of a request by one backend, as the edge received and paid it. */
export interface Execution {
  backend: BackendEntry;
  attestation: string;
  /** SHA-256 (hex) of `oip`. */
  outputSha256: string;
  /** The OIP answer bytes (a signature dispute needs none). */
  oip?: Uint8Array;
  /** The receipt that pays this run, and its jti. */
  receipt: string;
  receiptJti: string;
}

export interface DisputeInput {
  kind: DisputeClaims['kind'];
  verdict: DisputeClaims['verdict'];
  /** The run proven at fault, when proven. */
  accused?: Execution;
  model: string;
  modelVersion: string;
  inputSha256: string;
  rule: CompareRule;
  runs: { role: DisputeRun['role']; run: Execution }[];
}

/** The JSON document `GET /v1/disputes/{id}` serves. */
export interface DisputeDocument {
  id: string;
  dispute: string;
  /** Answer bytes of the runs, base64, by their SHA-256. */
  outputs: Record<string, string>;
}

/** The archive key of a dispute document. */
export function disputeKey(id: string): string {
  return `disputes/${id}.json`;
}

const DISPUTE_ID = /^d-\d{13}-[0-9a-f]{8}$/;

export function isDisputeId(id: string): boolean {
  return DISPUTE_ID.test(id);
}

/** A new dispute id: sortable by time. */
function newDisputeId(now: number): string {
  const hex = [...crypto.getRandomValues(new Uint8Array(4))].map((b) => b.toString(16).padStart(2, '0')).join('');
  return `d-${String(now).padStart(13, '0')}-${hex}`;
}

/** Signs, stores and acts on a dispute (see the module header); returns its id, or undefined when it could not be stored. */
export async function fileDispute(env: Env, input: DisputeInput): Promise<string | undefined> {
  const s = settings(env);
  const now = Date.now();
  const id = newDisputeId(now);
  const withheld = input.accused ? [input.accused.receiptJti] : [];
  const runs: DisputeRun[] = input.runs.map(({ role, run }) => ({
    role,
    provider: run.backend.provider,
    backend: run.backend.id,
    public_jwk: publicJwk(run.backend),
    attestation: run.attestation,
    output_sha256: run.outputSha256,
    receipt: run.receipt,
  }));
  const claims: DisputeClaims = {
    iss: s.issuer,
    iat: Math.floor(now / 1000),
    jti: id,
    kind: input.kind,
    verdict: input.verdict,
    accused: input.accused?.backend.provider ?? null,
    model: input.model,
    model_version: input.modelVersion,
    input_sha256: input.inputSha256,
    rule: input.rule,
    runs,
    withheld,
  };
  const outputs: Record<string, string> = Object.create(null) as Record<string, string>;
  for (const { run } of input.runs) if (run.oip) outputs[run.outputSha256] = Buffer.from(run.oip).toString('base64');
  try {
    const dispute = await sign(await signingKeys(env), TYP.dispute, { ...claims });
    const document: DisputeDocument = { id, dispute, outputs };
    await env.SETTLEMENT_ARCHIVE.put(disputeKey(id), JSON.stringify(document), { httpMetadata: { contentType: 'application/json' } });
  } catch (err) {
    console.error(`dispute ${id}: storing it failed (${(err as Error).message}); its claims: ${JSON.stringify(claims)}`);
    return undefined;
  }
  console.warn(
    `dispute ${id}: ${input.kind} ${input.verdict}${claims.accused ? `, accused ${claims.accused}` : ''} (${runs.map((r) => `${r.role} ${r.backend}`).join(', ')})`,
  );
  const summary: DisputeSummary = {
    id,
    kind: input.kind,
    verdict: input.verdict,
    accused: claims.accused,
    providers: [...new Set(runs.map((r) => r.provider))],
    model: input.model,
    withheld,
    createdAt: now,
  };
  await Promise.all([record(env, summary), withhold(env, summary)]);
  return id;
}

/** Indexes the dispute in the operator registry; a proven one counts against the accused here at once. */
async function record(env: Env, summary: DisputeSummary): Promise<void> {
  try {
    const { standing, newlyQuarantined } = await env.OPERATOR_REGISTRY.getByName('global').recordDispute(summary, settings(env).verify.quarantineAfter);
    if (standing) noteStanding(standing);
    if (newlyQuarantined) console.warn(`dispute ${summary.id}: provider ${summary.accused} is quarantined until the operator clears it`);
  } catch (err) {
    console.error(`dispute ${summary.id}: the operator registry did not record it: ${(err as Error).message}`);
  }
}

/** Withholds the dispute's receipts, and penalizes a proven accused in every ledger shard. */
async function withhold(env: Env, summary: DisputeSummary): Promise<void> {
  const reason = `${summary.kind} ${summary.verdict} (dispute ${summary.id})`;
  const work: Promise<unknown>[] = summary.withheld.map(async (jti) => {
    const shard = await holderOf(env, jti);
    const { settled } = await ledgerShard(env, shard).dispute(shard, jti, reason, summary.id);
    if (settled) console.warn(`dispute ${summary.id}: receipt ${jti} was already settled; its payout could not be withheld`);
  });
  // Penalties are for proven wrong answers; a bad signature costs the provider only that receipt (docs/api.md section 3.5).
  if (summary.kind === 'mismatch' && summary.verdict === 'proven' && summary.accused) {
    const accused = summary.accused;
    for (const shard of allShards(env)) work.push(ledgerShard(env, shard).penalize(shard, accused, summary.id));
  }
  const results = await Promise.allSettled(work);
  for (const r of results) if (r.status === 'rejected') console.error(`dispute ${summary.id}: withholding failed: ${String(r.reason)}`);
}

/**
 * The ledger shard that holds receipt `jti`: where its jti hashes now, unless
 * another shard holds it (appended before SETTLEMENT_SHARDS changed, as the
 * proof routes also look); where it hashes now when none holds it yet.
 */
async function holderOf(env: Env, jti: string): Promise<number> {
  const home = shardOfReceipt(env, jti);
  if ((await ledgerShard(env, home).proof(home, jti)) !== null) return home;
  const others = allShards(env).filter((s) => s !== home);
  const found = await Promise.all(others.map((s) => ledgerShard(env, s).proof(s, jti)));
  const i = found.findIndex((answer) => answer !== null);
  return i >= 0 ? others[i]! : home;
}

function publicJwk(backend: BackendEntry): DisputeRun['public_jwk'] {
  const jwk = backend.providerKey ?? {};
  return { kty: 'OKP', crv: 'Ed25519', x: String(jwk.x ?? ''), ...(jwk.kid ? { kid: jwk.kid } : {}) };
}
