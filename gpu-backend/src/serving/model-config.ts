/**
 * Model configuration: the JSON form of a Triton `config.pbtxt`
 * (`<repo>/<model>/config.json`, or the `config.pbtxt` itself, which pbtxt.ts
 * turns into this form), its types and its validation. Only the subset of
 * Triton's schema the backend acts on is accepted, and an unknown field is an
 * error: a typo must not silently disable batching. As in Triton, when
 * `max_batch_size > 0` the `dims` of inputs and outputs exclude the batch
 * dimension; `-1` marks a variable dimension.
 */

import { METERS, isMeter } from '../../../shared/metering.ts';
import type { Datatype } from '../../../shared/protocol.ts';
import { TOKENIZER_CHOICES, TOKENIZER_JSON, isTokenizerChoice } from './tokenizers.ts';

const TRITON_DATA_TYPES = [
  'TYPE_BOOL',
  'TYPE_UINT8',
  'TYPE_UINT16',
  'TYPE_UINT32',
  'TYPE_UINT64',
  'TYPE_INT8',
  'TYPE_INT16',
  'TYPE_INT32',
  'TYPE_INT64',
  'TYPE_FP16',
  'TYPE_BF16',
  'TYPE_FP32',
  'TYPE_FP64',
  'TYPE_STRING',
] as const;
export type TritonDataType = (typeof TRITON_DATA_TYPES)[number];

/** Triton `TYPE_*` → Open Inference Protocol datatype. */
export const TRITON_TO_DATATYPE: Record<TritonDataType, Datatype> = {
  TYPE_BOOL: 'BOOL',
  TYPE_UINT8: 'UINT8',
  TYPE_UINT16: 'UINT16',
  TYPE_UINT32: 'UINT32',
  TYPE_UINT64: 'UINT64',
  TYPE_INT8: 'INT8',
  TYPE_INT16: 'INT16',
  TYPE_INT32: 'INT32',
  TYPE_INT64: 'INT64',
  TYPE_FP16: 'FP16',
  TYPE_BF16: 'BF16',
  TYPE_FP32: 'FP32',
  TYPE_FP64: 'FP64',
  TYPE_STRING: 'BYTES',
};

/** Open Inference Protocol datatype → Triton `TYPE_*`. */
export const DATATYPE_TO_TRITON: Record<Datatype, TritonDataType> = {
  BOOL: 'TYPE_BOOL',
  UINT8: 'TYPE_UINT8',
  UINT16: 'TYPE_UINT16',
  UINT32: 'TYPE_UINT32',
  UINT64: 'TYPE_UINT64',
  INT8: 'TYPE_INT8',
  INT16: 'TYPE_INT16',
  INT32: 'TYPE_INT32',
  INT64: 'TYPE_INT64',
  FP16: 'TYPE_FP16',
  BF16: 'TYPE_BF16',
  FP32: 'TYPE_FP32',
  FP64: 'TYPE_FP64',
  BYTES: 'TYPE_STRING',
};

function isTritonDataType(v: unknown): v is TritonDataType {
  return typeof v === 'string' && (TRITON_DATA_TYPES as readonly string[]).includes(v);
}

/** One input or output of a model. */
export interface ModelTensorConfig {
  name: string;
  data_type: TritonDataType;
  /** Dimensions without the batch dimension when `max_batch_size > 0`; `-1` = variable. */
  dims: number[];
}

/** Triton's `ModelQueuePolicy` (its `timeout_action` is always REJECT here), applied by the batcher (batcher.ts). */
interface QueuePolicyConfig {
  /** Requests that may wait in the model's queue; beyond, 429. 0 (default): no per-model bound (MAX_QUEUE still applies). */
  max_queue_size?: number;
  /** A request waiting longer than this is removed from the queue without running. 0 (default): no timeout. */
  default_timeout_microseconds?: number;
  /**
   * A request may set its own, shorter, timeout in `parameters.timeout`
   * (microseconds); it never lengthens a non-zero default. Default false.
   */
  allow_timeout_override?: boolean;
}

