/**
 * Between OIP v2 JSON tensors and ONNX Runtime tensors, checked against the
 * model's config: a request naming an unknown input, missing one, or sending
 * the wrong datatype or shape is refused with a 400 that names the input and
 * says what was expected and what came. Text (`BYTES`) sent to a model whose
 * config names a `text_input` is tokenized (with the model's tokenizer,
 * serving/tokenizers.ts) into its INT64 token-id input. Also meters an answered request: the billing units
 * the backend attests, computed with shared/metering.ts under the model's
 * rule (`meterRuleOf`), from the request as the consumer sent it and the
 * outputs' shapes, exactly as the edge recounts them.
 */

import * as ort from 'onnxruntime-node';
import { encodeBytesElements, textsOf } from '../../../shared/binary.ts';
import { MeshError } from '../../../shared/errors.ts';
import { bf16Finite, bf16Value, fp16Finite, fp16Value, toBf16Bits, toFp16Bits } from '../../../shared/float16.ts';
import type { Datatype, InferOutput, InferRequest, TensorData } from '../../../shared/protocol.ts';
import { DEFAULT_MAX_LENGTH, PAD_ID, TOKENIZER_NAME, VOCAB_SIZE, padBatch } from '../../../shared/tokenizer.ts';
import type { Units } from '../../../shared/jwt.ts';
import { METERS, isMeter, meter, type MeterRule } from '../../../shared/metering.ts';
import { datatypeOf, modelShape, type ModelConfig, type ModelTensorConfig } from './model-config.ts';
import { TOKENIZER_JSON, tokenizerOf } from './tokenizers.ts';

/**
 * The element storage of one ORT tensor. FP16 (and BF16) are Uint16Arrays of
 * bit patterns: onnxruntime-node takes a Uint16Array for a float16 tensor
 * whether or not the running Node has Float16Array (its outputs are
 * Float16Arrays where it has, Uint16Arrays where not; `toJsonData` reads
 * both).
 */
export type TensorValues =
  | Float32Array
  | Float64Array
  | BigInt64Array
  | BigUint64Array
  | Int32Array
  | Uint32Array
  | Int16Array
  | Uint16Array
  | Int8Array
  | Uint8Array
  | string[];

/** One input, checked and converted, before it becomes an `ort.Tensor`. */
export interface Feed {
  datatype: Datatype;
  shape: number[];
  values: TensorValues;
}

/** A checked request, ready to run. */
export interface PreparedInference {
  feeds: Record<string, Feed>;
  /** Output names to compute, in response order. */
  fetches: string[];
  /** Rows of the batch (1 for a model without a batch dimension). */
  batch: number;
  /** The input that carries token ids (padded with `padId`), if the model takes tokens. */
  tokenInput: string | undefined;
  padId: number;
}

/** How a model takes text: set when its config has `parameters.text_input`. */
interface TextSpec {
  /** Name of the BYTES input consumers send, e.g. `text`. */
  name: string;
  /** The INT64 input the token ids go into, e.g. `input_ids`. */
  target: ModelTensorConfig;
  maxLength: number;
}

/**
 * The onnxruntime-node tensor type of each datatype it can carry. BF16 has
 * none: onnxruntime-common 1.30's `Tensor.Type` lists no bfloat16 (it is
 * commented out of its type map), and onnxruntime-node fails to open a model
 * with a bfloat16 graph input or output ("Unsupported data type: 16"). So a
 * tensor the config declares BF16 is BF16 on the wire and FP32 at the
 * session (`ortTypeOf`): its bit patterns are widened exactly when the batch
 * meets the session (`toOrtTensor`), and an FP32 output the config declares
 * BF16 is rounded to BF16, ties to even (`toOutputs`). The graph's tensor is
 * then FP32 (a Cast at its edge, if it computes in bfloat16 inside).
 */
const ORT_TYPE: Record<Exclude<Datatype, 'BF16'>, ort.Tensor.Type> = {
  BOOL: 'bool',
  UINT8: 'uint8',
  UINT16: 'uint16',
  UINT32: 'uint32',
  UINT64: 'uint64',
  INT8: 'int8',
  INT16: 'int16',
  INT32: 'int32',
  INT64: 'int64',
  FP16: 'float16',
  FP32: 'float32',
  FP64: 'float64',
  BYTES: 'string',
};

