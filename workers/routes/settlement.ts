/**
 * Settlement routes (docs/api.md section 5). Billing reads, for the admin token or
 * a billing token (`role: billing`): closed batches (listed oldest first
 * across every ledger shard), one batch's JWT, its receipts in leaf order
 * (paged) and a receipt's inclusion proof, by jti or for the receipt itself:
 * a receipt whose signature verifies but that has not reached the log yet is
 * on its way (202 `receipt_pending`), never "not found". Operator actions,
 * admin only: close the open batches now, withhold a receipt from payout,
 * replay the receipts kept under `undelivered/`, shard stats.
 */

import { Hono, type Context } from 'hono';
import { verifyReceipt, VerifyError, type InclusionProof } from '../../receipts/index.ts';
import { MeshError } from '../../shared/errors.ts';
import type { ReceiptClaims } from '../../shared/jwt.ts';
import { parseJson } from '../../shared/protocol.ts';
import { authenticate } from '../auth.ts';
import { readWithin } from '../body.ts';
import type { AppEnv } from '../context.ts';
import { settings, type Env } from '../env.ts';
import { signingKeys } from '../keys.ts';
import { factsOf } from '../request-log.ts';
import { allShards, ledgerShard, parseBatchId, shardOfReceipt } from '../settlement/ledger.ts';
import { replayUndelivered, REPLAY_DEFAULT, REPLAY_MAX } from '../settlement/replay.ts';
import type { BatchSummary } from '../settlement/SettlementLedger.ts';

const BILLING = ['billing', 'admin'] as const;
const LIST_MAX = 1000;
const PAGE_DEFAULT = 1000;
const PAGE_MAX = 5000;
/** `POST /v1/receipts/proof`: the largest body read, bytes (a receipt with two attestations is a few KiB). */
const PROOF_BODY_MAX = 16 * 1024;
/** The queue consumer's batch wait (wrangler.toml `max_batch_timeout`), seconds. */
const QUEUE_BATCH_WAIT_S = 1;

const invalid = (message: string) => new MeshError('invalid_request', message);

/** A non-negative integer query parameter, or the default. */
function intParam(value: string | undefined, name: string, fallback: number, max: number): number {
  if (value === undefined || value === '') return fallback;
  if (!/^\d{1,9}$/.test(value)) throw invalid(`"${name}" must be a non-negative integer.`);
  return Math.min(Number(value), max);
}

function batchShard(id: string, shards: number): number {
  const parsed = parseBatchId(id);
  if (!parsed || parsed.shard >= shards) throw new MeshError('batch_not_found', `No batch "${id}".`);
  return parsed.shard;
}

/**
 * A receipt's inclusion proof from the shard that holds it: null when no
 * shard does; throws 404 `batch_open` while its batch is open.
 */
async function proofOf(env: Env, jti: string): Promise<InclusionProof | null> {
  const home = shardOfReceipt(env, jti);
  let answer = await ledgerShard(env, home).proof(home, jti);
  // Not where its jti hashes now: the shard count changed since; ask the others.
  if (answer === null) {
    const others = allShards(env).filter((s) => s !== home);
    answer = (await Promise.all(others.map((s) => ledgerShard(env, s).proof(s, jti)))).find((a) => a !== null) ?? null;
  }
  if (answer === null) return null;
  if ('pending' in answer) {
    const epochS = settings(env).settlement.epochMs / 1000;
    throw new MeshError('batch_open', `Receipt "${jti}" is in the open batch; its proof exists once the batch closes (within ${epochS} s).`, {
      retryAfter: epochS,
    });
  }
  return answer;
}

/**
 * The receipt of a `POST /v1/receipts/proof` body, verified as any billing
 * system verifies it (receipts/verify.ts: EdDSA only, `typ`, issuer, every
 * claim) against every key this edge ever signed with (the JWKS archive).
 */
async function postedReceipt(c: Context<AppEnv>): Promise<ReceiptClaims> {
  const body = await readWithin(c.req.raw, PROOF_BODY_MAX);
  if (!body) throw new MeshError('body_too_large', `The body is larger than the ${PROOF_BODY_MAX}-byte limit; it holds one receipt.`);
  const parsed = parseJson(new TextDecoder().decode(body)) as { receipt?: unknown } | null;
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed) || typeof parsed.receipt !== 'string' || parsed.receipt === '') {
    throw invalid('The body must be { "receipt": "<the receipt JWT, as x-mesh-receipt carried it>" }.');
  }
  const keys = await signingKeys(c.env);
  try {
    return await verifyReceipt(parsed.receipt, keys.archiveJwks ?? keys.publicJwks, { issuer: settings(c.env).issuer });
  } catch (err) {
    if (err instanceof VerifyError) throw invalid(`The receipt does not verify (${err.code}): ${err.message}.`);
    throw err;
  }
}

