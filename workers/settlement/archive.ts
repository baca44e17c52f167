/**
 * The settlement archive in R2: for each closed batch, under
 * `settlement/<batch id>/`, the receipts as NDJSON in leaf order
 * (`{"leaf","jti","receipt"}` per line), the public keys that can verify them
 * (`jwks.json`, retired keys included) and the batch itself (`batch.json`,
 * `{ "id", "batch" }`, written last: its presence marks a complete archive).
 * `npx mesh-verify archive <dir> --jwks <trusted JWKS>` checks a downloaded copy offline.
 *
 * Large batches stream through a multipart upload in parts of exactly 8 MiB
 * (R2 wants all but the last part of one size), so the ledger never holds a
 * whole batch in memory. Writing is idempotent: a retry
 * rewrites the same objects.
 */

import type { Env } from '../env.ts';
import { signingKeys } from '../keys.ts';

const PART_BYTES = 8 * 1024 * 1024;
const encoder = new TextEncoder();

interface ArchivedReceipt {
  leaf: number;
  jti: string;
  jwt: string;
}

function archivePrefix(batchId: string): string {
  return `settlement/${batchId}/`;
}

/** Writes one batch's archive. */
export async function archiveBatch(env: Env, batchId: string, batchJwt: string, receipts: Iterable<ArchivedReceipt>): Promise<void> {
  const bucket = env.SETTLEMENT_ARCHIVE;
  const prefix = archivePrefix(batchId);
  await putNdjson(bucket, `${prefix}receipts.ndjson`, receipts);
  const keys = await signingKeys(env);
  await bucket.put(`${prefix}jwks.json`, JSON.stringify(keys.archiveJwks ?? keys.publicJwks), json);
  await bucket.put(`${prefix}batch.json`, JSON.stringify({ id: batchId, batch: batchJwt }), json);
}

const json = { httpMetadata: { contentType: 'application/json' } };
const ndjson = { httpMetadata: { contentType: 'application/x-ndjson' } };

/** Streams lines into parts of PART_BYTES; one plain put when everything fits in one part. */
async function putNdjson(bucket: R2Bucket, key: string, receipts: Iterable<ArchivedReceipt>): Promise<void> {
  let part = new Uint8Array(PART_BYTES);
  let used = 0;
  let upload: R2MultipartUpload | undefined;
  const uploaded: R2UploadedPart[] = [];
  const flush = async () => {
    upload ??= await bucket.createMultipartUpload(key, ndjson);
    uploaded.push(await upload.uploadPart(uploaded.length + 1, part.subarray(0, used)));
    part = new Uint8Array(PART_BYTES);
    used = 0;
  };
  try {
    for (const r of receipts) {
      let line = encoder.encode(`${JSON.stringify({ leaf: r.leaf, jti: r.jti, receipt: r.jwt })}\n`);
      // R2 wants every part but the last of one size: fill each part to the byte, splitting lines across parts.
      while (used + line.length >= PART_BYTES) {
        const room = PART_BYTES - used;
        part.set(line.subarray(0, room), used);
        used = PART_BYTES;
        line = line.subarray(room);
        await flush();
      }
      part.set(line, used);
      used += line.length;
    }
    if (!upload) {
      await bucket.put(key, part.subarray(0, used), ndjson);
      return;
    }
    if (used > 0) await flush();
    await upload.complete(uploaded);
  } catch (err) {
    await upload?.abort().catch(() => {});
    throw err;
  }
}