const DATATYPE_OF_ORT: Partial<Record<ort.Tensor.Type, Datatype>> = Object.fromEntries(
  Object.entries(ORT_TYPE).map(([datatype, type]) => [type, datatype as Datatype]),
);

/** The session's tensor type for a feed's datatype: BF16 meets the session as FP32. */
function ortTypeOf(datatype: Datatype): ort.Tensor.Type {
  return datatype === 'BF16' ? 'float32' : ORT_TYPE[datatype];
}

/** BF16 bit patterns widened to the float32s they are (exact: a bfloat16 is a float32's top half). */
function widenBf16(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  const words = new Uint32Array(out.buffer);
  for (let i = 0; i < bits.length; i++) words[i] = bits[i]! << 16;
  return out;
}

/** Float32s rounded to the nearest BF16 bit patterns, ties to even (shared/float16.ts). */
function narrowToBf16(values: Float32Array): Uint16Array {
  return Uint16Array.from(values, toBf16Bits);
}

// 64-bit integers go through their two 32-bit words (little-endian, as every
// platform ORT runs on, and as the binary extension's data already assumes):
// no BigInt per element.

/** Checked JSON integers (safe integers, negative allowed when signed) as a 64-bit typed array, word by word. */
function int64Values(data: readonly number[], signed: boolean): BigInt64Array | BigUint64Array {
  const out = signed ? new BigInt64Array(data.length) : new BigUint64Array(data.length);
  const words = new Uint32Array(out.buffer);
  for (let i = 0; i < data.length; i++) {
    const v = data[i]!;
    // ToUint32 is v modulo 2³², and floor(v / 2³²) (an exact division) the high word, two's complement for a negative v.
    words[2 * i] = v >>> 0;
    words[2 * i + 1] = Math.floor(v / 4294967296);
  }
  return out;
}

/**
 * The numbers of a 64-bit typed array: high word × 2³² + low word, one
 * rounding, so exactly what `Number(bigint)` gives: exact within ±2⁵³, the
 * nearest double beyond (still converted: a JSON number cannot say more).
 */
function int64Numbers(data: BigInt64Array | BigUint64Array): number[] {
  const low = new Uint32Array(data.buffer, data.byteOffset, data.length * 2);
  const high = data instanceof BigInt64Array ? new Int32Array(data.buffer, data.byteOffset, data.length * 2) : low;
  const out = new Array<number>(data.length);
  for (let i = 0; i < data.length; i++) out[i] = high[2 * i + 1]! * 4294967296 + low[2 * i]!;
  return out;
}

/**
 * The shortest decimal that reads back (rounded to float32) as the float32
 * `f`: 6 to 9 significant digits, the fewest that round-trip (9 always do),
 * so `0.30000001192092896` is printed `0.3`. The candidate of p digits is
 * |f| rounded to p digits, half away from zero (as `toPrecision` rounds),
 * built with an exact power of ten (a division or product by 10^k, k ≤ 22,
 * gives the same double as parsing the decimal), else with `toPrecision`;
 * each is checked with Math.fround, and `f` itself is the fallback, so the
 * value always round-trips exactly.
 */
export function shortestFloat32(f: number): number {
  if (f === 0 || !Number.isFinite(f)) return f;
  const a = f < 0 ? -f : f;
  let e = Math.floor(Math.log10(a));
  // Math.log10 may be one off next to a power of ten: the exact powers settle it.
  if (e >= -1 && e < 22 && a >= POW10[e + 1]!) e++;
  else if (e >= 0 && e <= 22 && a < POW10[e]!) e--;
  for (let p = 6; p <= 9; p++) {
    const k = p - 1 - e;
    let c: number;
    if (k >= 0 && k <= 22) c = Math.round(a * POW10[k]!) / POW10[k]!;
    else if (k < 0 && k >= -22) c = Math.round(a / POW10[-k]!) * POW10[-k]!;
    else c = Number(a.toPrecision(p));
    if (Math.fround(c) === a) return f < 0 ? -c : c;
  }
  return f;
}

/** 10^0 … 10^22: the powers of ten a double holds exactly. */
const POW10: readonly number[] = Array.from({ length: 23 }, (_, k) => 10 ** k);

