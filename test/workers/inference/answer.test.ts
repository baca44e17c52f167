/**
 * What the edge accepts as a backend's answer (workers/inference/answer.ts):
 * JSON outputs checked element by element, binary-extension outputs measured
 * against their shapes without being decoded, every byte of a binary answer
 * accounted for, and one row per request row only for models that batch.
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
