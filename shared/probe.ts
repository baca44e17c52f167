/**
 * Location probes (docs/api.md section 3.2): what the edge sends a backend
 * and what the backend signs with its provider key, so that only the
 * provider can answer one. Both sides import this; the round trip it times is
 * evidence of where the backend is.
 */

/** A probe's nonce: 16 to 64 base64url characters. */
export const PROBE_NONCE = /^[A-Za-z0-9_-]{16,64}$/;

/** The exact text a probe signature covers (its UTF-8 bytes). */
export function probeMessage(backendId: string, nonce: string): string {
  return `mesh-probe:${backendId}:${nonce}`;
}

/** The body of a probe answer. */
export interface ProbeAnswer {
  nonce: string;
  /** base64url Ed25519 signature by the provider key over `probeMessage(backendId, nonce)`. */
  signature: string;
}