const fmt = (shape: readonly number[]): string => `[${shape.join(',')}]`;
const describe = (config: ModelConfig, t: ModelTensorConfig): string => `${t.name} (${datatypeOf(t)} ${fmt(modelShape(config, t))})`;

/** The model's `pad_id` parameter, or the tokenizer's PAD_ID. */
function padIdOf(config: ModelConfig): number {
  const p = config.parameters?.pad_id;
  return typeof p === 'number' && Number.isSafeInteger(p) ? p : PAD_ID;
}

/** The text input the model accepts besides its tensor inputs, if any. */
export function textSpecOf(config: ModelConfig): TextSpec | undefined {
  const name = config.parameters?.text_input;
  if (typeof name !== 'string' || config.input.some((t) => t.name === name)) return undefined;
  const target = config.input.find((t) => t.data_type === 'TYPE_INT64');
  if (!target) return undefined;
  return { name, target, maxLength: maxTokensOf(config) };
}

/** The INT64 input that carries token ids, for a model that declares a tokenizer or a text input. */
function tokenInputOf(config: ModelConfig): ModelTensorConfig | undefined {
  const text = textSpecOf(config);
  if (text) return text.target;
  if (config.parameters?.tokenizer === undefined) return undefined;
  return config.input.find((t) => t.data_type === 'TYPE_INT64');
}

/**
 * Converts checked, flat JSON data to the typed storage of `datatype`: FP16
 * and BF16 as the nearest bit patterns (ties to even, subnormals included),
 * 64-bit integers word by word (`int64Values`).
 */
function toValues(datatype: Datatype, data: TensorData): TensorValues {
  switch (datatype) {
    case 'FP32':
      return Float32Array.from(data as number[]);
    case 'FP64':
      return Float64Array.from(data as number[]);
    case 'FP16':
      return Uint16Array.from(data as number[], toFp16Bits);
    case 'BF16':
      return Uint16Array.from(data as number[], toBf16Bits);
    case 'INT64':
      return int64Values(data as number[], true);
    case 'UINT64':
      return int64Values(data as number[], false);
    case 'INT32':
      return Int32Array.from(data as number[]);
    case 'UINT32':
      return Uint32Array.from(data as number[]);
    case 'INT16':
      return Int16Array.from(data as number[]);
    case 'UINT16':
      return Uint16Array.from(data as number[]);
    case 'INT8':
      return Int8Array.from(data as number[]);
    case 'UINT8':
      return Uint8Array.from(data as number[]);
    case 'BOOL':
      return Uint8Array.from(data as boolean[], (v) => (v ? 1 : 0));
    case 'BYTES':
      return (data as string[]).slice();
  }
}

/**
 * The typed storage of binary-extension data (shared/binary.ts): one copy of
 * the bytes into a fresh, aligned buffer the tensor owns (it may be
 * transferred to a session thread), no per-element conversion. BOOL bytes
 * must be 0 or 1 and floats finite, as in JSON (400 naming the input); FP16
 * and BF16 finiteness is read from the bit patterns' exponents.
 */
function fromBinary(datatype: Datatype, name: string, bytes: Uint8Array): TensorValues {
  if (datatype === 'BYTES') return textsOf({ name, data: [], binary: bytes });
  const buffer = bytes.slice().buffer;
  let values: TensorValues;
  switch (datatype) {
    case 'FP32':
      values = new Float32Array(buffer);
      break;
    case 'FP64':
      values = new Float64Array(buffer);
      break;
    case 'FP16':
    case 'BF16': {
      const bits = new Uint16Array(buffer);
      const finite = datatype === 'FP16' ? fp16Finite : bf16Finite;
      for (let i = 0; i < bits.length; i++) {
        if (finite(bits[i]!)) continue;
        const value = datatype === 'FP16' ? fp16Value(bits[i]!) : bf16Value(bits[i]!);
        throw new MeshError(
          'invalid_tensor',
          `Input "${name}": element ${i} is ${value} (bits 0x${bits[i]!.toString(16).padStart(4, '0')}), not a valid ${datatype} value.`,
        );
      }
      return bits;
    }
    case 'INT64':
      return new BigInt64Array(buffer);
    case 'UINT64':
      return new BigUint64Array(buffer);
    case 'INT32':
      return new Int32Array(buffer);
    case 'UINT32':
      return new Uint32Array(buffer);
    case 'INT16':
      return new Int16Array(buffer);
    case 'UINT16':
      return new Uint16Array(buffer);
    case 'INT8':
      return new Int8Array(buffer);
    case 'UINT8':
      return new Uint8Array(buffer);
    case 'BOOL': {
      const flags = new Uint8Array(buffer);
      const at = flags.findIndex((v) => v > 1);
      if (at !== -1) throw new MeshError('invalid_tensor', `Input "${name}": element ${at} is byte ${flags[at]}, not a valid BOOL value (0 or 1).`);
      return flags;
    }
  }
  const floats = values as Float32Array | Float64Array;
  for (let i = 0; i < floats.length; i++) {
    if (!Number.isFinite(floats[i]!)) throw new MeshError('invalid_tensor', `Input "${name}": element ${i} is ${floats[i]}, not a valid ${datatype} value.`);
  }
  return floats;
}

