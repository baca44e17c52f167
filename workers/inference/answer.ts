/**
 * What the edge accepts from a backend (docs/api.md section 3.5, "What the
 * edge checks"): an OIP v2 answer is parsed and checked before anything reads
 * it (bounded outputs, names, datatypes, shapes that match their data and
 * the request's rows, and the model's metadata when the edge has it); a 4xx
 * verdict on a request passes to the consumer only as a small, well-formed
 * `{ error: { code, message } }`. Each check returns the reason as a string
 * for the caller to log; nothing here throws for a backend's fault.
 */

import { checkBytesElements, ELEMENT_BYTES } from '../../shared/binary.ts';
import { DATATYPES, type Datatype, type InferOutput, type InferResponse, type ModelMetadata } from '../../shared/protocol.ts';

/** Most outputs an answer may carry. */
const MAX_OUTPUTS = 64;
/** Most dimensions of an output. */
const MAX_RANK = 8;
/** Most elements of all outputs of one answer (the request's own bound, shared/protocol.ts). */
export const MAX_ANSWER_ELEMENTS = 1 << 22;
/** The largest 4xx body passed through, bytes. */
export const MAX_REJECTION_BYTES = 4096;
const ERROR_CODE = /^[a-z][a-z0-9_]{0,63}$/;
const MAX_MESSAGE = 1024;

/** What the answer must fit: from the request and the model. */
export interface AnswerExpectation {
  model: string;
  /** Rows of the request (the first dimension of its first input). */
  rows: number;
  /** Output names the request asked for, if it named any. */
  requested?: readonly string[];
  /** The model's metadata, when the edge has it. */
  metadata?: ModelMetadata;
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false });

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isDatatype(v: unknown): v is Datatype {
  return typeof v === 'string' && (DATATYPES as readonly string[]).includes(v);
}

function elementOk(datatype: Datatype): (v: unknown) => boolean {
  switch (datatype) {
    case 'BYTES':
      return (v) => typeof v === 'string';
    case 'BOOL':
      return (v) => typeof v === 'boolean';
    case 'FP16':
    case 'BF16':
    case 'FP32':
    case 'FP64':
      return (v) => typeof v === 'number';
    case 'UINT8':
    case 'UINT16':
    case 'UINT32':
    case 'UINT64':
      return (v) => typeof v === 'number' && Number.isInteger(v) && v >= 0;
    default:
      return (v) => typeof v === 'number' && Number.isInteger(v);
  }
}

/** False only when the model's metadata says it has no batch dimension (`parameters.max_batch_size` 0). */
function batches(metadata: ModelMetadata & { parameters?: Record<string, unknown> }): boolean {
  return metadata.parameters?.max_batch_size !== 0;
}

/** What an answer's outputs may still take: elements, and the binary bytes after the JSON header (`at` the next unread). */
interface Budget {
  elements: number;
  binary?: Uint8Array;
  at: number;
}

function checkOutput(raw: unknown, i: number, expect: AnswerExpectation, budget: Budget): string | InferOutput {
  if (!isObject(raw)) return `outputs[${i}] is not an object`;
  const { name, datatype, shape, data } = raw;
  if (typeof name !== 'string' || name.length === 0 || name.length > 256) return `outputs[${i}] has no valid name`;
  if (!isDatatype(datatype)) return `output "${name}" has datatype ${JSON.stringify(datatype)?.slice(0, 32)}`;
  if (!Array.isArray(shape) || shape.length > MAX_RANK || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    return `output "${name}" has an invalid shape`;
  }
  let n = 1;
  for (const d of shape as number[]) n *= d;
  budget.elements -= n;
  if (budget.elements < 0) return `the answer has more than ${MAX_ANSWER_ELEMENTS} elements`;
  const binarySize = isObject(raw.parameters) ? raw.parameters.binary_data_size : undefined;
  let binary: Uint8Array | undefined;
  if (binarySize !== undefined) {
    // Binary data: its bytes are measured against the shape, never decoded here.
    if (!budget.binary || data !== undefined) return `output "${name}" declares binary_data_size outside a binary answer, or with data`;
    if (!Number.isSafeInteger(binarySize) || (binarySize as number) < 0 || budget.at + (binarySize as number) > budget.binary.byteLength) {
      return `output "${name}": binary_data_size ${String(binarySize).slice(0, 20)} does not fit the answer`;
    }
    binary = budget.binary.subarray(budget.at, budget.at + (binarySize as number));
    budget.at += binarySize as number;
    if (datatype === 'BYTES') {
      try {
        checkBytesElements(binary, n, name);
      } catch {
        return `output "${name}": its BYTES elements do not fill binary_data_size`;
      }
    } else if (binary.byteLength !== n * ELEMENT_BYTES[datatype]) return `output "${name}": ${binary.byteLength} bytes for shape ${JSON.stringify(shape)} of ${datatype}`;
  } else {
    if (!Array.isArray(data) || data.length !== n) return `output "${name}": shape ${JSON.stringify(shape)} does not match its ${Array.isArray(data) ? data.length : 'missing'} data elements`;
    const ok = elementOk(datatype);
    for (let k = 0; k < data.length; k++) if (!ok(data[k])) return `output "${name}": element ${k} is not ${datatype}`;
  }
  if (expect.requested && !expect.requested.includes(name)) return `output "${name}" was not requested`;
  const meta = expect.metadata?.outputs.find((o) => o.name === name);
  if (expect.metadata) {
    if (!meta) return `output "${name}" is not an output of the model`;
    if (meta.datatype !== datatype) return `output "${name}" is ${datatype}, the model's is ${meta.datatype}`;
    if (meta.shape.length !== shape.length || meta.shape.some((d, k) => d !== -1 && d !== shape[k])) {
      return `output "${name}" has shape ${JSON.stringify(shape)}, the model's is ${JSON.stringify(meta.shape)}`;
    }
    // A batching model answers one row per request row (a model whose metadata says max_batch_size 0, e.g. a pipeline, need not).
    if (meta.shape[0] === -1 && batches(expect.metadata) && shape[0] !== expect.rows) return `output "${name}" has ${shape[0]} rows for ${expect.rows} asked`;
  }
  if (binary) return { name, datatype, shape: shape as number[], data: [], binary };
  return { name, datatype, shape: shape as number[], data: data as InferOutput['data'] };
}

