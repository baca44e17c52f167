/**
 * The answer cache's key (docs/api.md section 2.13): a deterministic model's
 * answer depends on the model, its version and the request's tensors, so the
 * key is those, with the request written in one canonical form
 * (`mesh-cache-v1`) whatever way the consumer sent it: keys in any order,
 * numbers however written, nested or flat `data`, JSON or the binary tensor
 * extension, through the OIP, OpenAI or Hugging Face routes. Two requests
 * with the same canonical input get the same answer bytes from the model.
 *
 * The canonical input is a JSON header followed by every input's tensor
 * bytes, in the request's order, as the binary tensor extension lays them out
 * (shared/binary.ts): little-endian elements, FP16 and BF16 as their rounded
 * bit patterns, a BYTES element its length and its UTF-8 bytes. The header is the request without its data, keys sorted at every
 * level, no whitespace: `id` (the answer echoes it), request `parameters`,
 * `outputs`, and per input `name`, `datatype`, `shape`, `parameters` but
 * `binary_data_size` (how the bytes travelled, not what they are) and
 * `bytes`, its tensor's length. A request whose tensors would take more than
 * MAX_CANONICAL_BYTES, or whose parameters nest deeper than MAX_DEPTH, has no
 * key: it is not cached.
 */

import { ELEMENT_BYTES } from '../../shared/binary.ts';
import { toBf16Bits, toFp16Bits } from '../../shared/float16.ts';
import type { InferInput, InferRequest } from '../../shared/protocol.ts';
import { sha256Hex } from '../../receipts/index.ts';

/** The canonical form's name: part of every key, so a new form never meets an old entry. */
export const CANONICAL_FORM = 'mesh-cache-v1';
/** The most tensor bytes a cached request may have (a larger one is computed, never cached). */
export const MAX_CANONICAL_BYTES = 8 * 1024 * 1024;
/** The deepest nesting of `parameters` a cached request may have. */
const MAX_DEPTH = 32;
/** The version part of the key of a request that names none (no version id is spelt so). */
export const ANY_VERSION = '*';
/** Where keys live: a URL the Cache API accepts that no consumer request can name. */
const KEY_ORIGIN = 'https://answers.mesh.invalid';

const utf8 = new TextEncoder();

/** The value with every object's keys sorted, as JSON text; undefined when it nests deeper than MAX_DEPTH. */
export function canonicalJson(value: unknown, depth = 0): string | undefined {
  if (depth > MAX_DEPTH) return undefined;
  if (Array.isArray(value)) {
    const parts: string[] = [];
    for (const v of value) {
      const part = canonicalJson(v, depth + 1);
      if (part === undefined) return undefined;
      parts.push(part);
    }
    return `[${parts.join(',')}]`;
  }
  if (typeof value === 'object' && value !== null) {
    const parts: string[] = [];
    for (const key of Object.keys(value).sort()) {
      const v = (value as Record<string, unknown>)[key];
      if (v === undefined) continue;
      const part = canonicalJson(v, depth + 1);
      if (part === undefined) return undefined;
      parts.push(`${JSON.stringify(key)}:${part}`);
    }
    return `{${parts.join(',')}}`;
  }
  return JSON.stringify(value);
}

/** One input's tensor bytes: as sent in the binary extension, or its JSON data laid out the same way. */
interface Tensor {
  /** Bytes it takes. */
  length: number;
  /** Writes them at `at` of `view`. */
  write: (out: Uint8Array, view: DataView, at: number) => void;
}

function tensorOf(input: InferInput): Tensor {
  if (input.binary) {
    const bytes = input.binary;
    return { length: bytes.byteLength, write: (out, _, at) => out.set(bytes, at) };
  }
  if (input.datatype === 'BYTES') {
    const elements = (input.data as string[]).map((s) => utf8.encode(s));
    return {
      length: elements.reduce((n, e) => n + 4 + e.byteLength, 0),
      write: (out, view, at) => {
        for (const e of elements) {
          view.setUint32(at, e.byteLength, true);
          out.set(e, at + 4);
          at += 4 + e.byteLength;
        }
      },
    };
  }
  const size = ELEMENT_BYTES[input.datatype];
  const data = input.data as (number | boolean)[];
  const put = writer(input.datatype);
  return {
    length: data.length * size,
    write: (_, view, at) => {
      for (let i = 0; i < data.length; i++) put(view, at + i * size, data[i]!);
    },
  };
}

