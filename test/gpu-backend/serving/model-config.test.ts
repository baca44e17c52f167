/**
 * The Triton-portable parts of model configs (issue 14, part 3): parameters
 * written as Triton's `{ string_value }`, `backend: "onnxruntime"` for
 * `platform: "onnxruntime_onnx"`, the `pipeline` platform's rules, and
 * `model_warmup` (validated, then used by `warmupFeeds` for the load's
 * warm-up run). The rest of parseModelConfig's checks are tested in
 * test/gpu-backend/demo-models.test.ts.
 */

import { describe, expect, it } from 'vitest';
import { MAX_WARMUP_ELEMENTS, PIPELINES, parseModelConfig, type ModelConfig } from '../../../gpu-backend/src/serving/model-config.ts';
import { warmupFeeds } from '../../../gpu-backend/src/serving/tensors.ts';

const WHERE = 'models/m/config.json';

/** A batching detector: an image of any size, a feature vector, and a text. */
const detector = (extra: Record<string, unknown> = {}) => ({
  name: 'm',
  platform: 'onnxruntime_onnx',
  max_batch_size: 8,
  input: [
    { name: 'images', data_type: 'TYPE_FP32', dims: [3, -1, -1] },
    { name: 'scale', data_type: 'TYPE_INT64', dims: [2] },
    { name: 'tag', data_type: 'TYPE_STRING', dims: [1] },
  ],
  output: [{ name: 'boxes', data_type: 'TYPE_FP32', dims: [-1, 4] }],
  ...extra,
});

const rejects = (json: unknown, field: string, problem?: RegExp) => {
  let message = '';
  try {
    parseModelConfig(json, WHERE);
  } catch (err) {
    message = (err as Error).message;
  }
  expect(message.startsWith(`${WHERE}: ${field} `), `"${message}" should name ${field}`).toBe(true);
  if (problem) expect(message).toMatch(problem);
};

