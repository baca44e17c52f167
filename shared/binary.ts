/**
 * The Open Inference Protocol's binary tensor extension (KServe v2 / Triton
 * `binary_data`), both directions: a body is a JSON header of
 * `Inference-Header-Content-Length` bytes followed by the data of every input
 * that declares `parameters.binary_data_size`, in the order the inputs appear.
 * Elements are little-endian; a BYTES element is a 4-byte little-endian length
 * and its bytes. The edge and the backend parse a body with the same
 * `parseInferBody`: the JSON header and every declared length are checked
 * (400s naming the input), the data itself is only sliced, never copied or
 * decoded here. Answers are the same layout, for the outputs the request asks
 * for in binary (`wantsBinaryOutput`).
 */

import { MeshError } from './errors.ts';
import { bf16Value, fp16Value } from './float16.ts';
import { parseInferRequest, parseJson, type Datatype, type InferInput, type InferRequest } from './protocol.ts';

/** The request (and response) header that announces the binary extension: the JSON header's byte length. */
export const HEADER_LENGTH_HEADER = 'inference-header-content-length';

/** Bytes per element of each fixed-size datatype (BYTES elements carry their own length). */
export const ELEMENT_BYTES: Readonly<Record<Exclude<Datatype, 'BYTES'>, number>> = {
  BOOL: 1,
  UINT8: 1,
  UINT16: 2,
  UINT32: 4,
  UINT64: 8,
  INT8: 1,
  INT16: 2,
  INT32: 4,
  INT64: 8,
  FP16: 2,
  BF16: 2,
  FP32: 4,
  FP64: 8,
};

const bad = (message: string) => new MeshError('invalid_tensor', message);
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false });

function decodeUtf8(bytes: Uint8Array, what: string, code: 'invalid_json' | 'invalid_tensor' = 'invalid_json'): string {
  try {
    return utf8.decode(bytes);
  } catch {
    throw new MeshError(code, `${what} is not valid UTF-8.`);
  }
}

/**
 * The declared JSON header length of a binary-extension request: undefined
 * when the header is absent (a plain JSON body), else an integer within the
 * body's size (400 otherwise).
 */
export function headerLength(value: string | null | undefined, bodyBytes: number): number | undefined {
  if (value === null || value === undefined) return undefined;
  const n = /^[0-9]{1,10}$/.test(value.trim()) ? Number(value.trim()) : NaN;
  if (!Number.isSafeInteger(n) || n < 2 || n > bodyBytes) {
    throw new MeshError(
      'invalid_request',
      `Inference-Header-Content-Length must be the JSON header's byte length, between 2 and the body's ${bodyBytes} bytes; got ${JSON.stringify(value)}.`,
    );
  }
  return n;
}

/** Checks that `count` length-prefixed BYTES elements fill `bytes` exactly; a 400 naming `name` otherwise. */
export function checkBytesElements(bytes: Uint8Array, count: number, name: string): void {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 0;
  for (let i = 0; i < count; i++) {
    if (at + 4 > bytes.byteLength) throw bad(`Input "${name}": binary data ends inside the length of element ${i} of ${count}.`);
    const length = view.getUint32(at, true);
    at += 4 + length;
    if (at > bytes.byteLength) throw bad(`Input "${name}": element ${i} declares ${length} bytes, past the end of its binary data.`);
  }
  if (at !== bytes.byteLength) {
    throw bad(`Input "${name}": its ${count} BYTES elements take ${at} bytes, but binary_data_size says ${bytes.byteLength}.`);
  }
}

/**
 * The elements of a binary BYTES tensor as views into `bytes` (no copy).
 * `bytes` must have been checked by `parseInferBody`.
 */
export function bytesElements(bytes: Uint8Array): Uint8Array[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: Uint8Array[] = [];
  for (let at = 0; at + 4 <= bytes.byteLength; ) {
    const length = view.getUint32(at, true);
    out.push(bytes.subarray(at + 4, at + 4 + length));
    at += 4 + length;
  }
  return out;
}

