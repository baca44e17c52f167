/**
 * Fraud proofs for tests (docs/api.md section 6), built as the edge would:
 * real Ed25519 keys, one per provider and one for the mesh; every run's
 * attestation signed by its provider (or by whatever key a test says), its
 * receipt and the dispute signed by the mesh; the answer bytes in `outputs`.
 * Tests tamper with the pieces and re-sign what the mesh signs, so each check
 * of receipts/dispute.ts is met on its own.
 */

import { importJWK, SignJWT, type CryptoKey, type JWK } from 'jose';
import type { DisputeDocument } from '../../receipts/dispute.ts';
import { sha256Hex } from '../../receipts/hash.ts';
import type { Jwks } from '../../receipts/verify.ts';
import { TYP, type AttestationClaims, type CompareRule, type DisputeClaims, type DisputeRun, type ReceiptClaims } from '../../shared/jwt.ts';
import { generateEd25519 } from '../../shared/keys.ts';
import { receiptClaims, TEST_ISSUER } from './receipts.ts';

export const MODEL = 'embed';
export const INPUT_SHA256 = 'c'.repeat(64);

export interface Signer {
  kid: string;
  key: CryptoKey;
  publicJwk: JWK;
}

export async function signer(kid: string): Promise<Signer> {
  const { privateJwk, publicJwk } = await generateEd25519(kid);
  return { kid, key: (await importJWK(privateJwk, 'EdDSA')) as CryptoKey, publicJwk };
}

export interface Provider {
  id: string;
  backend: string;
  signer: Signer;
}

export interface World {
  mesh: Signer;
  jwks: Jwks;
  /** p-a, p-b, p-c, p-d: each with its own key and one backend. */
  providers: Provider[];
}

export async function world(): Promise<World> {
  const mesh = await signer('mesh-2025-02');
  const providers = await Promise.all(
    ['p-a', 'p-b', 'p-c', 'p-d'].map(async (id) => ({ id, backend: `${id}-gpu-1`, signer: await signer(`${id}-key`) })),
  );
  return { mesh, jwks: { keys: [mesh.publicJwk] }, providers };
}

/** Signs any payload under `header` with a signer's key (kid defaults to the signer's). */
export function sign(payload: object, s: Signer, typ: string, kid: string = s.kid): Promise<string> {
  return new SignJWT({ ...payload }).setProtectedHeader({ alg: 'EdDSA', typ, kid }).sign(s.key);
}

/** The bytes of an OIP answer with one FP32 output `embeddings` holding `values`. */
export function answer(values: unknown[], over: { name?: string; datatype?: string; shape?: number[] } = {}): Uint8Array {
  const output = { name: over.name ?? 'embeddings', datatype: over.datatype ?? 'FP32', shape: over.shape ?? [1, values.length], data: values };
  return new TextEncoder().encode(JSON.stringify({ model_name: MODEL, model_version: '1', outputs: [output] }));
}

/** `n` embedding-like values in (-1, 1), the same for the same seed. */
export function embedding(n: number, seed = 1): number[] {
  const out: number[] = [];
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) % 2147483648;
    out.push(Math.fround((x / 2147483648) * 2 - 1));
  }
  return out;
}

/** `values` with GPU-like noise: each moved by up to `rel` of itself, deterministically. */
export function noisy(values: number[], rel = 1e-5): number[] {
  return values.map((v, i) => v * (1 + rel * (((i * 7919) % 13) / 6 - 1)));
}

export interface RunSpec {
  role: DisputeRun['role'];
  provider: Provider;
  output: Uint8Array;
  /** Signs the attestation with this key instead of the provider's (a forgery, or a key it was not admitted with). */
  attestWith?: Signer;
  attestation?: Partial<AttestationClaims>;
  receipt?: Partial<ReceiptClaims>;
}

export interface DisputeSpec {
  id?: string;
  kind?: DisputeClaims['kind'];
  runs: RunSpec[];
  rule?: CompareRule;
  /** The accused provider (verdict proven, withheld its run's receipt); none: unresolved. */
  accused?: Provider;
}

export interface Built {
  doc: DisputeDocument & { outputs: Record<string, string> };
  claims: DisputeClaims;
  /** The claims of each run's receipt, in run order. */
  receipts: ReceiptClaims[];
}

let serial = 0;

/** A fresh dispute id, `d-<13-digit ms>-<8 hex>`. */
export function disputeId(): string {
  serial++;
  return `d-${String(1764083700000 + serial).padStart(13, '0')}-${serial.toString(16).padStart(8, '0')}`;
}

