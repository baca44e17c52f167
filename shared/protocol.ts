/**
 * Open Inference Protocol v2 (KServe / Triton) types, and the parser that turns
 * an untrusted JSON infer request into a checked `InferRequest`. The edge and
 * the backend both parse with it, so a malformed request is refused with the
 * same 400 wherever it lands.
 */

import { MeshError } from './errors.ts';
import { BF16_MAX, FP16_MAX } from './float16.ts';

/** The OIP v2 datatypes (KServe's list, with Triton's BF16). */
export const DATATYPES = [
  'BOOL',
  'UINT8',
  'UINT16',
  'UINT32',
  'UINT64',
  'INT8',
  'INT16',
  'INT32',
  'INT64',
  'FP16',
  'BF16',
  'FP32',
  'FP64',
  'BYTES',
] as const;
export type Datatype = (typeof DATATYPES)[number];

function isDatatype(v: unknown): v is Datatype {
  return typeof v === 'string' && (DATATYPES as readonly string[]).includes(v);
}

export type TensorData = number[] | string[] | boolean[];

export interface InferInput {
  name: string;
  shape: number[];
  datatype: Datatype;
  parameters?: Record<string, unknown>;
  /** Row-major, flattened; empty when the data came in the binary extension (`binary`). */
  data: TensorData;
  /**
   * The input's data in the binary tensor extension (shared/binary.ts),
   * exactly as sent: little-endian elements, a BYTES element as a 4-byte
   * little-endian length and its bytes. Absent for JSON data.
   */
  binary?: Uint8Array;
}

export interface InferRequestedOutput {
  name: string;
  parameters?: Record<string, unknown>;
}

export interface InferRequest {
  id?: string;
  parameters?: Record<string, unknown>;
  inputs: InferInput[];
  outputs?: InferRequestedOutput[];
}

export interface InferOutput {
  name: string;
  shape: number[];
  datatype: Datatype;
  parameters?: Record<string, unknown>;
  /** Empty when the output came in the binary extension (`binary`). */
  data: TensorData;
  /** The output's bytes in the binary tensor extension (shared/binary.ts), when it came that way. */
  binary?: Uint8Array;
}

export interface InferResponse {
  model_name: string;
  model_version?: string;
  id?: string;
  parameters?: Record<string, unknown>;
  outputs: InferOutput[];
}

/** Tensor metadata: `-1` marks a variable dimension. */
export interface TensorMetadata {
  name: string;
  datatype: Datatype;
  shape: number[];
}

export interface ModelMetadata {
  name: string;
  versions: string[];
  platform: string;
  inputs: TensorMetadata[];
  outputs: TensorMetadata[];
}

/** Upper bound on the elements one request may carry, whatever its byte size. */
const MAX_ELEMENTS = 1 << 22;

const REQUEST_KEYS = new Set(['id', 'parameters', 'inputs', 'outputs']);
const INPUT_KEYS = new Set(['name', 'shape', 'datatype', 'parameters', 'data']);
const OUTPUT_KEYS = new Set(['name', 'parameters']);