/** A BYTES input's elements as text, whichever way it came (JSON strings, or binary decoded as UTF-8). */
export function textsOf(input: Pick<InferInput, 'name' | 'data' | 'binary'>): string[] {
  if (!input.binary) return input.data as string[];
  return bytesElements(input.binary).map((b, i) => decodeUtf8(b, `Input "${input.name}" element ${i}`, 'invalid_tensor'));
}

/** Encodes BYTES elements in the binary extension's layout (a 4-byte little-endian length before each). */
export function encodeBytesElements(elements: readonly Uint8Array[]): Uint8Array {
  const total = elements.reduce((n, e) => n + 4 + e.byteLength, 0);
  const out = new Uint8Array(total);
  const view = new DataView(out.buffer);
  let at = 0;
  for (const e of elements) {
    view.setUint32(at, e.byteLength, true);
    out.set(e, at + 4);
    at += 4 + e.byteLength;
  }
  return out;
}

/**
 * A binary-extension body (a request's or an answer's) from its JSON header
 * and the binary tensors' data, in the header's order; returns the body and
 * its header length.
 */
export function encodeBinaryBody(header: unknown, data: readonly Uint8Array[]): { body: Uint8Array; headerLength: number } {
  const json = new TextEncoder().encode(JSON.stringify(header));
  const body = new Uint8Array(json.byteLength + data.reduce((n, d) => n + d.byteLength, 0));
  body.set(json, 0);
  let at = json.byteLength;
  for (const d of data) {
    body.set(d, at);
    at += d.byteLength;
  }
  return { body, headerLength: json.byteLength };
}

/**
 * Parses an untrusted infer request body: plain JSON when `headerBytes` is
 * undefined, else the binary extension, whose inputs get `binary` views into
 * `body` after their declared sizes are checked against their shapes (fixed
 * types: elements × size; BYTES: the length-prefixed elements fill it
 * exactly) and against the bytes that follow the header.
 */
export function parseInferBody(body: Uint8Array, headerBytes: number | undefined): InferRequest {
  if (headerBytes === undefined) return parseInferRequest(parseJson(decodeUtf8(body, 'The request body')));
  const header = decodeUtf8(body.subarray(0, headerBytes), 'The JSON header');
  const request = parseInferRequest(parseJson(header), { binary: true });
  let at = headerBytes;
  for (const input of request.inputs) {
    if (!input.binary) continue;
    const size = input.parameters!.binary_data_size as number;
    if (at + size > body.byteLength) {
      throw bad(`Input "${input.name}": binary_data_size ${size} runs past the end of the body (${body.byteLength - at} bytes left).`);
    }
    const bytes = body.subarray(at, at + size);
    at += size;
    const count = input.shape.reduce((a, b) => a * b, 1);
    if (input.datatype === 'BYTES') {
      checkBytesElements(bytes, count, input.name);
    } else if (size !== count * ELEMENT_BYTES[input.datatype]) {
      throw new MeshError(
        'shape_mismatch',
        `Input "${input.name}": shape ${JSON.stringify(input.shape)} of ${input.datatype} needs ${count * ELEMENT_BYTES[input.datatype]} bytes, binary_data_size says ${size}.`,
      );
    }
    input.binary = bytes;
  }
  if (at !== body.byteLength) {
    throw bad(`The body has ${body.byteLength - at} bytes after the last input's binary data; the inputs' binary_data_size must account for every byte.`);
  }
  return request;
}

// ---------------------------------------------------------------------------
// Answers: outputs in the binary extension
// ---------------------------------------------------------------------------

/**
 * Whether the request asks for `output` in the binary extension: the
 * output's own `parameters.binary_data` when it names it, else the request's
 * `parameters.binary_data_output` (default false: JSON).
 */
export function wantsBinaryOutput(request: Pick<InferRequest, 'parameters' | 'outputs'>, output: string): boolean {
  const own = request.outputs?.find((o) => o.name === output)?.parameters?.binary_data;
  if (typeof own === 'boolean') return own;
  return request.parameters?.binary_data_output === true;
}

/**
 * The length of the JSON object at the start of `bytes` (its closing brace
 * included), or undefined when they do not start with one: how a binary
 * answer is split when its Inference-Header-Content-Length is not at hand
 * (a fraud proof holds only the bytes).
 */