/** Builds the ORT tensor of a feed. */
export function toOrtTensor(feed: Feed): ort.Tensor {
  if (feed.datatype === 'BF16') return new ort.Tensor('float32', widenBf16(feed.values as Uint16Array), feed.shape);
  return new ort.Tensor(ortTypeOf(feed.datatype), feed.values as never, feed.shape);
}

export function toOrtFeeds(feeds: Record<string, Feed>): Record<string, ort.Tensor> {
  const out: Record<string, ort.Tensor> = {};
  for (const [name, feed] of Object.entries(feeds)) out[name] = toOrtTensor(feed);
  return out;
}

/** Checks a shape against the config's `[-1, ...dims]`; returns the batch size. */
function checkShape(config: ModelConfig, t: ModelTensorConfig, shape: readonly number[], shown = t.name): number {
  const expected = modelShape(config, t);
  const mismatch = () =>
    new MeshError('shape_mismatch', `Input "${shown}": expected shape ${fmt(expected)}, got ${fmt(shape)}.`);
  if (shape.length !== expected.length) throw mismatch();
  expected.forEach((d, i) => {
    if (d !== -1 && shape[i] !== d) throw mismatch();
  });
  shape.forEach((d, i) => {
    if (d < 1) {
      throw new MeshError('shape_mismatch', `Input "${shown}": dimension ${i} of shape ${fmt(shape)} is 0; every dimension must be at least 1.`);
    }
  });
  if (config.max_batch_size === 0) return 1;
  const batch = shape[0]!;
  if (batch > config.max_batch_size) {
    throw new MeshError(
      'shape_mismatch',
      `Input "${shown}": batch size ${batch} exceeds the max_batch_size ${config.max_batch_size} of model "${config.name}".`,
    );
  }
  return batch;
}

function checkTokenIds(config: ModelConfig, t: ModelTensorConfig, values: BigInt64Array, shape: readonly number[]): void {
  const seq = shape[shape.length - 1]!;
  const max = config.parameters?.max_sequence_length;
  if (typeof max === 'number' && seq > max) {
    throw new MeshError('shape_mismatch', `Input "${t.name}": sequence length ${seq} exceeds max_sequence_length ${max} of model "${config.name}".`);
  }
  if (config.parameters?.tokenizer !== TOKENIZER_NAME) return;
  // Read as 32-bit words: an id is valid when its high word is 0 and its low word below VOCAB_SIZE.
  const words = new Uint32Array(values.buffer, values.byteOffset, values.length * 2);
  for (let i = 0; i < values.length; i++) {
    if (words[2 * i + 1] === 0 && words[2 * i]! < VOCAB_SIZE) continue;
    const id = (words[2 * i + 1]! | 0) * 4294967296 + words[2 * i]!;
    throw new MeshError(
      'invalid_tensor',
      `Input "${t.name}": element ${i} is ${id}, not a token id of ${TOKENIZER_NAME} (0 to ${VOCAB_SIZE - 1}).`,
    );
  }
}

