import { createExecutionContext, env } from 'cloudflare:test';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { ModelMetadata } from '../../../shared/protocol.ts';
import { app } from '../../../workers/app.ts';
import { refreshSnapshot } from '../../../workers/directory/snapshot.ts';
import { checkMetadata, MetadataCache, METADATA_STALE_MS, METADATA_TTL_MS } from '../../../workers/inference/metadata.ts';
import { admitProvider, BASE, heartbeatBody, keyFor, sendHeartbeat } from '../helpers.ts';

afterEach(() => vi.restoreAllMocks());

const good = {
  name: 'embed',
  versions: ['1'],
  platform: 'onnxruntime_onnx',
  inputs: [{ name: 'text', datatype: 'BYTES', shape: [-1] }],
  outputs: [{ name: 'embedding', datatype: 'FP32', shape: [-1, 64] }],
  parameters: { tokenizer: 'mesh-hash-v1', pad_id: 0, max_batch_size: 32 },
};

describe("a backend's model metadata, before the edge caches it", () => {
  it('keeps a well-formed document for the model asked about', () => {
    expect(checkMetadata(good, 'embed')).toEqual(good);
  });

  const bad: [string, unknown, RegExp][] = [
    ['not an object', [good], /not a JSON object/],
    ['about another model', { ...good, name: 'classifier' }, /another model/],
    ['no outputs', { ...good, outputs: [] }, /outputs must be/],
    ['thousands of inputs', { ...good, inputs: Array.from({ length: 1000 }, (_, i) => ({ name: `i${i}`, datatype: 'FP32', shape: [1] })) }, /inputs must be/],
    ['an unknown datatype', { ...good, outputs: [{ name: 'e', datatype: 'FP8', shape: [1] }] }, /unknown datatype/],
    ['a shape of strings', { ...good, outputs: [{ name: 'e', datatype: 'FP32', shape: ['a'] }] }, /invalid shape/],
    ['a huge name', { ...good, outputs: [{ name: 'e'.repeat(1000), datatype: 'FP32', shape: [1] }] }, /no valid name/],
    ['an object as parameter', { ...good, parameters: { pad_id: { $gt: 1 } } }, /not a short scalar/],
    ['a huge version list', { ...good, versions: Array.from({ length: 100 }, (_, i) => String(i)) }, /versions/],
  ];
  for (const [what, doc, reason] of bad) {
    it(`refuses ${what}`, () => {
      expect(checkMetadata(doc, 'embed')).toMatch(reason);
    });
  }

  it('keeps a parameter named __proto__ as data, not as a prototype', () => {
    const doc = JSON.parse('{"name":"embed","versions":[],"platform":"p","inputs":[{"name":"x","datatype":"FP32","shape":[1]}],"outputs":[{"name":"y","datatype":"FP32","shape":[1]}],"parameters":{"__proto__":1}}');
    const meta = checkMetadata(doc, 'embed') as unknown as { parameters: Record<string, unknown> };
    expect(Object.getPrototypeOf(meta.parameters)).toBe(Object.prototype);
    expect(Object.hasOwn(meta.parameters, '__proto__')).toBe(true);
  });
});