/**
 * Parses and checks a backend's 200 answer; a string says why it is refused.
 * `headerLength` (its Inference-Header-Content-Length): a binary-extension
 * answer, whose binary outputs must account for every byte after the header.
 */
export function checkAnswer(body: Uint8Array, expect: AnswerExpectation, headerLength?: string | null): InferResponse | string {
  let parsed: unknown;
  let json = body;
  const budget: Budget = { elements: MAX_ANSWER_ELEMENTS, at: 0 };
  if (headerLength !== undefined && headerLength !== null) {
    const n = /^[0-9]{1,10}$/.test(headerLength) ? Number(headerLength) : NaN;
    if (!(n >= 2 && n <= body.byteLength)) return 'its Inference-Header-Content-Length does not fit the answer';
    json = body.subarray(0, n);
    budget.binary = body.subarray(n);
  }
  try {
    parsed = JSON.parse(utf8.decode(json));
  } catch {
    return 'the answer is not JSON';
  }
  if (!isObject(parsed)) return 'the answer is not a JSON object';
  if (parsed.model_name !== expect.model) return 'the answer names another model';
  const { outputs } = parsed;
  if (!Array.isArray(outputs) || outputs.length === 0 || outputs.length > MAX_OUTPUTS) return `the answer must have 1..${MAX_OUTPUTS} outputs`;
  const checked: InferOutput[] = [];
  for (let i = 0; i < outputs.length; i++) {
    const out = checkOutput(outputs[i], i, expect, budget);
    if (typeof out === 'string') return out;
    checked.push(out);
  }
  if (budget.binary && budget.at !== budget.binary.byteLength) return `the binary answer has ${budget.binary.byteLength - budget.at} bytes no output declares`;
  const answer: InferResponse = { model_name: expect.model, outputs: checked };
  if (typeof parsed.model_version === 'string') answer.model_version = parsed.model_version;
  if (typeof parsed.id === 'string') answer.id = parsed.id;
  return answer;
}

/** A backend's 4xx verdict as the consumer may see it. */
export interface Rejection {
  code: string;
  message: string;
}

/** Parses a backend's 4xx body: `{ error: { code, message } }` JSON of at most MAX_REJECTION_BYTES; a string says why not. */
export function checkRejection(body: Uint8Array): Rejection | string {
  if (body.byteLength > MAX_REJECTION_BYTES) return `its 4xx body is larger than ${MAX_REJECTION_BYTES} bytes`;
  let parsed: unknown;
  try {
    parsed = JSON.parse(utf8.decode(body));
  } catch {
    return 'its 4xx body is not JSON';
  }
  const error = isObject(parsed) ? parsed.error : undefined;
  if (!isObject(error) || typeof error.code !== 'string' || !ERROR_CODE.test(error.code)) return 'its 4xx body is not { error: { code, message } }';
  if (typeof error.message !== 'string' || error.message.length > MAX_MESSAGE) return 'its 4xx message is missing or too long';
  return { code: error.code, message: error.message };
}
