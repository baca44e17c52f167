/**
 * config.pbtxt (pbtxt.ts): Triton's protobuf text format parsed into the JSON
 * form parseModelConfig validates. A real-looking Triton config (comments,
 * list and repeated syntax, enums, nested parameters as map entries,
 * instance_group, dynamic_batching, model_warmup) comes out as the expected
 * ModelConfig; the scalar forms, the schema's repeated and map fields; syntax
 * errors carry line:column; a config over 1 MiB is refused.
 */

import { describe, expect, it } from 'vitest';
import { parseModelConfig, type ModelConfig } from '../../../gpu-backend/src/serving/model-config.ts';
import { MAX_PBTXT_BYTES, parsePbtxt } from '../../../gpu-backend/src/serving/pbtxt.ts';

const TRITON_CONFIG = `# Text detector, exported from PyTorch (opset 17).
name: "detector"
backend: "onnxruntime"
max_batch_size: 16

input [
  {
    name: "images"          # NCHW, normalised
    data_type: TYPE_FP32
    dims: [ 3, -1, -1 ]
  },
  {
    name: "im_info"
    data_type: TYPE_INT64
    dims: [ 2 ]
  }
]
output [
  {
    name: "boxes"
    data_type: TYPE_FP32
    dims: [ -1, 4 ]
  }
]
output {
  name: 'scores'
  data_type: TYPE_FP32
  dims: -1
}

instance_group [
  {
    count: 2
    kind: KIND_GPU
  }
]

dynamic_batching {
  preferred_batch_size: [ 4, 8 ]
  max_queue_delay_microseconds: 500
  default_queue_policy {
    max_queue_size: 32
    default_timeout_microseconds: 2000000
    allow_timeout_override: true
  }
}

version_policy: { specific: { versions: 2 } }

parameters {
  key: "metering"
  value: { string_value: "rows" }
}
parameters: {
  key: "max_sequence_length",
  value: { string_value: "512" };
}

model_warmup [
  {
    name: "one 320x320 image"
    batch_size: 1
    inputs {
      key: "images"
      value: {
        data_type: TYPE_FP32
        dims: [ 3, 320, 320 ]
        zero_data: true
      }
    }
    inputs {
      key: "im_info"
      value: { data_type: TYPE_INT64, dims: 2, random_data: true }
    }
  }
]
`;

const EXPECTED: ModelConfig = {
  name: 'detector',
  platform: 'onnxruntime_onnx',
  max_batch_size: 16,
  input: [
    { name: 'images', data_type: 'TYPE_FP32', dims: [3, -1, -1] },
    { name: 'im_info', data_type: 'TYPE_INT64', dims: [2] },
  ],
  output: [
    { name: 'boxes', data_type: 'TYPE_FP32', dims: [-1, 4] },
    { name: 'scores', data_type: 'TYPE_FP32', dims: [-1] },
  ],
  dynamic_batching: {
    preferred_batch_size: [4, 8],
    max_queue_delay_microseconds: 500,
    default_queue_policy: { max_queue_size: 32, default_timeout_microseconds: 2_000_000, allow_timeout_override: true },
  },
  instance_group: [{ count: 2, kind: 'KIND_GPU' }],
  version_policy: { specific: { versions: [2] } },
  parameters: { metering: 'rows', max_sequence_length: 512 },
  model_warmup: [
    {
      name: 'one 320x320 image',
      batch_size: 1,
      inputs: {
        images: { data_type: 'TYPE_FP32', dims: [3, 320, 320], zero_data: true },
        im_info: { data_type: 'TYPE_INT64', dims: [2], random_data: true },
      },
    },
  ],
};