/** How one JSON element of `datatype` is written little-endian (the backend reads JSON into the same tensor). */
function writer(datatype: Exclude<InferInput['datatype'], 'BYTES'>): (view: DataView, at: number, v: number | boolean) => void {
  switch (datatype) {
    case 'BOOL':
      return (view, at, v) => view.setUint8(at, v ? 1 : 0);
    case 'UINT8':
      return (view, at, v) => view.setUint8(at, v as number);
    case 'INT8':
      return (view, at, v) => view.setInt8(at, v as number);
    case 'UINT16':
      return (view, at, v) => view.setUint16(at, v as number, true);
    case 'INT16':
      return (view, at, v) => view.setInt16(at, v as number, true);
    case 'UINT32':
      return (view, at, v) => view.setUint32(at, v as number, true);
    case 'INT32':
      return (view, at, v) => view.setInt32(at, v as number, true);
    case 'UINT64':
    case 'INT64':
      // Safe integers only (the edge's parser refuses others): two 32-bit words, two's complement.
      return (view, at, v) => {
        const n = v as number;
        const high = Math.floor(n / 4294967296);
        view.setUint32(at, n - high * 4294967296, true);
        view.setInt32(at + 4, high, true);
      };
    case 'FP16':
      return (view, at, v) => view.setUint16(at, toFp16Bits(v as number), true);
    case 'BF16':
      return (view, at, v) => view.setUint16(at, toBf16Bits(v as number), true);
    case 'FP32':
      return (view, at, v) => view.setFloat32(at, v as number, true);
    case 'FP64':
      return (view, at, v) => view.setFloat64(at, v as number, true);
  }
}

/** An input's parameters without `binary_data_size`; undefined when none are left. */
function inputParameters(input: InferInput): Record<string, unknown> | undefined {
  if (!input.parameters) return undefined;
  const { binary_data_size: _size, ...rest } = input.parameters;
  return Object.keys(rest).length > 0 ? rest : undefined;
}

/**
 * The canonical input of a checked request (see the module header); undefined
 * when the request is too large or too deep to be cached.
 */
export function canonicalInput(request: InferRequest): Uint8Array | undefined {
  const tensors: Tensor[] = [];
  let total = 0;
  for (const input of request.inputs) {
    // A fixed-size tensor's length is known before anything is encoded.
    if (!input.binary && input.datatype !== 'BYTES' && input.data.length * ELEMENT_BYTES[input.datatype] > MAX_CANONICAL_BYTES - total) return undefined;
    const tensor = tensorOf(input);
    total += tensor.length;
    if (total > MAX_CANONICAL_BYTES) return undefined;
    tensors.push(tensor);
  }
  const header = canonicalJson({
    id: request.id,
    parameters: request.parameters,
    outputs: request.outputs,
    inputs: request.inputs.map((input, i) => ({
      name: input.name,
      datatype: input.datatype,
      shape: input.shape,
      parameters: inputParameters(input),
      bytes: tensors[i]!.length,
    })),
  });
  if (header === undefined) return undefined;
  const head = utf8.encode(header);
  const out = new Uint8Array(head.byteLength + total);
  const view = new DataView(out.buffer);
  out.set(head, 0);
  let at = head.byteLength;
  for (const tensor of tensors) {
    tensor.write(out, view, at);
    at += tensor.length;
  }
  return out;
}

/**
 * The Cache API key of `model`'s answer to `request`: the version the
 * consumer named (ANY_VERSION when none) and the SHA-256 of the canonical
 * input. Undefined when the request is not cached (too large or too deep).
 * `simulatedPop`: the PoP a dev request plays (`x-mesh-dev-colo`), where one
 * runtime plays every PoP: it keys a cache of its own, as each PoP has in
 * production.
 */
export async function cacheKey(model: string, version: string | undefined, request: InferRequest, simulatedPop?: string): Promise<string | undefined> {
  const input = canonicalInput(request);
  if (!input) return undefined;
  const hash = await sha256Hex(input);
  const pop = simulatedPop === undefined ? '' : `?pop=${encodeURIComponent(simulatedPop)}`;
  return `${KEY_ORIGIN}/${CANONICAL_FORM}/${encodeURIComponent(model)}/${encodeURIComponent(version ?? ANY_VERSION)}/${hash}${pop}`;
}
