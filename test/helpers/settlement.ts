/**
 * Reconciling a running mesh's settlement log against what consumers saw:
 * closes the open batches until every expected receipt is in a closed batch
 * (the queue delivers within a second or two), reads every batch and its
 * receipts through the billing API, and checks each batch with the offline
 * verifier (signature, Merkle root, count, totals).
 */

import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { verifyBatch, type Jwks } from '../../receipts/verify.ts';
import type { BatchClaims, ReceiptClaims } from '../../shared/jwt.ts';

export interface Settled {
  batches: BatchClaims[];
  /** jti -> how many closed batches hold it (exactly-once means 1 each). */
  seen: Map<string, number>;
  /** jti -> the id of the (last) batch that holds it. */
  batchOf: Map<string, string>;
  receipts: ReceiptClaims[];
  closes: number;
}

async function json<T>(res: Response): Promise<T> {
  if (!res.ok) throw new Error(`${res.url}: HTTP ${res.status} ${await res.text()}`);
  return (await res.json()) as T;
}

export async function settle(edgeUrl: string, adminToken: string, expected: Iterable<string>, timeoutMs = 30_000): Promise<Settled> {
  const auth = { authorization: `Bearer ${adminToken}` };
  const jwks = await json<Jwks>(await fetch(`${edgeUrl}/.well-known/jwks.json`));
  const want = new Set(expected);
  const out: Settled = { batches: [], seen: new Map(), batchOf: new Map(), receipts: [], closes: 0 };
  let after = '';
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    await json(await fetch(`${edgeUrl}/admin/settlement/close`, { method: 'POST', headers: auth }));
    out.closes++;
    for (;;) {
      const list = await json<{ batches: { id: string }[]; next: string | null }>(
        await fetch(`${edgeUrl}/v1/settlement/batches?after=${after}&limit=100`, { headers: auth }),
      );
      for (const { id } of list.batches) {
        const { batch } = await json<{ batch: string }>(await fetch(`${edgeUrl}/v1/settlement/batches/${id}`, { headers: auth }));
        const jwts: string[] = [];
        let from: number | null = 0;
        while (from !== null) {
          const page: { receipts: string[]; next: number | null } = await json(
            await fetch(`${edgeUrl}/v1/settlement/batches/${id}/receipts?from=${from}&limit=2000`, { headers: auth }),
          );
          jwts.push(...page.receipts);
          from = page.next;
        }
        const verified = await verifyBatch(batch, jwts, jwks, { issuer: edgeUrl });
        out.batches.push(verified.claims);
        for (const r of verified.receipts) {
          out.receipts.push(r);
          out.seen.set(r.jti, (out.seen.get(r.jti) ?? 0) + 1);
          out.batchOf.set(r.jti, id);
        }
        after = id;
      }
      if (list.next === null) break;
    }
    const missing = [...want].filter((j) => !out.seen.has(j));
    if (missing.length === 0 || Date.now() > deadline) return out;
    await new Promise((r) => setTimeout(r, 500));
  }
}

/**
 * Writes closed batch `id` as a billing system downloads it for `mesh-verify
 * batch`: `batch.json` (GET /v1/settlement/batches/{id}) and
 * `receipts.ndjson` (every page of its receipts, in leaf order) under `dir`.
 * Returns the two paths.
 */
export async function downloadBatch(edgeUrl: string, token: string, id: string, dir: string): Promise<{ batch: string; receipts: string }> {
  const auth = { authorization: `Bearer ${token}` };
  const receipts: string[] = [];
  for (let from: number | null = 0; from !== null; ) {
    const page: { receipts: string[]; next: number | null } = await json(
      await fetch(`${edgeUrl}/v1/settlement/batches/${id}/receipts?from=${from}&limit=2000`, { headers: auth }),
    );
    receipts.push(...page.receipts);
    from = page.next;
  }
  const files = { batch: path.join(dir, 'batch.json'), receipts: path.join(dir, 'receipts.ndjson') };
  const batch = await fetch(`${edgeUrl}/v1/settlement/batches/${id}`, { headers: auth });
  if (!batch.ok) throw new Error(`batch ${id}: HTTP ${batch.status} ${await batch.text()}`);
  await writeFile(files.batch, await batch.text());
  await writeFile(files.receipts, receipts.join('\n') + '\n');
  return files;
}
