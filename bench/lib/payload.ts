/**
 * Request bodies and answer checks for benchmarks that send tensors: a
 * fixed-seed FP32 tensor as an OIP v2 request in JSON or in the binary tensor
 * extension (shared/binary.ts), its answer's first output read back either
 * way, payload sizes from the environment ("1KB,4MB"), and a least-squares
 * line (CPU per request against payload size: a fixed cost and a cost per MB).
 * Pure functions, tested in test/bench/payload.test.ts.
 */

import { encodeBinaryBody, HEADER_LENGTH_HEADER, jsonPrefixLength } from '../../shared/binary.ts';
import { mulberry32 } from '../../gpu-backend/src/demo-models/random.ts';

export type BodyFormat = 'json' | 'binary';

/** `count` FP32 values uniform in [-1, 1) from `seed`: the same on every run and host. */
export function seededFloats(count: number, seed: number): Float32Array {
  const next = mulberry32(seed);
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) out[i] = (next() / 4294967296) * 2 - 1;
  return out;
}

/** The little-endian bytes of `data` (the binary extension's element order), whatever the host. */
export function littleEndianFloats(data: Float32Array): Uint8Array {
  const out = new Uint8Array(data.length * 4);
  const view = new DataView(out.buffer);
  for (let i = 0; i < data.length; i++) view.setFloat32(i * 4, data[i]!, true);
  return out;
}

export interface TensorRequest {
  body: Uint8Array;
  /** The request headers the format needs (content type; the binary extension's header length). */
  headers: Record<string, string>;
}

/**
 * One FP32 input `name` of `shape` as an OIP v2 infer request. `json`: plain
 * JSON, `data` as numbers, answered in JSON. `binary`: the binary tensor
 * extension, and `parameters.binary_data_output` so that the answer's
 * outputs come back in binary too (unless `binaryOutput` is false).
 */
export function tensorRequest(o: { name: string; shape: readonly number[]; data: Float32Array; format: BodyFormat; binaryOutput?: boolean }): TensorRequest {
  const count = o.shape.reduce((a, b) => a * b, 1);
  if (count !== o.data.length) throw new RangeError(`tensorRequest: shape ${JSON.stringify(o.shape)} needs ${count} elements, got ${o.data.length}`);
  if (o.format === 'json') {
    const request = { inputs: [{ name: o.name, shape: [...o.shape], datatype: 'FP32', data: Array.from(o.data) }], ...(o.binaryOutput ? { parameters: { binary_data_output: true } } : {}) };
    return { body: new TextEncoder().encode(JSON.stringify(request)), headers: { 'content-type': 'application/json' } };
  }
  const bytes = littleEndianFloats(o.data);
  const header = {
    inputs: [{ name: o.name, shape: [...o.shape], datatype: 'FP32', parameters: { binary_data_size: bytes.byteLength } }],
    ...(o.binaryOutput === false ? {} : { parameters: { binary_data_output: true } }),
  };
  const { body, headerLength } = encodeBinaryBody(header, [bytes]);
  return { body, headers: { 'content-type': 'application/octet-stream', [HEADER_LENGTH_HEADER]: String(headerLength) } };
}

/** An answer's output as read back: its description, and the bytes of its binary data or the count of its JSON data. */
export interface AnswerOutput {
  name: string;
  datatype: string;
  shape: number[];
  /** `binary`: its binary_data_size; `json`: the length of its `data`. */
  format: BodyFormat;
  size: number;
}

/**
 * The outputs of an OIP v2 answer, JSON or binary extension (told apart by
 * its Inference-Header-Content-Length, or, without one, by bytes after the
 * JSON object); throws when the bytes are not a well-formed answer.
 */
export function answerOutputs(body: Uint8Array, headerLength?: string | string[] | undefined): AnswerOutput[] {
  const declared = typeof headerLength === 'string' ? Number(headerLength) : undefined;
  const jsonEnd = declared ?? jsonPrefixLength(body) ?? body.byteLength;
  if (!Number.isSafeInteger(jsonEnd) || jsonEnd < 2 || jsonEnd > body.byteLength) throw new Error(`the answer's header length ${String(headerLength)} does not fit its ${body.byteLength} bytes`);
  const head = JSON.parse(new TextDecoder().decode(body.subarray(0, jsonEnd))) as { outputs?: { name: string; datatype: string; shape: number[]; data?: unknown[]; parameters?: { binary_data_size?: number } }[] };
  if (!Array.isArray(head.outputs)) throw new Error(`the answer has no outputs: ${new TextDecoder().decode(body.subarray(0, Math.min(200, jsonEnd)))}`);
  let binaryBytes = 0;
  const outputs = head.outputs.map((o): AnswerOutput => {
    const size = o.parameters?.binary_data_size;
    if (size !== undefined) {
      binaryBytes += size;
      return { name: o.name, datatype: o.datatype, shape: o.shape, format: 'binary', size };
    }
    if (!Array.isArray(o.data)) throw new Error(`output "${o.name}" has neither data nor binary_data_size`);
    return { name: o.name, datatype: o.datatype, shape: o.shape, format: 'json', size: o.data.length };
  });
  if (jsonEnd + binaryBytes !== body.byteLength) throw new Error(`the answer's binary outputs declare ${binaryBytes} bytes, ${body.byteLength - jsonEnd} follow its header`);
  return outputs;
}

const UNITS: Record<string, number> = { '': 1, B: 1, K: 1024, KB: 1024, KIB: 1024, M: 1024 ** 2, MB: 1024 ** 2, MIB: 1024 ** 2 };

/** A size such as `1KB`, `256 KiB`, `4MB` or `1024` (bytes), in bytes; KB and MB are binary (1024, 1024^2). */
export function parseByteSize(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  const unit = m ? UNITS[m[2]!.toUpperCase()] : undefined;
  if (!m || unit === undefined) throw new Error(`not a size: ${JSON.stringify(text)} (write e.g. 1KB, 256KB, 4MB)`);
  const bytes = Math.round(Number(m[1]) * unit);
  if (!(bytes > 0)) throw new Error(`not a positive size: ${JSON.stringify(text)}`);
  return bytes;
}

/** `bytes` as the shortest of `N B`, `N KB`, `N MB` (binary units), e.g. 262144 -> `256 KB`. */
export function formatBytes(bytes: number): string {
  if (bytes >= 1024 ** 2 && bytes % 1024 ** 2 === 0) return `${bytes / 1024 ** 2} MB`;
  if (bytes >= 1024 && bytes % 1024 === 0) return `${bytes / 1024} KB`;
  if (bytes >= 1024 ** 2) return `${(bytes / 1024 ** 2).toFixed(2)} MB`;
  if (bytes >= 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${bytes} B`;
}

/**
 * The least-squares line y = intercept + slope x through `points` (at least
 * two distinct x): e.g. CPU ms per request against payload MB gives the
 * fixed cost of a request (intercept) and the cost of each MB (slope).
 */
export function linearFit(points: readonly { x: number; y: number }[]): { slope: number; intercept: number } {
  const n = points.length;
  if (n < 2) return { slope: Number.NaN, intercept: Number.NaN };
  const mx = points.reduce((a, p) => a + p.x, 0) / n;
  const my = points.reduce((a, p) => a + p.y, 0) / n;
  let sxx = 0;
  let sxy = 0;
  for (const p of points) {
    sxx += (p.x - mx) ** 2;
    sxy += (p.x - mx) * (p.y - my);
  }
  if (sxx === 0) return { slope: Number.NaN, intercept: Number.NaN };
  const slope = sxy / sxx;
  return { slope, intercept: my - slope * mx };
}
