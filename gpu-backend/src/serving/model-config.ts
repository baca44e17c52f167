/**
 * Model configuration: the JSON form of a Triton `config.pbtxt`
 * (`<repo>/<model>/config.json`), its types and its validation. Only the
 * subset of Triton's schema the backend acts on is accepted, and an unknown
 * field is an error: a typo must not silently disable batching. As in
 * Triton, when `max_batch_size > 0` the `dims` of inputs and outputs exclude
 * the batch dimension; `-1` marks a variable dimension.
 */

import { METERS, isMeter } from '../../../shared/metering.ts';
import type { Datatype } from '../../../shared/protocol.ts';
import { TOKENIZER_CHOICES, TOKENIZER_JSON, isTokenizerChoice } from './tokenizers.ts';

const TRITON_DATA_TYPES = [
  'TYPE_BOOL',
  'TYPE_UINT8',
  'TYPE_INT8',
  'TYPE_INT16',
  'TYPE_INT32',
  'TYPE_INT64',
  'TYPE_FP32',
  'TYPE_FP64',
  'TYPE_STRING',
] as const;
export type TritonDataType = (typeof TRITON_DATA_TYPES)[number];

/** Triton `TYPE_*` → Open Inference Protocol datatype. */
export const TRITON_TO_DATATYPE: Record<TritonDataType, Datatype> = {
  TYPE_BOOL: 'BOOL',
  TYPE_UINT8: 'UINT8',
  TYPE_INT8: 'INT8',
  TYPE_INT16: 'INT16',
  TYPE_INT32: 'INT32',
  TYPE_INT64: 'INT64',
  TYPE_FP32: 'FP32',
  TYPE_FP64: 'FP64',
  TYPE_STRING: 'BYTES',
};

/** Open Inference Protocol datatype → Triton `TYPE_*`. */
export const DATATYPE_TO_TRITON: Record<Datatype, TritonDataType> = {
  BOOL: 'TYPE_BOOL',
  UINT8: 'TYPE_UINT8',
  INT8: 'TYPE_INT8',
  INT16: 'TYPE_INT16',
  INT32: 'TYPE_INT32',
  INT64: 'TYPE_INT64',
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

export interface ModelConfig {
  name: string;
  /** Only `onnxruntime_onnx` is served. */
  platform: 'onnxruntime_onnx';
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
   * Scalar parameters (Triton nests `{ string_value }`), e.g. `tokenizer`,
   * `text_input`, `max_sequence_length`, `pad_id`, `metering`. The ones the
   * backend acts on are checked: `metering` is one of shared/metering.ts's
   * meters, `tokenizer` one of serving/tokenizers.ts's choices,
   * `max_sequence_length` a positive integer, `pad_id` an integer.
   */
  parameters?: Record<string, ModelParameterValue>;
}

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

const CONFIG_KEYS = [
  'name',
  'platform',
  'max_batch_size',
  'input',
  'output',
  'dynamic_batching',
  'instance_group',
  'version_policy',
  'parameters',
];
const TENSOR_KEYS = ['name', 'data_type', 'dims'];
const BATCHING_KEYS = ['max_queue_delay_microseconds', 'preferred_batch_size', 'default_queue_policy'];
const QUEUE_POLICY_KEYS = ['max_queue_size', 'default_timeout_microseconds', 'allow_timeout_override'];
const INSTANCE_KEYS = ['count', 'kind'];
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

  const { name, platform, max_batch_size } = json;
  if (typeof name !== 'string' || !NAME.test(name)) {
    fail('name', `must be a non-empty string of letters, digits, "_", "." and "-", got ${show(name)}`);
  }
  if (platform !== 'onnxruntime_onnx') fail('platform', `must be "onnxruntime_onnx", got ${show(platform)}`);
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
    platform: 'onnxruntime_onnx',
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
      if (typeof v === 'string' || typeof v === 'boolean' || (typeof v === 'number' && Number.isFinite(v))) out[k] = v;
      else fail(`parameters.${k}`, `must be a string, number or boolean, got ${show(v)}`);
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
