/**
 * OpenAPI description of the Open Inference Protocol v2 routes
 * (workers/routes/oip.ts, docs/api.md sections 2.4 and 2.5): infer, in JSON
 * or the binary tensor extension, and model metadata. The request schema
 * uses the datatypes of shared/protocol.ts, whose parser checks what JSON
 * Schema cannot say (data against shape, element ranges per datatype).
 */

import { DATATYPES } from '../../shared/protocol.ts';
import { HEADER_LENGTH_HEADER } from '../../shared/binary.ts';
import {
  about,
  arr,
  binary,
  bool,
  INFERENCE_ERRORS,
  INFERENCE_HEADERS,
  INFERENCE_PARAMS,
  int,
  obj,
  ref,
  str,
  type Family,
  type Op,
} from './build.ts';

const datatype = { type: 'string', enum: DATATYPES };
const params = obj({});

const infer: Op = {
  summary: 'Run a model (OIP v2)',
  see: '2.4',
  auth: 'consumer',
  headers: [HEADER_LENGTH_HEADER, ...INFERENCE_PARAMS],
  body: {
    'application/json': ref('InferRequest'),
    'application/octet-stream': about(
      binary,
      `The binary tensor extension (with ${HEADER_LENGTH_HEADER}): an InferRequest JSON header, then the bytes of each input that declares parameters.binary_data_size, in order.`,
    ),
  },
  ok: {
    200: {
      content: { 'application/json': ref('InferResponse'), 'application/octet-stream': about(binary, 'outputs asked for in the binary tensor extension') },
      headers: [...INFERENCE_HEADERS, HEADER_LENGTH_HEADER],
    },
  },
  errors: INFERENCE_ERRORS,
  backendCodes: true,
};

const metadata: Op = {
  summary: "A model's metadata",
  see: '2.5',
  auth: 'consumer',
  headers: ['x-mesh-region'],
  ok: { 200: { json: ref('ModelMetadata') } },
  errors: [400, 404, 502, 503, 504],
};

const tensor = obj({ name: str(), datatype, shape: arr(int({ minimum: -1 })) });

export const oip: Family = {
  tag: 'Open Inference Protocol v2',
  paths: {
    '/v2/models/{model}/infer': { post: infer },
    '/v2/models/{model}/versions/{version}/infer': { post: infer },
    '/v2/models/{model}': { get: metadata },
    '/v2/models/{model}/versions/{version}': { get: metadata },
  },
  schemas: {
    InferRequest: obj(
      { inputs: arr(ref('InferInput'), { minItems: 1 }) },
      { id: str(), parameters: obj({}, { binary_data_output: bool }), outputs: arr(obj({ name: str() }, { parameters: obj({}, { binary_data: bool }) }, true)) },
      true,
    ),
    InferInput: about(
      obj(
        { name: str({ minLength: 1 }), shape: arr(int({ minimum: 0 })), datatype },
        {
          parameters: obj({}, { binary_data_size: int({ minimum: 0 }) }),
          data: about({ type: 'array' }, 'Row-major, nested lists flattened: as many elements as shape holds, each of the datatype and in its range; absent with binary_data_size.'),
        },
        true,
      ),
      'Names are unique within a request.',
    ),
    InferResponse: obj(
      { model_name: str(), outputs: arr(obj({ name: str(), datatype, shape: arr(int({ minimum: 0 })) }, { data: { type: 'array' }, parameters: params })) },
      { model_version: str(), id: str(), parameters: params },
    ),
    ModelMetadata: obj(
      { name: str(), versions: arr(str()), platform: str(), inputs: arr(tensor), outputs: arr(tensor) },
      { parameters: params },
    ),
  },
};
