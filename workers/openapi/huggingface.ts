/**
 * OpenAPI description of the Hugging Face-compatible routes
 * (workers/routes/huggingface.ts, docs/api.md section 2.7):
 * feature-extraction and sentence-similarity in JSON, image-to-text with the
 * image file as the body. Their errors are Hugging Face's `{ error, code }`,
 * and a 503 is sent as 429 (`operation` maps both, as workers/errors.ts does).
 */

import { about, arr, binary, bool, INFERENCE_ERRORS, INFERENCE_HEADERS, INFERENCE_PARAMS, nullable, num, obj, ref, str, type Family, type Op } from './build.ts';

/** Feature-extraction's parameters, each as far as the mesh honours it (`null` counts as absent). */
const featureParameters = {
  normalize: nullable(bool),
  truncate: about({ enum: [true, null] }, 'texts are always truncated to the model\'s max_sequence_length'),
  truncation_direction: { type: ['string', 'null'], pattern: '^[Rr][Ii][Gg][Hh][Tt]$' },
  prompt_name: { type: 'null' },
};

const image = { 'image/png': binary, 'image/jpeg': binary, 'application/octet-stream': binary };

const run = (summary: string, body: Record<string, unknown>): Op => ({
  summary,
  see: '2.7',
  auth: 'consumer',
  headers: ['x-wait-for-model', ...INFERENCE_PARAMS],
  body: { 'application/json': ref('HfRequest'), ...body },
  ok: {
    200: {
      json: { anyOf: [arr(num()), arr(arr(num())), obj({ generated_text: str() })] },
      headers: INFERENCE_HEADERS,
      description: 'feature-extraction: one vector per input (one for a single input); sentence-similarity: one score per sentence; image-to-text: the text read',
    },
  },
  errors: INFERENCE_ERRORS,
});

export const huggingface: Family = {
  tag: 'Hugging Face-compatible',
  paths: {
    '/models/{model}': { post: run('Run a task; the body tells which', image) },
    '/models/{model}/pipeline/{task}': {
      post: {
        ...run('Run a named task', { 'application/octet-stream': binary }),
        path: { task: { enum: ['feature-extraction', 'sentence-similarity', 'image-to-text'] } },
      },
    },
  },
  schemas: {
    HfRequest: obj(
      {
        inputs: {
          anyOf: [
            str(),
            arr(str(), { minItems: 1 }),
            arr(num(), { minItems: 1 }),
            arr(arr(num(), { minItems: 1 }), { minItems: 1 }),
            obj({ source_sentence: str(), sentences: arr(str()) }),
          ],
        },
      },
      {
        parameters: nullable(obj({}, featureParameters, true)),
        options: nullable(obj({}, { wait_for_model: nullable(bool), use_cache: nullable(bool) }, true)),
        ...featureParameters,
      },
      true,
    ),
  },
};
