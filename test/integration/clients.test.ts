/**
 * The real clients, unmodified, against a real local mesh (one backend
 * process in eu-west, the Worker in workerd), as a new user would point them:
 * the `openai` SDK with `baseURL = <edge>/v1`, and `@huggingface/inference`'s
 * `InferenceClient` with `endpointUrl = <edge>/models/<model>`. Their only
 * change is a `fetch` that counts the requests they send, where a test
 * counts them.
 */

import { InferenceClient, InferenceClientProviderApiError } from '@huggingface/inference';
import OpenAI, { BadRequestError, InternalServerError, NotFoundError } from 'openai';
import { beforeAll, describe, expect, it } from 'vitest';
import type { LocalMesh } from '../../scripts/local-mesh.ts';
import { useMesh } from '../helpers/mesh.ts';

const local = useMesh({ backends: [{ id: 'fra-1', region: 'eu-west', provider: 'provider-fra' }] });
let mesh: LocalMesh;
beforeAll(() => {
  mesh = local.mesh();
});

/** A fetch that records each request it sends and the status and `retry-after` of each answer. */
function counting() {
  const seen: { url: string; status: number; retryAfter: string | null }[] = [];
  const fetchCounted: typeof fetch = async (input, init) => {
    const res = await fetch(input, init);
    seen.push({ url: String(input instanceof Request ? input.url : input), status: res.status, retryAfter: res.headers.get('retry-after') });
    return res;
  };
  return { seen, fetch: fetchCounted };
}

/** The `embed` model's embedding of `text` through the OIP route: what the clients' answers are compared with. */
async function oipEmbedding(text: string): Promise<number[]> {
  const res = await fetch(`${mesh.edgeUrl}/v2/models/embed/infer`, {
    method: 'POST',
    headers: { authorization: `Bearer ${mesh.consumerKey}`, 'content-type': 'application/json' },
    body: JSON.stringify({ inputs: [{ name: 'text', shape: [1], datatype: 'BYTES', data: [text] }] }),
  });
  expect(res.status).toBe(200);
  return ((await res.json()) as { outputs: { data: number[] }[] }).outputs[0]!.data;
}

const norm = (row: number[]) => Math.sqrt(row.reduce((s, x) => s + x * x, 0));

/** What `promise` rejects with (it must reject). */
async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => {
      throw new Error('expected a rejection');
    },
    (err: unknown) => err,
  );
}

describe('the openai SDK', () => {
  const openai = () => new OpenAI({ apiKey: mesh.consumerKey, baseURL: `${mesh.edgeUrl}/v1` });

  it('embeddings.create: the SDK\'s default (base64, decoded) and float', async () => {
    const expected = await oipEmbedding('alpha beta');
    const created = await openai().embeddings.create({ model: 'embed', input: ['alpha beta', 'gamma'] });
    expect(created.model).toBe('embed');
    expect(created.data.map((d) => [d.index, d.embedding.length])).toEqual([[0, 256], [1, 256]]);
    expect(Array.from(created.data[0]!.embedding)).toEqual(expected.map((x) => Math.fround(x)));
    expect(created.usage).toEqual({ prompt_tokens: 5, total_tokens: 5 });
    const floats = await openai().embeddings.create({ model: 'embed', input: 'alpha beta', encoding_format: 'float' });
    expect(floats.data[0]!.embedding).toEqual(expected);
  });

  it('models.list and models.retrieve', async () => {
    const ids: string[] = [];
    for await (const m of openai().models.list()) ids.push(m.id);
    expect(ids).toEqual(['classifier', 'embed']);
    expect(await openai().models.retrieve('embed')).toEqual({ id: 'embed', object: 'model', created: 0, owned_by: 'edge-inference-mesh' });
    const missing = await rejection(openai().models.retrieve('no-such-model'));
    expect(missing).toBeInstanceOf(NotFoundError);
    expect(missing).toMatchObject({ status: 404, type: 'not_found_error', param: null, code: 'model_not_found' });
  });

  it('errors carry type, param and code', async () => {
    const err = await rejection(openai().embeddings.create({ model: 'embed', input: 'alpha', dimensions: 3 }));
    expect(err).toBeInstanceOf(BadRequestError);
    expect(err).toMatchObject({ status: 400, type: 'invalid_request_error', param: 'dimensions', code: 'invalid_request' });
    expect((err as Error).message).toMatch(/^400 "embed" returns 256-dimensional embeddings/);
  });
});

