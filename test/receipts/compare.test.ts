/**
 * Comparing two OIP answers (receipts/compare.ts): floats within the rule,
 * everything else exact, outputs by name, nested data flattened, and a reason
 * that names the first difference. Binary-extension answers are decoded
 * first: FP16 and BF16 bit patterns to their values, compared as floats under
 * the rule given (the model's tolerance); UINT64 from its two words, exactly.
 */

import { describe, expect, it } from 'vitest';
import { compareAnswerBytes, compareAnswers, DEFAULT_RULE, isCompareRule, type Comparison } from '../../receipts/compare.ts';
import { encodeBinaryBody } from '../../shared/binary.ts';
import { toBf16Bits, toFp16Bits } from '../../shared/float16.ts';
import type { CompareRule } from '../../shared/jwt.ts';
import { embedding, noisy } from '../helpers/dispute-fixtures.ts';

interface Out {
  name: string;
  datatype: string;
  shape: number[];
  data: unknown[];
}

const out = (data: unknown[], over: Partial<Out> = {}): Out => ({ name: 'y', datatype: 'FP32', shape: [data.length], data, ...over });
const ans = (...outputs: Out[]) => ({ model_name: 'm', model_version: '1', outputs });

function reason(c: Comparison): string {
  if (c.agree) throw new Error('expected a disagreement, but they agree');
  return c.reason;
}

describe('DEFAULT_RULE and isCompareRule', () => {
  it('is abs 1e-4, rel 1e-3, and frozen', () => {
    expect(DEFAULT_RULE).toEqual({ float: { abs: 1e-4, rel: 1e-3 } });
    expect(Object.isFrozen(DEFAULT_RULE) && Object.isFrozen(DEFAULT_RULE.float)).toBe(true);
  });

  it('accepts finite abs and rel in [0, 1] and nothing else', () => {
    for (const ok of [DEFAULT_RULE, { float: { abs: 0, rel: 0 } }, { float: { abs: 1, rel: 1 } }]) expect(isCompareRule(ok), JSON.stringify(ok)).toBe(true);
    const bad: unknown[] = [
      null,
      [],
      {},
      { float: null },
      { float: [] },
      { float: { abs: 1e-4 } },
      { float: { abs: -1e-4, rel: 0 } },
      { float: { abs: 0, rel: 1.5 } },
      { float: { abs: NaN, rel: 0 } },
      { float: { abs: Infinity, rel: 0 } },
      { float: { abs: '0', rel: 0 } },
    ];
    for (const b of bad) expect(isCompareRule(b), JSON.stringify(b)).toBe(false);
  });

  it('refuses to compare under an invalid rule', () => {
    expect(() => compareAnswers(ans(out([1])), ans(out([1])), { float: { abs: 2, rel: 0 } })).toThrow(TypeError);
  });
});

