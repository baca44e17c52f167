/**
 * What the edge accepts as a backend's answer (workers/inference/answer.ts):
 * JSON outputs checked element by element, binary-extension outputs measured
 * against their shapes without being decoded, every byte of a binary answer
 * accounted for, and one row per request row only for models that batch.
 * The datatypes of issue 14 (part 3): a JSON UINT8/16/32/64 element must be
 * a non-negative integer, an FP16/BF16 element any number; their binary
 * outputs are measured at 2 (UINT16, FP16, BF16), 4 (UINT32) and 8 (UINT64)
 * bytes an element.
 */

import { describe, expect, it } from 'vitest';
import { encodeBinaryBody, encodeBytesElements } from '../../../shared/binary.ts';
import type { ModelMetadata } from '../../../shared/protocol.ts';
import { checkAnswer, type AnswerExpectation } from '../../../workers/inference/answer.ts';

const utf8 = (s: string) => new TextEncoder().encode(s);
const expect1: AnswerExpectation = { model: 'm', rows: 1 };

function binaryAnswer(outputs: { name: string; datatype: string; shape: number[]; bytes: Uint8Array }[], extra = 0) {
  const header = {
    model_name: 'm',
    outputs: outputs.map((o) => ({ name: o.name, datatype: o.datatype, shape: o.shape, parameters: { binary_data_size: o.bytes.byteLength } })),
  };
  const { body, headerLength } = encodeBinaryBody(header, [...outputs.map((o) => o.bytes), new Uint8Array(extra)]);
  return { body, headerLength: String(headerLength) };
}

describe('checkAnswer', () => {
  it('accepts a binary answer and hands its outputs over as views of the bytes, undecoded', () => {
    const floats = new Float32Array([0.25, 0.75]);
    const texts = encodeBytesElements([utf8('a'), utf8('bc')]);
    const { body, headerLength } = binaryAnswer([
      { name: 'p', datatype: 'FP32', shape: [1, 2], bytes: new Uint8Array(floats.buffer) },
      { name: 't', datatype: 'BYTES', shape: [2], bytes: texts },
    ]);
    const answer = checkAnswer(body, expect1, headerLength);
    if (typeof answer === 'string') throw new Error(answer);
    expect(answer.outputs.map((o) => [o.name, o.shape, o.data.length, o.binary?.byteLength])).toEqual([
      ['p', [1, 2], 0, 8],
      ['t', [2], 0, texts.byteLength],
    ]);
    expect(answer.outputs[0]!.binary!.buffer).toBe(body.buffer);
  });

  it('refuses binary sizes that do not fit the shape, bytes no output declares, and a bad header length', () => {
    const eight = new Uint8Array(8);
    const wrong = binaryAnswer([{ name: 'p', datatype: 'FP32', shape: [3], bytes: eight }]);
    expect(checkAnswer(wrong.body, expect1, wrong.headerLength)).toMatch(/8 bytes for shape \[3\] of FP32/);
    const extra = binaryAnswer([{ name: 'p', datatype: 'FP32', shape: [2], bytes: eight }], 3);
    expect(checkAnswer(extra.body, expect1, extra.headerLength)).toMatch(/3 bytes no output declares/);
    expect(checkAnswer(extra.body, expect1, '999999')).toMatch(/Inference-Header-Content-Length/);
    const frames = binaryAnswer([{ name: 't', datatype: 'BYTES', shape: [2], bytes: encodeBytesElements([utf8('x')]) }]);
    expect(checkAnswer(frames.body, expect1, frames.headerLength)).toMatch(/BYTES elements/);
  });

  it('refuses binary_data_size in a JSON answer', () => {
    const body = utf8(JSON.stringify({ model_name: 'm', outputs: [{ name: 'p', datatype: 'FP32', shape: [1], parameters: { binary_data_size: 4 } }] }));
    expect(checkAnswer(body, expect1)).toMatch(/outside a binary answer/);
  });

  it('accepts unsigned integers that are non-negative integers only, and FP16/BF16 elements that are numbers', () => {
    const json = (datatype: string, data: unknown[]) =>
      checkAnswer(utf8(JSON.stringify({ model_name: 'm', outputs: [{ name: 'o', datatype, shape: [1, data.length], data }] })), expect1);
    for (const datatype of ['UINT8', 'UINT16', 'UINT32', 'UINT64']) {
      expect(typeof json(datatype, [0, 1, 65535, 2 ** 53])).toBe('object');
      expect(json(datatype, [0, -1])).toMatch(new RegExp(`element 1 is not ${datatype}`));
      expect(json(datatype, [0.5])).toMatch(new RegExp(`element 0 is not ${datatype}`));
      expect(json(datatype, ['1'])).toMatch(new RegExp(`element 0 is not ${datatype}`));
    }
    for (const datatype of ['FP16', 'BF16']) {
      expect(typeof json(datatype, [0.5, -65504, 1e-7, 3.3895313892515355e38])).toBe('object');
      expect(json(datatype, [0, null])).toMatch(new RegExp(`element 1 is not ${datatype}`));
      expect(json(datatype, [true])).toMatch(new RegExp(`element 0 is not ${datatype}`));
    }
  });

  it('measures binary outputs of the new datatypes at their element sizes', () => {
    for (const [datatype, size] of [['UINT16', 2], ['UINT32', 4], ['UINT64', 8], ['FP16', 2], ['BF16', 2]] as const) {
      const fits = binaryAnswer([{ name: 'o', datatype, shape: [1, 3], bytes: new Uint8Array(3 * size) }]);
      expect(typeof checkAnswer(fits.body, expect1, fits.headerLength)).toBe('object');
      const short = binaryAnswer([{ name: 'o', datatype, shape: [1, 3], bytes: new Uint8Array(3 * size - 1) }]);
      expect(checkAnswer(short.body, expect1, short.headerLength)).toMatch(new RegExp(`${3 * size - 1} bytes for shape \\[1,3\\] of ${datatype}`));
    }
  });

  it('wants one row per request row from a batching model only', () => {
    const answer = utf8(JSON.stringify({ model_name: 'm', outputs: [{ name: 'text', datatype: 'BYTES', shape: [3], data: ['a', 'b', 'c'] }] }));
    const meta = (maxBatch: number): ModelMetadata & { parameters: Record<string, number> } => ({
      name: 'm',
      versions: ['1'],
      platform: 'pipeline',
      inputs: [{ name: 'image', datatype: 'BYTES', shape: [1] }],
      outputs: [{ name: 'text', datatype: 'BYTES', shape: [-1] }],
      parameters: { max_batch_size: maxBatch },
    });
    expect(typeof checkAnswer(answer, { model: 'm', rows: 1, metadata: meta(0) })).toBe('object');
    expect(checkAnswer(answer, { model: 'm', rows: 1, metadata: meta(8) })).toMatch(/3 rows for 1 asked/);
  });
});
