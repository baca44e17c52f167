import { describe, expect, it } from 'vitest';
import { MeshError } from '../../../shared/errors.ts';
import { l2normalize, readJsonCall, WAIT_DEFAULT_MS, WAIT_FOR_MODEL_MS, waitMs } from '../../../workers/routes/huggingface.ts';
import { admitProvider, call, heartbeatBody, keyFor, sendHeartbeat } from '../helpers.ts';

/** What `fn` throws, as `status code: message`. */
function refusal(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (err instanceof MeshError) return `${err.status} ${err.code}: ${err.message}`;
    throw err;
  }
  return 'accepted';
}

describe('feature-extraction parameters', () => {
  it('are read at the top level, as @huggingface/inference sends them, or under "parameters"', () => {
    expect(readJsonCall({ inputs: 'a b', normalize: true, truncate: true }, undefined)).toEqual({
      task: 'feature-extraction',
      rows: ['a b'],
      single: true,
      normalize: true,
    });
    expect(readJsonCall({ inputs: ['a', 'b'], parameters: { normalize: true, truncation_direction: 'Right' } }, undefined)).toMatchObject({
      rows: ['a', 'b'],
      single: false,
      normalize: true,
    });
    expect(readJsonCall({ inputs: 'a', normalize: null, truncate: null, truncation_direction: 'right', prompt_name: null }, undefined).normalize).toBe(false);
  });

  it('are refused with a 400 that names them where they mean nothing here', () => {
    expect(refusal(() => readJsonCall({ inputs: 'a', truncate: false }, undefined))).toMatch(/^400 invalid_request: "truncate": false is not supported/);
    expect(refusal(() => readJsonCall({ inputs: 'a', truncation_direction: 'left' }, undefined))).toMatch(/^400 invalid_request: "truncation_direction": "left"/);
    expect(refusal(() => readJsonCall({ inputs: 'a', truncation_direction: 'middle' }, undefined))).toMatch(/"truncation_direction" must be/);
    expect(refusal(() => readJsonCall({ inputs: 'a', prompt_name: 'query' }, undefined))).toMatch(/"prompt_name" is not supported/);
    expect(refusal(() => readJsonCall({ inputs: 'a', normalize: 'yes' }, undefined))).toMatch(/"normalize" must be true or false/);
    expect(refusal(() => readJsonCall({ inputs: 'a', parameters: { pooling: 'mean' } }, undefined))).toMatch(/Unknown parameter "pooling"/);
    expect(refusal(() => readJsonCall({ inputs: 'a', dimensions: 8 }, undefined))).toMatch(/Unknown field "dimensions"/);
    expect(refusal(() => readJsonCall({ inputs: 'a', normalize: true, parameters: { normalize: true } }, undefined))).toMatch(/"normalize" is given both/);
    expect(refusal(() => readJsonCall({ inputs: 'a', parameters: [1] }, undefined))).toMatch(/"parameters" must be an object/);
  });

  it('are refused on sentence-similarity, which has none', () => {
    const inputs = { source_sentence: 'a', sentences: ['b'] };
    expect(readJsonCall({ inputs }, undefined)).toMatchObject({ task: 'sentence-similarity', rows: ['a', 'b'] });
    expect(refusal(() => readJsonCall({ inputs, normalize: true }, undefined))).toMatch(/sentence-similarity takes no parameters \("normalize"/);
  });

  it('come with Hugging Face\'s options wait_for_model and use_cache, and no others', () => {
    expect(readJsonCall({ inputs: 'a', options: { wait_for_model: true, use_cache: false } }, undefined).waitForModel).toBe(true);
    expect(refusal(() => readJsonCall({ inputs: 'a', options: { use_gpu: true } }, undefined))).toMatch(/Unknown option "use_gpu"/);
    expect(refusal(() => readJsonCall({ inputs: 'a', options: { wait_for_model: 'yes' } }, undefined))).toMatch(/"options.wait_for_model" must be true or false/);
  });

  it('normalize scales each row to unit length, a zero row staying zero', () => {
    expect(l2normalize([3, 4])).toEqual([0.6, 0.8]);
    expect(l2normalize([0, 0])).toEqual([0, 0]);
  });
});

describe('the wait for capacity', () => {
  it('is x-wait-for-model when sent, else options.wait_for_model, else the default', () => {
    expect(waitMs(undefined, undefined)).toBe(WAIT_DEFAULT_MS);
    expect(waitMs('true', undefined)).toBe(WAIT_FOR_MODEL_MS);
    expect(waitMs('1', false)).toBe(WAIT_FOR_MODEL_MS);
    expect(waitMs('false', true)).toBe(0);
    expect(waitMs(undefined, true)).toBe(WAIT_FOR_MODEL_MS);
    expect(waitMs(undefined, false)).toBe(0);
    expect(refusal(() => waitMs('soon', undefined))).toMatch(/^400 invalid_request: x-wait-for-model/);
  });
});

describe('POST /models/{model} errors', () => {
  const features = JSON.stringify({ inputs: Array.from({ length: 16 }, (_, i) => i / 16) });

  it('are in Hugging Face\'s shape, our code beside the message', async () => {
    const none = await call('/models/embed', { method: 'POST', body: JSON.stringify({ inputs: 'a' }) });
    expect(none.status).toBe(401);
    expect(await none.json()).toEqual({ error: expect.stringMatching(/./), code: 'unauthorized' });
    const bad = await call('/models/embed', { method: 'POST', token: await keyFor('consumer'), body: JSON.stringify({ inputs: 'a', truncate: false }) });
    expect(bad.status).toBe(400);
    expect(await bad.json()).toEqual({ error: expect.stringMatching(/^"truncate": false is not supported/), code: 'invalid_request' });
  });

  it('for a model with no capacity: 429 with retry-after, at once with x-wait-for-model: false, after the default wait without it', async () => {
    const p = await admitProvider('prov-hf-cold');
    await sendHeartbeat(p, heartbeatBody('hf-cold-1', 'eu-west', { models: [{ name: 'classifier', version: '1', warm: false, maxBatchSize: 8, p50Ms: 5 }] }));
    const key = await keyFor('consumer');
    let started = Date.now();
    const now = await call('/models/classifier', { method: 'POST', token: key, colo: 'FRA', headers: { 'x-wait-for-model': 'false' }, body: features });
    expect(now.status).toBe(429);
    expect(now.headers.get('retry-after')).toBe('5');
    expect(await now.json()).toEqual({ error: expect.stringMatching(/No ready backend has "classifier" warm/), code: 'no_capacity' });
    expect(Date.now() - started).toBeLessThan(WAIT_DEFAULT_MS);

    started = Date.now();
    const waited = await call('/models/classifier', { method: 'POST', token: key, colo: 'FRA', body: features });
    expect(Date.now() - started).toBeGreaterThanOrEqual(WAIT_DEFAULT_MS);
    expect(waited.status).toBe(429);
    expect(waited.headers.get('retry-after')).toBe('5');
    expect(await waited.json()).toEqual({ error: expect.stringMatching(/Waited 5 s for capacity\.$/), code: 'no_capacity' });
  }, 20_000);

  it('ends the wait as soon as a backend has the model warm', async () => {
    const p = await admitProvider('prov-hf-warming');
    const cold = heartbeatBody('hf-warming-1', 'us-east', { models: [{ name: 'classifier', version: '1', warm: false, maxBatchSize: 8, p50Ms: 5 }] });
    await sendHeartbeat(p, cold);
    const key = await keyFor('consumer');
    const started = Date.now();
    const pending = call('/models/classifier', { method: 'POST', token: key, colo: 'IAD', headers: { 'x-wait-for-model': 'true' }, body: features });
    await scheduler.wait(1_500);
    await sendHeartbeat(p, { ...cold, models: [{ name: 'classifier', version: '1', warm: true, maxBatchSize: 8, p50Ms: 5 }] });
    const res = await pending;
    // The backend is not a real one (its URL answers nothing): the wait ended, then the call failed there.
    expect(Date.now() - started).toBeLessThan(WAIT_DEFAULT_MS + 1_000);
    expect(res.status).toBe(502);
    expect(await res.json()).toEqual({ error: expect.any(String), code: 'backend_failed' });
  }, 20_000);
});
