/**
 * Provider attestations at the edge (docs/api.md section 3.5): optimistic on
 * the answer's path, strict in settlement. Before the consumer gets an
 * answer, the attestation's header and claims are read and matched to this
 * dispatch (backend, provider, jti, model, the bytes' hash; the units are the
 * mesh's own count, dispatch.ts): a cheap, synchronous check. Its Ed25519
 * signature, which protects billing and accountability rather than the
 * consumer's bytes (the backend is reached over TLS), is checked right after
 * the answer has left, in `waitUntil`. A signature that fails then withholds
 * the provider's payout for that receipt (a `signature` fraud proof,
 * docs/api.md section 6.2) and counts against the backend as a lie; the consumer, who got
 * an answer that passed every check deciding what it receives, is charged.
 */

import { importJWK, type JWK } from 'jose';
import { decodeCompact, TYP, type AttestationClaims, type DecodedJws } from '../../shared/jwt.ts';
import type { BackendEntry } from '../directory/backend.ts';
import type { Env } from '../env.ts';
import { isolateRouting } from '../routing/isolate.ts';
import { DEFAULT_RULE } from '../../receipts/compare.ts';
import { fileDispute, type Execution } from '../verification/disputes.ts';

/** What an attestation must be about. */
export interface AttestationExpectation {
  jti: string;
  model: string;
  outputSha256: string;
}

/**
 * The attestation decoded, when it is a compact JWS whose header is exactly
 * what the mesh accepts: EdDSA, `typ: mesh-attestation+jwt`, no `crit` and no
 * unencoded payload (`b64`); a string says why not.
 */
function decodeAttestation(att: string): DecodedJws | string {
  const jws = decodeCompact(att);
  if (!jws) return 'attestation is not a compact JWS';
  const { alg, typ, crit, b64 } = jws.header;
  if (alg !== 'EdDSA' || typ !== TYP.attestation) return 'attestation header is not EdDSA mesh-attestation+jwt';
  if (crit !== undefined || b64 !== undefined) return 'attestation header has parameters the mesh does not accept (crit, b64)';
  return jws;
}

/**
 * The attestation's claims, read without checking its signature, when its
 * header and claims are about this dispatch of `backend`; a string says why not.
 */
export function attestationClaims(att: string, backend: BackendEntry, expect: AttestationExpectation): AttestationClaims | string {
  if (!backend.providerKey) return 'no provider key on record';
  const jws = decodeAttestation(att);
  if (typeof jws === 'string') return jws;
  const claims = jws.payload as unknown as AttestationClaims;
  if (claims.iss !== backend.provider || claims.sub !== backend.id) return 'attestation names another provider or backend';
  if (claims.jti !== expect.jti) return 'attestation is for another dispatch';
  if (claims.model !== expect.model) return 'attestation names another model';
  if (claims.output_sha256 !== expect.outputSha256) return 'attestation does not match the bytes received';
  return claims;
}

const providerKeys = new Map<string, Promise<CryptoKey>>();

function providerKey(jwk: JWK): Promise<CryptoKey> {
  const id = `${jwk.crv}:${jwk.x}`;
  let key = providerKeys.get(id);
  if (!key) {
    if (providerKeys.size >= 10_000) providerKeys.clear();
    key = importJWK({ kty: 'OKP', crv: jwk.crv, x: jwk.x }, 'EdDSA') as Promise<CryptoKey>;
    providerKeys.set(id, key);
    key.catch(() => providerKeys.delete(id));
  }
  return key;
}

const encoder = new TextEncoder();

/**
 * Checks the attestation with the provider's admitted key: its header (as on
 * the path), that it names this provider and backend, and its Ed25519
 * signature over exactly the header and claims that were read on the path.
 * One `crypto.subtle.verify`: the claims themselves were matched to the
 * dispatch before the answer left (`attestationClaims`). Undefined when it
 * verifies, else why not.
 */
export async function signatureProblem(att: string, backend: BackendEntry): Promise<string | undefined> {
  if (!backend.providerKey) return 'no provider key on record';
  const jws = decodeAttestation(att);
  if (typeof jws === 'string') return jws;
  if (jws.payload.iss !== backend.provider || jws.payload.sub !== backend.id) return 'attestation names another provider or backend';
  try {
    const key = await providerKey(backend.providerKey);
    if (await crypto.subtle.verify('Ed25519', key, jws.signature, encoder.encode(jws.signingInput))) return undefined;
    return `attestation signature does not verify with ${backend.provider}'s admitted key`;
  } catch (err) {
    return `attestation signature does not verify with ${backend.provider}'s admitted key (${(err as Error).message})`;
  }
}

/** What a signature dispute says about the request besides its run. */
export interface RunSubject {
  model: string;
  modelVersion: string;
  /** SHA-256 (hex) of the OIP request bytes the backend was sent. */
  inputSha256: string;
}

/**
 * Run after the answer has left (in `waitUntil`): verifies the attestation of
 * `run`. When it verifies, the answer counts as the backend's success
 * (outlier ejection: only now, so an answer with a bad signature never resets
 * the backend's run of failures); when it fails, a failure counts against the
 * backend (`regionSize`: its region's backends, for the ejection cap) and a
 * `signature` fraud proof is filed, which withholds the run's receipt
 * (verification/disputes.ts). Returns whether it verified; never throws.
 */
export async function settleAttestation(env: Env, run: Execution, regionSize: number, subject: RunSubject): Promise<boolean> {
  const problem = await signatureProblem(run.attestation, run.backend);
  if (problem === undefined) {
    isolateRouting.ejected.recordSuccess(run.backend.id);
    return true;
  }
  console.warn(`attestation: backend ${run.backend.id} answered receipt ${run.receiptJti} with a bad signature: ${problem}`);
  isolateRouting.ejected.recordFailure(run.backend, regionSize);
  await fileDispute(env, {
    kind: 'signature',
    verdict: 'proven',
    accused: run,
    model: subject.model,
    modelVersion: subject.modelVersion,
    inputSha256: subject.inputSha256,
    rule: DEFAULT_RULE,
    runs: [{ role: 'answer', run }],
  });
  return false;
}