/** A signed dispute document as the edge would serve it. */
export async function buildDispute(w: World, spec: DisputeSpec): Promise<Built> {
  const id = spec.id ?? disputeId();
  const kind = spec.kind ?? 'mismatch';
  const iat = Math.floor(Date.now() / 1000) - 30;
  const answerJti = `rcpt-${id}-answer`;
  const outputs: Record<string, string> = {};
  const runs: DisputeRun[] = [];
  const receipts: ReceiptClaims[] = [];
  for (const [i, r] of spec.runs.entries()) {
    const outputSha = await sha256Hex(r.output);
    const attestation = await sign(
      {
        iss: r.provider.id,
        sub: r.provider.backend,
        iat,
        jti: `dispatch-${id}-${i}`,
        model: MODEL,
        output_sha256: outputSha,
        units: { input: 4, output: 3 },
        ...r.attestation,
      },
      r.attestWith ?? r.provider.signer,
      TYP.attestation,
    );
    const receipt = receiptClaims(i, {
      jti: r.role === 'answer' ? answerJti : `rcpt-${id}-${r.role}`,
      sub: r.role === 'answer' ? 'consumer-1' : 'mesh-verification',
      iat,
      model: MODEL,
      provider: r.provider.id,
      backend: r.provider.backend,
      attestation,
      input_sha256: INPUT_SHA256,
      output_sha256: outputSha,
      verify: 'sampled',
      ...(r.role === 'answer' ? {} : { checks: answerJti }),
      ...r.receipt,
    });
    receipts.push(receipt);
    runs.push({
      role: r.role,
      provider: r.provider.id,
      backend: r.provider.backend,
      public_jwk: { kty: 'OKP', crv: 'Ed25519', x: r.provider.signer.publicJwk.x!, kid: r.provider.signer.kid },
      attestation,
      output_sha256: outputSha,
      receipt: await sign(receipt, w.mesh, TYP.receipt),
    });
    if (kind === 'mismatch') outputs[outputSha] = Buffer.from(r.output).toString('base64');
  }
  const accusedRun = spec.accused ? runs.findIndex((r) => r.provider === spec.accused!.id) : -1;
  const claims: DisputeClaims = {
    iss: TEST_ISSUER,
    iat,
    jti: id,
    kind,
    verdict: accusedRun >= 0 ? 'proven' : 'unresolved',
    accused: accusedRun >= 0 ? runs[accusedRun]!.provider : null,
    model: MODEL,
    model_version: '1',
    input_sha256: INPUT_SHA256,
    rule: spec.rule ?? { float: { abs: 1e-4, rel: 1e-3 } },
    runs,
    withheld: accusedRun >= 0 ? [receipts[accusedRun]!.jti] : [],
  };
  return { doc: { id, dispute: await sign(claims, w.mesh, TYP.dispute), outputs }, claims, receipts };
}

/** The document with its claims edited and re-signed by the mesh (a mesh that signs what its evidence does not prove). */
export async function resign(w: World, built: Built, edit: (c: DisputeClaims) => void): Promise<Built['doc']> {
  const claims = structuredClone(built.claims);
  edit(claims);
  return { ...built.doc, dispute: await sign(claims, w.mesh, TYP.dispute) };
}

/** A run's receipt with its claims edited, signed by the mesh. */
export function signReceipt(w: World, claims: ReceiptClaims, over: Partial<ReceiptClaims> = {}): Promise<string> {
  return sign({ ...claims, ...over }, w.mesh, TYP.receipt);
}

/**
 * The usual proven mismatch: the answer (p-a) changed one element by 0.01;
 * the check (p-b) and the referee (p-c) computed it honestly, with GPU noise.
 */
export async function provenMismatch(w: World, n = 1000): Promise<Built> {
  const honest = embedding(n);
  const cheated = [...honest];
  cheated[n >> 1] = cheated[n >> 1]! + 0.01;
  const [a, b, c] = w.providers as [Provider, Provider, Provider];
  return buildDispute(w, {
    runs: [
      { role: 'answer', provider: a, output: answer(cheated) },
      { role: 'check', provider: b, output: answer(noisy(honest)) },
      { role: 'referee', provider: c, output: answer(noisy(honest, 2e-5)) },
    ],
    accused: a,
  });
}

/** A signature dispute: the answer's attestation was signed with a key the provider (p-d) was not admitted with. */
export async function signatureDispute(w: World): Promise<Built> {
  const d = w.providers[3]!;
  return buildDispute(w, {
    kind: 'signature',
    runs: [{ role: 'answer', provider: d, output: answer(embedding(8)), attestWith: await signer(d.signer.kid) }],
    accused: d,
  });
}
