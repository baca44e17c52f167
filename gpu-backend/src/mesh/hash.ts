/**
 * SHA-256 on Node's own crypto, synchronous and much cheaper per call than
 * WebCrypto's `digest`: the backend hashes every request and response body.
 * `receipts/hash.ts` stays WebCrypto for code that must also run in workerd.
 */

import { createHash } from 'node:crypto';

export function sha256HexSync(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}
