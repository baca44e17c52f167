/**
 * A model's tokenizer, chosen by `parameters.tokenizer`: `mesh-hash-v1`, or
 * the Hugging Face `tokenizer.json` in the model's directory read with
 * `@huggingface/tokenizers` (here a small WordPiece one the test writes, with
 * known ids); any other name is refused when the config is read, so a model
 * never gets another tokenizer's ids.
 */

import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseModelConfig, type ModelConfig } from '../../../gpu-backend/src/serving/model-config.ts';
import { meterRuleOf, prepareInference } from '../../../gpu-backend/src/serving/tensors.ts';
import { loadTokenizer, tokenizerOf } from '../../../gpu-backend/src/serving/tokenizers.ts';
import { tokenize } from '../../../shared/tokenizer.ts';

const special = (id: number, content: string) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });

/** A BERT-style WordPiece tokenizer.json over a ten-word vocabulary. */
const WORDPIECE = {
  version: '1.0',
  truncation: null,
  padding: null,
  added_tokens: [special(0, '[PAD]'), special(1, '[UNK]'), special(2, '[CLS]'), special(3, '[SEP]')],
  normalizer: { type: 'BertNormalizer', clean_text: true, handle_chinese_chars: true, strip_accents: null, lowercase: true },
  pre_tokenizer: { type: 'BertPreTokenizer' },
  post_processor: {
    type: 'TemplateProcessing',
    single: [{ SpecialToken: { id: '[CLS]', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '[SEP]', type_id: 0 } }],
    pair: [
      { SpecialToken: { id: '[CLS]', type_id: 0 } },
      { Sequence: { id: 'A', type_id: 0 } },
      { SpecialToken: { id: '[SEP]', type_id: 0 } },
      { Sequence: { id: 'B', type_id: 1 } },
      { SpecialToken: { id: '[SEP]', type_id: 1 } },
    ],
    special_tokens: {
      '[CLS]': { id: '[CLS]', ids: [2], tokens: ['[CLS]'] },
      '[SEP]': { id: '[SEP]', ids: [3], tokens: ['[SEP]'] },
    },
  },
  decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
  model: {
    type: 'WordPiece',
    unk_token: '[UNK]',
    continuing_subword_prefix: '##',
    max_input_chars_per_word: 100,
    vocab: { '[PAD]': 0, '[UNK]': 1, '[CLS]': 2, '[SEP]': 3, hello: 4, world: 5, '!': 6, un: 7, '##aff': 8, '##able': 9 },
  },
};

function textModel(parameters: Record<string, unknown>): unknown {
  return {
    name: 'words',
    platform: 'onnxruntime_onnx',
    max_batch_size: 8,
    input: [{ name: 'input_ids', data_type: 'TYPE_INT64', dims: [-1] }],
    output: [{ name: 'embedding', data_type: 'TYPE_FP32', dims: [4] }],
    parameters: { text_input: 'text', max_sequence_length: 16, ...parameters },
  };
}

const textRequest = (...texts: string[]) => ({ inputs: [{ name: 'text', shape: [texts.length], datatype: 'BYTES' as const, data: texts }] });

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'tokenizers-'));
  await writeFile(path.join(dir, 'tokenizer.json'), JSON.stringify(WORDPIECE));
});
afterAll(() => rm(dir, { recursive: true, force: true }));

describe('a tokenizer.json in the model directory', () => {
  it("turns text into the vocabulary's ids: normalised, split into word pieces, [CLS] and [SEP] around", async () => {
    const config = parseModelConfig(textModel({ tokenizer: 'tokenizer.json' }), 'config.json');
    await loadTokenizer(config, dir);
    expect(tokenizerOf(config).encode('Hello, unaffable world!', 16)).toEqual([2, 4, 1, 7, 8, 9, 5, 6, 3]);
    // Truncated to the model's sequence length, special tokens included.
    expect(tokenizerOf(config).encode('Hello, unaffable world!', 4)).toEqual([2, 4, 1, 7]);
  });

  it("feeds those ids to the model's token input, padded per batch, and meters the model by rows", async () => {
    const config = parseModelConfig(textModel({ tokenizer: 'tokenizer.json' }), 'config.json');
    await loadTokenizer(config, dir);
    const prepared = prepareInference(config, textRequest('hello world', 'unaffable'));
    expect(prepared.feeds.input_ids!.shape).toEqual([2, 5]);
    expect([...(prepared.feeds.input_ids!.values as BigInt64Array)].map(Number)).toEqual([2, 4, 5, 3, 0, 2, 7, 8, 9, 3]);
    // The edge recounts text tokens with mesh-hash-v1 only: such a model is billed by rows unless its config says otherwise.
    expect(meterRuleOf(config)).toEqual({ meter: 'rows' });
  });

  it('is refused, naming the file, when it is missing or not a tokenizer', async () => {
    const config = parseModelConfig(textModel({ tokenizer: 'tokenizer.json' }), 'config.json');
    const empty = await mkdtemp(path.join(os.tmpdir(), 'tokenizers-none-'));
    try {
      await expect(loadTokenizer(config, empty)).rejects.toThrow(`${path.join(empty, 'tokenizer.json')}: missing`);
      await writeFile(path.join(empty, 'tokenizer.json'), '{ not json');
      await expect(loadTokenizer(config, empty)).rejects.toThrow(/tokenizer\.json: not valid JSON/);
      await writeFile(path.join(empty, 'tokenizer.json'), JSON.stringify({ model: { type: 'NoSuchModel' } }));
      await expect(loadTokenizer(config, empty)).rejects.toThrow(/not a tokenizer @huggingface\/tokenizers can read/);
    } finally {
      await rm(empty, { recursive: true, force: true });
    }
  });

  it('is never used unless loaded with the model', () => {
    const config = parseModelConfig(textModel({ tokenizer: 'tokenizer.json' }), 'config.json');
    expect(() => prepareInference(config, textRequest('hello'))).toThrow('Model "words": its tokenizer.json was not loaded with it.');
  });
});

describe('parameters.tokenizer', () => {
  it('mesh-hash-v1 (and no tokenizer at all) keeps the hashing tokenizer and token metering', () => {
    for (const parameters of [{ tokenizer: 'mesh-hash-v1' }, {}]) {
      const config = parseModelConfig(textModel(parameters), 'config.json') as ModelConfig;
      const prepared = prepareInference(config, textRequest('hello world'));
      expect([...(prepared.feeds.input_ids!.values as BigInt64Array)].map(Number)).toEqual(tokenize('hello world', 16));
      expect(meterRuleOf(config).meter).toBe('tokens');
    }
  });

  it('refuses a name the backend does not know, instead of tokenizing with another', () => {
    expect(() => parseModelConfig(textModel({ tokenizer: 'bert-base-uncased' }), 'config.json')).toThrow(
      /parameters\.tokenizer must be one of mesh-hash-v1, tokenizer\.json .*got "bert-base-uncased"/,
    );
  });

  it('refuses token metering of text for a model with its own tokenizer.json', () => {
    expect(() => parseModelConfig(textModel({ tokenizer: 'tokenizer.json', metering: 'tokens' }), 'config.json')).toThrow(
      /parameters\.metering cannot be "tokens" for a text model with its own tokenizer\.json/,
    );
  });
});
