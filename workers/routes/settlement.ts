/**
 * Settlement routes (docs/api.md section 5). Billing reads, for the admin token or
 * a billing token (`role: billing`): closed batches (listed oldest first
 * across every ledger shard), one batch's JWT, its receipts in leaf order
 * (paged) and a receipt's inclusion proof. Operator actions, admin only:
 * close the open batches now, withhold a receipt from payout, shard stats.
 */

import { Hono } from 'hono';
import { MeshError } from '../../shared/errors.ts';
import { parseJson } from '../../shared/protocol.ts';
import { authenticate } from '../auth.ts';
import type { AppEnv } from '../context.ts';
import { settings } from '../env.ts';
import { allShards, ledgerShard, parseBatchId, shardOfReceipt } from '../settlement/ledger.ts';
import type { BatchSummary } from '../settlement/SettlementLedger.ts';

const BILLING = ['billing', 'admin'] as const;
const LIST_MAX = 1000;
const PAGE_DEFAULT = 1000;
const PAGE_MAX = 5000;

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

export const settlementRoutes = new Hono<AppEnv>()
  .get('/v1/settlement/batches', async (c) => {
    await authenticate(c, BILLING);
    const after = c.req.query('after') ?? '';
    if (after !== '' && !parseBatchId(after)) throw invalid('"after" must be a batch id from an earlier listing.');
    const limit = Math.max(1, intParam(c.req.query('limit'), 'limit', 100, LIST_MAX));
    const lists = await Promise.all(allShards(c.env).map((s) => ledgerShard(c.env, s).list(s, after, limit)));
    const batches: BatchSummary[] = lists.flat().sort((a, b) => (a.id < b.id ? -1 : 1)).slice(0, limit);
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
    const home = shardOfReceipt(c.env, jti);
    let answer = await ledgerShard(c.env, home).proof(home, jti);
    // Not where its jti hashes now: the shard count changed since; ask the others.
    if (answer === null) {
      const others = allShards(c.env).filter((s) => s !== home);
      answer = (await Promise.all(others.map((s) => ledgerShard(c.env, s).proof(s, jti)))).find((a) => a !== null) ?? null;
    }
    if (answer === null) throw new MeshError('receipt_not_found', `No receipt "${jti}" has reached the settlement log.`);
    if ('pending' in answer) {
      const epochS = settings(c.env).settlement.epochMs / 1000;
      throw new MeshError('batch_open', `Receipt "${jti}" is in the open batch; its proof exists once the batch closes (within ${epochS} s).`, {
        retryAfter: epochS,
      });
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
  .get('/admin/settlement/shards', async (c) => {
    await authenticate(c, ['admin']);
    return c.json({ shards: await Promise.all(allShards(c.env).map((s) => ledgerShard(c.env, s).stats(s))) });
  });
