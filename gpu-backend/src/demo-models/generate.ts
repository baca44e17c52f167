/**
 * Generates the demo models the GPU backend serves into a repository in
 * Triton's layout (`<repo>/<name>/config.json`, `<repo>/<name>/1/model.onnx`);
 * `npm run models` (gpu-backend/src/models.ts) calls it.
 *
 * Untrained weights from a fixed-seed PRNG, written little-endian, so every
 * provider generates bit-identical files (the same sha256), which is what
 * lets a receipt name a model by hash. Two models: `embed` (token ids →
 * L2-normalised embedding [batch, 256]) and `classifier` (features
 * [batch, 16] → softmax probabilities [batch, 4]).
 */

import { createHash } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { DEFAULT_MAX_LENGTH, PAD_ID, TOKENIZER_NAME, VOCAB_SIZE } from '../../../shared/tokenizer.ts';
import type { ModelConfig } from '../serving/model-config.ts';
import { mulberry32 } from './random.ts';
import { writeIfChanged } from '../write-if-changed.ts';
import {
  DataType,
  encodeModel,
  float,
  node,
  tensor,
  valueInfo,
  type GraphProto,
  type NodeProto,
  type TensorProto,
} from './onnx.ts';

/** Opset 17: ReduceSum/Unsqueeze take axes as an input, ReduceL2 as an attribute. */
const OPSET = 17;
const PRODUCER_VERSION = '1';

const EMBED_DIM = 256;
const EMBED_HIDDEN = 1024;
const EMBED_BLOCKS = 2;
const POSITION_HIDDEN = 2048;
const POSITION_STEPS = 12;
const POSITION_SCALE = 0.1;

const CLASSIFIER_FEATURES = 16;
const CLASSIFIER_HIDDEN = 64;
const CLASSIFIER_CLASSES = 4;

// ---------------------------------------------------------------------------
// Deterministic weights
// ---------------------------------------------------------------------------


/** `count` floats uniform in [-limit, limit), from `seed`. Only exact IEEE operations. */
function uniform(seed: number, count: number, limit: number): Float32Array {
  const next = mulberry32(seed);
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) out[i] = (next() / 4294967296) * 2 * limit - limit;
  return out;
}

/** A [rows, cols] weight matrix, Glorot-uniform scaled. */
function weight(name: string, seed: number, rows: number, cols: number, gain = 1): TensorProto {
  return tensor(name, [rows, cols], uniform(seed, rows * cols, gain * Math.sqrt(6 / (rows + cols))));
}

const filled = (name: string, dims: number[], value: number): TensorProto =>
  tensor(name, dims, new Float32Array(dims.reduce((a, b) => a * b, 1)).fill(value));
const int64s = (name: string, values: number[]): TensorProto =>
  tensor(name, [values.length], BigInt64Array.from(values, BigInt));
const scalar = (name: string, value: number): TensorProto => tensor(name, [], new Float32Array([value]));

// ---------------------------------------------------------------------------
// Models
// ---------------------------------------------------------------------------

/** A dense layer `out = x · W + b`, with W [inDim, outDim]. */
function dense(
  prefix: string,
  x: string,
  out: string,
  seed: number,
  inDim: number,
  outDim: number,
  inits: TensorProto[],
  gain = 1,
): NodeProto[] {
  inits.push(weight(`${prefix}.weight`, seed, inDim, outDim, gain));
  inits.push(uniformBias(`${prefix}.bias`, seed + 1, outDim));
  return [
    node('MatMul', [x, `${prefix}.weight`], [`${prefix}.matmul`]),
    node('Add', [`${prefix}.matmul`, `${prefix}.bias`], [out]),
  ];
}

const uniformBias = (name: string, seed: number, n: number): TensorProto => tensor(name, [n], uniform(seed, n, 0.05));

