/**
 * Receipt claims for tests (docs/api.md section 4): every required claim, varied by
 * `i` (consumer, provider, amount) so totals have several keys, and the
 * code and message of a verifier's failure. Usable in Node and in workerd alike.
 */

import { VerifyError } from '../../receipts/verify.ts';
import type { ReceiptClaims } from '../../shared/jwt.ts';

export const TEST_ISSUER = 'https://mesh.test';

export function receiptClaims(i: number, over: Partial<ReceiptClaims> = {}): ReceiptClaims {
  return {
    iss: TEST_ISSUER,
    sub: `consumer-${i % 3}`,
    jti: `rcpt-${String(i).padStart(6, '0')}`,
    iat: Math.floor(Date.now() / 1000) - 60,
    model: 'embed',
    model_version: '1',
    provider: `p${i % 2}`,
    backend: `b${i % 4}`,
    region: 'ap-southeast',
    pop: 'SIN',
    units: { input: 4 + (i % 7), output: 3 },
    amount: 100 + i,
    input_sha256: 'a'.repeat(64),
    output_sha256: 'b'.repeat(64),
    latency_ms: 12,
    cache: 'miss',
    verify: 'none',
    ...over,
  };
}

/** The code and message of the VerifyError `p` rejects with. */
export async function failure(p: Promise<unknown>): Promise<{ code: string; message: string }> {
  try {
    await p;
  } catch (err) {
    if (err instanceof VerifyError) return { code: err.code, message: err.message };
    throw err;
  }
  throw new Error('expected a VerifyError, but it verified');
}
