/**
 * The receipts library: what anyone needs to build or check the mesh's
 * settlement evidence with nothing but its public JWKS (docs/api.md sections
 * 4, 5 and 6). RFC 9162 Merkle trees, batch totals, the comparison of two
 * answers, and the offline verifier of receipts, batches, inclusion proofs
 * and fraud proofs. The Worker's ledger builds batches
 * with it and `mesh-verify` (bin/) checks them with it, so both sides use one
 * definition. Depends only on `shared/jwt.ts`, jose and `node:crypto`.
 */

export { compareAnswerBytes, compareAnswers, DEFAULT_RULE, isCompareRule, type Comparison } from './compare.ts';
export {
  verifyBatchDisputes,
  verifyDispute,
  type DisputeDocument,
  type DisputeJustification,
  type DisputeReport,
  type DisputeRole,
} from './dispute.ts';
export { sha256Hex, toHex } from './hash.ts';
export {
  chunkedProof,
  emptyRoot,
  equalHashes,
  fromHex,
  inclusionProof,
  leafHash,
  merkleRoot,
  nodeHash,
  verifyInclusion,
  type Hash,
} from './merkle.ts';
export { addToTotals, emptyTotals, payoutSplit, secondProvider, sortedTotals, totalsEqual, totalsOf, type Billable } from './totals.ts';
export {
  verifyBatch,
  verifyInclusionProof,
  verifyReceipt,
  VerifyError,
  type InclusionProof,
  type Jwks,
  type VerifyErrorCode,
  type VerifyOptions,
} from './verify.ts';
