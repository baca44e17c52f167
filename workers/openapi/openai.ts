/**
 * OpenAPI description of the OpenAI-compatible routes
 * (workers/routes/openai.ts, docs/api.md section 2.6). Their errors are in
 * OpenAI's shape, `{ error: { message, type, param, code } }`
 * (workers/errors.ts), which `operation` documents from the same mapping.
 */

import { about, arr, INFERENCE_ERRORS, INFERENCE_HEADERS, INFERENCE_PARAMS, int, num, obj, oneOfValues, ref, str, type Family } from './build.ts';

const rows = { minItems: 1, maxItems: 2048 };
const model = obj({ id: str(), object: { const: 'model' }, created: int(), owned_by: str() });

export const openai: Family = {
  tag: 'OpenAI-compatible',
  paths: {
    '/v1/embeddings': {
      post: {
        summary: 'Create embeddings',
        see: '2.6',
        auth: 'consumer',
        headers: INFERENCE_PARAMS,
        body: { 'application/json': ref('EmbeddingsRequest') },
        ok: { 200: { json: ref('EmbeddingsResponse'), headers: INFERENCE_HEADERS } },
        errors: INFERENCE_ERRORS,
      },
    },
    '/v1/models': {
      get: {
        summary: 'List the models served now',
        see: '2.6',
        auth: 'consumer',
        headers: ['x-mesh-region'],
        ok: { 200: { json: obj({ object: { const: 'list' }, data: arr(model) }) } },
        errors: [400],
      },
    },
    '/v1/models/{model}': {
      get: { summary: 'Retrieve a model', see: '2.6', auth: 'consumer', headers: ['x-mesh-region'], ok: { 200: { json: model } }, errors: [400, 404] },
    },
  },
  schemas: {
    EmbeddingsRequest: obj(
      {
        model: str({ minLength: 1 }),
        input: {
          anyOf: [str(), arr(str(), rows), arr(num(), { minItems: 1 }), arr(arr(num(), { minItems: 1 }), rows)],
        },
      },
      {
        encoding_format: oneOfValues('float', 'base64'),
        dimensions: about(int(), "only the model's own output width"),
        user: about(str(), 'ignored'),
      },
      true,
    ),
    EmbeddingsResponse: obj({
      object: { const: 'list' },
      data: arr(obj({ object: { const: 'embedding' }, index: int(), embedding: { anyOf: [arr(num()), str({ contentEncoding: 'base64' })] } })),
      model: str(),
      usage: obj({ prompt_tokens: int(), total_tokens: int() }),
    }),
  },
};