export function jsonPrefixLength(bytes: Uint8Array): number | undefined {
  let i = 0;
  while (i < bytes.length && (bytes[i] === 0x20 || bytes[i] === 0x0a || bytes[i] === 0x0d || bytes[i] === 0x09)) i++;
  if (bytes[i] !== 0x7b) return undefined;
  let depth = 0;
  let inString = false;
  for (; i < bytes.length; i++) {
    const c = bytes[i]!;
    if (inString) {
      if (c === 0x5c) i++;
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x7b || c === 0x5b) depth++;
    else if (c === 0x7d || c === 0x5d) {
      depth--;
      if (depth === 0) return i + 1;
    }
  }
  return undefined;
}

/**
 * The JSON values of a binary tensor's elements (for comparisons off the
 * answer's path: one number per element). FP16 and BF16 are the exact values
 * of their bit patterns; a 64-bit integer is its two 32-bit words, high ×
 * 2³² + low, exact within ±2⁵³ and the nearest double beyond (as
 * `Number(bigint)` gives, without a BigInt per element).
 */
export function binaryValues(datatype: Datatype, bytes: Uint8Array): (number | string | boolean)[] {
  if (datatype === 'BYTES') return textsOf({ name: 'output', data: [], binary: bytes });
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const size = ELEMENT_BYTES[datatype];
  const out: (number | boolean)[] = [];
  for (let at = 0; at + size <= bytes.byteLength; at += size) {
    switch (datatype) {
      case 'BOOL':
        out.push(view.getUint8(at) !== 0);
        break;
      case 'UINT8':
        out.push(view.getUint8(at));
        break;
      case 'UINT16':
        out.push(view.getUint16(at, true));
        break;
      case 'UINT32':
        out.push(view.getUint32(at, true));
        break;
      case 'UINT64':
        out.push(view.getUint32(at + 4, true) * 4294967296 + view.getUint32(at, true));
        break;
      case 'INT8':
        out.push(view.getInt8(at));
        break;
      case 'INT16':
        out.push(view.getInt16(at, true));
        break;
      case 'INT32':
        out.push(view.getInt32(at, true));
        break;
      case 'INT64':
        out.push(view.getInt32(at + 4, true) * 4294967296 + view.getUint32(at, true));
        break;
      case 'FP16':
        out.push(fp16Value(view.getUint16(at, true)));
        break;
      case 'BF16':
        out.push(bf16Value(view.getUint16(at, true)));
        break;
      case 'FP32':
        out.push(view.getFloat32(at, true));
        break;
      case 'FP64':
        out.push(view.getFloat64(at, true));
        break;
    }
  }
  return out;
}

/**
 * A binary-extension answer as plain OIP JSON (each binary output's data
 * decoded into its `data`), for comparing answers; undefined when the bytes
 * are not a JSON header followed by exactly the outputs' declared bytes.
 */
export function answerAsJson(bytes: Uint8Array): unknown {
  const n = jsonPrefixLength(bytes);
  if (n === undefined) return undefined;
  let header: unknown;
  try {
    header = JSON.parse(utf8.decode(bytes.subarray(0, n)));
  } catch {
    return undefined;
  }
  const outputs = (header as { outputs?: unknown }).outputs;
  if (!Array.isArray(outputs)) return undefined;
  let at = n;
  for (const o of outputs as Record<string, unknown>[]) {
    const size = (o?.parameters as Record<string, unknown> | undefined)?.binary_data_size;
    if (size === undefined) continue;
    if (!Number.isSafeInteger(size) || (size as number) < 0 || at + (size as number) > bytes.byteLength) return undefined;
    if (typeof o.datatype !== 'string' || !(o.datatype in ELEMENT_BYTES || o.datatype === 'BYTES')) return undefined;
    try {
      o.data = binaryValues(o.datatype as Datatype, bytes.subarray(at, at + (size as number)));
    } catch {
      return undefined;
    }
    at += size as number;
  }
  return at === bytes.byteLength ? header : undefined;
}