describe('@huggingface/inference', () => {
  const client = (model: string, options: { fetch?: typeof fetch } = {}, key = mesh.consumerKey) =>
    new InferenceClient(key, { endpointUrl: `${mesh.edgeUrl}/models/${model}`, ...options });

  it('featureExtraction takes normalize and truncate', async () => {
    const expected = await oipEmbedding('alpha beta');
    const one = (await client('embed').featureExtraction({ inputs: 'alpha beta', normalize: true, truncate: true })) as number[];
    expect(one).toHaveLength(256);
    expect(norm(one)).toBeCloseTo(1, 6);
    for (const [i, x] of one.entries()) expect(x).toBeCloseTo(expected[i]! / norm(expected), 6);
    // A model whose rows are not unit vectors shows what normalize does: the classifier's probabilities, scaled to unit length.
    const features = Array.from({ length: 16 }, (_, i) => i / 16) as unknown as string;
    const raw = (await client('classifier').featureExtraction({ inputs: features })) as number[];
    const scaled = (await client('classifier').featureExtraction({ inputs: features, normalize: true })) as number[];
    expect(raw.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 5);
    expect(norm(raw)).toBeLessThan(0.99);
    expect(scaled).toEqual(raw.map((x) => x / norm(raw)));
  });

  it('shows our message for a 4xx, with our code in the body', async () => {
    const err = await rejection(client('embed').featureExtraction({ inputs: 'alpha', prompt_name: 'query' }));
    expect(err).toBeInstanceOf(InferenceClientProviderApiError);
    expect((err as Error).message).toBe('Failed to perform inference: "prompt_name" is not supported: the models of this mesh have no prompts.');
    expect((err as InferenceClientProviderApiError).httpResponse).toMatchObject({ status: 400, body: { code: 'invalid_request' } });
    const unknown = await rejection(client('no-such-model').featureExtraction({ inputs: 'alpha' }));
    expect((unknown as Error).message).toMatch(/^Failed to perform inference: This mesh does not offer a model named "no-such-model"/);
    expect((unknown as InferenceClientProviderApiError).httpResponse).toMatchObject({ status: 404, body: { code: 'model_not_found' } });
  });
});

describe('no capacity for the model', () => {
  it('makes neither client loop: Hugging Face gets one 429 with retry-after after the wait, OpenAI retries twice on retry-after', async () => {
    // A key whose residency holds no backend: every request for it has no capacity.
    const key = await mesh.issue('west-only', 'consumer', ['us-west']);
    const hf = counting();
    const oa = counting();
    const started = Date.now();
    const hfDone = rejection(
      new InferenceClient(key, { endpointUrl: `${mesh.edgeUrl}/models/embed`, fetch: hf.fetch }).featureExtraction({ inputs: 'alpha' }),
    ).then((err) => ({ err, ms: Date.now() - started }));
    const oaDone = rejection(new OpenAI({ apiKey: key, baseURL: `${mesh.edgeUrl}/v1`, fetch: oa.fetch }).embeddings.create({ model: 'embed', input: 'alpha' })).then(
      (err) => ({ err, ms: Date.now() - started }),
    );
    const [h, o] = await Promise.all([hfDone, oaDone]);

    expect(hf.seen).toEqual([{ url: `${mesh.edgeUrl}/models/embed`, status: 429, retryAfter: '5' }]);
    expect(h.ms).toBeGreaterThanOrEqual(5_000);
    expect(h.ms).toBeLessThan(10_000);
    expect(h.err).toBeInstanceOf(InferenceClientProviderApiError);
    expect((h.err as Error).message).toMatch(/^Failed to perform inference: No ready backend has "embed" warm in us-west right now; retry shortly\. Waited 5 s for capacity\.$/);
    expect((h.err as InferenceClientProviderApiError).httpResponse).toMatchObject({ status: 429, body: { code: 'no_capacity' } });

    // The SDK's own bound: two retries, each after the 5 s that retry-after asks.
    expect(oa.seen.map((s) => [s.status, s.retryAfter])).toEqual([[503, '5'], [503, '5'], [503, '5']]);
    expect(o.ms).toBeGreaterThanOrEqual(10_000);
    expect(o.err).toBeInstanceOf(InternalServerError);
    expect(o.err).toMatchObject({ status: 503, type: 'server_error', param: null, code: 'no_capacity' });
  }, 30_000);
});