export const settlementRoutes = new Hono<AppEnv>()
  .get('/v1/settlement/batches', async (c) => {
    await authenticate(c, BILLING);
    const after = c.req.query('after') ?? '';
    if (after !== '' && !parseBatchId(after)) throw invalid('"after" must be a batch id from an earlier listing.');
    const limit = Math.max(1, intParam(c.req.query('limit'), 'limit', 100, LIST_MAX));
    const shards = allShards(c.env);
    const [lists, unsigned] = await Promise.all([
      Promise.all(shards.map((s) => ledgerShard(c.env, s).list(s, after, limit))),
      Promise.all(shards.map((s) => ledgerShard(c.env, s).unsignedFrom(s))),
    ]);
    // Nothing past a batch still being signed: a client paging `after` a later id would never see it.
    const cut = unsigned.reduce<string | null>((min, id) => (id !== null && (min === null || id < min) ? id : min), null);
    const batches: BatchSummary[] = lists
      .flat()
      .filter((b) => cut === null || b.id < cut)
      .sort((a, b) => (a.id < b.id ? -1 : 1))
      .slice(0, limit);
    return c.json({ batches, next: batches.length === limit ? batches[batches.length - 1]!.id : null });
  })
  .get('/v1/settlement/batches/:id', async (c) => {
    await authenticate(c, BILLING);
    const id = c.req.param('id');
    const shard = batchShard(id, settings(c.env).settlement.shards);
    const record = await ledgerShard(c.env, shard).batch(shard, id);
    if (!record) throw new MeshError('batch_not_found', `No closed batch "${id}".`);
    const { batch, count, merkle_root, archived } = record;
    return c.json({ id, batch, count, merkle_root, archived });
  })
  .get('/v1/settlement/batches/:id/receipts', async (c) => {
    await authenticate(c, BILLING);
    const id = c.req.param('id');
    const shard = batchShard(id, settings(c.env).settlement.shards);
    const from = intParam(c.req.query('from'), 'from', 0, Number.MAX_SAFE_INTEGER);
    const limit = Math.max(1, intParam(c.req.query('limit'), 'limit', PAGE_DEFAULT, PAGE_MAX));
    const page = await ledgerShard(c.env, shard).receipts(shard, id, from, limit);
    if (!page) throw new MeshError('batch_not_found', `No closed batch "${id}".`);
    return c.json({ ...page, from });
  })
  .get('/v1/receipts/:jti/proof', async (c) => {
    await authenticate(c, BILLING);
    const jti = c.req.param('jti');
    const answer = await proofOf(c.env, jti);
    if (answer === null) {
      throw new MeshError(
        'receipt_not_found',
        `No receipt "${jti.slice(0, 256)}" is in the settlement log. A receipt reaches it seconds after its answer: POST the receipt itself to /v1/receipts/proof, which tells one on its way (202) from one the mesh never signed.`,
      );
    }
    return c.json(answer);
  })
  .post('/v1/receipts/proof', async (c) => {
    await authenticate(c, BILLING);
    const { jti } = await postedReceipt(c);
    factsOf(c).receipt = jti;
    const answer = await proofOf(c.env, jti);
    if (answer === null) {
      // Signed by this edge, so owed to the log (docs/api.md section 5.1): on its way, not lost.
      const retryAfter = Math.max(1, Math.ceil(settings(c.env).settlement.flushMs / 1000)) + QUEUE_BATCH_WAIT_S;
      throw new MeshError('receipt_pending', `Receipt "${jti}" is signed but not in the settlement log yet; ask again in ${retryAfter} s.`, { retryAfter });
    }
    return c.json(answer);
  })
  .post('/admin/settlement/close', async (c) => {
    await authenticate(c, ['admin']);
    const closed = (await Promise.all(allShards(c.env).map((s) => ledgerShard(c.env, s).close(s)))).flat().sort();
    return c.json({ closed });
  })
  .post('/admin/settlement/disputes', async (c) => {
    await authenticate(c, ['admin']);
    const body = parseJson(await c.req.text()) as { jti?: unknown; reason?: unknown };
    if (typeof body !== 'object' || body === null || typeof body.jti !== 'string' || body.jti.length === 0 || body.jti.length > 256) {
      throw invalid('The body must be { "jti": "<receipt id>", "reason": "<why>" }.');
    }
    const reason = typeof body.reason === 'string' && body.reason.length > 0 ? body.reason.slice(0, 500) : 'unspecified';
    const shard = shardOfReceipt(c.env, body.jti);
    const { created, settled } = await ledgerShard(c.env, shard).dispute(shard, body.jti, reason);
    if (settled) throw new MeshError('already_settled', `Receipt ${body.jti} is already in a closed batch; it can no longer be disputed.`);
    return c.json({ jti: body.jti, reason, created }, created ? 201 : 200);
  })
  .post('/admin/settlement/replay', async (c) => {
    await authenticate(c, ['admin']);
    const limit = intParam(c.req.query('limit'), 'limit', REPLAY_DEFAULT, REPLAY_MAX);
    if (limit < 1) throw invalid('"limit" must be at least 1.');
    return c.json(await replayUndelivered(c.env, limit));
  })
  .get('/admin/settlement/shards', async (c) => {
    await authenticate(c, ['admin']);
    return c.json({ shards: await Promise.all(allShards(c.env).map((s) => ledgerShard(c.env, s).stats(s))) });
  });
