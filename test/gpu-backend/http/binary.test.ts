/**
 * The backend takes requests in the binary tensor extension
 * (Inference-Header-Content-Length): the same answer as the same tensors in
 * JSON, the dispatch token bound to the exact bytes, and the same 400s for
 * bad data (non-finite floats, lengths that do not add up); and answers in it
 * when the request asks (`binary_data_output`, an output's `binary_data`).
 */

import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { encodeBinaryBody, encodeBytesElements } from '../../../shared/binary.ts';
import { errorCode, useDemoHarness, type Harness } from '../helpers.ts';

let h: Harness;
useDemoHarness((harness) => {
  h = harness;
});

const features = Float32Array.from({ length: 32 }, (_, i) => (i - 16) / 8);

function binary(header: unknown, data: Uint8Array[]): { raw: Uint8Array; headers: Record<string, string> } {
  const { body, headerLength } = encodeBinaryBody(header, data);
  return { raw: body, headers: { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(headerLength) } };
}

describe('binary tensor requests', () => {
  it('answer FP32 features exactly as the same features in JSON', async () => {
    const json = await h.post('/v2/models/classifier/infer', { inputs: [{ name: 'features', shape: [2, 16], datatype: 'FP32', data: Array.from(features) }] });
    const header = { inputs: [{ name: 'features', shape: [2, 16], datatype: 'FP32', parameters: { binary_data_size: features.byteLength } }] };
    const bin = await h.post('/v2/models/classifier/infer', undefined, binary(header, [new Uint8Array(features.buffer)]));
    expect(bin.status).toBe(200);
    expect(json.status).toBe(200);
    expect(await bin.json()).toEqual(await json.json());
  });

  it('tokenize binary texts exactly as JSON texts', async () => {
    const texts = ['edge inference', 'mesh'];
    const json = await h.post('/v2/models/embed/infer', { inputs: [{ name: 'text', shape: [2], datatype: 'BYTES', data: texts }] });
    const data = encodeBytesElements(texts.map((t) => new TextEncoder().encode(t)));
    const header = { inputs: [{ name: 'text', shape: [2], datatype: 'BYTES', parameters: { binary_data_size: data.byteLength } }] };
    const bin = await h.post('/v2/models/embed/infer', undefined, binary(header, [data]));
    expect(bin.status).toBe(200);
    expect(await bin.json()).toEqual(await json.json());
  });

  it('answer in the binary extension when asked: the same values as JSON, the header length in Inference-Header-Content-Length, the attestation over every byte', async () => {
    const inputs = [{ name: 'features', shape: [2, 16], datatype: 'FP32', data: Array.from(features) }];
    const json = (await (await h.post('/v2/models/classifier/infer', { inputs })).json()) as { outputs: { data: number[] }[] };
    const res = await h.post('/v2/models/classifier/infer', { inputs, parameters: { binary_data_output: true } });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/octet-stream');
    const n = Number(res.headers.get('inference-header-content-length'));
    const bytes = new Uint8Array(await res.arrayBuffer());
    const header = JSON.parse(new TextDecoder().decode(bytes.subarray(0, n))) as { outputs: { name: string; shape: number[]; parameters: { binary_data_size: number }; data?: unknown }[] };
    expect(header.outputs[0]).toMatchObject({ name: 'probabilities', shape: [2, 4], parameters: { binary_data_size: 32 } });
    expect(header.outputs[0]!.data).toBeUndefined();
    expect(bytes.byteLength).toBe(n + 32);
    const values = Array.from(new Float32Array(bytes.slice(n).buffer));
    expect(values).toEqual(json.outputs[0]!.data.map((v) => Math.fround(v)));
    const attestation = JSON.parse(Buffer.from(res.headers.get('x-provider-attestation')!.split('.')[1]!, 'base64url').toString()) as { output_sha256: string };
    expect(attestation.output_sha256).toBe(createHash('sha256').update(bytes).digest('hex'));
    // An output's own binary_data: false wins over the request's binary_data_output.
    const mixed = await h.post('/v2/models/classifier/infer', { inputs, parameters: { binary_data_output: true }, outputs: [{ name: 'probabilities', parameters: { binary_data: false } }] });
    expect(mixed.headers.get('inference-header-content-length')).toBeNull();
    expect(((await mixed.json()) as { outputs: { data: number[] }[] }).outputs[0]!.data).toEqual(json.outputs[0]!.data);
  });

  it('refuse a non-finite float, a short body and a bad header length with 400s naming the problem', async () => {
    const nan = features.slice(0, 16);
    nan[3] = Number.NaN;
    const header = (size: number) => ({ inputs: [{ name: 'features', shape: [1, 16], datatype: 'FP32', parameters: { binary_data_size: size } }] });
    const bad = await h.post('/v2/models/classifier/infer', undefined, binary(header(64), [new Uint8Array(nan.buffer)]));
    expect(bad.status).toBe(400);
    expect(await bad.text()).toContain('element 3');

    const short = binary(header(64), [new Uint8Array(60)]);
    const res = await h.post('/v2/models/classifier/infer', undefined, short);
    expect(res.status).toBe(400);
    expect(await errorCode(res)).toBe('invalid_tensor');

    const ok = binary(header(64), [new Uint8Array(64)]);
    const wrongLength = await h.post('/v2/models/classifier/infer', undefined, { ...ok, headers: { ...ok.headers, 'inference-header-content-length': '100000' } });
    expect(wrongLength.status).toBe(400);
    expect(await errorCode(wrongLength)).toBe('invalid_request');
  });
});
