/**
 * Translation between the friendlier APIs (OpenAI, Hugging Face) and OIP v2:
 * texts or numeric rows become the model's BYTES or numeric input, as its
 * metadata names them; the first output tensor comes back as one row per input.
 */

import { encodeBinaryBody, encodeBytesElements } from '../../shared/binary.ts';
import { MeshError } from '../../shared/errors.ts';
import type { InferRequest, InferResponse, ModelMetadata, TensorMetadata } from '../../shared/protocol.ts';

const encoder = new TextEncoder();

export type Rows = string[] | number[][];

/** True for a non-empty string[] or a non-empty number[][] with non-empty rows. */
export function isRows(v: unknown): v is Rows {
  if (!Array.isArray(v) || v.length === 0) return false;
  if (v.every((x) => typeof x === 'string')) return true;
  return v.every((row) => Array.isArray(row) && row.length > 0 && row.every((x) => typeof x === 'number' && Number.isFinite(x)));
}

function inputFor(meta: ModelMetadata, text: boolean): TensorMetadata {
  const input = text ? meta.inputs.find((i) => i.datatype === 'BYTES') : meta.inputs.find((i) => i.datatype !== 'BYTES');
  if (!input) {
    throw new MeshError('invalid_request', `Model "${meta.name}" does not take ${text ? 'text' : 'numeric'} input.`);
  }
  return input;
}

/** The OIP request for `rows` (texts, or numeric rows right-padded with the model's pad id), and its bytes. */
export function oipRequest(meta: ModelMetadata, rows: Rows): { request: InferRequest; bytes: Uint8Array } {
  const text = typeof rows[0] === 'string';
  const input = inputFor(meta, text);
  let request: InferRequest;
  if (text) {
    request = { inputs: [{ name: input.name, shape: [rows.length], datatype: 'BYTES', data: rows as string[] }] };
  } else {
    const numeric = rows as number[][];
    const width = Math.max(...numeric.map((r) => r.length));
    const fixed = input.shape.at(-1);
    if (fixed !== undefined && fixed > 0 && numeric.some((r) => r.length !== fixed)) {
      throw new MeshError('shape_mismatch', `Input "${input.name}" of "${meta.name}" takes rows of ${fixed} numbers.`);
    }
    const pad = Number((meta as { parameters?: Record<string, unknown> }).parameters?.pad_id ?? 0);
    const data: number[] = [];
    for (const r of numeric) {
      data.push(...r);
      for (let i = r.length; i < width; i++) data.push(pad);
    }
    request = { inputs: [{ name: input.name, shape: [numeric.length, width], datatype: input.datatype, data }] };
  }
  return { request, bytes: encoder.encode(JSON.stringify(request)) };
}

/** The first output of a checked OIP answer, one flat row per input row. */
export function outputRows(response: InferResponse): number[][] {
  const out = response.outputs[0];
  if (!out) return [];
  const n = out.shape[0] ?? 1;
  const width = out.data.length / Math.max(1, n);
  const data = out.data as number[];
  return Array.from({ length: n }, (_, i) => data.slice(i * width, (i + 1) * width));
}

/** True when `bytes` start like a PNG or a JPEG file. */
export function looksLikeImage(bytes: Uint8Array): boolean {
  const png = bytes.length >= 8 && bytes[0] === 0x89 && bytes[1] === 0x50 && bytes[2] === 0x4e && bytes[3] === 0x47;
  const jpeg = bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff;
  return png || jpeg;
}

/**
 * The OIP request for one encoded image (an image-to-text call): the model's
 * BYTES input of shape [1], its data in the binary tensor extension, so the
 * image's bytes travel as they are. Returns the request (its input's
 * `binary` set), the body and its JSON header's length.
 */
export function imageRequest(meta: ModelMetadata, image: Uint8Array): { request: InferRequest; bytes: Uint8Array; headerLength: number } {
  if (!looksLikeImage(image)) throw new MeshError('invalid_image', 'The body is not a PNG or JPEG image (send the image file\'s bytes as the body).');
  const input = meta.inputs.find((i) => i.datatype === 'BYTES');
  if (!input) throw new MeshError('invalid_request', `Model "${meta.name}" does not take an image.`);
  const data = encodeBytesElements([image]);
  const inferInput = { name: input.name, shape: [1], datatype: 'BYTES' as const, parameters: { binary_data_size: data.byteLength } };
  const { body, headerLength } = encodeBinaryBody({ inputs: [inferInput] }, [data]);
  return { request: { inputs: [{ ...inferInput, data: [], binary: data }] }, bytes: body, headerLength };
}

/** The text of an image-to-text answer: its first BYTES output's elements (one per line), joined by newlines. */
export function answerText(response: InferResponse): string {
  const out = response.outputs.find((o) => o.datatype === 'BYTES');
  return out ? (out.data as string[]).join('\n') : '';
}
