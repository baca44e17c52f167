import { describe, expect, it } from 'vitest';
import { parseInferRequest, parseJson } from '../../shared/protocol.ts';
import { codeOf } from '../helpers/errors.ts';

describe('parseInferRequest', () => {
  it('accepts a well-formed request and flattens nested data row-major', () => {
    const req = parseInferRequest({
      id: 'r1',
      inputs: [{ name: 'features', shape: [2, 2], datatype: 'FP32', data: [[1, 2], [3, 4]] }],
      outputs: [{ name: 'probabilities' }],
    });
    expect(req.inputs[0]!.data).toEqual([1, 2, 3, 4]);
    expect(req.outputs).toEqual([{ name: 'probabilities' }]);
  });

  it('refuses each malformed request with a 400 and a stable code', () => {
    const input = { name: 'x', shape: [2], datatype: 'FP32', data: [1, 2] };
    expect(codeOf(() => parseInferRequest([]))).toBe('400:invalid_request');
    expect(codeOf(() => parseInferRequest({ inputs: [] }))).toBe('400:invalid_request');
    expect(codeOf(() => parseInferRequest({ inputs: [input], extra: 1 }))).toBe('400:invalid_request');
    expect(codeOf(() => parseInferRequest({ inputs: [{ ...input, shape: [3] }] }))).toBe('400:shape_mismatch');
    expect(codeOf(() => parseInferRequest({ inputs: [{ ...input, shape: [-1] }] }))).toBe('400:invalid_tensor');
    expect(codeOf(() => parseInferRequest({ inputs: [{ ...input, datatype: 'FP8' }] }))).toBe('400:invalid_tensor');
    expect(codeOf(() => parseInferRequest({ inputs: [{ ...input, data: [1, 'a'] }] }))).toBe('400:invalid_tensor');
    expect(codeOf(() => parseInferRequest({ inputs: [{ ...input, datatype: 'INT8', data: [1, 300] }] }))).toBe('400:invalid_tensor');
    expect(codeOf(() => parseInferRequest({ inputs: [{ ...input, datatype: 'INT64', data: [1, 1.5] }] }))).toBe('400:invalid_tensor');
    expect(codeOf(() => parseInferRequest({ inputs: [input, input] }))).toBe('400:invalid_tensor');
    expect(codeOf(() => parseInferRequest({ inputs: [{ ...input, shape: [1 << 20, 1 << 20] }] }))).toBe('400:invalid_tensor');
    expect(codeOf(() => parseJson('{'))).toBe('400:invalid_json');
  });

  it('names the offending input in its message', () => {
    try {
      parseInferRequest({ inputs: [{ name: 'input_ids', shape: [1, 3], datatype: 'INT64', data: [1, 2] }] });
      expect.unreachable();
    } catch (err) {
      expect((err as Error).message).toContain('"input_ids"');
      expect((err as Error).message).toContain('[1,3]');
    }
  });
});