/** Tokenizes a batch of texts into the model's token-id input. */
function tokenizeTexts(config: ModelConfig, spec: TextSpec, texts: string[]): Feed {
  const fixed = spec.target.dims[spec.target.dims.length - 1];
  const maxLength = fixed !== undefined && fixed > 0 ? Math.min(fixed, spec.maxLength) : spec.maxLength;
  const tokenizer = tokenizerOf(config);
  const rows = texts.map((text) => tokenizer.encode(text, maxLength));
  let ids: number[];
  let seq: number;
  if (fixed !== undefined && fixed > 0) {
    seq = fixed;
    ids = new Array<number>(rows.length * seq).fill(padIdOf(config));
    rows.forEach((row, r) => row.forEach((id, i) => (ids[r * seq + i] = id)));
  } else {
    ({ ids, seq } = padBatch(rows));
    const pad = padIdOf(config);
    if (pad !== PAD_ID) ids = ids.map((id) => (id === PAD_ID ? pad : id));
  }
  const batchDims = config.max_batch_size > 0 ? [texts.length] : [];
  const shape = [...batchDims, ...spec.target.dims.slice(0, -1), seq];
  return { datatype: 'INT64', shape, values: int64Values(ids, true) };
}

/**
 * Checks a parsed OIP request against the model's config and converts it.
 * Throws a 400 `MeshError` naming the input, the expected and the actual
 * datatype or shape.
 */
export function prepareInference(config: ModelConfig, request: InferRequest): PreparedInference {
  const byName = new Map(config.input.map((t) => [t.name, t]));
  const text = textSpecOf(config);
  const tokenInput = tokenInputOf(config);
  const feeds: Record<string, Feed> = {};
  const batches: { name: string; batch: number }[] = [];

  for (const input of request.inputs) {
    const t = byName.get(input.name);
    if (t) {
      const expected = datatypeOf(t);
      if (input.datatype !== expected) {
        throw new MeshError('datatype_mismatch', `Input "${input.name}": expected datatype ${expected}, got ${input.datatype}.`);
      }
      batches.push({ name: input.name, batch: checkShape(config, t, input.shape) });
      const values = input.binary ? fromBinary(expected, input.name, input.binary) : toValues(expected, input.data);
      if (t === tokenInput) checkTokenIds(config, t, values as BigInt64Array, input.shape);
      feeds[t.name] = { datatype: expected, shape: input.shape.slice(), values };
    } else if (text && input.name === text.name) {
      if (input.datatype !== 'BYTES') {
        throw new MeshError('datatype_mismatch', `Input "${input.name}": expected datatype BYTES (text), got ${input.datatype}.`);
      }
      const rank1 = config.max_batch_size > 0 ? [-1] : [1];
      const ok = input.shape.length === 1 || (input.shape.length === 2 && input.shape[1] === 1);
      if (!ok || (config.max_batch_size === 0 && input.shape[0] !== 1)) {
        throw new MeshError('shape_mismatch', `Input "${input.name}": expected shape ${fmt(rank1)} (one text per row), got ${fmt(input.shape)}.`);
      }
      const rows = input.shape[0]!;
      if (rows < 1) throw new MeshError('shape_mismatch', `Input "${input.name}": expected at least one text, got shape ${fmt(input.shape)}.`);
      if (config.max_batch_size > 0 && rows > config.max_batch_size) {
        throw new MeshError(
          'shape_mismatch',
          `Input "${input.name}": batch size ${rows} exceeds the max_batch_size ${config.max_batch_size} of model "${config.name}".`,
        );
      }
      if (request.inputs.some((i) => i.name === text.target.name)) {
        throw new MeshError('invalid_request', `Inputs "${input.name}" and "${text.target.name}" are alternatives: send one of them.`);
      }
      batches.push({ name: input.name, batch: rows });
      feeds[text.target.name] = tokenizeTexts(config, text, textsOf(input));
    } else {
      const accepted = config.input.map((x) => describe(config, x));
      if (text) accepted.push(`${text.name} (BYTES ${fmt(config.max_batch_size > 0 ? [-1] : [1])})`);
      throw new MeshError(
        'unknown_input',
        `Input "${input.name}" is not an input of model "${config.name}"; it takes ${accepted.join(', ')}.`,
      );
    }
  }

  for (const t of config.input) {
    if (feeds[t.name]) continue;
    const alt = text && text.target === t ? ` or text as "${text.name}" (BYTES)` : '';
    throw new MeshError('missing_input', `Input "${t.name}" is missing: model "${config.name}" needs ${describe(config, t)}${alt}.`);
  }

  const first = batches[0]!;
  for (const b of batches) {
    if (b.batch !== first.batch) {
      throw new MeshError('shape_mismatch', `Input "${b.name}": batch size ${b.batch} differs from input "${first.name}" (${first.batch}).`);
    }
  }

  const outputNames = config.output.map((o) => o.name);
  let fetches = outputNames;
  if (request.outputs && request.outputs.length > 0) {
    fetches = [];
    for (const o of request.outputs) {
      if (!outputNames.includes(o.name)) {
        throw new MeshError(
          'invalid_request',
          `Requested output "${o.name}" is not an output of model "${config.name}"; its outputs are ${outputNames.join(', ')}.`,
        );
      }
      if (!fetches.includes(o.name)) fetches.push(o.name);
    }
  }

  return {
    feeds,
    fetches,
    batch: first.batch,
    tokenInput: tokenInput?.name,
    padId: padIdOf(config),
  };
}