describe('parameters as Triton writes them: { string_value }', () => {
  it('accepts the nested form alongside flat scalars, as strings', () => {
    const config = parseModelConfig(
      detector({ parameters: { tokenizer: { string_value: 'tokenizer.json' }, note: { string_value: 'true' }, flat: 3, on: true } }),
      WHERE,
    );
    expect(config.parameters).toEqual({ tokenizer: 'tokenizer.json', note: 'true', flat: 3, on: true });
  });

  it('normalises max_sequence_length and pad_id to numbers whichever form was written', () => {
    const nested = parseModelConfig(detector({ parameters: { max_sequence_length: { string_value: '256' }, pad_id: { string_value: '-1' } } }), WHERE);
    const flat = parseModelConfig(detector({ parameters: { max_sequence_length: 256, pad_id: -1 } }), WHERE);
    expect(nested.parameters).toEqual({ max_sequence_length: 256, pad_id: -1 });
    expect(nested.parameters).toEqual(flat.parameters);
    expect(typeof nested.parameters?.max_sequence_length).toBe('number');
  });

  it('applies the same checks to nested values (metering, tokenizer, max_sequence_length, pad_id)', () => {
    rejects(detector({ parameters: { metering: { string_value: 'bytes' } } }), 'parameters.metering', /must be one of tokens, rows, elements, requests/);
    rejects(detector({ parameters: { tokenizer: { string_value: 'bert-base-uncased' } } }), 'parameters.tokenizer');
    rejects(detector({ parameters: { max_sequence_length: { string_value: 'long' } } }), 'parameters.max_sequence_length', /positive integer, got "long"/);
    rejects(detector({ parameters: { max_sequence_length: { string_value: '0' } } }), 'parameters.max_sequence_length');
    rejects(detector({ parameters: { max_sequence_length: { string_value: '1.5' } } }), 'parameters.max_sequence_length');
    rejects(detector({ parameters: { pad_id: { string_value: '' } } }), 'parameters.pad_id');
    rejects(detector({ parameters: { pad_id: { string_value: '99999999999999999999' } } }), 'parameters.pad_id');
    expect(parseModelConfig(detector({ parameters: { metering: { string_value: 'rows' } } }), WHERE).parameters).toEqual({ metering: 'rows' });
  });

  it('refuses an object with any field besides string_value, naming the parameter', () => {
    rejects(detector({ parameters: { tokenizer: { string_value: 'x', int64_value: 1 } } }), 'parameters.tokenizer', /"int64_value"/);
    rejects(detector({ parameters: { tokenizer: { value: 'x' } } }), 'parameters.tokenizer', /Triton's ModelParameter/);
    rejects(detector({ parameters: { tokenizer: {} } }), 'parameters.tokenizer.string_value', /must be a string, got undefined/);
    rejects(detector({ parameters: { tokenizer: { string_value: 7 } } }), 'parameters.tokenizer.string_value');
    rejects(detector({ parameters: { tokenizer: ['x'] } }), 'parameters.tokenizer');
  });
});

describe('backend: "onnxruntime"', () => {
  const { platform: _, ...noPlatform } = detector();

  it('is the same as platform "onnxruntime_onnx", and the config always has platform', () => {
    const viaBackend = parseModelConfig({ ...noPlatform, backend: 'onnxruntime' }, WHERE);
    expect(viaBackend.platform).toBe('onnxruntime_onnx');
    expect(viaBackend).not.toHaveProperty('backend');
    expect(viaBackend).toEqual(parseModelConfig(detector(), WHERE));
    expect(parseModelConfig(detector({ backend: 'onnxruntime' }), WHERE).platform).toBe('onnxruntime_onnx');
  });

  it('refuses another backend, a platform it disagrees with, and neither', () => {
    rejects({ ...noPlatform, backend: 'python' }, 'backend', /must be "onnxruntime"/);
    rejects(detector({ platform: 'pipeline', backend: 'onnxruntime', max_batch_size: 0 }), 'backend', /disagrees with platform "pipeline"/);
    rejects(noPlatform, 'platform', /or backend "onnxruntime"/);
    rejects(detector({ platform: 'ensemble' }), 'platform', /"onnxruntime_onnx" or "pipeline"/);
  });
});

describe('platform: "pipeline"', () => {
  const pipeline = (extra: Record<string, unknown> = {}) => ({
    name: 'ocr',
    platform: 'pipeline',
    max_batch_size: 0,
    input: [{ name: 'image', data_type: 'TYPE_UINT8', dims: [-1] }],
    output: [{ name: 'text', data_type: 'TYPE_STRING', dims: [-1] }],
    parameters: { pipeline: { string_value: 'ocr' } },
    ...extra,
  });

  it('is accepted with parameters.pipeline naming one of PIPELINES', () => {
    expect(PIPELINES).toContain('ocr');
    const config = parseModelConfig(pipeline(), WHERE);
    expect(config).toMatchObject({ platform: 'pipeline', max_batch_size: 0, parameters: { pipeline: 'ocr' } });
    expect(parseModelConfig(pipeline({ parameters: { pipeline: 'ocr', metering: 'requests' } }), WHERE).parameters).toEqual({ pipeline: 'ocr', metering: 'requests' });
  });

  it.each([
    [pipeline({ parameters: undefined }), 'parameters.pipeline', /is required for platform "pipeline": one of ocr/],
    [pipeline({ parameters: { metering: 'rows' } }), 'parameters.pipeline', /is required/],
    [pipeline({ parameters: { pipeline: 'asr' } }), 'parameters.pipeline', /must be one of ocr, got "asr"/],
    [pipeline({ dynamic_batching: {} }), 'dynamic_batching', /not for a pipeline: its steps' models batch/],
    [pipeline({ instance_group: [{ count: 2 }] }), 'instance_group', /not for a pipeline/],
    [pipeline({ max_batch_size: 4 }), 'max_batch_size', /must be 0 for a pipeline/],
    [detector({ parameters: { pipeline: 'ocr' } }), 'parameters.pipeline', /only for platform "pipeline"/],
  ])('refuses %j naming %s', (json, field, problem) => rejects(json, field, problem));
});

describe('model_warmup', () => {
  const sample = {
    name: 'a 320x320 image',
    batch_size: 2,
    inputs: {
      images: { data_type: 'TYPE_FP32', dims: [3, 320, 320], zero_data: true },
      scale: { data_type: 'TYPE_INT64', dims: [2], random_data: true },
    },
  };

  it('is validated and kept as written', () => {
    const config = parseModelConfig(detector({ model_warmup: [sample, { name: 'small', inputs: { tag: { data_type: 'TYPE_STRING', dims: [1], random_data: true } } }] }), WHERE);
    expect(config.model_warmup).toEqual([
      sample,
      { name: 'small', inputs: { tag: { data_type: 'TYPE_STRING', dims: [1], random_data: true } } },
    ]);
  });

  const input = (spec: Record<string, unknown>) => detector({ model_warmup: [{ name: 'w', inputs: { images: spec } }] });
  const image = { data_type: 'TYPE_FP32', dims: [3, 64, 64], zero_data: true };
  it.each([
    [detector({ model_warmup: [] }), 'model_warmup', /non-empty array/],
    [detector({ model_warmup: {} }), 'model_warmup', /non-empty array/],
    [detector({ model_warmup: [{ inputs: { images: image } }] }), 'model_warmup[0].name', /non-empty string/],
    [detector({ model_warmup: [{ name: 'w', count: 2, inputs: { images: image } }] }), 'model_warmup[0].count', /not a supported field/],
    [detector({ model_warmup: [{ name: 'w', batch_size: 9, inputs: { images: image } }] }), 'model_warmup[0].batch_size', /exceeds max_batch_size \(8\)/],
    [detector({ model_warmup: [{ name: 'w', batch_size: 0, inputs: { images: image } }] }), 'model_warmup[0].batch_size', /positive integer/],
    [detector({ model_warmup: [{ name: 'w', inputs: {} }] }), 'model_warmup[0].inputs', /at least one input/],
    [detector({ model_warmup: [{ name: 'w', inputs: { pixels: image } }] }), 'model_warmup[0].inputs.pixels', /not an input of the model \(its inputs: images, scale, tag\)/],
    [input({ ...image, data_type: 'TYPE_FP64' }), 'model_warmup[0].inputs.images.data_type', /must be the input's data type TYPE_FP32, got "TYPE_FP64"/],
    [input({ ...image, dims: [3, -1, 64] }), 'model_warmup[0].inputs.images.dims[1]', /no -1/],
    [input({ ...image, dims: [1, 64, 64] }), 'model_warmup[0].inputs.images.dims', /\[1,64,64\] does not fit the input's dims \[3,-1,-1\]/],
    [input({ ...image, dims: [3, 64] }), 'model_warmup[0].inputs.images.dims', /does not fit/],
    [input({ ...image, dims: [3, 4096, 4096] }), 'model_warmup[0].inputs.images.dims', new RegExp(`more than a warm-up input may have \\(${MAX_WARMUP_ELEMENTS}\\)`)],
    [input({ data_type: 'TYPE_FP32', dims: [3, 8, 8] }), 'model_warmup[0].inputs.images', /exactly one of zero_data and random_data/],
    [input({ ...image, random_data: true }), 'model_warmup[0].inputs.images', /exactly one of zero_data and random_data/],
    [input({ ...image, zero_data: false }), 'model_warmup[0].inputs.images.zero_data', /must be true when present/],
    [input({ ...image, input_data_file: 'x.bin' }), 'model_warmup[0].inputs.images.input_data_file', /not a supported field/],
  ])('refuses %j naming %s', (json, field, problem) => rejects(json, field, problem));

  it('needs batch_size 1 (or none) for a model without a batch dimension', () => {
    const unbatched = {
      ...detector(),
      max_batch_size: 0,
      input: [{ name: 'images', data_type: 'TYPE_FP32', dims: [1, 3, -1, -1] }],
    };
    const w = (batch: number) => ({ ...unbatched, model_warmup: [{ name: 'w', batch_size: batch, inputs: { images: { data_type: 'TYPE_FP32', dims: [1, 3, 32, 32], zero_data: true } } }] });
    expect(parseModelConfig(w(1), WHERE).model_warmup?.[0]?.batch_size).toBe(1);
    rejects(w(2), 'model_warmup[0].batch_size', /must be 1 for a model without a batch dimension/);
  });
});

describe('warmupFeeds', () => {
  const config = (extra: Record<string, unknown> = {}): ModelConfig => parseModelConfig(detector(extra), WHERE);

  it("without model_warmup: batch 1, and 8 for each variable dimension (today's defaults)", () => {
    const feeds = warmupFeeds(config());
    expect(feeds.images?.shape).toEqual([1, 3, 8, 8]);
    expect(feeds.scale?.shape).toEqual([1, 2]);
    expect(feeds.tag).toMatchObject({ datatype: 'BYTES', shape: [1, 1], values: [''] });
  });

  it("takes the first sample's shapes, its batch_size as the batch dimension, and its data", () => {
    const feeds = warmupFeeds(config({
      model_warmup: [
        {
          name: 'a 320x320 image',
          batch_size: 2,
          inputs: {
            images: { data_type: 'TYPE_FP32', dims: [3, 320, 320], zero_data: true },
            scale: { data_type: 'TYPE_INT64', dims: [2], random_data: true },
          },
        },
        { name: 'never run', inputs: { images: { data_type: 'TYPE_FP32', dims: [3, 16, 16], zero_data: true } } },
      ],
    }));
    expect(feeds.images?.shape).toEqual([2, 3, 320, 320]);
    expect(feeds.images?.values).toBeInstanceOf(Float32Array);
    expect(feeds.images?.values.length).toBe(2 * 3 * 320 * 320);
    expect((feeds.images?.values as Float32Array).every((v) => v === 0)).toBe(true);
    // Random data: small non-negative integers for an integer input, not all alike.
    expect(feeds.scale?.shape).toEqual([2, 2]);
    const scale = Array.from(feeds.scale?.values as BigInt64Array, Number);
    expect(scale.every((v) => Number.isInteger(v) && v >= 0 && v < 64)).toBe(true);
    expect(new Set(scale).size).toBeGreaterThan(1);
    // An input the sample does not list keeps the defaults, with the sample's batch size.
    expect(feeds.tag).toMatchObject({ datatype: 'BYTES', shape: [2, 1], values: ['', ''] });
  });

  it('gives the same pseudo-random data on every call (a fixed seed), floats in [0, 1), BYTES as strings', () => {
    const c = config({
      model_warmup: [
        {
          name: 'random',
          inputs: {
            images: { data_type: 'TYPE_FP32', dims: [3, 4, 5], random_data: true },
            tag: { data_type: 'TYPE_STRING', dims: [1], random_data: true },
          },
        },
      ],
    });
    const a = warmupFeeds(c);
    const b = warmupFeeds(c);
    expect(a).toEqual(b);
    expect(a.images?.shape).toEqual([1, 3, 4, 5]);
    const images = Array.from(a.images?.values as Float32Array);
    expect(images.every((v) => v >= 0 && v < 1)).toBe(true);
    expect(new Set(images).size).toBeGreaterThan(50);
    expect(a.tag?.shape).toEqual([1, 1]);
    expect((a.tag?.values as string[])[0]).toMatch(/^[0-9a-z]+$/);
  });

  it('for a model without a batch dimension, the sample dims are the whole shape', () => {
    const c = parseModelConfig(
      {
        ...detector(),
        max_batch_size: 0,
        input: [{ name: 'images', data_type: 'TYPE_FP32', dims: [1, 3, -1, -1] }],
        model_warmup: [{ name: 'w', inputs: { images: { data_type: 'TYPE_FP32', dims: [1, 3, 32, 48], zero_data: true } } }],
      },
      WHERE,
    );
    expect(warmupFeeds(c).images?.shape).toEqual([1, 3, 32, 48]);
  });
});