export interface DynamicBatchingConfig {
  /** How long a request may wait for others to join its batch (default 0). */
  max_queue_delay_microseconds?: number;
  /** Batch sizes worth waiting for; each ≤ `max_batch_size`. */
  preferred_batch_size?: number[];
  /** Queue bound and timeouts of the model's requests. */
  default_queue_policy?: QueuePolicyConfig;
}

const INSTANCE_KINDS = ['KIND_GPU', 'KIND_CPU'] as const;
type InstanceKind = (typeof INSTANCE_KINDS)[number];

/** Triton's instance group: `count` executions of the model at once, on `kind`. */
export interface InstanceGroupConfig {
  /** Default 1; the sum over groups is how many batches of the model may execute at once. */
  count?: number;
  /** Default `KIND_GPU` (the configured providers, CUDA first); `KIND_CPU`: the CPU provider whatever EXECUTION_PROVIDERS says. */
  kind?: InstanceKind;
}

export type VersionPolicy =
  | { latest: { num_versions: number } }
  | { all: Record<string, never> }
  | { specific: { versions: number[] } };

export type ModelParameterValue = string | number | boolean;

/** The pipelines the backend computes by calling other models (`platform: "pipeline"`, `parameters.pipeline`). */
export const PIPELINES = ['ocr'] as const;
export type Pipeline = (typeof PIPELINES)[number];

export function isPipeline(v: unknown): v is Pipeline {
  return typeof v === 'string' && (PIPELINES as readonly string[]).includes(v);
}

/** One input of a warm-up sample (Triton's `ModelWarmup.Input`, without `input_data_file`). */
export interface ModelWarmupInput {
  /** The input's own data type. */
  data_type: TritonDataType;
  /** Concrete dims (no -1), without the batch dimension when `max_batch_size > 0`; they fit the input's dims. */
  dims: number[];
  /** Exactly one of `zero_data` and `random_data` is set. */
  zero_data?: true;
  random_data?: true;
}

/** Triton's `ModelWarmup` (without `count`): a sample request the load runs the model on. */
export interface ModelWarmup {
  name: string;
  /** Rows of the sample (default 1); 1 for a model with `max_batch_size` 0. */
  batch_size?: number;
  /** By input name; inputs not listed get the backend's default warm-up data. */
  inputs: Record<string, ModelWarmupInput>;
}

/** A warm-up input may hold at most this many elements (per sample, batch included). */
export const MAX_WARMUP_ELEMENTS = 1 << 24;

export interface ModelConfig {
  name: string;
  /**
   * `onnxruntime_onnx` (Triton's `backend: "onnxruntime"` means the same): a
   * model.onnx run by ONNX Runtime. `pipeline`: a model the backend computes
   * by calling other models (`parameters.pipeline` says which pipeline).
   */
  platform: 'onnxruntime_onnx' | 'pipeline';
  /** 0: the model has no batch dimension; > 0: the largest batch it takes. */
  max_batch_size: number;
  input: ModelTensorConfig[];
  output: ModelTensorConfig[];
  /** Present: requests are batched together (needs `max_batch_size > 0`). */
  dynamic_batching?: DynamicBatchingConfig;
  /** Concurrent executions and where they run (default one, `KIND_GPU`). */
  instance_group?: InstanceGroupConfig[];
  /** Which numbered version folders to serve (default `{ latest: { num_versions: 1 } }`). */
  version_policy?: VersionPolicy;
  /**
   * Scalar parameters, e.g. `tokenizer`, `text_input`, `max_sequence_length`,
   * `pad_id`, `metering`, `pipeline`. The config may write them flat or as
   * Triton's `{ string_value }`; nested values are strings, except that
   * `max_sequence_length` and `pad_id` are read from an integer string and
   * kept as numbers. The ones the backend acts on are checked: `metering` is
   * one of shared/metering.ts's meters, `tokenizer` one of
   * serving/tokenizers.ts's choices, `max_sequence_length` a positive
   * integer, `pad_id` an integer, `pipeline` one of `PIPELINES` (and only
   * for `platform: "pipeline"`).
   */
  parameters?: Record<string, ModelParameterValue>;
  /** Warm-up samples (Triton's `model_warmup`); the load runs the first (tensors.ts `warmupFeeds`). */
  model_warmup?: ModelWarmup[];
}

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

