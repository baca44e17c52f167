/**
 * Fake GPU backends for workerd tests of the inference route: each its own
 * admitted provider in eu-west, answering in-process (global `fetch`
 * stubbed) with attested answers and `server-timing: backend;dur=1`. FAKES:
 * a GPU backend cannot run inside workerd; the integration tests run real
 * ones.
 */

import { env } from 'cloudflare:workers';
import { SignJWT } from 'jose';
import { expect, vi } from 'vitest';
import { sha256Hex } from '../../../receipts/hash.ts';
import { HEADER_LENGTH_HEADER, headerLength, parseInferBody } from '../../../shared/binary.ts';
import { decodePayload, TYP, type DispatchClaims } from '../../../shared/jwt.ts';
import { meter } from '../../../shared/metering.ts';
import { refreshSnapshot } from '../../../workers/directory/snapshot.ts';
import { offered } from '../../../workers/inference/catalogue.ts';
import { admitProvider, heartbeatBody, sendHeartbeat } from '../helpers.ts';

export interface Fake {
  /** Inference calls each backend received, by backend id. */
  calls: Map<string, number>;
  /** Texts whose answers are attested with a key that is not the provider's. */
  forged: Set<string>;
}

export const providers = new Map<string, Awaited<ReturnType<typeof admitProvider>>>();

/**
 * Fake backends (`http://<id>.test`, each its own provider, all in eu-west):
 * the model's metadata on GET, and on an inference an attested answer of two
 * floats per text that depend on the text, echoing the request's `id`.
 */
export async function fakeBackends(ids: string[]): Promise<Fake> {
  for (const id of ids) {
    if (providers.has(id)) continue;
    const admitted = await admitProvider(`prov-${id}`);
    providers.set(id, admitted);
    const models = ['embed', 'classifier'].map((name) => ({ name, version: '1', warm: true, maxBatchSize: 32, p50Ms: 5 }));
    expect((await sendHeartbeat(admitted, heartbeatBody(id, 'eu-west', { url: `http://${id}.test`, models }))).status).toBe(200);
  }
  await refreshSnapshot(env);
  const fake: Fake = { calls: new Map(), forged: new Set() };
  vi.spyOn(globalThis, 'fetch').mockImplementation(async (input: RequestInfo | URL, init?: RequestInit) => {
    const req = new Request(input, init);
    const url = new URL(req.url);
    const model = url.pathname.split('/')[3]!;
    if (req.method === 'GET') return Response.json(model === 'embed' ? EMBED_METADATA : CLASSIFIER_METADATA);
    if (!url.pathname.endsWith('/infer')) return new Response('not here', { status: 404 });
    const backendId = url.hostname.replace(/\.test$/, '');
    const provider = providers.get(backendId)!;
    fake.calls.set(backendId, (fake.calls.get(backendId) ?? 0) + 1);
    const token = req.headers.get('authorization')!.slice('Bearer '.length);
    const dispatch = decodePayload<DispatchClaims>(token)!;
    const bytes = new Uint8Array(await req.arrayBuffer());
    const request = parseInferBody(bytes, headerLength(req.headers.get(HEADER_LENGTH_HEADER), bytes.byteLength));
    const texts =
      model !== 'embed'
        ? ['']
        : request.inputs[0]!.binary
          ? [new TextDecoder().decode(request.inputs[0]!.binary.subarray(4))]
          : (request.inputs[0]!.data as string[]);
    const output = model === 'embed' ? { name: 'embedding', shape: [texts.length, 2], data: texts.flatMap((t) => [t.length, 0.5]) } : { name: 'probabilities', shape: [1, 2], data: [0.25, 0.75] };
    const body = JSON.stringify({
      model_name: model,
      model_version: '1',
      ...(request.id !== undefined ? { id: request.id } : {}),
      outputs: [{ name: output.name, datatype: 'FP32', shape: output.shape, data: output.data }],
    });
    const units = meter(offered(env, model), request.inputs, [{ shape: output.shape }]);
    const signer = texts.some((t) => fake.forged.has(t)) ? (await admitProvider(`forger-${crypto.randomUUID().slice(0, 8)}`)).key : provider.key;
    const attestation = await new SignJWT({ jti: dispatch.jti, model, output_sha256: await sha256Hex(body), units })
      .setProtectedHeader({ alg: 'EdDSA', typ: TYP.attestation, kid: provider.kid })
      .setIssuer(provider.id)
      .setSubject(backendId)
      .setIssuedAt()
      .sign(signer);
    return new Response(body, { headers: { 'content-type': 'application/json', 'x-provider-attestation': attestation, 'server-timing': 'backend;dur=1' } });
  });
  return fake;
}

const EMBED_METADATA = {
  name: 'embed',
  versions: ['1'],
  platform: 'onnxruntime_onnx',
  inputs: [{ name: 'text', datatype: 'BYTES', shape: [-1] }],
  outputs: [{ name: 'embedding', datatype: 'FP32', shape: [-1, 2] }],
};
const CLASSIFIER_METADATA = {
  name: 'classifier',
  versions: ['1'],
  platform: 'onnxruntime_onnx',
  inputs: [{ name: 'features', datatype: 'FP32', shape: [-1, 2] }],
  outputs: [{ name: 'probabilities', datatype: 'FP32', shape: [-1, 2] }],
};
