/**
 * Billing units (docs/api.md section 4.3, "Metering"): how many units an
 * inference is, computed from the request and the answer alone. The edge
 * meters every answer it relays with these functions and the backend attests
 * the same count with the same functions, so an honest provider always agrees
 * with the mesh and a provider that claims other units is caught.
 *
 * Kinds (a model's `meter`):
 * - `tokens`: input = tokens of the text input counted with the model's
 *   tokenizer (each text truncated at `maxTokens`, [CLS] included), or, when
 *   the request sends token ids, the ids that are not `padId`; output = rows.
 * - `rows`: input = output = the first dimension of the first input.
 * - `elements`: input = elements of every input (a BYTES element is one
 *   string); output = elements of every output.
 * - `requests`: 1 and 1.
 */

import { textsOf } from './binary.ts';
import type { Datatype } from './protocol.ts';
import { DEFAULT_MAX_LENGTH, PAD_ID, TOKENIZER_NAME, tokenize } from './tokenizer.ts';
import type { Units } from './jwt.ts';

export const METERS = ['tokens', 'rows', 'elements', 'requests'] as const;
export type Meter = (typeof METERS)[number];

/** The tokenizers the mesh can count with. */
export const TOKENIZERS = [TOKENIZER_NAME] as const;
export type TokenizerName = (typeof TOKENIZERS)[number];

export interface MeterRule {
  meter: Meter;
  /** `tokens` only: default mesh-hash-v1. */
  tokenizer?: TokenizerName;
  /** `tokens` only: tokens per text at most, [CLS] included (the model's `max_sequence_length`); default 128. */
  maxTokens?: number;
  /** `tokens` only: the id that pads token-id inputs and is not counted; default 0. */
  padId?: number;
}

/** What metering reads of a tensor (an OIP input or output). */
export interface MeteredTensor {
  datatype: Datatype;
  shape: readonly number[];
  data?: ArrayLike<unknown>;
  /** The data in the binary tensor extension (shared/binary.ts), when it came that way. */
  binary?: Uint8Array;
}

export function isMeter(v: unknown): v is Meter {
  return typeof v === 'string' && (METERS as readonly string[]).includes(v);
}

function elements(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Rows of a request: the first dimension of its first input (1 for a scalar input). */
export function requestRows(inputs: readonly MeteredTensor[]): number {
  return inputs[0]?.shape[0] ?? 1;
}

function tokenCount(rule: MeterRule, inputs: readonly MeteredTensor[]): number {
  const maxTokens = rule.maxTokens ?? DEFAULT_MAX_LENGTH;
  const text = inputs.find((t) => t.datatype === 'BYTES');
  if (text?.binary) {
    let n = 0;
    for (const t of textsOf({ name: 'text', data: [], binary: text.binary })) n += tokenize(t, maxTokens).length;
    return n;
  }
  if (text?.data) {
    let n = 0;
    for (let i = 0; i < text.data.length; i++) n += tokenize(String(text.data[i]), maxTokens).length;
    return n;
  }
  const ids = inputs.find((t) => t.datatype === 'INT64' || t.datatype === 'INT32');
  if (ids?.binary) {
    // Little-endian elements read in place: an INT64 equals the (small) pad id when its low word does and its high word is the sign.
    const b = ids.binary;
    const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
    const pad = rule.padId ?? PAD_ID;
    const step = ids.datatype === 'INT64' ? 8 : 4;
    let n = 0;
    for (let at = 0; at + step <= b.byteLength; at += step) {
      const isPad = view.getInt32(at, true) === pad && (step === 4 || view.getInt32(at + 4, true) === (pad < 0 ? -1 : 0));
      if (!isPad) n++;
    }
    return n;
  }
  if (ids?.data) {
    const pad = rule.padId ?? PAD_ID;
    let n = 0;
    for (let i = 0; i < ids.data.length; i++) if (Number(ids.data[i]) !== pad) n++;
    return n;
  }
  return requestRows(inputs);
}

/** Input units of a request under `rule`. */
export function inputUnits(rule: MeterRule, inputs: readonly MeteredTensor[]): number {
  switch (rule.meter) {
    case 'tokens':
      return tokenCount(rule, inputs);
    case 'rows':
      return requestRows(inputs);
    case 'elements':
      return inputs.reduce((n, t) => n + elements(t.shape), 0);
    case 'requests':
      return 1;
  }
}

/** Output units of an answer to a request under `rule`. */
export function outputUnits(rule: MeterRule, inputs: readonly MeteredTensor[], outputs: readonly Pick<MeteredTensor, 'shape'>[]): number {
  switch (rule.meter) {
    case 'tokens':
    case 'rows':
      return requestRows(inputs);
    case 'elements':
      return outputs.reduce((n, t) => n + elements(t.shape), 0);
    case 'requests':
      return 1;
  }
}

/** Both units of an answered request. */
export function meter(rule: MeterRule, inputs: readonly MeteredTensor[], outputs: readonly Pick<MeteredTensor, 'shape'>[]): Units {
  return { input: inputUnits(rule, inputs), output: outputUnits(rule, inputs, outputs) };
}