/** The integer types' ranges in JSON: a 64-bit value must be a safe integer (a JSON number is a double, exact only within ±(2⁵³−1)). */
const INT_RANGE: Partial<Record<Datatype, readonly [number, number]>> = {
  UINT8: [0, 255],
  UINT16: [0, 65535],
  UINT32: [0, 4294967295],
  UINT64: [0, Number.MAX_SAFE_INTEGER],
  INT8: [-128, 127],
  INT16: [-32768, 32767],
  INT32: [-2147483648, 2147483647],
  INT64: [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
};

/** The 16-bit float types' largest magnitudes: a JSON value beyond would round to an infinity. */
const FLOAT_MAX: Partial<Record<Datatype, number>> = {
  FP16: FP16_MAX,
  BF16: BF16_MAX,
};

const bad = (message: string) => new MeshError('invalid_tensor', message);

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function rejectUnknownKeys(obj: Record<string, unknown>, allowed: Set<string>, where: string): void {
  for (const key of Object.keys(obj)) {
    if (!allowed.has(key)) throw new MeshError('invalid_request', `Unknown field "${key}" in ${where}.`);
  }
}

/** Flattens nested row-major data; returns the flat array. */
function flatten(data: unknown[], name: string): unknown[] {
  if (!data.some(Array.isArray)) return data;
  const out: unknown[] = [];
  const walk = (v: unknown, depth: number) => {
    if (depth > 32) throw bad(`Input "${name}": data is nested too deeply.`);
    if (Array.isArray(v)) for (const x of v) walk(x, depth + 1);
    else out.push(v);
  };
  walk(data, 0);
  return out;
}

function checkElements(flat: unknown[], datatype: Datatype, name: string): void {
  const range = INT_RANGE[datatype];
  const max = FLOAT_MAX[datatype];
  for (let i = 0; i < flat.length; i++) {
    const v = flat[i];
    let ok: boolean;
    if (datatype === 'BYTES') ok = typeof v === 'string';
    else if (datatype === 'BOOL') ok = typeof v === 'boolean';
    else if (range) ok = typeof v === 'number' && Number.isInteger(v) && v >= range[0] && v <= range[1];
    else if (max !== undefined) ok = typeof v === 'number' && Math.abs(v) <= max;
    else ok = typeof v === 'number' && Number.isFinite(v);
    if (!ok) {
      throw bad(`Input "${name}": element ${i} is ${JSON.stringify(v) ?? String(v)}, not a valid ${datatype} value.`);
    }
  }
}

/** An input whose data follows the JSON header in the binary extension: its declared size, else undefined. */
function binaryDataSize(parameters: unknown, name: string): number | undefined {
  if (!isPlainObject(parameters) || parameters.binary_data_size === undefined) return undefined;
  const size = parameters.binary_data_size;
  if (!Number.isSafeInteger(size) || (size as number) < 0) {
    throw bad(`Input "${name}": parameters.binary_data_size must be a non-negative integer, got ${JSON.stringify(size)}.`);
  }
  return size as number;
}

function parseInput(raw: unknown, index: number, binary: boolean): InferInput {
  if (!isPlainObject(raw)) throw bad(`inputs[${index}] must be an object.`);
  rejectUnknownKeys(raw, INPUT_KEYS, `inputs[${index}]`);
  const { name, shape, datatype, parameters, data } = raw;
  if (typeof name !== 'string' || name.length === 0) throw bad(`inputs[${index}].name must be a non-empty string.`);
  if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && (d as number) >= 0)) {
    throw bad(`Input "${name}": shape must be an array of non-negative integers, got ${JSON.stringify(shape)}.`);
  }
  if (!isDatatype(datatype)) {
    throw bad(`Input "${name}": datatype ${JSON.stringify(datatype)} is not one of ${DATATYPES.join(', ')}.`);
  }
  if (parameters !== undefined && !isPlainObject(parameters)) throw bad(`Input "${name}": parameters must be an object.`);
  const expected = (shape as number[]).reduce((a, b) => a * b, 1);
  if (expected > MAX_ELEMENTS) throw bad(`Input "${name}": shape ${JSON.stringify(shape)} has more than ${MAX_ELEMENTS} elements.`);
  if (binaryDataSize(parameters, name) !== undefined) {
    if (!binary) {
      throw bad(`Input "${name}": parameters.binary_data_size needs the binary tensor extension (an Inference-Header-Content-Length header).`);
    }
    if (data !== undefined) throw bad(`Input "${name}": data and parameters.binary_data_size are alternatives: send one of them.`);
    // The bytes are attached by shared/binary.ts, which checks them against the shape.
    return { name, shape: shape as number[], datatype, parameters: parameters as Record<string, unknown>, data: [], binary: EMPTY };
  }
  if (!Array.isArray(data)) throw bad(`Input "${name}": data must be an array.`);
  const flat = flatten(data, name);
  if (flat.length !== expected) {
    throw new MeshError(
      'shape_mismatch',
      `Input "${name}": shape ${JSON.stringify(shape)} needs ${expected} elements, data has ${flat.length}.`,
    );
  }
  checkElements(flat, datatype, name);
  const input: InferInput = { name, shape: shape as number[], datatype, data: flat as TensorData };
  if (parameters !== undefined) input.parameters = parameters;
  return input;
}

const EMPTY = new Uint8Array(0);

/**
 * Checks an untrusted OIP v2 infer request body (already JSON-parsed).
 * Throws `MeshError` (400) naming the offending input; nested `data` is
 * flattened. With `binary` (the JSON header of a binary-extension request,
 * shared/binary.ts), an input may declare `parameters.binary_data_size`
 * instead of sending `data`; it comes back with an empty `binary` for the
 * caller to fill.
 */
export function parseInferRequest(body: unknown, options: { binary?: boolean } = {}): InferRequest {
  if (!isPlainObject(body)) throw new MeshError('invalid_request', 'The request body must be a JSON object.');
  rejectUnknownKeys(body, REQUEST_KEYS, 'the request');
  const { id, parameters, inputs, outputs } = body;
  if (id !== undefined && typeof id !== 'string') throw new MeshError('invalid_request', '"id" must be a string.');
  if (parameters !== undefined && !isPlainObject(parameters)) {
    throw new MeshError('invalid_request', '"parameters" must be an object.');
  }
  if (!Array.isArray(inputs) || inputs.length === 0) {
    throw new MeshError('invalid_request', '"inputs" must be a non-empty array of tensors.');
  }
  const binary = options.binary === true;
  const parsed = inputs.map((raw, i) => parseInput(raw, i, binary));
  const names = new Set<string>();
  for (const input of parsed) {
    if (names.has(input.name)) throw bad(`Input "${input.name}" appears more than once.`);
    names.add(input.name);
  }
  const request: InferRequest = { inputs: parsed };
  if (id !== undefined) request.id = id;
  if (parameters !== undefined) request.parameters = parameters;
  if (outputs !== undefined) {
    if (!Array.isArray(outputs)) throw new MeshError('invalid_request', '"outputs" must be an array.');
    request.outputs = outputs.map((o, i) => {
      if (!isPlainObject(o) || typeof o.name !== 'string') {
        throw new MeshError('invalid_request', `outputs[${i}] must be an object with a string "name".`);
      }
      rejectUnknownKeys(o, OUTPUT_KEYS, `outputs[${i}]`);
      return o.parameters === undefined ? { name: o.name } : { name: o.name, parameters: o.parameters as Record<string, unknown> };
    });
  }
  return request;
}

/** Parses JSON text, turning a syntax error into a 400. */
export function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new MeshError('invalid_json', 'The request body is not valid JSON.');
  }
}
