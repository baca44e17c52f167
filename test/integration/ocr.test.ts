/**
 * A real trained model through the whole mesh: the `ocr` pipeline (PaddleOCR
 * v4 detection and recognition in ONNX Runtime, on a real backend process)
 * reads a rendered image of known text sent to the edge in workerd, as OIP v2
 * with the image in the binary tensor extension, as a JSON data URL, and as
 * a Hugging Face image-to-text call from `@huggingface/inference`; each answer
 * carries a receipt over the exact bytes received.
 */

import { InferenceClient } from '@huggingface/inference';
import { createRemoteJWKSet, jwtVerify } from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';
import { sha256Hex } from '../../receipts/hash.ts';
import { encodeBinaryBody, encodeBytesElements } from '../../shared/binary.ts';
import { TYP, type ReceiptClaims } from '../../shared/jwt.ts';
import type { LocalMesh } from '../../scripts/local-mesh.ts';
import { useMesh } from '../helpers/mesh.ts';
import { encodeJpeg, encodePng, renderText } from '../helpers/text-image.ts';

const local = useMesh({
  backends: [{ id: 'fra-1', region: 'eu-west', provider: 'provider-fra', models: ['ocr-det', 'ocr-rec', 'ocr'] }],
  edgeVars: { SNAPSHOT_REFRESH_MS: '500' },
  backendEnv: { HEARTBEAT_INTERVAL_MS: '500' },
});
let mesh: LocalMesh;
beforeAll(() => {
  mesh = local.mesh();
});

const LINES = ['HELLO WORLD', '12345'];
const png = encodePng(renderText(LINES));

interface OcrAnswer {
  model_name: string;
  outputs: { name: string; datatype: string; shape: number[]; data: (string | number)[] }[];
}

function post(path: string, body: Uint8Array | string, headers: Record<string, string>): Promise<Response> {
  return fetch(`${mesh.edgeUrl}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${mesh.consumerKey}`, 'x-mesh-dev-colo': 'FRA', ...headers },
    body,
  });
}

/** An OIP request carrying `image` in the binary tensor extension. */
function binaryRequest(image: Uint8Array): { body: Uint8Array; headerLength: number } {
  const data = encodeBytesElements([image]);
  return encodeBinaryBody({ inputs: [{ name: 'image', shape: [1], datatype: 'BYTES', parameters: { binary_data_size: data.byteLength } }] }, [data]);
}

async function receiptOf(res: Response): Promise<ReceiptClaims> {
  const jwks = createRemoteJWKSet(new URL(`${mesh.edgeUrl}/.well-known/jwks.json`));
  const { payload } = await jwtVerify<ReceiptClaims>(res.headers.get('x-mesh-receipt')!, jwks, { algorithms: ['EdDSA'], typ: TYP.receipt, issuer: mesh.edgeUrl });
  return payload;
}

describe('the ocr pipeline through the edge', () => {
  it('reads the text of a PNG sent in the binary tensor extension, with a receipt over the answer', async () => {
    const { body, headerLength } = binaryRequest(png);
    const res = await post('/v2/models/ocr/infer', body, { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(headerLength) });
    const bytes = new Uint8Array(await res.arrayBuffer());
    expect(res.status, new TextDecoder().decode(bytes)).toBe(200);
    const answer = JSON.parse(new TextDecoder().decode(bytes)) as OcrAnswer;
    expect(answer.model_name).toBe('ocr');
    const text = answer.outputs.find((o) => o.name === 'text')!;
    expect(text.data).toEqual(LINES);
    const box = answer.outputs.find((o) => o.name === 'box')!;
    expect(box.shape).toEqual([2, 4]);
    const receipt = await receiptOf(res);
    expect(receipt.output_sha256).toBe(await sha256Hex(bytes));
    expect(receipt.input_sha256).toBe(await sha256Hex(body));
    expect(receipt).toMatchObject({ model: 'ocr', backend: 'fra-1', units: { input: 1, output: 1 } });
  });

  it('reads a JPEG sent in JSON as a data URL', async () => {
    const jpeg = encodeJpeg(renderText(['OCR 2026']));
    const url = `data:image/jpeg;base64,${Buffer.from(jpeg).toString('base64')}`;
    const body = JSON.stringify({ inputs: [{ name: 'image', shape: [1], datatype: 'BYTES', data: [url] }], outputs: [{ name: 'text' }] });
    const res = await post('/v2/models/ocr/infer', body, { 'content-type': 'application/json' });
    expect(res.status).toBe(200);
    const answer = (await res.json()) as OcrAnswer;
    expect(answer.outputs.map((o) => o.name)).toEqual(['text']);
    expect(answer.outputs[0]!.data).toEqual(['OCR 2026']);
  });

  it('answers a Hugging Face image-to-text call from @huggingface/inference', async () => {
    const client = new InferenceClient(mesh.consumerKey, { endpointUrl: `${mesh.edgeUrl}/models/ocr` });
    const out = await client.imageToText({ data: new Blob([png], { type: 'image/png' }) });
    expect(out.generated_text).toBe(LINES.join('\n'));
  });

  it('refuses what is not an image with 400 invalid_image and no receipt: at the edge, or from the backend for a broken PNG', async () => {
    const notImage = await post('/models/ocr', new TextEncoder().encode('plain words'), { 'content-type': 'image/png' });
    expect(notImage.status).toBe(400);
    expect(notImage.headers.get('x-mesh-receipt')).toBeNull();
    // The Hugging Face routes answer errors in Hugging Face's shape, our code beside the message.
    expect(await notImage.json()).toEqual({ error: expect.stringMatching(/PNG or JPEG/), code: 'invalid_image' });

    const broken = png.slice(0, 60);
    const { body, headerLength } = binaryRequest(broken);
    const res = await post('/v2/models/ocr/infer', body, { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(headerLength) });
    expect(res.status).toBe(400);
    expect(res.headers.get('x-mesh-receipt')).toBeNull();
    const err = (await res.json()) as { error: { code: string; message: string } };
    expect(err.error.code).toBe('invalid_image');
    expect(err.error.message).toMatch(/PNG/);
  });

  it('refuses binary data whose declared lengths do not add up, at the edge', async () => {
    const { body, headerLength } = binaryRequest(png);
    const res = await post('/v2/models/ocr/infer', body.subarray(0, body.byteLength - 1), {
      'content-type': 'application/octet-stream',
      'inference-header-content-length': String(headerLength),
    });
    expect(res.status).toBe(400);
    const err = (await res.json()) as { error: { code: string; message: string } };
    expect(err.error.code).toBe('invalid_tensor');
    expect(err.error.message).toContain('image');
  });
});