describe('floating-point outputs', () => {
  it('agrees on honest GPU-like noise (relative 1e-5 on 10k embedding values), for every float datatype', () => {
    const a = embedding(10_000);
    const b = noisy(a, 1e-5);
    expect(b.some((v, i) => v !== a[i])).toBe(true);
    for (const datatype of ['FP16', 'BF16', 'FP32', 'FP64']) {
      expect(compareAnswers(ans(out(a, { datatype })), ans(out(b, { datatype }))), datatype).toEqual({ agree: true });
    }
  });

  it('disagrees on a +0.01 change of one element, and the reason names it', () => {
    const a = embedding(10_000);
    const b = noisy(a, 1e-5);
    b[1234] = b[1234]! + 0.01;
    for (const datatype of ['FP16', 'BF16', 'FP32', 'FP64']) {
      const r = reason(compareAnswers(ans(out(a, { datatype, name: 'embeddings' })), ans(out(b, { datatype, name: 'embeddings' }))));
      expect(r).toContain('output "embeddings" element 1234: ');
      expect(r).toContain(`${a[1234]} vs ${b[1234]}`);
      expect(r).toMatch(/ \(differ by 0\.0\d+, tolerance 0\.000\d+\)$/);
    }
  });

  it('uses abs near zero and rel for large values', () => {
    expect(compareAnswers(ans(out([0])), ans(out([9e-5])))).toEqual({ agree: true });
    expect(compareAnswers(ans(out([0])), ans(out([2e-4]))).agree).toBe(false);
    // rel * max(|x|, |y|): 1000 vs 1000.9 is within 1e-4 + 1e-3 * 1000.9.
    expect(compareAnswers(ans(out([1000])), ans(out([1000.9])))).toEqual({ agree: true });
    expect(compareAnswers(ans(out([1000])), ans(out([1001.2]))).agree).toBe(false);
    // A rule of its own.
    const strict: CompareRule = { float: { abs: 0, rel: 0 } };
    expect(compareAnswers(ans(out([0.5])), ans(out([0.5 + 1e-12])), strict).agree).toBe(false);
    expect(compareAnswers(ans(out([0.5])), ans(out([0.5])), strict)).toEqual({ agree: true });
    const loose: CompareRule = { float: { abs: 1, rel: 0 } };
    expect(compareAnswers(ans(out([0.5])), ans(out([1.4])), loose)).toEqual({ agree: true });
  });

  it('treats NaN as equal to NaN, and an infinity as equal only to itself', () => {
    const cmp = (x: unknown, y: unknown) => compareAnswers(ans(out([x])), ans(out([y])));
    expect(cmp(NaN, NaN)).toEqual({ agree: true });
    expect(cmp('NaN', null)).toEqual({ agree: true }); // JSON spellings of NaN
    expect(cmp(Infinity, 'Infinity')).toEqual({ agree: true });
    expect(cmp(-Infinity, '-Infinity')).toEqual({ agree: true });
    expect(reason(cmp(NaN, 1))).toBe('output "y" element 0: NaN vs 1');
    expect(reason(cmp(Infinity, -Infinity))).toBe('output "y" element 0: Infinity vs -Infinity');
    expect(reason(cmp(Infinity, 1e308))).toBe('output "y" element 0: Infinity vs 1e+308');
    expect(reason(cmp(Infinity, NaN))).toBe('output "y" element 0: Infinity vs NaN');
  });

  it('refuses an element that is not a number', () => {
    expect(reason(compareAnswers(ans(out([1, 'x'])), ans(out([1, 2]))))).toBe('the first answer\'s output "y" element 1 is not a number ("x")');
    expect(reason(compareAnswers(ans(out([1, 2])), ans(out([1, {}]))))).toBe('the second answer\'s output "y" element 1 is not a number (an object)');
    expect(compareAnswers(ans(out([true])), ans(out([true]))).agree).toBe(false);
  });
});

describe('exact outputs', () => {
  it('compares integers by value, exactly', () => {
    const int = (data: unknown[]) => ans(out(data, { datatype: 'INT64' }));
    expect(compareAnswers(int([1, 2, 3]), int([1, 2, 3]))).toEqual({ agree: true });
    expect(compareAnswerBytes(bytes('{"outputs":[{"name":"y","datatype":"INT64","shape":[1],"data":[1]}]}'), bytes('{"outputs":[{"name":"y","datatype":"INT64","shape":[1],"data":[1.0]}]}'))).toEqual({
      agree: true,
    });
    expect(reason(compareAnswers(int([1, 2, 3]), int([1, 2, 4])))).toBe('output "y" element 2: 3 vs 4');
    // No tolerance for integers, however loose the float rule.
    expect(compareAnswers(ans(out([1], { datatype: 'UINT8' })), ans(out([2], { datatype: 'UINT8' })), { float: { abs: 1, rel: 1 } }).agree).toBe(false);
    expect(reason(compareAnswers(int([1]), int(['1'])))).toBe('output "y" element 0: 1 vs "1"');
  });

  it('compares BOOL as numbers: true is 1, false is 0', () => {
    const b = (data: unknown[]) => ans(out(data, { datatype: 'BOOL' }));
    expect(compareAnswers(b([true, false, true]), b([1, 0, true]))).toEqual({ agree: true });
    expect(reason(compareAnswers(b([true, false]), b([true, 1])))).toBe('output "y" element 1: false vs 1');
  });

  it('compares BYTES strings exactly', () => {
    const s = (data: unknown[]) => ans(out(data, { datatype: 'BYTES' }));
    expect(compareAnswers(s(['positive', 'négatif']), s(['positive', 'négatif']))).toEqual({ agree: true });
    expect(reason(compareAnswers(s(['positive']), s(['Positive'])))).toBe('output "y" element 0: "positive" vs "Positive"');
    expect(reason(compareAnswers(s([['a']]), s([{ b: 1 }])))).toBe('the second answer\'s output "y" element 0 is not a scalar (an object)');
  });
});

