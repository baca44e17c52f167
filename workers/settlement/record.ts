/**
 * The producer side of settlement: every signed receipt goes to the
 * `RECEIPTS` queue. The answer does not wait for it (a queue send is a round
 * trip, and the mesh exists for latency; docs/benchmarks.md): the
 * send runs in `ctx.waitUntil`, so the runtime keeps it alive after the
 * response, and is awaited there, retried, and never dropped silently.
 *
 * Receipts of one isolate travel together. The first receipt into an empty
 * outbox opens a window of RECEIPTS_FLUSH_MS (200 ms by default: far inside
 * the 30 s the runtime gives `waitUntil` work, and long enough that a lightly
 * loaded isolate sends a few batches a second, not one per request); its
 * request's `waitUntil` owns the window's one timer and, when it ends, sends
 * every receipt that joined it (in queue batches of at most 100 messages and
 * 256 KB) from its own context. A receipt that joins an open window costs its
 * request nothing more: no timer, no work left in its context. Receipts that
 * arrive while a window is being sent open the next one, so no window's work
 * grows under load. Under load that is one queue round trip per batch, not
 * per request, and no promise crosses from one request to another.
 *
 * If the queue refuses twice, the receipts are appended straight to their
 * ledger shards; what a shard refuses is written to the archive bucket under
 * `undelivered/` for the operator to replay (replay.ts); only if R2 fails as well does a
 * receipt end in the error log, in full. `recordReceipt` never rejects.
 */

import { settings, type Env } from '../env.ts';
import { ledgerShard, shardOfReceipt } from './ledger.ts';

/**
 * The queue message: a version tag, the compact receipt JWT and its ledger
 * shard, chosen once when the receipt was recorded. A redelivery goes to that
 * shard even after `SETTLEMENT_SHARDS` changed, where the shard's `jti` check
 * finds it (computed again, it could land in a second shard and be charged
 * twice). Messages without `shard` (sent before it existed) get the current one.
 */
export interface ReceiptMessage {
  v: 1;
  receipt: string;
  shard?: number;
}

/** Where a receipt went; `batched` when it joined a window another request of the isolate sends. */
type Recorded = 'queued' | 'ledger' | 'undelivered' | 'lost' | 'batched';

interface Pending {
  jti: string;
  receipt: string;
  /** Its ledger shard, chosen once (see `ReceiptMessage`). */
  shard: number;
}

/** Cloudflare Queues: at most 100 messages and 256 KB per sendBatch (with room for message overhead). */
const MAX_MESSAGES = 100;
const MAX_BYTES = 200_000;
const SEND_ATTEMPTS = 2;
/** Past twice its length plus this, an open window is presumed dead and the next receipt opens a new one. */
const STALE_WINDOW_GRACE_MS = 1000;

/** The isolate's receipts waiting for the open window's send (one outbox per `env`, that is per isolate). */
interface Outbox {
  pending: Pending[];
  /** A window is open: a request's timer will send `pending`. */
  open: boolean;
  /** When it opened, ms: a window open far longer than its length lost its request (see below). */
  openedAt: number;
}

const outboxes = new WeakMap<Env, Outbox>();

/** Where a receipt the queue and its shard both refused waits for `POST /admin/settlement/replay` (replay.ts). */
export const UNDELIVERED_PREFIX = 'undelivered/';

export function undeliveredKey(jti: string): string {
  return `${UNDELIVERED_PREFIX}${jti}.jwt`;
}

export async function recordReceipt(env: Env, jti: string, receipt: string): Promise<Recorded> {
  let outbox = outboxes.get(env);
  if (!outbox) outboxes.set(env, (outbox = { pending: [], open: false, openedAt: 0 }));
  const mine: Pending = { jti, receipt, shard: shardOfReceipt(env, jti) };
  outbox.pending.push(mine);
  const { flushMs } = settings(env).settlement;
  const now = Date.now();
  // A window whose timer never fired (its request's context was cancelled) is taken over, never trusted forever.
  if (outbox.open && now - outbox.openedAt <= 2 * flushMs + STALE_WINDOW_GRACE_MS) return 'batched';
  outbox.open = true;
  outbox.openedAt = now;
  await new Promise((resolve) => setTimeout(resolve, flushMs));
  // The window closes: what joined it is this request's to send; later receipts open the next one.
  const window = outbox.pending;
  outbox.pending = [];
  outbox.open = false;
  let outcome: Recorded = 'batched';
  while (window.length > 0) {
    const batch = take(window);
    const results = await deliver(env, batch);
    const i = batch.indexOf(mine);
    if (i >= 0) outcome = results[i]!;
  }
  return outcome;
}

/** The oldest waiting receipts, as many as one queue batch holds. */
function take(outbox: Pending[]): Pending[] {
  let n = 0;
  let bytes = 0;
  while (n < outbox.length && n < MAX_MESSAGES && (n === 0 || bytes + outbox[n]!.receipt.length + 32 <= MAX_BYTES)) {
    bytes += outbox[n]!.receipt.length + 32;
    n++;
  }
  return outbox.splice(0, n);
}

async function deliver(env: Env, batch: Pending[]): Promise<Recorded[]> {
  let error: unknown;
  for (let attempt = 0; attempt < SEND_ATTEMPTS; attempt++) {
    try {
      await env.RECEIPTS.sendBatch(batch.map((p) => ({ body: { v: 1, receipt: p.receipt, shard: p.shard } satisfies ReceiptMessage, contentType: 'json' as const })));
      return batch.map(() => 'queued');
    } catch (err) {
      error = err;
    }
  }
  console.error(`settlement: queue send failed for ${batch.length} receipts; appending them to the ledger directly.`, error);
  return Promise.all(batch.map((p) => fallBack(env, p)));
}

/** The queue refused: the ledger shard itself, then R2, then the log. */
async function fallBack(env: Env, { jti, receipt, shard }: Pending): Promise<Recorded> {
  let error: unknown;
  try {
    const [outcome] = await ledgerShard(env, shard).append(shard, [receipt]);
    if (outcome === 'appended' || outcome === 'duplicate') return 'ledger';
    error = new Error(`ledger refused the receipt: ${JSON.stringify(outcome)}`);
  } catch (err) {
    error = err;
  }
  console.error(`settlement: ledger append failed for receipt ${jti}; keeping it in R2 to replay.`, error);
  try {
    // The shard travels with it, for the replay's message (docs/api.md section 5.2).
    await env.SETTLEMENT_ARCHIVE.put(undeliveredKey(jti), receipt, { customMetadata: { shard: String(shard) } });
    return 'undelivered';
  } catch (err) {
    console.error(`settlement: RECEIPT NOT RECORDED, replay it by hand: ${jti} ${receipt}`, err);
    return 'lost';
  }
}