/** The model's `max_sequence_length` parameter, or the tokenizer's default. */
function maxTokensOf(config: ModelConfig): number {
  const max = config.parameters?.max_sequence_length;
  return typeof max === 'number' && Number.isSafeInteger(max) && max > 0 ? max : DEFAULT_MAX_LENGTH;
}

/**
 * How the model's inferences are metered: `parameters.metering` (checked when
 * the config is read), by default `tokens` for a model that takes token ids
 * or text and `rows` for any other; `tokens` counts with the model's
 * `max_sequence_length` and `pad_id`.
 */
export function meterRuleOf(config: ModelConfig): MeterRule {
  const declared = config.parameters?.metering;
  if (declared !== undefined && !isMeter(declared)) {
    throw new Error(`Model "${config.name}": parameters.metering must be one of ${METERS.join(', ')}, got ${JSON.stringify(declared)}.`);
  }
  // A text model with its own tokenizer.json is metered by rows unless it says otherwise: the edge recounts text tokens with mesh-hash-v1 only.
  const ownTokenizer = config.parameters?.tokenizer === TOKENIZER_JSON && textSpecOf(config) !== undefined;
  const kind = declared ?? (tokenInputOf(config) && !ownTokenizer ? 'tokens' : 'rows');
  return kind === 'tokens' ? { meter: kind, maxTokens: maxTokensOf(config), padId: padIdOf(config) } : { meter: kind };
}

/**
 * The units of an answered request (what the backend attests): `request` is
 * the checked request as the consumer sent it (text before tokenisation),
 * `outputs` what the answer carries.
 */
export function meterAnswer(config: ModelConfig, request: InferRequest, outputs: readonly Pick<OutputTensor, 'shape'>[]): Units {
  return meter(meterRuleOf(config), request.inputs, outputs);
}

/**
 * One output tensor as the model produced it, before JSON: its data is still
 * the typed array (or strings), so it crosses to an HTTP worker as one copy
 * and only the thread that answers turns it into JSON numbers (`jsonOutputs`).
 */
export interface OutputTensor {
  name: string;
  datatype: Datatype;
  shape: number[];
  data: ort.Tensor['data'];
}

/** Picks the ORT results in `fetches` order and names their OIP datatypes. */
export function toOutputs(config: ModelConfig, results: Record<string, ort.Tensor>, fetches: readonly string[]): OutputTensor[] {
  return fetches.map((name) => {
    const tensor = results[name];
    if (!tensor) throw new Error(`Model "${config.name}" returned no output "${name}".`);
    const declared = config.output.find((o) => o.name === name);
    if (declared?.data_type === 'TYPE_BF16' && tensor.type === 'float32') {
      return { name, datatype: 'BF16', shape: [...tensor.dims], data: narrowToBf16(tensor.data as Float32Array) };
    }
    const datatype = DATATYPE_OF_ORT[tensor.type];
    if (!datatype) throw new Error(`Model "${config.name}" output "${name}" has ORT type ${tensor.type}, which OIP cannot carry.`);
    return { name, datatype, shape: [...tensor.dims], data: tensor.data };
  });
}

/** OIP outputs (JSON data) of `outputs`. */
export function jsonOutputs(outputs: readonly OutputTensor[]): InferOutput[] {
  return outputs.map(({ name, datatype, shape, data }) => ({ name, datatype, shape, data: toJsonData(datatype, data) }));
}