describe('outputs, shapes and nesting', () => {
  it('matches outputs by name, in any order, and ignores everything but outputs', () => {
    const x = out([1, 2], { name: 'x' });
    const y = out([3], { name: 'y', datatype: 'INT32' });
    const a = { ...ans(x, y), id: 'req-1', model_version: '1', parameters: { t: 1 } };
    const b = { ...ans(y, x), id: 'req-2', model_name: 'other', model_version: '2' };
    expect(compareAnswers(a, b)).toEqual({ agree: true });
  });

  it('disagrees on a missing, extra or duplicated output', () => {
    const x = out([1], { name: 'x' });
    const y = out([1], { name: 'y' });
    expect(reason(compareAnswers(ans(x, y), ans(x)))).toBe('output "y" is only in the first answer');
    expect(reason(compareAnswers(ans(x), ans(x, y)))).toBe('output "y" is only in the second answer');
    expect(reason(compareAnswers(ans(x, x), ans(x, x)))).toBe('the first answer is not an OIP answer: output "x" appears twice');
    expect(compareAnswers(ans(), ans())).toEqual({ agree: true });
  });

  it('disagrees on datatype, shape and length', () => {
    expect(reason(compareAnswers(ans(out([1])), ans(out([1], { datatype: 'FP16' }))))).toBe('output "y": datatype FP32 vs FP16');
    expect(reason(compareAnswers(ans(out([1, 2], { shape: [1, 2] })), ans(out([1, 2], { shape: [2, 1] }))))).toBe('output "y": shape [1,2] vs [2,1]');
    expect(reason(compareAnswers(ans(out([1, 2], { shape: [2] })), ans(out([1, 2], { shape: [1, 2] }))))).toBe('output "y": shape [2] vs [1,2]');
    expect(reason(compareAnswers(ans(out([1, 2], { shape: [2] })), ans(out([1, 2, 3], { shape: [2] }))))).toBe('output "y": 2 vs 3 data elements');
  });

  it('flattens nested data, and names the flat index of a difference', () => {
    const flat = out([1, 2, 3, 4], { shape: [2, 2] });
    const nested = out([[1, 2], [3, 4]], { shape: [2, 2] });
    const ragged = out([[], [1, [2, 3]], [[4]]], { shape: [2, 2] });
    expect(compareAnswers(ans(flat), ans(nested))).toEqual({ agree: true });
    expect(compareAnswers(ans(nested), ans(ragged))).toEqual({ agree: true });
    const off = out([[1, 2], [3, 4.5]], { shape: [2, 2] });
    expect(reason(compareAnswers(ans(ragged), ans(off)))).toMatch(/^output "y" element 3: 4 vs 4\.5 /);
    const ints = (data: unknown[]) => out(data, { datatype: 'INT8', shape: [2, 2] });
    expect(compareAnswers(ans(ints([[1, 2], [3, 4]])), ans(ints([1, [2, [3]], 4])))).toEqual({ agree: true });
    expect(reason(compareAnswers(ans(ints([[1, 2], [3, 4]])), ans(ints([1, 2, 3, 5]))))).toBe('output "y" element 3: 4 vs 5');
    expect(reason(compareAnswers(ans(out([[1, 2], [3]], { shape: [2, 2] })), ans(out([1, 2, 3, 4], { shape: [2, 2] }))))).toBe('output "y": 3 vs 4 data elements');
  });

  it('refuses data nested beyond reason', () => {
    let deep: unknown[] = [1];
    for (let i = 0; i < 40; i++) deep = [deep];
    expect(reason(compareAnswers(ans(out(deep)), ans(out([1]))))).toBe('the first answer\'s output "y" data is nested too deeply');
  });
});

