/**
 * Between OIP v2 JSON tensors and ONNX Runtime tensors, checked against the
 * model's config: a request naming an unknown input, missing one, or sending
 * the wrong datatype or shape is refused with a 400 that names the input and
 * says what was expected and what came. Text (`BYTES`) sent to a model whose
 * config names a `text_input` is tokenized (with the model's tokenizer,
 * serving/tokenizers.ts) into its INT64 token-id input. Also meters an answered request: the billing units
 * the backend attests, computed with shared/metering.ts under the model's
 * rule (`meterRuleOf`), from the request as the consumer sent it and the
 * outputs' shapes, exactly as the edge recounts them. How each datatype's
 * elements are converted is tensor-data.ts.
 */

import * as ort from 'onnxruntime-node';
import { textsOf } from '../../../shared/binary.ts';
import { MeshError } from '../../../shared/errors.ts';
import type { Datatype, InferOutput, InferRequest, TensorData } from '../../../shared/protocol.ts';
import { DEFAULT_MAX_LENGTH, PAD_ID, TOKENIZER_NAME, VOCAB_SIZE, padBatch } from '../../../shared/tokenizer.ts';
import type { Units } from '../../../shared/jwt.ts';
import { METERS, isMeter, meter, type MeterRule } from '../../../shared/metering.ts';
import { datatypeOf, modelShape, type ModelConfig, type ModelTensorConfig } from './model-config.ts';
import { TOKENIZER_JSON, tokenizerOf } from './tokenizers.ts';
import { DATATYPE_OF_ORT, fromBinary, int64Values, narrowToBf16, toJsonData, toValues, type Feed } from './tensor-data.ts';

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