describe('the metadata an isolate keeps', () => {
  const doc = checkMetadata(good, 'embed') as ModelMetadata;

  it('is fresh for a minute, then stale (used while refreshed) up to 10 minutes, then gone', () => {
    let now = 0;
    const cache = new MetadataCache(() => now);
    cache.set('embed', doc);
    expect(cache.lookup('embed')).toEqual({ meta: doc, fresh: true });
    now = METADATA_TTL_MS;
    expect(cache.lookup('embed')).toEqual({ meta: doc, fresh: false });
    now = METADATA_STALE_MS - 1;
    expect(cache.lookup('embed')?.fresh).toBe(false);
    now = METADATA_STALE_MS;
    expect(cache.lookup('embed')).toBeUndefined();
  });

  it('refreshes a key once at a time, and again after the refresh ends, whether it failed or not', async () => {
    const cache = new MetadataCache(() => 0);
    let release!: () => void;
    const first = cache.refreshOnce('embed', () => new Promise<void>((r) => (release = r)));
    expect(first).toBeDefined();
    expect(cache.refreshOnce('embed', async () => undefined)).toBeUndefined();
    expect(cache.refreshOnce('classifier', async () => undefined)).toBeDefined();
    release();
    await first;
    const failing = cache.refreshOnce('embed', async () => {
      throw new Error('backend down');
    });
    await expect(failing).resolves.toBeUndefined();
    expect(cache.refreshOnce('embed', async () => undefined)).toBeDefined();
  });

  it('forgets a copy on request (an answer contradicted it)', () => {
    const cache = new MetadataCache(() => 0);
    cache.set('embed', doc);
    cache.delete('embed');
    expect(cache.lookup('embed')).toBeUndefined();
  });
});

describe('metadata by agreement between providers', () => {
  const honest = { name: 'classifier', versions: [] as string[], platform: 'onnxruntime_onnx', inputs: [{ name: 'features', datatype: 'FP32', shape: [-1, 16] }], outputs: [{ name: 'probabilities', datatype: 'FP32', shape: [-1, 3] }] };
  const forged = { ...honest, outputs: [{ name: 'probabilities', datatype: 'FP32', shape: [-1, 999] }] };

  /** Backends of `providers` (one each) announcing classifier `version`, answering `docs[i]`; returns the GET count per backend. */
  async function serve(version: string, docs: object[]) {
    const asked = new Map<string, number>();
    for (const [i, doc] of docs.entries()) {
      const p = await admitProvider(`prov-agree-${version}-${i}`);
      const id = `agree-${version}-${i}`;
      const res = await sendHeartbeat(p, heartbeatBody(id, 'eu-west', { url: `http://${id}.test`, models: [{ name: 'classifier', version, warm: true, maxBatchSize: 8, p50Ms: 1 }] }));
      expect(res.status).toBe(200);
    }
    // FAKE backends (global fetch stubbed): only their metadata routes are asked.
    vi.spyOn(globalThis, 'fetch').mockImplementation(async (input: RequestInfo | URL) => {
      const host = new URL(String(input)).hostname;
      asked.set(host, (asked.get(host) ?? 0) + 1);
      const i = Number(host.split('-').at(-1)!.split('.')[0]);
      return Response.json({ ...docs[i], versions: [version] });
    });
    const consumer = await keyFor('consumer', `agree-${version}`);
    // The isolate's snapshot, with every backend just registered (a request alone would use the one it has).
    await refreshSnapshot(env);
    const res = await app.fetch(
      new Request(`${BASE}/v2/models/classifier/versions/${version}`, { headers: { authorization: `Bearer ${consumer}`, 'x-mesh-dev-colo': 'FRA' } }),
      env,
      createExecutionContext(),
    );
    vi.restoreAllMocks();
    return { res, asked };
  }

  it('takes the document two providers agree on, whoever else disagrees', async () => {
    const { res } = await serve('21', [honest, forged, honest]);
    expect(res.status).toBe(200);
    expect(((await res.json()) as typeof honest).outputs[0]!.shape).toEqual([-1, 3]);
  });

  it('uses none when the only two providers disagree: 502, naming no backend', async () => {
    const { res, asked } = await serve('22', [honest, forged]);
    expect(res.status).toBe(502);
    const { error } = (await res.json()) as { error: { code: string; message: string } };
    expect(error).toMatchObject({ code: 'backend_failed', message: expect.stringMatching(/disagree/) });
    expect(error.message).not.toMatch(/agree-22|\.test/);
    expect([...asked.values()].reduce((a, b) => a + b, 0)).toBe(2);
  });

  it("takes one provider's document when no other provider serves the model", async () => {
    const { res } = await serve('23', [forged]);
    expect(res.status).toBe(200);
    expect(((await res.json()) as typeof forged).outputs[0]!.shape).toEqual([-1, 999]);
  });
});