describe('what is not an OIP answer', () => {
  it('disagrees, saying which answer and why', () => {
    const good = ans(out([1]));
    const cases: [unknown, string][] = [
      [null, 'not a JSON object'],
      [[good], 'not a JSON object'],
      [{}, '"outputs" is not an array'],
      [{ outputs: [null] }, 'outputs[0] is not an object'],
      [{ outputs: [{ datatype: 'FP32', shape: [1], data: [1] }] }, 'outputs[0] has no string "name"'],
      [{ outputs: [{ name: 'y', shape: [1], data: [1] }] }, 'output "y" has no "datatype"'],
      [{ outputs: [{ name: 'y', datatype: 'FP32', shape: [-1], data: [1] }] }, 'output "y" "shape" is not a list of sizes'],
      [{ outputs: [{ name: 'y', datatype: 'FP32', shape: [1], data: 1 }] }, 'output "y" "data" is not an array'],
    ];
    for (const [bad, why] of cases) {
      expect(reason(compareAnswers(bad, good))).toBe(`the first answer is not an OIP answer: ${why}`);
      expect(reason(compareAnswers(good, bad))).toBe(`the second answer is not an OIP answer: ${why}`);
      expect(compareAnswers(bad, bad).agree).toBe(false);
    }
  });

  it('disagrees on bytes that are neither UTF-8 JSON nor a binary-extension answer', () => {
    const good = bytes(JSON.stringify(ans(out([1]))));
    expect(compareAnswerBytes(good, good)).toEqual({ agree: true });
    expect(reason(compareAnswerBytes(bytes('{"outputs": ['), good))).toBe('the first answer is neither UTF-8 JSON nor a binary-extension answer');
    expect(reason(compareAnswerBytes(good, new Uint8Array([0x7b, 0xff, 0x7d])))).toBe('the second answer is neither UTF-8 JSON nor a binary-extension answer');
    expect(reason(compareAnswerBytes(new Uint8Array(), good))).toBe('the first answer is neither UTF-8 JSON nor a binary-extension answer');
  });
});