/**
 * An output's data in the binary extension: little-endian elements, a view
 * of the typed array's own bytes (no copy, no per-element conversion); BYTES
 * as length-prefixed UTF-8, BOOL as one byte each, FP16 and BF16 as their
 * bit patterns (a Float16Array's bytes are the same).
 */
export function outputBytes(output: Pick<OutputTensor, 'datatype' | 'data'>): Uint8Array {
  const { datatype, data } = output;
  if (datatype === 'BYTES') return encodeBytesElements(Array.from(data as string[], (t) => utf8.encode(t)));
  if (!ArrayBuffer.isView(data)) throw new Error(`output data of ${datatype} is not a typed array`);
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

const utf8 = new TextEncoder();

/**
 * An output's JSON data: FP32 as the shortest decimals that read back as the
 * same float32s (`shortestFloat32`); FP16 and BF16 as the exact values of
 * their bit patterns (from a Float16Array, where the running Node gives ORT
 * one, as they are); 64-bit integers from their words (`int64Numbers`).
 */
function toJsonData(datatype: Datatype, data: ort.Tensor['data']): TensorData {
  if (datatype === 'BYTES') return Array.from(data as string[]);
  if (datatype === 'BOOL') return Array.from(data as Uint8Array, (v) => v !== 0);
  if (data instanceof BigInt64Array || data instanceof BigUint64Array) return int64Numbers(data);
  if (datatype === 'FP32') return Array.from(data as Float32Array, shortestFloat32);
  if (datatype === 'FP16' && data instanceof Uint16Array) return Array.from(data, fp16Value);
  if (datatype === 'BF16' && data instanceof Uint16Array) return Array.from(data, bf16Value);
  return Array.from(data as ArrayLike<number>);
}

/**
 * A small batch of neutral values for every input: what the warm-up run at
 * load time feeds the model (token inputs get [CLS]-like id 1, not padding).
 * With `model_warmup`, its first sample sets the inputs it lists: their dims
 * (a variable dimension the default would make 8 may need to be 320), after
 * its `batch_size` (default 1) when the model batches, and zeros (empty
 * strings for BYTES) or pseudo-random data from a fixed seed, the same on
 * every load: floats in [0, 1), integers in [0, 64), BOOL half true, BYTES
 * short ASCII strings. Inputs it does not list keep the defaults, with the
 * sample's batch size.
 */
export function warmupFeeds(config: ModelConfig): Record<string, Feed> {
  const feeds: Record<string, Feed> = {};
  const tokenInput = tokenInputOf(config);
  const sample = config.model_warmup?.[0];
  const batch = sample?.batch_size ?? 1;
  // mulberry32 from a fixed seed: deterministic, so every load warms up on the same data.
  let state = 0x6d657368;
  const random = (): number => {
    state = (state + 0x6d2b79f5) | 0;
    let x = Math.imul(state ^ (state >>> 15), 1 | state);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
  const randomData = (datatype: Datatype, count: number): TensorData => {
    switch (datatype) {
      case 'FP16':
      case 'BF16':
      case 'FP32':
      case 'FP64':
        return Array.from({ length: count }, () => random());
      case 'BOOL':
        return Array.from({ length: count }, () => random() < 0.5);
      case 'BYTES':
        return Array.from({ length: count }, () => Math.floor(random() * 2 ** 32).toString(36));
      default:
        // Small non-negative integers: valid in every integer type, and as indices into small tables.
        return Array.from({ length: count }, () => Math.floor(random() * 64));
    }
  };
  const fixed = (datatype: Datatype, count: number, fill: number): TensorData =>
    datatype === 'BYTES' ? new Array<string>(count).fill('') : datatype === 'BOOL' ? new Array<boolean>(count).fill(false) : new Array<number>(count).fill(fill);
  for (const t of config.input) {
    const datatype = datatypeOf(t);
    const given = sample?.inputs[t.name];
    const shape = given
      ? config.max_batch_size > 0 ? [batch, ...given.dims] : [...given.dims]
      : modelShape(config, t).map((d, i) => (d !== -1 ? d : i === 0 && config.max_batch_size > 0 ? batch : 8));
    const count = shape.reduce((a, b) => a * b, 1);
    const data = given?.random_data ? randomData(datatype, count) : fixed(datatype, count, !given && t === tokenInput ? 1 : 0);
    feeds[t.name] = { datatype, shape, values: toValues(datatype, data) };
  }
  return feeds;
}