/** Adds the weights of a residual MLP block (D → hidden → D, then LayerNorm) named `prefix`. */
function pushBlock(prefix: string, seed: number, hidden: number, inits: TensorProto[]): void {
  inits.push(
    weight(`${prefix}.up.weight`, seed, EMBED_DIM, hidden),
    uniformBias(`${prefix}.up.bias`, seed + 1, hidden),
    weight(`${prefix}.down.weight`, seed + 2, hidden, EMBED_DIM),
    uniformBias(`${prefix}.down.bias`, seed + 3, EMBED_DIM),
    filled(`${prefix}.norm.scale`, [EMBED_DIM], 1),
    filled(`${prefix}.norm.bias`, [EMBED_DIM], 0),
  );
}

/** Nodes computing `out = LayerNorm(x + W2·relu(W1·x + b1) + b2)` with the block `prefix`'s weights. */
function applyBlock(prefix: string, x: string, out: string): NodeProto[] {
  const t = (s: string) => `${out}.${s}`;
  return [
    node('MatMul', [x, `${prefix}.up.weight`], [t('up')]),
    node('Add', [t('up'), `${prefix}.up.bias`], [t('up_b')]),
    node('Relu', [t('up_b')], [t('act')]),
    node('MatMul', [t('act'), `${prefix}.down.weight`], [t('down')]),
    node('Add', [t('down'), `${prefix}.down.bias`], [t('down_b')]),
    node('Add', [x, t('down_b')], [t('residual')]),
    node('LayerNormalization', [t('residual'), `${prefix}.norm.scale`, `${prefix}.norm.bias`], [out], {
      axis: -1,
      epsilon: float(1e-5),
    }),
  ];
}

/**
 * `embed`: token ids [batch, seq] → L2-normalised embedding [batch, 256].
 * Gather from a [VOCAB_SIZE, 256] table, plus a position encoding; two
 * residual MLP blocks per token (256 → 1024 → 256, LayerNorm); mean pooling
 * that ignores padding (id 0); L2 norm. The position encoding (sinusoids of
 * 0..seq-1 refined by 12 passes of one shared 256 → 2048 → 256 block) depends
 * on seq only: a fixed cost per call that dynamic batching shares between
 * requests, as on a GPU, where small batches leave the device idle. It is
 * there for that cost profile, not for quality.
 */