const CONFIG_KEYS = [
  'name',
  'platform',
  'backend',
  'max_batch_size',
  'input',
  'output',
  'dynamic_batching',
  'instance_group',
  'version_policy',
  'parameters',
  'model_warmup',
];
const TENSOR_KEYS = ['name', 'data_type', 'dims'];
const BATCHING_KEYS = ['max_queue_delay_microseconds', 'preferred_batch_size', 'default_queue_policy'];
const QUEUE_POLICY_KEYS = ['max_queue_size', 'default_timeout_microseconds', 'allow_timeout_override'];
const INSTANCE_KEYS = ['count', 'kind'];
const WARMUP_KEYS = ['name', 'batch_size', 'inputs'];
const WARMUP_INPUT_KEYS = ['data_type', 'dims', 'zero_data', 'random_data'];
const PLATFORMS = ['onnxruntime_onnx', 'pipeline'] as const;
/** Parameters the backend reads as integers: Triton's nested `{ string_value }` form gives them as integer strings. */
const INTEGER_PARAMETERS = ['max_sequence_length', 'pad_id'];
const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const show = (v: unknown): string => JSON.stringify(v) ?? String(v);

/**
 * Validates the parsed contents of a config.json and returns it typed. Throws
 * an `Error` whose message starts with `where` (e.g. the file path) and names
 * the offending field, e.g. `models/embed/config.json: input[0].dims[0] must
 * be -1 or a positive integer, got 0`.
 */
