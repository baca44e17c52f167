/**
 * Pushing closed batches to the operator's billing system
 * (`SETTLEMENT_WEBHOOK_URL`): `POST <url>` with body `{ "id", "batch" }` and
 * `Authorization: Bearer <JWT>` signed by the mesh key (`typ:
 * mesh-webhook+jwt`, `aud` = the URL, `batch_id`, `body_sha256` of the exact
 * body, five-minute `exp`, unique `jti`), so the receiver verifies it with the
 * public JWKS and needs no shared secret. Any 2xx is delivery; anything else
 * is retried with exponential backoff by the ledger's alarm.
 */

import { sha256Hex } from '../../receipts/index.ts';
import { TYP, type WebhookClaims } from '../../shared/jwt.ts';
import { settings, type Env } from '../env.ts';
import { sign, signingKeys } from '../keys.ts';

/** Attempts before giving up (the batch stays readable through the billing API). */
const WEBHOOK_MAX_ATTEMPTS = 16;
const BACKOFF_BASE_MS = 1_000;
const BACKOFF_MAX_MS = 3_600_000;
const TIMEOUT_MS = 10_000;

/** When to try again after `attempts` failures: 1 s, 2 s, 4 s ... capped at an hour; undefined once it gives up. */
export function nextWebhookAttempt(attempts: number, now: number): number | undefined {
  if (attempts >= WEBHOOK_MAX_ATTEMPTS) return undefined;
  return now + Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** (attempts - 1));
}

/** One delivery attempt; undefined on success, else why it failed. */
export async function deliverWebhook(env: Env, url: string, batchId: string, batchJwt: string): Promise<string | undefined> {
  const body = JSON.stringify({ id: batchId, batch: batchJwt });
  const iat = Math.floor(Date.now() / 1000);
  const claims: WebhookClaims = {
    iss: settings(env).issuer,
    aud: url,
    jti: crypto.randomUUID(),
    iat,
    exp: iat + 300,
    batch_id: batchId,
    body_sha256: await sha256Hex(body),
  };
  const token = await sign(await signingKeys(env), TYP.webhook, { ...claims });
  try {
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body,
      signal: AbortSignal.timeout(TIMEOUT_MS),
    });
    await res.body?.cancel();
    return res.ok ? undefined : `HTTP ${res.status}`;
  } catch (err) {
    return (err as Error).message || String(err);
  }
}