function embedGraph(): GraphProto {
  const inits: TensorProto[] = [];
  const nodes: NodeProto[] = [];
  const D = EMBED_DIM;

  inits.push(tensor('token_embedding', [VOCAB_SIZE, D], uniform(0xe1, VOCAB_SIZE * D, Math.sqrt(3))));
  nodes.push(node('Gather', ['token_embedding', 'input_ids'], ['token_vectors'], { axis: 0 }));

  // Position encoding [seq, D]: sinusoidal features of 0..seq-1, refined by
  // POSITION_STEPS applications of one shared residual MLP block. It depends on
  // seq only, so its cost is paid once per call whatever the batch size.
  const freq = new Float32Array(D);
  const phase = new Float32Array(D);
  // Geometric frequencies 1 … ~1e-4 by repeated multiplication (exact IEEE
  // arithmetic; Math.pow is not guaranteed to round alike on every engine).
  for (let i = 0, f = 1; i < D / 2; i++, f *= 0.93) {
    freq[i] = freq[i + D / 2] = f;
    phase[i + D / 2] = Math.PI / 2;
  }
  inits.push(tensor('position.freq', [1, D], freq), tensor('position.phase', [D], phase));
  inits.push(
    int64s('axis_seq', [1]),
    int64s('axis_last', [-1]),
    tensor('zero_i64', [], new BigInt64Array([0n])),
    tensor('one_i64', [], new BigInt64Array([1n])),
  );
  nodes.push(
    node('Shape', ['input_ids'], ['ids_shape']),
    node('Gather', ['ids_shape', 'one_i64'], ['seq_len'], { axis: 0 }),
    node('Range', ['zero_i64', 'seq_len', 'one_i64'], ['positions']),
    node('Cast', ['positions'], ['positions_f'], { to: DataType.FLOAT }),
    node('Unsqueeze', ['positions_f', 'axis_last'], ['positions_col']),
    node('Mul', ['positions_col', 'position.freq'], ['position_angles']),
    node('Add', ['position_angles', 'position.phase'], ['position_phased']),
    node('Sin', ['position_phased'], ['position_step0']),
  );
  let pos = 'position_step0';
  pushBlock('position.block', 0x300, POSITION_HIDDEN, inits);
  for (let k = 1; k <= POSITION_STEPS; k++) {
    nodes.push(...applyBlock('position.block', pos, `position_step${k}`));
    pos = `position_step${k}`;
  }
  // Scaled down so that which words a text has, not where, dominates the embedding.
  inits.push(scalar('position.scale', POSITION_SCALE));
  nodes.push(node('Mul', [pos, 'position.scale'], ['position_encoding']));
  nodes.push(node('Add', ['token_vectors', 'position_encoding'], ['tokens']));

  // Per-token residual MLP blocks: x = LayerNorm(x + W2·relu(W1·x + b1) + b2).
  let x = 'tokens';
  for (let b = 0; b < EMBED_BLOCKS; b++) {
    const p = `block${b}`;
    pushBlock(p, 0x100 * (b + 1), EMBED_HIDDEN, inits);
    nodes.push(...applyBlock(p, x, `${p}.out`));
    x = `${p}.out`;
  }

  // Masked mean pooling over seq: padding (id 0) contributes nothing.
  inits.push(tensor('pad_id', [], new BigInt64Array([BigInt(PAD_ID)])), scalar('one', 1), scalar('epsilon', 1e-12));
  nodes.push(
    node('Equal', ['input_ids', 'pad_id'], ['is_pad']),
    node('Not', ['is_pad'], ['is_token']),
    node('Cast', ['is_token'], ['mask'], { to: DataType.FLOAT }),
    node('Unsqueeze', ['mask', 'axis_last'], ['mask3']),
    node('Mul', [x, 'mask3'], ['masked']),
    node('ReduceSum', ['masked', 'axis_seq'], ['summed'], { keepdims: 0 }),
    node('ReduceSum', ['mask', 'axis_seq'], ['count'], { keepdims: 1 }),
    node('Max', ['count', 'one'], ['count_safe']),
    node('Div', ['summed', 'count_safe'], ['pooled']),
  );

  // L2 normalisation, guarded against a zero vector.
  nodes.push(
    node('ReduceL2', ['pooled'], ['norm'], { axes: [-1], keepdims: 1 }),
    node('Max', ['norm', 'epsilon'], ['norm_safe']),
    node('Div', ['pooled', 'norm_safe'], ['embedding']),
  );

  return {
    name: 'embed',
    nodes,
    initializers: inits,
    inputs: [valueInfo('input_ids', DataType.INT64, ['batch', 'seq'])],
    outputs: [valueInfo('embedding', DataType.FLOAT, ['batch', D])],
  };
}

function classifierGraph(): GraphProto {
  const inits: TensorProto[] = [];
  const nodes: NodeProto[] = [
    ...dense('fc1', 'features', 'fc1.out', 0xc1, CLASSIFIER_FEATURES, CLASSIFIER_HIDDEN, inits),
    node('Relu', ['fc1.out'], ['fc1.act']),
    ...dense('fc2', 'fc1.act', 'logits', 0xc3, CLASSIFIER_HIDDEN, CLASSIFIER_CLASSES, inits, 2),
    node('Softmax', ['logits'], ['probabilities'], { axis: -1 }),
  ];
  return {
    name: 'classifier',
    nodes,
    initializers: inits,
    inputs: [valueInfo('features', DataType.FLOAT, ['batch', CLASSIFIER_FEATURES])],
    outputs: [valueInfo('probabilities', DataType.FLOAT, ['batch', CLASSIFIER_CLASSES])],
  };
}

interface DemoModel {
  config: ModelConfig;
  graph: () => GraphProto;
}

/**
 * Queue policy of both demo models. 48 waiting requests per model binds before
 * the backend-wide MAX_QUEUE (64), so one busy model cannot fill the queue the
 * other needs. A request waits at most 10 s (less than the edge's 15 s
 * BACKEND_TIMEOUT_MS, so the backend answers 504 before the edge gives up);
 * callers may ask for less in `parameters.timeout`. One instance each: runs do
 * not overlap in onnxruntime-node (see `slots` in config.ts).
 */
