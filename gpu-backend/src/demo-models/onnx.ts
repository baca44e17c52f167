/**
 * A minimal ONNX protobuf *writer*: just enough of onnx.proto (ModelProto,
 * GraphProto, NodeProto, AttributeProto, TensorProto, ValueInfoProto; field
 * numbers of IR version 8, opset 17) to emit the demo models `generate.ts`
 * builds. Hand-written because the subset is small and a protobuf dependency
 * is not worth it for a build-time generator, and so that the output is
 * byte-for-byte deterministic: fields in a fixed order, repeated scalars
 * unpacked (as proto2 onnx.proto declares them), tensor data as little-endian
 * `raw_data` whatever the host.
 */

/** TensorProto.DataType values for the element types this writer can emit. */
export const DataType = {
  FLOAT: 1,
  UINT8: 2,
  INT8: 3,
  UINT16: 4,
  INT16: 5,
  INT32: 6,
  INT64: 7,
  BOOL: 9,
  FLOAT16: 10,
  DOUBLE: 11,
  UINT32: 12,
  UINT64: 13,
  BFLOAT16: 16,
} as const;
export type DataTypeCode = (typeof DataType)[keyof typeof DataType];

/** AttributeProto.AttributeType values. */
const AttrType = { FLOAT: 1, INT: 2, STRING: 3, TENSOR: 4, FLOATS: 6, INTS: 7 } as const;

// ---------------------------------------------------------------------------
// Protobuf wire encoding
// ---------------------------------------------------------------------------

const WIRE_VARINT = 0;
const WIRE_LEN = 2;
const WIRE_I32 = 5;

const utf8 = new TextEncoder();

/** Appends protobuf fields to a growable byte buffer. */
class ProtoWriter {
  private buf = new Uint8Array(256);
  private len = 0;

  private reserve(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
  }

  private rawVarint(value: bigint): void {
    // int64 fields: negatives are encoded as their 64-bit two's complement (10 bytes).
    let v = BigInt.asUintN(64, value);
    this.reserve(10);
    while (v >= 0x80n) {
      this.buf[this.len++] = Number(v & 0x7fn) | 0x80;
      v >>= 7n;
    }
    this.buf[this.len++] = Number(v);
  }

  private tag(field: number, wire: number): void {
    this.rawVarint(BigInt((field << 3) | wire));
  }

  varint(field: number, value: number | bigint): this {
    if (typeof value === 'number' && !Number.isSafeInteger(value)) {
      throw new RangeError(`protobuf field ${field}: ${value} is not a safe integer`);
    }
    this.tag(field, WIRE_VARINT);
    this.rawVarint(BigInt(value));
    return this;
  }

  float(field: number, value: number): this {
    this.tag(field, WIRE_I32);
    this.reserve(4);
    new DataView(this.buf.buffer, this.buf.byteOffset + this.len, 4).setFloat32(0, value, true);
    this.len += 4;
    return this;
  }

  bytes(field: number, value: Uint8Array): this {
    this.tag(field, WIRE_LEN);
    this.rawVarint(BigInt(value.length));
    this.reserve(value.length);
    this.buf.set(value, this.len);
    this.len += value.length;
    return this;
  }

  string(field: number, value: string): this {
    return this.bytes(field, utf8.encode(value));
  }

  finish(): Uint8Array {
    return this.buf.slice(0, this.len);
  }
}

// ---------------------------------------------------------------------------
// Message model
// ---------------------------------------------------------------------------

/** An initializer: a named constant tensor stored as little-endian raw_data. */
export interface TensorProto {
  name: string;
  dims: number[];
  dataType: DataTypeCode;
  rawData: Uint8Array;
}

export type AttributeValue =
  | { kind: 'int'; value: number }
  | { kind: 'ints'; value: number[] }
  | { kind: 'float'; value: number }
  | { kind: 'floats'; value: number[] }
  | { kind: 'string'; value: string }
  | { kind: 'tensor'; value: TensorProto };

