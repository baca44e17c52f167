/**
 * A tensor's elements between their wire forms and the typed arrays ONNX
 * Runtime takes, per datatype: checked JSON numbers and the binary tensor
 * extension's bytes in (`toValues`, `fromBinary`: one copy, no per-element
 * BigInt), the session's tensors (`toOrtTensor`; BF16 meets the session as
 * FP32), and outputs back to JSON (`toJsonData`: float32 printed shortest,
 * 64-bit integers through their two words) or to bytes (`outputBytes`). The
 * checks against a model's config are in tensors.ts.
 */

import * as ort from 'onnxruntime-node';
import { encodeBytesElements, textsOf } from '../../../shared/binary.ts';
import { MeshError } from '../../../shared/errors.ts';
import { bf16Finite, bf16Value, fp16Finite, fp16Value, toBf16Bits, toFp16Bits } from '../../../shared/float16.ts';
import type { Datatype, TensorData } from '../../../shared/protocol.ts';

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

export const DATATYPE_OF_ORT: Partial<Record<ort.Tensor.Type, Datatype>> = Object.fromEntries(
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
export function narrowToBf16(values: Float32Array): Uint16Array {
  return Uint16Array.from(values, toBf16Bits);
}

// 64-bit integers go through their two 32-bit words (little-endian, as every
// platform ORT runs on, and as the binary extension's data already assumes):
// no BigInt per element.

/** Checked JSON integers (safe integers, negative allowed when signed) as a 64-bit typed array, word by word. */
export function int64Values(data: readonly number[], signed: boolean): BigInt64Array | BigUint64Array {
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


/**
 * Converts checked, flat JSON data to the typed storage of `datatype`: FP16
 * and BF16 as the nearest bit patterns (ties to even, subnormals included),
 * 64-bit integers word by word (`int64Values`).
 */
export function toValues(datatype: Datatype, data: TensorData): TensorValues {
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
export function fromBinary(datatype: Datatype, name: string, bytes: Uint8Array): TensorValues {
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

/**
 * An output's data in the binary extension: little-endian elements, a view
 * of the typed array's own bytes (no copy, no per-element conversion); BYTES
 * as length-prefixed UTF-8, BOOL as one byte each, FP16 and BF16 as their
 * bit patterns (a Float16Array's bytes are the same).
 */
export function outputBytes(output: { datatype: Datatype; data: ort.Tensor['data'] }): Uint8Array {
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
export function toJsonData(datatype: Datatype, data: ort.Tensor['data']): TensorData {
  if (datatype === 'BYTES') return Array.from(data as string[]);
  if (datatype === 'BOOL') return Array.from(data as Uint8Array, (v) => v !== 0);
  if (data instanceof BigInt64Array || data instanceof BigUint64Array) return int64Numbers(data);
  if (datatype === 'FP32') return Array.from(data as Float32Array, shortestFloat32);
  if (datatype === 'FP16' && data instanceof Uint16Array) return Array.from(data, fp16Value);
  if (datatype === 'BF16' && data instanceof Uint16Array) return Array.from(data, bf16Value);
  return Array.from(data as ArrayLike<number>);
}
