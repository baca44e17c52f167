/**
 * Bad tensors: each malformed request gets a 400 whose message names the
 * input and says what was expected and what came, oversize bodies get 413,
 * and the backend keeps serving afterwards. A property test throws random
 * JSON and near-miss OIP requests at it (with random queue timeouts): never
 * a 5xx, save 504 `backend_timeout` for a request whose own timeout passed.
 */

import { serve } from '@hono/node-server';
import fc from 'fast-check';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { MeshError } from '../../../shared/errors.ts';
import { parseInferRequest } from '../../../shared/protocol.ts';
import type { ModelConfig } from '../../../gpu-backend/src/serving/model-config.ts';
import { prepareInference } from '../../../gpu-backend/src/serving/tensors.ts';
import { dispatchToken, expectNo5xx, inferBodies, type Harness, useDemoHarness } from '../helpers.ts';

let h: Harness;
useDemoHarness((built) => (h = built));

const zeros = (n: number) => new Array<number>(n).fill(0);
const features = (shape: number[], data: unknown[] = zeros(shape.reduce((a, b) => a * b, 1)), datatype = 'FP32') => ({
  inputs: [{ name: 'features', datatype, shape, data }],
});

async function expectServing() {
  const res = await h.post('/v2/models/classifier/infer', features([1, 16]));
  expect(res.status).toBe(200);
}

interface Case {
  name: string;
  model: string;
  body: unknown;
  raw?: string;
  code: string;
  message: RegExp;
}

const cases: Case[] = [
  {
    name: 'wrong datatype',
    model: 'classifier',
    body: features([1, 16], zeros(16), 'FP64'),
    code: 'datatype_mismatch',
    message: /^Input "features": expected datatype FP32, got FP64\.$/,
  },
  {
    name: 'wrong shape',
    model: 'classifier',
    body: features([2, 15]),
    code: 'shape_mismatch',
    message: /^Input "features": expected shape \[-1,16\], got \[2,15\]\.$/,
  },
  {
    name: 'wrong rank',
    model: 'classifier',
    body: features([16]),
    code: 'shape_mismatch',
    message: /^Input "features": expected shape \[-1,16\], got \[16\]\.$/,
  },
  {
    name: 'unknown input',
    model: 'classifier',
    body: { inputs: [{ name: 'pixels', datatype: 'FP32', shape: [1, 16], data: zeros(16) }] },
    code: 'unknown_input',
    message: /Input "pixels" is not an input of model "classifier"; it takes features \(FP32 \[-1,16\]\)/,
  },
  {
    name: 'non-numeric data',
    model: 'classifier',
    body: features([1, 16], [...zeros(15), 'abc']),
    code: 'invalid_tensor',
    message: /Input "features": element 15 is "abc", not a valid FP32 value/,
  },
  {
    name: 'data that does not fill the shape',
    model: 'classifier',
    body: features([1, 16], zeros(15)),
    code: 'shape_mismatch',
    message: /Input "features": shape \[1,16\] needs 16 elements, data has 15/,
  },
  {
    name: 'batch bigger than max_batch_size',
    model: 'classifier',
    body: features([65, 16]),
    code: 'shape_mismatch',
    message: /Input "features": batch size 65 exceeds the max_batch_size 64 of model "classifier"/,
  },
  {
    name: 'invalid JSON',
    model: 'classifier',
    body: undefined,
    raw: '{"inputs": [',
    code: 'invalid_json',
    message: /not valid JSON/,
  },
  {
    name: 'unknown field on the request',
    model: 'classifier',
    body: { ...features([1, 16]), priority: 'high' },
    code: 'invalid_request',
    message: /Unknown field "priority" in the request/,
  },
  {
    name: 'unknown field on an input',
    model: 'classifier',
    body: { inputs: [{ ...features([1, 16]).inputs[0], colour: 'red' }] },
    code: 'invalid_request',
    message: /Unknown field "colour" in inputs\[0\]/,
  },
  {
    name: 'unknown requested output',
    model: 'classifier',
    body: { ...features([1, 16]), outputs: [{ name: 'logits' }] },
    code: 'invalid_request',
    message: /Requested output "logits" is not an output of model "classifier"/,
  },
  {
    name: 'text with a numeric datatype',
    model: 'embed',
    body: { inputs: [{ name: 'text', datatype: 'FP32', shape: [1], data: [1] }] },
    code: 'datatype_mismatch',
    message: /^Input "text": expected datatype BYTES \(text\), got FP32\.$/,
  },
  {
    name: 'token id outside the vocabulary',
    model: 'embed',
    body: { inputs: [{ name: 'input_ids', datatype: 'INT64', shape: [1, 2], data: [1, 9000] }] },
    code: 'invalid_tensor',
    message: /Input "input_ids": element 1 is 9000, not a token id/,
  },
  {
    name: 'both text and token ids',
    model: 'embed',
    body: {
      inputs: [
        { name: 'text', datatype: 'BYTES', shape: [1], data: ['hi'] },
        { name: 'input_ids', datatype: 'INT64', shape: [1, 1], data: [1] },
      ],
    },
    code: 'invalid_request',
    message: /Inputs "text" and "input_ids" are alternatives/,
  },
  {
    name: 'sequence longer than max_sequence_length',
    model: 'embed',
    body: { inputs: [{ name: 'input_ids', datatype: 'INT64', shape: [1, 129], data: new Array(129).fill(5) }] },
    code: 'shape_mismatch',
    message: /Input "input_ids": sequence length 129 exceeds max_sequence_length 128/,
  },
];