const DEMO_QUEUE_POLICY = { max_queue_size: 48, default_timeout_microseconds: 10_000_000, allow_timeout_override: true };

const DEMO_MODELS: DemoModel[] = [
  {
    config: {
      name: 'embed',
      platform: 'onnxruntime_onnx',
      max_batch_size: 32,
      input: [{ name: 'input_ids', data_type: 'TYPE_INT64', dims: [-1] }],
      output: [{ name: 'embedding', data_type: 'TYPE_FP32', dims: [EMBED_DIM] }],
      dynamic_batching: {
        max_queue_delay_microseconds: 2000,
        preferred_batch_size: [16, 32],
        default_queue_policy: DEMO_QUEUE_POLICY,
      },
      instance_group: [{ count: 1, kind: 'KIND_GPU' }],
      version_policy: { latest: { num_versions: 1 } },
      parameters: {
        tokenizer: TOKENIZER_NAME,
        text_input: 'text',
        max_sequence_length: DEFAULT_MAX_LENGTH,
        pad_id: PAD_ID,
        // Billed by non-padding tokens (shared/metering.ts), as the mesh's catalogue meters it.
        metering: 'tokens',
      },
    },
    graph: embedGraph,
  },
  {
    config: {
      name: 'classifier',
      platform: 'onnxruntime_onnx',
      max_batch_size: 64,
      input: [{ name: 'features', data_type: 'TYPE_FP32', dims: [CLASSIFIER_FEATURES] }],
      output: [{ name: 'probabilities', data_type: 'TYPE_FP32', dims: [CLASSIFIER_CLASSES] }],
      dynamic_batching: {
        max_queue_delay_microseconds: 1000,
        preferred_batch_size: [16, 32],
        default_queue_policy: DEMO_QUEUE_POLICY,
      },
      instance_group: [{ count: 1, kind: 'KIND_GPU' }],
      version_policy: { latest: { num_versions: 1 } },
      // Billed by rows (shared/metering.ts), as the mesh's catalogue meters it.
      parameters: { metering: 'rows' },
    },
    graph: classifierGraph,
  },
];

/**
 * Writes the demo models into the Triton-style repository `repoDir`
 * (`<name>/config.json`, `<name>/1/model.onnx`), creating folders as needed
 * and leaving files that already hold the right bytes untouched. Returns, per
 * model, its name, the path of its model.onnx and that file's hex sha256.
 */
export async function generateDemoModels(
  repoDir: string,
  log?: (line: string) => void,
): Promise<{ name: string; path: string; sha256: string }[]> {
  const results: { name: string; path: string; sha256: string }[] = [];
  for (const model of DEMO_MODELS) {
    const started = performance.now();
    const { name } = model.config;
    const bytes = encodeModel({
      graph: model.graph(),
      opset: OPSET,
      producerName: 'edge-inference-mesh demo-models',
      producerVersion: PRODUCER_VERSION,
    });
    const versionDir = path.join(repoDir, name, '1');
    await mkdir(versionDir, { recursive: true });
    const modelPath = path.join(versionDir, 'model.onnx');
    const wroteModel = await writeIfChanged(modelPath, bytes);
    const configJson = new TextEncoder().encode(`${JSON.stringify(model.config, null, 2)}\n`);
    const wroteConfig = await writeIfChanged(path.join(repoDir, name, 'config.json'), configJson);
    const sha256 = createHash('sha256').update(bytes).digest('hex');
    results.push({ name, path: modelPath, sha256 });
    const state = wroteModel || wroteConfig ? 'written' : 'unchanged';
    const ms = (performance.now() - started).toFixed(0);
    log?.(`${name}: ${modelPath} (${(bytes.length / 1048576).toFixed(1)} MiB, sha256 ${sha256.slice(0, 16)}…, ${state}, ${ms} ms)`);
  }
  return results;
}
