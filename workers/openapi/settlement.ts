/**
 * OpenAPI description of the settlement routes (workers/routes/settlement.ts,
 * docs/api.md sections 5.5 and 5.6): billing reads of batches, receipts and
 * inclusion proofs, and the operator's settlement actions.
 */

import { arr, bool, HEX64, int, JWT, MS, nullable, obj, ref, str, type Family } from './build.ts';

const count = (max?: number) => str({ pattern: '^[0-9]{1,9}$', description: `a non-negative integer${max ? `; at most ${max} is used` : ''}` });
const proof = { 200: { json: ref('InclusionProof') } };
const batchId = { id: str({ description: 'a batch id from a listing' }) };

export const settlement: Family = {
  tag: 'Settlement',
  paths: {
    '/v1/settlement/batches': {
      get: {
        summary: 'List closed batches, oldest first',
        see: '5.5',
        auth: 'billing',
        query: { after: str({ description: 'a batch id from an earlier listing' }), limit: count(1000) },
        ok: { 200: { json: obj({ batches: arr(ref('BatchSummary')), next: nullable(str()) }) } },
        errors: [400],
      },
    },
    '/v1/settlement/batches/{id}': {
      get: {
        summary: "A closed batch's JWT",
        see: '5.5',
        auth: 'billing',
        path: batchId,
        ok: { 200: { json: obj({ id: str(), batch: JWT, count: int(), merkle_root: HEX64, archived: bool }) } },
        errors: [404],
      },
    },
    '/v1/settlement/batches/{id}/receipts': {
      get: {
        summary: "A batch's receipts, in leaf order",
        see: '5.5',
        auth: 'billing',
        path: batchId,
        query: { from: count(), limit: count(5000) },
        ok: { 200: { json: obj({ id: str(), receipts: arr(JWT), from: int(), next: nullable(int()) }) } },
        errors: [400, 404],
      },
    },
    '/v1/receipts/{jti}/proof': {
      get: { summary: "A receipt's inclusion proof, by its jti", see: '5.5', auth: 'billing', ok: proof, errors: [404] },
    },
    '/v1/receipts/proof': {
      post: {
        summary: "A receipt's inclusion proof, for the receipt",
        see: '5.5',
        auth: 'billing',
        body: { 'application/json': obj({ receipt: str({ minLength: 1, description: 'the receipt JWT, as x-mesh-receipt carried it' }) }) },
        ok: proof,
        errors: [202, 404, 413],
      },
    },
    '/admin/settlement/close': {
      post: { summary: 'Close the open batches now', see: '5.6', auth: 'admin', ok: { 200: { json: obj({ closed: arr(str()) }) } } },
    },
    '/admin/settlement/disputes': {
      post: {
        summary: 'Withhold a receipt from payout',
        see: '5.6',
        auth: 'admin',
        body: { 'application/json': obj({ jti: str({ minLength: 1, maxLength: 256 }) }, { reason: str({ description: 'up to 500 characters are kept' }) }) },
        ok: { 200: { json: ref('DisputeFiled') }, 201: { json: ref('DisputeFiled') } },
        errors: [409],
      },
    },
    '/admin/settlement/replay': {
      post: {
        summary: 'Append the receipts kept under undelivered/ to their ledger shards',
        see: '5.6',
        auth: 'admin',
        query: { limit: str({ pattern: '^[0-9]{1,9}$', description: 'objects looked at in this call: at least 1, default 100; at most 1000 is used' }) },
        ok: {
          200: {
            json: obj({ replayed: int(), duplicates: int(), kept: arr(obj({ key: str(), reason: str() })), more: bool }),
          },
        },
      },
    },
    '/admin/settlement/shards': {
      get: {
        summary: "Each ledger shard's counts",
        see: '5.6',
        auth: 'admin',
        ok: {
          200: {
            json: obj({
              shards: arr(obj({ shard: int(), receipts: int(), open: int(), batches: obj({}, {}), disputes: int(), penalties: int() })),
            }),
          },
        },
      },
    },
  },
  schemas: {
    BatchSummary: obj({ id: str(), shard: int(), epoch_start: MS, epoch_end: MS, count: int(), merkle_root: HEX64 }),
    InclusionProof: obj({ batch_id: str(), leaf_index: int(), tree_size: int(), audit_path: arr(HEX64) }),
    DisputeFiled: obj({ jti: str(), reason: str(), created: bool }),
  },
};