describe('bad tensors', () => {
  for (const c of cases) {
    it(`answers 400 ${c.code} for ${c.name}, then keeps serving`, async () => {
      const res = await h.post(`/v2/models/${c.model}/infer`, c.body, c.raw === undefined ? {} : { raw: c.raw });
      expect(res.status).toBe(400);
      const { error } = (await res.json()) as { error: { code: string; message: string } };
      expect(error.code).toBe(c.code);
      expect(error.message).toMatch(c.message);
      expect(res.headers.get('x-provider-attestation')).toBeNull();
      await expectServing();
    });
  }

  it('names a missing input (model with two inputs)', () => {
    const config: ModelConfig = {
      name: 'pair',
      platform: 'onnxruntime_onnx',
      max_batch_size: 8,
      input: [
        { name: 'a', data_type: 'TYPE_FP32', dims: [4] },
        { name: 'b', data_type: 'TYPE_INT32', dims: [-1] },
      ],
      output: [{ name: 'y', data_type: 'TYPE_FP32', dims: [1] }],
    };
    const request = parseInferRequest({ inputs: [{ name: 'a', datatype: 'FP32', shape: [1, 4], data: [1, 2, 3, 4] }] });
    const err = (() => {
      try {
        prepareInference(config, request);
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(MeshError);
    expect((err as MeshError).code).toBe('missing_input');
    expect((err as MeshError).message).toBe('Input "b" is missing: model "pair" needs b (INT32 [-1,-1]).');
  });

  it('answers 413 body_too_large for a body over MAX_BODY_BYTES, streamed or with content-length', async () => {
    const raw = JSON.stringify(features([1, 16], new Array(16).fill(0.123456789).concat(new Array(40_000).fill(0))));
    const streamed = await h.post('/v2/models/classifier/infer', undefined, { raw });
    expect(streamed.status).toBe(413);
    expect(await streamed.json()).toEqual({
      error: { code: 'body_too_large', message: `The request body is larger than this backend's limit of ${64 * 1024} bytes.` },
    });

    const server = serve({ fetch: h.backend.app.fetch, hostname: '127.0.0.1', port: 0 }) as Server;
    try {
      const { port } = await new Promise<AddressInfo>((resolve) => server.once('listening', () => resolve(server.address() as AddressInfo)));
      const token = await dispatchToken({ model: 'classifier', body: raw, key: h.mesh });
      const res = await fetch(`http://127.0.0.1:${port}/v2/models/classifier/infer`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'content-length': String(raw.length) },
        body: raw,
      });
      expect(res.status).toBe(413);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe('body_too_large');
    } finally {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
    await expectServing();
  });

  it('never answers 5xx to random bodies or near-miss requests', async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom('classifier', 'embed'), inferBodies(), async (model, body) => {
        const res = await h.post(`/v2/models/${model}/infer`, body);
        await expectNo5xx(res, body);
      }),
      { numRuns: 200 },
    );
    await expectServing();
  });
});