describe('binary-extension answers', () => {
  const binaryAnswer = (values: number[]) => {
    const data = new Uint8Array(Float32Array.from(values).buffer);
    const header = { model_name: 'm', outputs: [{ name: 'y', datatype: 'FP32', shape: [values.length], parameters: { binary_data_size: data.byteLength } }] };
    return encodeBinaryBody(header, [data]).body;
  };

  it('compares their decoded outputs under the same rule as JSON answers', () => {
    const json = bytes(JSON.stringify({ model_name: 'm', outputs: [{ name: 'y', datatype: 'FP32', shape: [3], data: [0.5, -1.25, 2] }] }));
    expect(compareAnswerBytes(binaryAnswer([0.5, -1.25, 2]), json)).toEqual({ agree: true });
    expect(compareAnswerBytes(binaryAnswer([0.5, -1.25, 2]), binaryAnswer([0.5, -1.25, 2.00001]))).toEqual({ agree: true });
    expect(compareAnswerBytes(binaryAnswer([0.5, -1.25, 2]), binaryAnswer([0.5, -1.25, 2.5])).agree).toBe(false);
  });

  it('decodes FP16 and BF16 bit patterns and compares them as floats, with the rule given (the model\'s tolerance)', () => {
    const half = (datatype: 'FP16' | 'BF16', values: number[]) => {
      const data = new Uint8Array(Uint16Array.from(values, datatype === 'FP16' ? toFp16Bits : toBf16Bits).buffer);
      const header = { model_name: 'm', outputs: [{ name: 'y', datatype, shape: [values.length], parameters: { binary_data_size: data.byteLength } }] };
      return encodeBinaryBody(header, [data]).body;
    };
    const json = (datatype: string, data: number[]) => bytes(JSON.stringify({ model_name: 'm', outputs: [{ name: 'y', datatype, shape: [data.length], data }] }));
    // 0.1 as FP16 is 0.0999755859375: within the default abs 1e-4 of a JSON 0.1.
    expect(compareAnswerBytes(half('FP16', [0.1, 1000, -2]), json('FP16', [0.1, 1000, -2]))).toEqual({ agree: true });
    // One FP16 step at 1000 is 0.5: within the default rel 1e-3, not within a rule of rel 1e-4; two steps of 1 are not.
    expect(compareAnswerBytes(half('FP16', [0.1, 1000, -2]), half('FP16', [0.1, 1000.5, -2]))).toEqual({ agree: true });
    const strict: CompareRule = { float: { abs: 1e-4, rel: 1e-4 } };
    expect(reason(compareAnswerBytes(half('FP16', [0.1, 1000, -2]), half('FP16', [0.1, 1000.5, -2]), strict))).toMatch(/^output "y" element 1: 1000 vs 1000\.5 \(differ by 0\.5, tolerance 0\.1\)$/);
    expect(compareAnswerBytes(half('FP16', [0.1, 1000, -2]), half('FP16', [0.1, 1002, -2])).agree).toBe(false);
    expect(compareAnswerBytes(half('BF16', [0.1, 3, -2]), json('BF16', [0.1, 3, -2]))).toEqual({ agree: true });
    expect(compareAnswerBytes(half('BF16', [0.1, 3, -2]), json('BF16', [0.1, 3.5, -2])).agree).toBe(false);
  });

  it('decodes UINT64 above 2^32 and compares it exactly', () => {
    const data = new Uint8Array(BigUint64Array.from([2n ** 32n + 1n, 7n]).buffer);
    const header = { model_name: 'm', outputs: [{ name: 'y', datatype: 'UINT64', shape: [2], parameters: { binary_data_size: 16 } }] };
    const binary = encodeBinaryBody(header, [data]).body;
    const json = (data: number[]) => bytes(JSON.stringify({ model_name: 'm', outputs: [{ name: 'y', datatype: 'UINT64', shape: [2], data }] }));
    expect(compareAnswerBytes(binary, json([2 ** 32 + 1, 7]))).toEqual({ agree: true });
    expect(reason(compareAnswerBytes(binary, json([2 ** 32, 7]), { float: { abs: 1, rel: 1 } }))).toBe('output "y" element 0: 4294967297 vs 4294967296');
  });

  it('disagrees when the declared binary sizes do not account for the bytes', () => {
    const whole = binaryAnswer([1, 2]);
    expect(reason(compareAnswerBytes(whole.subarray(0, whole.byteLength - 1), whole))).toBe('the first answer is neither UTF-8 JSON nor a binary-extension answer');
  });
});

describe('speed', () => {
  it('compares a million elements, flat and nested, in well under a second each', () => {
    const n = 1_000_000;
    const a = embedding(n);
    const b = noisy(a);
    let t = performance.now();
    expect(compareAnswers(ans(out(a)), ans(out(b)))).toEqual({ agree: true });
    const flatMs = performance.now() - t;
    const rows = (v: number[]) => Array.from({ length: 1000 }, (_, i) => v.slice(i * 1000, (i + 1) * 1000));
    const [na, nb] = [rows(a), rows(b)];
    t = performance.now();
    expect(compareAnswers(ans(out(na, { shape: [1000, 1000] })), ans(out(nb, { shape: [1000, 1000] })))).toEqual({ agree: true });
    const nestedMs = performance.now() - t;
    expect(flatMs).toBeLessThan(1000);
    expect(nestedMs).toBeLessThan(1000);
    // Through the bytes, as a fraud proof carries them.
    const ba = bytes(JSON.stringify(ans(out(a))));
    expect(compareAnswerBytes(ba, bytes(JSON.stringify(ans(out(b)))))).toEqual({ agree: true });
    b[n - 1] = b[n - 1]! + 0.01;
    expect(reason(compareAnswerBytes(ba, bytes(JSON.stringify(ans(out(b))))))).toContain(`output "y" element ${n - 1}: `);
  });
});

function bytes(s: string): Uint8Array {
  return new TextEncoder().encode(s);
}