/** The message of what `fn` throws. */
const thrown = (fn: () => unknown): string => {
  try {
    fn();
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error('expected an error');
};

describe('a Triton config.pbtxt', () => {
  it('parses into the JSON form, with repeated fields as arrays and map fields as objects', () => {
    const json = parsePbtxt(TRITON_CONFIG, 'models/detector/config.pbtxt');
    expect(json).toEqual({
      name: 'detector',
      backend: 'onnxruntime',
      max_batch_size: 16,
      input: [
        { name: 'images', data_type: 'TYPE_FP32', dims: [3, -1, -1] },
        { name: 'im_info', data_type: 'TYPE_INT64', dims: [2] },
      ],
      output: [
        { name: 'boxes', data_type: 'TYPE_FP32', dims: [-1, 4] },
        { name: 'scores', data_type: 'TYPE_FP32', dims: [-1] },
      ],
      instance_group: [{ count: 2, kind: 'KIND_GPU' }],
      dynamic_batching: {
        preferred_batch_size: [4, 8],
        max_queue_delay_microseconds: 500,
        default_queue_policy: { max_queue_size: 32, default_timeout_microseconds: 2_000_000, allow_timeout_override: true },
      },
      version_policy: { specific: { versions: [2] } },
      parameters: { metering: { string_value: 'rows' }, max_sequence_length: { string_value: '512' } },
      model_warmup: [
        {
          name: 'one 320x320 image',
          batch_size: 1,
          inputs: {
            images: { data_type: 'TYPE_FP32', dims: [3, 320, 320], zero_data: true },
            im_info: { data_type: 'TYPE_INT64', dims: [2], random_data: true },
          },
        },
      ],
    });
  });

  it('validates to the expected ModelConfig', () => {
    const file = 'models/detector/config.pbtxt';
    expect(parseModelConfig(parsePbtxt(TRITON_CONFIG, file), file)).toEqual(EXPECTED);
  });

  it('is refused by parseModelConfig when it names a field the backend does not know', () => {
    const file = 'models/detector/config.pbtxt';
    const text = TRITON_CONFIG.replace('max_batch_size: 16', 'max_batch_size: 16\ndefault_model_filename: "model.onnx"');
    expect(thrown(() => parseModelConfig(parsePbtxt(text, file), file))).toMatch(/^models\/detector\/config\.pbtxt: "default_model_filename" is not a supported field/);
  });
});

describe('the text format', () => {
  it('reads every scalar form', () => {
    expect(
      parsePbtxt(`
        a: "double \\"quoted\\"\\n" b: 'single \\'quoted\\''
        c: "tab\\there" d: "\\x41\\102\\u00e9\\U0001F600" e: "joined " 'string'
        f: -12 g: 0x1F h: 1.5 i: -2.5e-3 j: .5 k: 3f
        l: true m: false n: True o: KIND_CPU
        p: "Grüße 東京"
      `),
    ).toEqual({
      a: 'double "quoted"\n',
      b: "single 'quoted'",
      c: 'tab\there',
      d: 'ABé😀',
      e: 'joined string',
      f: -12,
      g: 31,
      h: 1.5,
      i: -0.0025,
      j: 0.5,
      k: 3,
      l: true,
      m: false,
      n: true,
      o: 'KIND_CPU',
      p: 'Grüße 東京',
    });
  });

  it('reads messages with or without ":", in { } or < >, and tolerates "," and ";" between fields', () => {
    expect(parsePbtxt('x { a: 1, b: 2; } y: { } z < c: "v" >; w: 1,')).toEqual({ x: { a: 1, b: 2 }, y: {}, z: { c: 'v' }, w: 1 });
  });

  it('makes the schema\'s repeated fields arrays, however written; lists may be empty or end in ","', () => {
    expect(parsePbtxt('dims: 3')).toEqual({ dims: [3] });
    expect(parsePbtxt('dims: 3 dims: 4')).toEqual({ dims: [3, 4] });
    expect(parsePbtxt('dims: [3] dims: [4, 5,]')).toEqual({ dims: [3, 4, 5] });
    expect(parsePbtxt('dims: []')).toEqual({ dims: [] });
    expect(parsePbtxt('input { name: "a" } input { name: "b" }')).toEqual({ input: [{ name: 'a' }, { name: 'b' }] });
    expect(parsePbtxt('input: [{ name: "a" }, { name: "b" }]')).toEqual({ input: [{ name: 'a' }, { name: 'b' }] });
    expect(parsePbtxt('version_policy { specific { versions: [1, 3] } }')).toEqual({ version_policy: { specific: { versions: [1, 3] } } });
    // A field the schema does not repeat, written as a list, is a list (parseModelConfig then refuses it).
    expect(parsePbtxt('name: ["a"]')).toEqual({ name: ['a'] });
  });

  it('makes map fields objects, from entries written one by one or as a list', () => {
    const entries = 'parameters { key: "a" value: { string_value: "1" } } parameters { key: "b", value { string_value: "2" } }';
    const list = 'parameters: [ { key: "a" value: { string_value: "1" } }, { key: "b" value: { string_value: "2" } } ]';
    const expected = { parameters: { a: { string_value: '1' }, b: { string_value: '2' } } };
    expect(parsePbtxt(entries)).toEqual(expected);
    expect(parsePbtxt(list)).toEqual(expected);
    expect(parsePbtxt('model_warmup { name: "w" inputs { key: "x" value { zero_data: true } } }')).toEqual({
      model_warmup: [{ name: 'w', inputs: { x: { zero_data: true } } }],
    });
  });

  it('keeps a field named __proto__ as a field (parseModelConfig then refuses it)', () => {
    const json = parsePbtxt('__proto__ { polluted: true }');
    expect(Object.keys(json)).toEqual(['__proto__']);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(thrown(() => parseModelConfig(json, 'config.pbtxt'))).toMatch(/"__proto__" is not a supported field/);
  });
});

describe('errors carry line:column', () => {
  const TEXT = `name: "m"
platform: "onnxruntime_onnx"
input [
  {
    name: "x"
    data_type: TYPE_FP32
    dims: [ 3 4 ]
  }
]
`;

  it.each([
    [TEXT, 'config.pbtxt:7:15: expected "," or "]" in the list of "dims" (opened at 7:11), got 4'],
    ['input {\n  name: "x"\n', 'config.pbtxt:3:1: expected "}" to close "input" (opened at 1:7), got end of input'],
    ['output [ { name: "y" ]', 'config.pbtxt:1:22: expected a field name or "}", got "]"'],
    ['name: "m"\n}', 'config.pbtxt:2:1: expected a field name, got "}"'],
    ['name "m"', 'config.pbtxt:1:6: expected ":" or "{" after field "name", got "m"'],
    ['name:', 'config.pbtxt:1:6: expected a value for "name", got end of input'],
    ['name: "m\nplatform: "x"', 'config.pbtxt:1:7: unterminated string (no closing " on its line)'],
    ['name: "a\\qb"', 'config.pbtxt:1:9: unknown escape \\q'],
    ['name: "\\xff"', 'config.pbtxt:1:7: string is not valid UTF-8 (check its \\x or octal escapes)'],
    ['max_batch_size: 8x', 'config.pbtxt:1:17: malformed number "8x"'],
    ['max_batch_size: 99999999999999999999', 'config.pbtxt:1:17: integer 99999999999999999999 is out of range (beyond ±9007199254740991)'],
    ['  max_batch_size: 8\n  max_batch_size: 16', 'config.pbtxt:2:3: field "max_batch_size" is set twice (first at 1:3); it is not a repeated field'],
    ['name: @', 'config.pbtxt:1:7: unexpected character "@"'],
    ['parameters { tokenizer: { string_value: "x" } }', 'config.pbtxt:1:12: "parameters" is a map: an entry has only "key" and "value", got "tokenizer" (write parameters { key: "tokenizer" value: ... })'],
    ['parameters { value: { string_value: "x" } }', 'config.pbtxt:1:12: "parameters" map entry needs a "key" (a string or an integer)'],
    ['parameters { key: "a" }', 'config.pbtxt:1:12: "parameters" map entry "a" has no "value"'],
    ['parameters { key: "a" value: "1" }\nparameters { key: "a" value: "2" }', 'config.pbtxt:2:12: "parameters" repeats the key "a" (first at 1:12)'],
    ['parameters: "x"', 'config.pbtxt:1:13: "parameters" is a map: expected an entry { key: ... value: ... }, got "x"'],
  ])('%j', (text, message) => {
    expect(thrown(() => parsePbtxt(text))).toBe(message);
  });

  it('names the file it was given', () => {
    expect(thrown(() => parsePbtxt('name: }', 'models/m/config.pbtxt'))).toBe('models/m/config.pbtxt:1:7: expected a value for "name", got "}"');
  });

  it('refuses messages nested too deep, without overflowing the stack', () => {
    expect(thrown(() => parsePbtxt('a { '.repeat(10_000)))).toMatch(/^config\.pbtxt:1:\d+: messages nest deeper than 64 levels$/);
  });
});

describe('size bound', () => {
  it('parses a config of exactly 1 MiB', () => {
    const head = 'name: "m"\n';
    const text = head + '#'.repeat(MAX_PBTXT_BYTES - head.length);
    expect(Buffer.byteLength(text)).toBe(MAX_PBTXT_BYTES);
    expect(parsePbtxt(text)).toEqual({ name: 'm' });
  });

  it('refuses a config over 1 MiB, counting UTF-8 bytes', () => {
    const ascii = 'name: "m"\n' + '#'.repeat(MAX_PBTXT_BYTES);
    expect(thrown(() => parsePbtxt(ascii, 'models/m/config.pbtxt'))).toBe('models/m/config.pbtxt: is over 1 MiB; a config may be at most 1048576 bytes (1 MiB)');
    // Fewer characters than the bound, but more bytes.
    const wide = '#' + 'é'.repeat(MAX_PBTXT_BYTES / 2);
    expect(wide.length).toBeLessThan(MAX_PBTXT_BYTES);
    expect(thrown(() => parsePbtxt(wide))).toBe(`config.pbtxt: is ${MAX_PBTXT_BYTES + 1} bytes; a config may be at most 1048576 bytes (1 MiB)`);
  });
});
