/**
 * OIP v2 metadata documents: the server's (`GET /v2`) and a model's
 * (`GET /v2/models/{m}`), built from the model's config.json. Shapes carry
 * `-1` for every variable dimension, the batch dimension first when the model
 * batches; a model that takes text also lists its BYTES text input.
 */

import type { ModelMetadata, TensorMetadata } from '../../../shared/protocol.ts';
import { datatypeOf, modelShape, type ModelConfig } from '../serving/model-config.ts';
import { textSpecOf } from '../serving/tensors.ts';

const SERVER_NAME = 'edge-inference-mesh-gpu-backend';
const SERVER_VERSION = '0.1.0';

interface ServerMetadata {
  name: string;
  version: string;
  extensions: string[];
}

export function serverMetadata(): ServerMetadata {
  return { name: SERVER_NAME, version: SERVER_VERSION, extensions: ['model_repository', 'metrics', 'binary_tensor_data'] };
}

/** Model metadata with the model's parameters (tokenizer, text input) as OIP `parameters`. */
interface BackendModelMetadata extends ModelMetadata {
  parameters?: Record<string, string | number | boolean>;
}

export function modelMetadata(config: ModelConfig, version: string | undefined): BackendModelMetadata {
  const inputs: TensorMetadata[] = config.input.map((t) => ({ name: t.name, datatype: datatypeOf(t), shape: modelShape(config, t) }));
  const text = textSpecOf(config);
  if (text) inputs.push({ name: text.name, datatype: 'BYTES', shape: config.max_batch_size > 0 ? [-1] : [1] });
  const meta: BackendModelMetadata = {
    name: config.name,
    versions: version === undefined ? [] : [version],
    platform: config.platform,
    inputs,
    outputs: config.output.map((t) => ({ name: t.name, datatype: datatypeOf(t), shape: modelShape(config, t) })),
  };
  if (config.parameters) meta.parameters = { ...config.parameters, max_batch_size: config.max_batch_size };
  else meta.parameters = { max_batch_size: config.max_batch_size };
  return meta;
}
