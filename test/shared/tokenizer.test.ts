import { describe, expect, it } from 'vitest';
import { PAD_ID, VOCAB_SIZE, padBatch, tokenize } from '../../shared/tokenizer.ts';

/** mesh-hash-v1's [CLS] id, first in every tokenized text. */
const CLS_ID = 1;

describe('tokenize', () => {
  it('starts with [CLS] and gives one id in [2, VOCAB_SIZE) per word', () => {
    const ids = tokenize('Hello, world! 42 times');
    expect(ids).toHaveLength(5);
    expect(ids[0]).toBe(CLS_ID);
    for (const id of ids.slice(1)) {
      expect(Number.isInteger(id)).toBe(true);
      expect(id).toBeGreaterThanOrEqual(2);
      expect(id).toBeLessThan(VOCAB_SIZE);
    }
  });

  it('is deterministic, case-insensitive and ignores punctuation and spacing', () => {
    expect(tokenize('Hello, World')).toEqual(tokenize('hello world'));
    expect(tokenize('  hello...   world!!! ')).toEqual(tokenize('hello world'));
    expect(tokenize('hello world')).not.toEqual(tokenize('world hello'));
    expect(tokenize('hello world')).not.toEqual(tokenize('hello there'));
  });

  it('hashes each word with 32-bit FNV-1a over UTF-8 into [2, VOCAB_SIZE)', () => {
    // Published FNV-1a test vectors: 'a' -> 0xe40c292c, 'foobar' -> 0xbf9cf968.
    const wordId = (fnv: number) => 2 + (fnv % (VOCAB_SIZE - 2));
    expect(tokenize('a')).toEqual([CLS_ID, wordId(0xe40c292c)]);
    expect(tokenize('foobar')).toEqual([CLS_ID, wordId(0xbf9cf968)]);
    expect(tokenize('FOOBAR a')).toEqual([CLS_ID, wordId(0xbf9cf968), wordId(0xe40c292c)]);
  });

  it('returns only [CLS] for empty or word-less text', () => {
    expect(tokenize('')).toEqual([CLS_ID]);
    expect(tokenize('  ?! — …  ')).toEqual([CLS_ID]);
  });

  it('truncates to maxLength ids, [CLS] included', () => {
    const text = Array.from({ length: 300 }, (_, i) => `w${i}`).join(' ');
    expect(tokenize(text)).toHaveLength(128);
    expect(tokenize(text, 10)).toHaveLength(10);
    expect(tokenize(text, 10)).toEqual(tokenize(text).slice(0, 10));
    expect(tokenize(text, 1)).toEqual([CLS_ID]);
    expect(() => tokenize(text, 0)).toThrow(RangeError);
  });

  it('handles Unicode: NFKC, non-Latin scripts, combining marks', () => {
    // NFKC folds full-width letters and the "ﬁ" ligature; composed and decomposed é agree.
    expect(tokenize('ＨＥＬＬＯ')).toEqual(tokenize('hello'));
    expect(tokenize('ﬁne')).toEqual(tokenize('fine'));
    expect(tokenize('caf\u00e9')).toEqual(tokenize('cafe\u0301'));
    expect(tokenize('café')).not.toEqual(tokenize('cafe'));
    // Letters of any script are words; a Devanagari vowel sign stays inside its word.
    expect(tokenize('Привет мир')).toHaveLength(3);
    expect(tokenize('東京 ٱلْعَرَبِيَّة')).toHaveLength(3);
    expect(tokenize('नमस्ते दुनिया')).toHaveLength(3);
    expect(tokenize('emoji 🎉 separated')).toHaveLength(3);
  });
});

describe('padBatch', () => {
  it('right-pads rows with PAD_ID to the longest, row-major', () => {
    expect(padBatch([[1, 5, 6], [1], [1, 7]])).toEqual({
      ids: [1, 5, 6, 1, PAD_ID, PAD_ID, 1, 7, PAD_ID],
      seq: 3,
    });
  });

  it('handles a single row and no rows', () => {
    expect(padBatch([[1, 2]])).toEqual({ ids: [1, 2], seq: 2 });
    expect(padBatch([])).toEqual({ ids: [], seq: 0 });
  });
});