export function parseModelConfig(json: unknown, where: string): ModelConfig {
  const fail = (field: string, problem: string): never => {
    throw new Error(`${where}: ${field} ${problem}`);
  };
  const noUnknownKeys = (obj: Record<string, unknown>, allowed: string[], field: string) => {
    for (const key of Object.keys(obj)) {
      if (!allowed.includes(key)) {
        fail(field ? `${field}.${key}` : `"${key}"`, `is not a supported field (supported: ${allowed.join(', ')})`);
      }
    }
  };
  const positiveInt = (v: unknown, field: string): number =>
    Number.isSafeInteger(v) && (v as number) > 0 ? (v as number) : fail(field, `must be a positive integer, got ${show(v)}`);
  const nonNegativeInt = (v: unknown, field: string): number =>
    Number.isSafeInteger(v) && (v as number) >= 0
      ? (v as number)
      : fail(field, `must be a non-negative integer, got ${show(v)}`);

  if (!isObject(json)) return fail('the config', `must be a JSON object, got ${show(json)}`);
  noUnknownKeys(json, CONFIG_KEYS, '');

  const { name, platform, backend, max_batch_size } = json;
  if (typeof name !== 'string' || !NAME.test(name)) {
    fail('name', `must be a non-empty string of letters, digits, "_", "." and "-", got ${show(name)}`);
  }
  // Triton names an ONNX Runtime model by `platform: "onnxruntime_onnx"` or `backend: "onnxruntime"`.
  if (platform !== undefined && !(PLATFORMS as readonly unknown[]).includes(platform)) {
    fail('platform', `must be "onnxruntime_onnx" or "pipeline", got ${show(platform)}`);
  }
  if (backend !== undefined && backend !== 'onnxruntime') {
    fail('backend', `must be "onnxruntime" (the same as platform "onnxruntime_onnx"), got ${show(backend)}`);
  }
  if (backend !== undefined && platform !== undefined && platform !== 'onnxruntime_onnx') {
    fail('backend', `"onnxruntime" disagrees with platform ${show(platform)}: keep the one that is meant`);
  }
  if (platform === undefined && backend === undefined) {
    fail('platform', 'must be "onnxruntime_onnx" or "pipeline" (or backend "onnxruntime"), got nothing');
  }
  const resolvedPlatform = (platform ?? 'onnxruntime_onnx') as ModelConfig['platform'];
  if (resolvedPlatform === 'pipeline') {
    // A pipeline calls other models, which batch and run on their own instances.
    if (json.dynamic_batching !== undefined) fail('dynamic_batching', "is not for a pipeline: its steps' models batch");
    if (json.instance_group !== undefined) fail('instance_group', "is not for a pipeline: its steps' models run on their own instances");
    if (max_batch_size !== 0) fail('max_batch_size', `must be 0 for a pipeline (its steps' models batch), got ${show(max_batch_size)}`);
  }
  const maxBatch = nonNegativeInt(max_batch_size, 'max_batch_size');

  const tensors = (key: 'input' | 'output'): ModelTensorConfig[] => {
    const list = json[key];
    if (!Array.isArray(list) || list.length === 0) return fail(key, `must be a non-empty array, got ${show(list)}`);
    const seen = new Set<string>();
    return list.map((raw, i): ModelTensorConfig => {
      const at = `${key}[${i}]`;
      if (!isObject(raw)) return fail(at, `must be an object, got ${show(raw)}`);
      noUnknownKeys(raw, TENSOR_KEYS, at);
      const { name: tName, data_type, dims } = raw;
      if (typeof tName !== 'string' || tName.length === 0) fail(`${at}.name`, `must be a non-empty string, got ${show(tName)}`);
      if (seen.has(tName as string)) fail(`${at}.name`, `repeats ${show(tName)}`);
      seen.add(tName as string);
      if (!isTritonDataType(data_type)) {
        fail(`${at}.data_type`, `must be one of ${TRITON_DATA_TYPES.join(', ')}, got ${show(data_type)}`);
      }
      if (!Array.isArray(dims)) return fail(`${at}.dims`, `must be an array, got ${show(dims)}`);
      dims.forEach((d, j) => {
        if (d !== -1 && !(Number.isSafeInteger(d) && (d as number) > 0)) {
          fail(`${at}.dims[${j}]`, `must be -1 or a positive integer, got ${show(d)}`);
        }
      });
      if (maxBatch === 0 && dims.length === 0) fail(`${at}.dims`, 'must not be empty when max_batch_size is 0');
      return { name: tName as string, data_type: data_type as TritonDataType, dims: [...(dims as number[])] };
    });
  };

  const config: ModelConfig = {
    name: name as string,
    platform: resolvedPlatform,
    max_batch_size: maxBatch,
    input: tensors('input'),
    output: tensors('output'),
  };

  if (json.dynamic_batching !== undefined) {
    const db = json.dynamic_batching;
    if (!isObject(db)) return fail('dynamic_batching', `must be an object, got ${show(db)}`);
    noUnknownKeys(db, BATCHING_KEYS, 'dynamic_batching');
    if (maxBatch === 0) fail('dynamic_batching', 'needs max_batch_size > 0');
    const batching: DynamicBatchingConfig = {};
    if (db.max_queue_delay_microseconds !== undefined) {
      batching.max_queue_delay_microseconds = nonNegativeInt(
        db.max_queue_delay_microseconds,
        'dynamic_batching.max_queue_delay_microseconds',
      );
    }
    if (db.preferred_batch_size !== undefined) {
      const pref = db.preferred_batch_size;
      if (!Array.isArray(pref)) return fail('dynamic_batching.preferred_batch_size', `must be an array, got ${show(pref)}`);
      batching.preferred_batch_size = pref.map((p, i) => {
        const field = `dynamic_batching.preferred_batch_size[${i}]`;
        const n = positiveInt(p, field);
        if (n > maxBatch) fail(field, `(${n}) exceeds max_batch_size (${maxBatch})`);
        return n;
      });
    }
    if (db.default_queue_policy !== undefined) {
      const qp = db.default_queue_policy;
      const field = 'dynamic_batching.default_queue_policy';
      if (!isObject(qp)) return fail(field, `must be an object, got ${show(qp)}`);
      noUnknownKeys(qp, QUEUE_POLICY_KEYS, field);
      const policy: QueuePolicyConfig = {};
      if (qp.max_queue_size !== undefined) policy.max_queue_size = nonNegativeInt(qp.max_queue_size, `${field}.max_queue_size`);
      if (qp.default_timeout_microseconds !== undefined) {
        policy.default_timeout_microseconds = nonNegativeInt(qp.default_timeout_microseconds, `${field}.default_timeout_microseconds`);
      }
      if (qp.allow_timeout_override !== undefined) {
        if (typeof qp.allow_timeout_override !== 'boolean') {
          fail(`${field}.allow_timeout_override`, `must be a boolean, got ${show(qp.allow_timeout_override)}`);
        }
        policy.allow_timeout_override = qp.allow_timeout_override as boolean;
      }
      batching.default_queue_policy = policy;
    }
    config.dynamic_batching = batching;
  }

  if (json.instance_group !== undefined) {
    const groups = json.instance_group;
    if (!Array.isArray(groups) || groups.length === 0) return fail('instance_group', `must be a non-empty array, got ${show(groups)}`);
    config.instance_group = groups.map((raw, i): InstanceGroupConfig => {
      const at = `instance_group[${i}]`;
      if (!isObject(raw)) return fail(at, `must be an object, got ${show(raw)}`);
      noUnknownKeys(raw, INSTANCE_KEYS, at);
      const group: InstanceGroupConfig = {};
      if (raw.count !== undefined) group.count = positiveInt(raw.count, `${at}.count`);
      if (raw.kind !== undefined) {
        if (!(INSTANCE_KINDS as readonly unknown[]).includes(raw.kind)) {
          fail(`${at}.kind`, `must be one of ${INSTANCE_KINDS.join(', ')}, got ${show(raw.kind)}`);
        }
        group.kind = raw.kind as InstanceKind;
      }
      return group;
    });
    const kinds = new Set(config.instance_group.map((g) => g.kind ?? 'KIND_GPU'));
    if (kinds.size > 1) fail('instance_group', 'mixes KIND_GPU and KIND_CPU, which this backend does not support (one session per model)');
  }

  if (json.version_policy !== undefined) {
    const vp = json.version_policy;
    const field = 'version_policy';
    if (!isObject(vp) || Object.keys(vp).length !== 1) {
      return fail(field, `must have exactly one of "latest", "all", "specific", got ${show(vp)}`);
    }
    if (isObject(vp.latest)) {
      noUnknownKeys(vp.latest, ['num_versions'], `${field}.latest`);
      config.version_policy = { latest: { num_versions: positiveInt(vp.latest.num_versions, `${field}.latest.num_versions`) } };
    } else if (isObject(vp.all)) {
      noUnknownKeys(vp.all, [], `${field}.all`);
      config.version_policy = { all: {} };
    } else if (isObject(vp.specific)) {
      noUnknownKeys(vp.specific, ['versions'], `${field}.specific`);
      const versions = vp.specific.versions;
      if (!Array.isArray(versions) || versions.length === 0) {
        return fail(`${field}.specific.versions`, `must be a non-empty array, got ${show(versions)}`);
      }
      config.version_policy = {
        specific: { versions: versions.map((v, i) => positiveInt(v, `${field}.specific.versions[${i}]`)) },
      };
    } else {
      fail(field, `must have exactly one of "latest", "all", "specific" (an object), got ${show(vp)}`);
    }
  }

  if (json.parameters !== undefined) {
    const params = json.parameters;
    if (!isObject(params)) return fail('parameters', `must be an object, got ${show(params)}`);
    const out: Record<string, ModelParameterValue> = {};
    for (const [k, v] of Object.entries(params)) {
      if (typeof v === 'string' || typeof v === 'boolean' || (typeof v === 'number' && Number.isFinite(v))) {
        out[k] = v;
      } else if (isObject(v)) {
        // Triton's ModelParameter: `{ "string_value": "..." }`, its only field.
        const others = Object.keys(v).filter((key) => key !== 'string_value');
        if (others.length > 0) {
          fail(`parameters.${k}`, `must be a string, number, boolean or { "string_value": "..." } (Triton's ModelParameter), but has ${others.map((o) => `"${o}"`).join(', ')}`);
        }
        if (typeof v.string_value !== 'string') fail(`parameters.${k}.string_value`, `must be a string, got ${show(v.string_value)}`);
        const text = v.string_value as string;
        // The integer parameters, written nested, are integer strings: kept as numbers.
        out[k] = INTEGER_PARAMETERS.includes(k) && /^-?[0-9]+$/.test(text) ? Number(text) : text;
      } else {
        fail(`parameters.${k}`, `must be a string, number, boolean or { "string_value": "..." }, got ${show(v)}`);
      }
    }
    if (out.metering !== undefined && !isMeter(out.metering)) {
      fail('parameters.metering', `must be one of ${METERS.join(', ')} (how the model's inferences are billed), got ${show(out.metering)}`);
    }
    if (out.tokenizer !== undefined && !isTokenizerChoice(out.tokenizer)) {
      fail(
        'parameters.tokenizer',
        `must be one of ${TOKENIZER_CHOICES.join(', ')} ("${TOKENIZER_JSON}": the tokenizer.json in the model's directory), got ${show(out.tokenizer)}`,
      );
    }
    if (out.tokenizer === TOKENIZER_JSON && out.text_input !== undefined && out.metering === 'tokens') {
      fail(
        'parameters.metering',
        `cannot be "tokens" for a text model with its own tokenizer.json: the edge recounts text tokens with mesh-hash-v1 only; meter it by rows, elements or requests`,
      );
    }
    if (out.max_sequence_length !== undefined) positiveInt(out.max_sequence_length, 'parameters.max_sequence_length');
    if (out.pad_id !== undefined && !Number.isSafeInteger(out.pad_id)) fail('parameters.pad_id', `must be an integer, got ${show(out.pad_id)}`);
    config.parameters = out;
  }

  const pipeline = config.parameters?.pipeline;
  if (config.platform === 'pipeline') {
    if (pipeline === undefined) fail('parameters.pipeline', `is required for platform "pipeline": one of ${PIPELINES.join(', ')}`);
    if (!isPipeline(pipeline)) fail('parameters.pipeline', `must be one of ${PIPELINES.join(', ')}, got ${show(pipeline)}`);
  } else if (pipeline !== undefined) {
    fail('parameters.pipeline', `is only for platform "pipeline" (this model's platform is "${config.platform}")`);
  }

  if (json.model_warmup !== undefined) {
    const samples = json.model_warmup;
    if (!Array.isArray(samples) || samples.length === 0) return fail('model_warmup', `must be a non-empty array, got ${show(samples)}`);
    const byName = new Map(config.input.map((t) => [t.name, t]));
    config.model_warmup = samples.map((raw, i): ModelWarmup => {
      const at = `model_warmup[${i}]`;
      if (!isObject(raw)) return fail(at, `must be an object, got ${show(raw)}`);
      noUnknownKeys(raw, WARMUP_KEYS, at);
      if (typeof raw.name !== 'string' || raw.name.length === 0) fail(`${at}.name`, `must be a non-empty string, got ${show(raw.name)}`);
      const sample: ModelWarmup = { name: raw.name as string, inputs: {} };
      let batch = 1;
      if (raw.batch_size !== undefined) {
        batch = positiveInt(raw.batch_size, `${at}.batch_size`);
        if (maxBatch === 0 && batch !== 1) fail(`${at}.batch_size`, `must be 1 for a model without a batch dimension (max_batch_size 0), got ${batch}`);
        if (batch > maxBatch && maxBatch > 0) fail(`${at}.batch_size`, `(${batch}) exceeds max_batch_size (${maxBatch})`);
        sample.batch_size = batch;
      }
      const inputs = raw.inputs;
      if (!isObject(inputs) || Object.keys(inputs).length === 0) {
        return fail(`${at}.inputs`, `must be an object naming at least one input, got ${show(inputs)}`);
      }
      for (const [inputName, spec] of Object.entries(inputs)) {
        const field = `${at}.inputs.${inputName}`;
        const t = byName.get(inputName);
        if (!t) return fail(field, `is not an input of the model (its inputs: ${[...byName.keys()].join(', ')})`);
        if (!isObject(spec)) return fail(field, `must be an object, got ${show(spec)}`);
        noUnknownKeys(spec, WARMUP_INPUT_KEYS, field);
        if (spec.data_type !== t.data_type) {
          fail(`${field}.data_type`, `must be the input's data type ${t.data_type}, got ${show(spec.data_type)}`);
        }
        const dims = spec.dims;
        if (!Array.isArray(dims)) return fail(`${field}.dims`, `must be an array, got ${show(dims)}`);
        dims.forEach((d, j) => {
          if (!(Number.isSafeInteger(d) && (d as number) > 0)) {
            fail(`${field}.dims[${j}]`, `must be a positive integer (a warm-up shape is concrete: no -1), got ${show(d)}`);
          }
        });
        const fits = dims.length === t.dims.length && t.dims.every((d, j) => d === -1 || d === dims[j]);
        if (!fits) fail(`${field}.dims`, `${show(dims)} does not fit the input's dims ${show(t.dims)} (-1 matches any size)`);
        const elements = (dims as number[]).reduce((a, b) => a * b, batch);
        if (elements > MAX_WARMUP_ELEMENTS) {
          fail(`${field}.dims`, `${show(dims)} (batch ${batch}) make ${elements} elements, more than a warm-up input may have (${MAX_WARMUP_ELEMENTS})`);
        }
        for (const flag of ['zero_data', 'random_data'] as const) {
          if (spec[flag] !== undefined && spec[flag] !== true) fail(`${field}.${flag}`, `must be true when present, got ${show(spec[flag])}`);
        }
        if ((spec.zero_data === undefined) === (spec.random_data === undefined)) {
          fail(field, 'must set exactly one of zero_data and random_data (to true)');
        }
        sample.inputs[inputName] = {
          data_type: t.data_type,
          dims: [...(dims as number[])],
          ...(spec.zero_data ? { zero_data: true as const } : { random_data: true as const }),
        };
      }
      return sample;
    });
  }

  return config;
}

/** How many batches of the model may execute at once: the sum of its instance groups' counts (default 1). */
export function instanceCount(config: ModelConfig): number {
  return config.instance_group?.reduce((n, g) => n + (g.count ?? 1), 0) ?? 1;
}

/** True when the model's instances must run on the CPU provider (`KIND_CPU`). */
export function cpuOnly(config: ModelConfig): boolean {
  return config.instance_group?.[0]?.kind === 'KIND_CPU';
}

/** A tensor's full shape as the model sees it: `[-1, ...dims]` when the model batches. */
export function modelShape(config: ModelConfig, tensor: ModelTensorConfig): number[] {
  return config.max_batch_size > 0 ? [-1, ...tensor.dims] : [...tensor.dims];
}

/** The OIP datatype of a configured tensor. */
export function datatypeOf(tensor: ModelTensorConfig): Datatype {
  return TRITON_TO_DATATYPE[tensor.data_type];
}