/** Attribute shorthand: an integer number is INT, a non-integer FLOAT, a string STRING, an array of integers INTS. */
type AttrInput = number | number[] | string | AttributeValue;

export interface NodeProto {
  opType: string;
  inputs: string[];
  outputs: string[];
  name: string;
  attributes: Record<string, AttributeValue>;
}

/** A graph input or output: a tensor type with a shape whose dims are sizes or symbolic names. */
export interface ValueInfoProto {
  name: string;
  elemType: DataTypeCode;
  dims: (number | string)[];
}

export interface GraphProto {
  name: string;
  nodes: NodeProto[];
  initializers: TensorProto[];
  inputs: ValueInfoProto[];
  outputs: ValueInfoProto[];
}

interface ModelProto {
  graph: GraphProto;
  /** Default 8 (the IR version of ONNX 1.10–1.13, read by every ORT since 1.10). */
  irVersion?: number;
  /** Default opset 17 of the default ("ai.onnx") domain. */
  opset?: number;
  producerName?: string;
  producerVersion?: string;
  docString?: string;
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

function littleEndianBytes(data: Float32Array | BigInt64Array | Int32Array | Uint8Array): Uint8Array {
  const out = new Uint8Array(data.length * data.BYTES_PER_ELEMENT);
  const view = new DataView(out.buffer);
  if (data instanceof Float32Array) for (let i = 0; i < data.length; i++) view.setFloat32(i * 4, data[i]!, true);
  else if (data instanceof BigInt64Array) for (let i = 0; i < data.length; i++) view.setBigInt64(i * 8, data[i]!, true);
  else if (data instanceof Int32Array) for (let i = 0; i < data.length; i++) view.setInt32(i * 4, data[i]!, true);
  else out.set(data);
  return out;
}

/**
 * A constant tensor. The element type follows the array: Float32Array → FLOAT,
 * BigInt64Array → INT64, Int32Array → INT32, Uint8Array → UINT8.
 */
export function tensor(
  name: string,
  dims: number[],
  data: Float32Array | BigInt64Array | Int32Array | Uint8Array,
): TensorProto {
  const count = dims.reduce((a, b) => a * b, 1);
  if (count !== data.length) {
    throw new RangeError(`tensor "${name}": dims ${JSON.stringify(dims)} need ${count} elements, got ${data.length}`);
  }
  const dataType: DataTypeCode =
    data instanceof Float32Array
      ? DataType.FLOAT
      : data instanceof BigInt64Array
        ? DataType.INT64
        : data instanceof Int32Array
          ? DataType.INT32
          : DataType.UINT8;
  return { name, dims: [...dims], dataType, rawData: littleEndianBytes(data) };
}

function toAttribute(name: string, v: AttrInput): AttributeValue {
  if (typeof v === 'string') return { kind: 'string', value: v };
  if (typeof v === 'number') return Number.isInteger(v) ? { kind: 'int', value: v } : { kind: 'float', value: v };
  if (Array.isArray(v)) {
    if (!v.every(Number.isInteger)) throw new TypeError(`attribute "${name}": use { kind: 'floats' } for float lists`);
    return { kind: 'ints', value: v };
  }
  return v;
}

/** Explicit FLOAT attribute (for float values that happen to be integers, e.g. `alpha: 1`). */
export const float = (value: number): AttributeValue => ({ kind: 'float', value });

/** A graph node. The name defaults to `<op>_<first output>`, so it is stable across runs. */
export function node(
  opType: string,
  inputs: string[],
  outputs: string[],
  attrs: Record<string, AttrInput> = {},
  name?: string,
): NodeProto {
  const attributes: Record<string, AttributeValue> = {};
  for (const [k, v] of Object.entries(attrs)) attributes[k] = toAttribute(k, v);
  return { opType, inputs, outputs, name: name ?? `${opType}_${outputs[0] ?? ''}`, attributes };
}

/** A graph input/output description. String dims become `dim_param` (symbolic), numbers `dim_value`. */
export function valueInfo(name: string, elemType: DataTypeCode, dims: (number | string)[]): ValueInfoProto {
  return { name, elemType, dims: [...dims] };
}

// ---------------------------------------------------------------------------
// Encoding (field numbers from onnx.proto)
// ---------------------------------------------------------------------------

function encodeTensor(t: TensorProto): Uint8Array {
  const w = new ProtoWriter();
  for (const d of t.dims) w.varint(1, d); // dims
  w.varint(2, t.dataType); // data_type
  w.string(8, t.name); // name
  w.bytes(9, t.rawData); // raw_data
  return w.finish();
}

function encodeAttribute(name: string, a: AttributeValue): Uint8Array {
  const w = new ProtoWriter();
  w.string(1, name); // name
  switch (a.kind) {
    case 'float':
      w.float(2, a.value); // f
      w.varint(20, AttrType.FLOAT);
      break;
    case 'int':
      w.varint(3, a.value); // i
      w.varint(20, AttrType.INT);
      break;
    case 'string':
      w.string(4, a.value); // s
      w.varint(20, AttrType.STRING);
      break;
    case 'tensor':
      w.bytes(5, encodeTensor(a.value)); // t
      w.varint(20, AttrType.TENSOR);
      break;
    case 'floats':
      for (const f of a.value) w.float(7, f); // floats
      w.varint(20, AttrType.FLOATS);
      break;
    case 'ints':
      for (const i of a.value) w.varint(8, i); // ints
      w.varint(20, AttrType.INTS);
      break;
  }
  return w.finish();
}

function encodeNode(n: NodeProto): Uint8Array {
  const w = new ProtoWriter();
  for (const i of n.inputs) w.string(1, i); // input
  for (const o of n.outputs) w.string(2, o); // output
  w.string(3, n.name); // name
  w.string(4, n.opType); // op_type
  for (const key of Object.keys(n.attributes).sort()) {
    w.bytes(5, encodeAttribute(key, n.attributes[key]!)); // attribute
  }
  return w.finish();
}

function encodeValueInfo(v: ValueInfoProto): Uint8Array {
  const shape = new ProtoWriter();
  for (const d of v.dims) {
    const dim = new ProtoWriter();
    if (typeof d === 'number') dim.varint(1, d); // dim_value
    else dim.string(2, d); // dim_param
    shape.bytes(1, dim.finish()); // TensorShapeProto.dim
  }
  const tensorType = new ProtoWriter().varint(1, v.elemType).bytes(2, shape.finish()); // elem_type, shape
  const type = new ProtoWriter().bytes(1, tensorType.finish()); // TypeProto.tensor_type
  return new ProtoWriter().string(1, v.name).bytes(2, type.finish()).finish(); // name, type
}

function encodeGraph(g: GraphProto): Uint8Array {
  const w = new ProtoWriter();
  for (const n of g.nodes) w.bytes(1, encodeNode(n)); // node
  w.string(2, g.name); // name
  for (const t of g.initializers) w.bytes(5, encodeTensor(t)); // initializer
  for (const i of g.inputs) w.bytes(11, encodeValueInfo(i)); // input
  for (const o of g.outputs) w.bytes(12, encodeValueInfo(o)); // output
  return w.finish();
}

/** Serialises a model to the bytes of a `.onnx` file. */
export function encodeModel(m: ModelProto): Uint8Array {
  const w = new ProtoWriter();
  w.varint(1, m.irVersion ?? 8); // ir_version
  w.string(2, m.producerName ?? 'edge-inference-mesh'); // producer_name
  if (m.producerVersion !== undefined) w.string(3, m.producerVersion); // producer_version
  if (m.docString !== undefined) w.string(6, m.docString); // doc_string
  w.bytes(7, encodeGraph(m.graph)); // graph
  const opset = new ProtoWriter().string(1, '').varint(2, m.opset ?? 17); // domain, version
  w.bytes(8, opset.finish()); // opset_import
  return w.finish();
}
