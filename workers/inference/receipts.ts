/**
 * Receipts (docs/api.md section 4): one signed JWT per answered request, naming who
 * computed what, where, for whom and at what price, bound to the exact bytes
 * of the request and of the response.
 */

import type { ReceiptClaims } from '../../shared/jwt.ts';
import { TYP } from '../../shared/jwt.ts';
import { sign, type SigningKeys } from '../keys.ts';

export function signReceipt(keys: SigningKeys, claims: ReceiptClaims): Promise<string> {
  return sign(keys, TYP.receipt, { ...claims });
}
