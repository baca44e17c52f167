/**
 * Which tokenizer turns a model's text input into token ids, chosen by its
 * config's `parameters.tokenizer`:
 *
 * - `mesh-hash-v1` (or absent): the mesh's hashing tokenizer
 *   (shared/tokenizer.ts), which needs no vocabulary;
 * - `tokenizer.json`: the Hugging Face `tokenizer.json` in the model's
 *   directory (with its `tokenizer_config.json` when there is one), read with
 *   `@huggingface/tokenizers` (pure JS: WordPiece, BPE, Unigram with their
 *   normalisers, pre-tokenisers and post-processors, as the Rust crate).
 *
 * Any other name is refused when the config is read, so a model never gets
 * another tokenizer's ids. A `tokenizer.json` model's tokenizer is built once,
 * when the model is loaded (`loadTokenizer`), and found by its config object.
 */

import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { TOKENIZER_NAME, tokenize } from '../../../shared/tokenizer.ts';

/** The `parameters.tokenizer` value that selects the model directory's `tokenizer.json`. */
export const TOKENIZER_JSON = 'tokenizer.json';
/** Every `parameters.tokenizer` a backend accepts. */
export const TOKENIZER_CHOICES = [TOKENIZER_NAME, TOKENIZER_JSON] as const;
/** The largest `tokenizer.json` read (real ones are a few MB). */
const MAX_TOKENIZER_BYTES = 64 * 1024 * 1024;

/** Text to token ids, at most `maxLength` of them (special tokens included). */
export interface TextTokenizer {
  readonly name: string;
  encode(text: string, maxLength: number): number[];
}

/** What of a model config this module reads (model-config.ts's `ModelConfig`, which imports this module's choices). */
interface ModelConfig {
  readonly name: string;
  readonly parameters?: Readonly<Record<string, unknown>>;
}

const meshHash: TextTokenizer = { name: TOKENIZER_NAME, encode: tokenize };

/** The tokenizers built from `tokenizer.json` files, by the config of the model loaded with them. */
const loaded = new WeakMap<ModelConfig, TextTokenizer>();

/** Whether `name` is a `parameters.tokenizer` this backend knows. */
export function isTokenizerChoice(name: unknown): boolean {
  return (TOKENIZER_CHOICES as readonly unknown[]).includes(name);
}

/**
 * Reads and builds the tokenizer a config names, for a model being loaded
 * from `modelDir`; a no-op for `mesh-hash-v1`. Throws an error naming the
 * file when it is missing, too large or not a tokenizer.
 */
export async function loadTokenizer(config: ModelConfig, modelDir: string): Promise<void> {
  if (config.parameters?.tokenizer !== TOKENIZER_JSON) return;
  const file = path.join(modelDir, TOKENIZER_JSON);
  const json = await readJson(file, true);
  const tokenizerConfig = (await readJson(path.join(modelDir, 'tokenizer_config.json'), false)) ?? {};
  let tokenizer: Tokenizer;
  try {
    tokenizer = new Tokenizer(json as object, tokenizerConfig as object);
    tokenizer.encode('');
  } catch (err) {
    throw new Error(`${file}: not a tokenizer @huggingface/tokenizers can read (${(err as Error).message})`, { cause: err });
  }
  loaded.set(config, {
    name: TOKENIZER_JSON,
    encode: (text, maxLength) => {
      const ids = tokenizer.encode(text).ids;
      return ids.length > maxLength ? ids.slice(0, maxLength) : ids;
    },
  });
}

/** The tokenizer of a config: `mesh-hash-v1`, or the `tokenizer.json` loaded with it (an error if it was not). */
export function tokenizerOf(config: ModelConfig): TextTokenizer {
  if (config.parameters?.tokenizer !== TOKENIZER_JSON) return meshHash;
  const tokenizer = loaded.get(config);
  if (!tokenizer) throw new Error(`Model "${config.name}": its tokenizer.json was not loaded with it.`);
  return tokenizer;
}

async function readJson(file: string, required: boolean): Promise<unknown> {
  let text: string;
  try {
    const bytes = await readFile(file);
    if (bytes.byteLength > MAX_TOKENIZER_BYTES) throw new Error(`${file}: larger than ${MAX_TOKENIZER_BYTES} bytes`);
    text = bytes.toString('utf8');
  } catch (err) {
    if (!required && (err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new Error(`${file}: missing; parameters.tokenizer "${TOKENIZER_JSON}" reads the model directory's tokenizer.json`, { cause: err });
    }
    throw err;
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new Error(`${file}: not valid JSON (${(err as Error).message})`, { cause: err });
  }
}
