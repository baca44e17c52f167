/**
 * Bad tensors: each malformed request gets a 400 whose message names the
 * input and says what was expected and what came, oversize bodies get 413,
 * and the backend keeps serving afterwards. A property test throws random
 * JSON and near-miss OIP requests at it (with random queue timeouts): never
 * a 5xx, save 504 `backend_timeout` for a request whose own timeout passed.
 * Metering: the units the backend attests under each meter (tokens, rows,
 * elements, requests), from the request as sent and the outputs' shapes, on
 * configs and on a real backend.
 */

import { serve } from '@hono/node-server';
import fc from 'fast-check';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodePayload, type AttestationClaims } from '../../../shared/jwt.ts';
import { tokenize } from '../../../shared/tokenizer.ts';
import { MeshError } from '../../../shared/errors.ts';
import { parseInferRequest } from '../../../shared/protocol.ts';
import type { ModelConfig } from '../../../gpu-backend/src/serving/model-config.ts';
import { meterAnswer, meterRuleOf, prepareInference } from '../../../gpu-backend/src/serving/tensors.ts';
import { demoRepository, dispatchToken, expectNo5xx, harness, inferBodies, type Harness, useDemoHarness } from '../helpers.ts';

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

describe('metering', () => {
  /** A model over `inputs` with one FP32 output of `outDims` per row, and `parameters`. */
  const model = (inputs: ModelConfig['input'], parameters?: ModelConfig['parameters'], outDims = [4]): ModelConfig => ({
    name: 'm',
    platform: 'onnxruntime_onnx',
    max_batch_size: 8,
    input: inputs,
    output: [{ name: 'y', data_type: 'TYPE_FP32', dims: outDims }],
    ...(parameters ? { parameters } : {}),
  });
  const ids = [{ name: 'input_ids', data_type: 'TYPE_INT64' as const, dims: [-1] }];
  const feats = [{ name: 'features', data_type: 'TYPE_FP32' as const, dims: [16] }];
  const text = { tokenizer: 'mesh-hash-v1', text_input: 'text', max_sequence_length: 128, pad_id: 0 };
  const out = (rows: number, cols = 4) => [{ shape: [rows, cols] }];
  const idsRequest = (shape: number[], data: number[]) => parseInferRequest({ inputs: [{ name: 'input_ids', datatype: 'INT64', shape, data }] });
  const textRequest = (texts: string[]) => parseInferRequest({ inputs: [{ name: 'text', datatype: 'BYTES', shape: [texts.length], data: texts }] });
  const featRequest = (rows: number) => parseInferRequest({ inputs: [{ name: 'features', datatype: 'FP32', shape: [rows, 16], data: zeros(rows * 16) }] });

  it('defaults to tokens for a model that takes token ids or text, and to rows for any other', () => {
    expect(meterRuleOf(model(ids, text))).toEqual({ meter: 'tokens', maxTokens: 128, padId: 0 });
    expect(meterRuleOf(model(ids, { tokenizer: 'mesh-hash-v1' }))).toEqual({ meter: 'tokens', maxTokens: 128, padId: 0 });
    expect(meterRuleOf(model(ids))).toEqual({ meter: 'rows' }); // INT64 input, but no tokenizer: not token ids
    expect(meterRuleOf(model(feats))).toEqual({ meter: 'rows' });
    expect(meterRuleOf(model(ids, { ...text, max_sequence_length: 16, pad_id: 3 }))).toEqual({ meter: 'tokens', maxTokens: 16, padId: 3 });
    expect(meterRuleOf(model(ids, { ...text, metering: 'requests' }))).toEqual({ meter: 'requests' });
    expect(() => meterRuleOf(model(feats, { metering: 'bytes' }))).toThrow(/parameters\.metering must be one of tokens, rows, elements, requests, got "bytes"/);
  });

  it('tokens: non-padding token ids, or the texts\' tokens as the backend tokenises them (truncated at max_sequence_length); output rows', () => {
    const embed = model(ids, { ...text, metering: 'tokens' }, [256]);
    expect(meterAnswer(embed, idsRequest([2, 4], [1, 17, 99, 0, 1, 42, 0, 0]), out(2, 256))).toEqual({ input: 5, output: 2 });
    const texts = ['Hello, edge mesh!', 'GPU backends answer fast', ''];
    const expected = texts.reduce((n, t) => n + tokenize(t).length, 0);
    expect(meterAnswer(embed, textRequest(texts), out(3, 256))).toEqual({ input: expected, output: 3 });
    const long = Array.from({ length: 200 }, (_, i) => `w${i}`).join(' ');
    expect(meterAnswer(embed, textRequest([long]), out(1, 256))).toEqual({ input: 128, output: 1 });
    const short = model(ids, { ...text, max_sequence_length: 8, pad_id: 7 }, [256]);
    expect(meterAnswer(short, textRequest([long]), out(1, 256))).toEqual({ input: 8, output: 1 });
    // With pad_id 7, id 7 is padding and id 0 is a token.
    expect(meterAnswer(short, idsRequest([1, 4], [1, 0, 7, 7]), out(1, 256))).toEqual({ input: 2, output: 1 });
  });

  it('rows: the batch rows in and out, whatever the tensors hold', () => {
    expect(meterAnswer(model(feats), featRequest(3), out(3))).toEqual({ input: 3, output: 3 });
    expect(meterAnswer(model(ids, { ...text, metering: 'rows' }), textRequest(['a b c', 'd']), out(2, 256))).toEqual({ input: 2, output: 2 });
  });

  it('elements: every element of every input, and of every output', () => {
    const pair = model([...feats, { name: 'mask', data_type: 'TYPE_BOOL', dims: [2] }], { metering: 'elements' });
    const request = parseInferRequest({
      inputs: [
        { name: 'features', datatype: 'FP32', shape: [3, 16], data: zeros(48) },
        { name: 'mask', datatype: 'BOOL', shape: [3, 2], data: [true, false, true, false, true, false] },
      ],
    });
    expect(meterAnswer(pair, request, [{ shape: [3, 4] }, { shape: [3] }])).toEqual({ input: 54, output: 15 });
    // A text is one element, however long.
    expect(meterAnswer(model(ids, { ...text, metering: 'elements' }), textRequest(['one two three', 'four']), out(2, 256))).toEqual({ input: 2, output: 512 });
  });

  it('requests: one in and one out, whatever the size', () => {
    expect(meterAnswer(model(feats, { metering: 'requests' }), featRequest(8), out(8))).toEqual({ input: 1, output: 1 });
  });

  describe('on a real backend: the attested units follow the model\'s meter', () => {
    let repo: Awaited<ReturnType<typeof demoRepository>>;
    let backend: Harness;
    beforeAll(async () => {
      repo = await demoRepository();
      // The classifier again under each meter it may be billed by.
      for (const metering of ['elements', 'requests']) {
        const name = `classifier-${metering}`;
        await mkdir(path.join(repo.dir, name, '1'), { recursive: true });
        await copyFile(path.join(repo.dir, 'classifier', '1', 'model.onnx'), path.join(repo.dir, name, '1', 'model.onnx'));
        await writeFile(
          path.join(repo.dir, name, 'config.json'),
          JSON.stringify({
            name,
            platform: 'onnxruntime_onnx',
            max_batch_size: 8,
            input: [{ name: 'features', data_type: 'TYPE_FP32', dims: [16] }],
            output: [{ name: 'probabilities', data_type: 'TYPE_FP32', dims: [4] }],
            parameters: { metering },
          }),
        );
      }
      backend = await harness({ repo: repo.dir, env: { MODELS: 'classifier,classifier-elements,classifier-requests' } });
    });
    afterAll(async () => {
      await backend?.backend.repository.close();
      await repo?.cleanup();
    });

    it.each([
      ['classifier', { input: 3, output: 3 }],
      ['classifier-elements', { input: 48, output: 12 }],
      ['classifier-requests', { input: 1, output: 1 }],
    ])('%s attests %j for 3 rows', async (name, units) => {
      const res = await backend.post(`/v2/models/${name}/infer`, features([3, 16]));
      expect(res.status).toBe(200);
      expect(decodePayload<AttestationClaims>(res.headers.get('x-provider-attestation')!)!.units).toEqual(units);
    });
  });
});
