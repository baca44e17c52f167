import { describe, expect, it } from 'vitest';
import { inputUnits, meter, outputUnits, requestRows, type MeteredTensor } from '../../shared/metering.ts';
import { tokenize } from '../../shared/tokenizer.ts';

const text = (data: string[]): MeteredTensor => ({ datatype: 'BYTES', shape: [data.length], data });
const ids = (rows: number[][]): MeteredTensor => ({ datatype: 'INT64', shape: [rows.length, rows[0]!.length], data: rows.flat() });

describe('metering (the one definition of billing units)', () => {
  it('tokens: the tokenizer count of every text, [CLS] included, truncated at maxTokens; output = rows', () => {
    const texts = ['Hello, world!', '', 'one two three four five six'];
    const expected = texts.reduce((n, t) => n + tokenize(t).length, 0);
    expect(meter({ meter: 'tokens' }, [text(texts)], [{ shape: [3, 8] }])).toEqual({ input: expected, output: 3 });
    expect(inputUnits({ meter: 'tokens', maxTokens: 3 }, [text(texts)])).toBe(3 + 1 + 3);
  });

  it('tokens: token ids that are not padding, with the model pad id', () => {
    expect(inputUnits({ meter: 'tokens' }, [ids([[1, 5, 0, 0], [1, 7, 9, 0]])])).toBe(5);
    expect(inputUnits({ meter: 'tokens', padId: 9 }, [ids([[1, 5, 0, 0], [1, 7, 9, 0]])])).toBe(7);
  });

  it('rows: the first dimension of the first input, in and out', () => {
    const features: MeteredTensor = { datatype: 'FP32', shape: [4, 16] };
    expect(meter({ meter: 'rows' }, [features], [{ shape: [4, 3] }])).toEqual({ input: 4, output: 4 });
    expect(requestRows([{ datatype: 'FP32', shape: [] }])).toBe(1);
  });

  it('elements: every element of every input and of every output', () => {
    const inputs: MeteredTensor[] = [{ datatype: 'FP32', shape: [2, 3] }, text(['a', 'b'])];
    expect(meter({ meter: 'elements' }, inputs, [{ shape: [2, 5] }, { shape: [2] }])).toEqual({ input: 8, output: 12 });
  });

  it('requests: one and one, whatever the size', () => {
    expect(meter({ meter: 'requests' }, [text(['a', 'b', 'c'])], [{ shape: [3, 100] }])).toEqual({ input: 1, output: 1 });
    expect(outputUnits({ meter: 'requests' }, [], [])).toBe(1);
  });
});
