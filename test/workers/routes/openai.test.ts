import { env } from 'cloudflare:test';
import { describe, expect, it } from 'vitest';
import { refreshSnapshot } from '../../../workers/directory/snapshot.ts';
import { admitProvider, call, heartbeatBody, keyFor, sendHeartbeat } from '../helpers.ts';

describe('OpenAI routes', () => {
  it('GET /v1/models/{model} answers the list\'s entry, and 404 in OpenAI\'s shape for a model not listed', async () => {
    const p = await admitProvider('prov-openai');
    await sendHeartbeat(p, heartbeatBody('oa-1', 'eu-west'));
    await refreshSnapshot(env);
    const key = await keyFor('consumer');
    const list = (await (await call('/v1/models', { token: key })).json()) as { data: { id: string }[] };
    const entry = list.data.find((m) => m.id === 'embed');
    expect(entry).toEqual({ id: 'embed', object: 'model', created: 0, owned_by: 'edge-inference-mesh' });
    const one = await call('/v1/models/embed', { token: key });
    expect(one.status).toBe(200);
    expect(await one.json()).toEqual(entry);
    const missing = await call('/v1/models/no-such-model', { token: key });
    expect(missing.status).toBe(404);
    expect(await missing.json()).toEqual({
      error: { message: expect.stringMatching(/"no-such-model"/), type: 'not_found_error', param: null, code: 'model_not_found' },
    });
  });

  it('answer errors with type, param and code, as OpenAI does', async () => {
    const key = await keyFor('consumer');
    const post = (body: unknown, token: string | null = key) =>
      call('/v1/embeddings', { method: 'POST', ...(token ? { token } : {}), body: JSON.stringify(body) });
    const cases: [unknown, string | null][] = [
      [{ model: 'embed', input: 'a', foo: 1 }, 'foo'],
      [{ input: 'a' }, 'model'],
      [{ model: 'embed', input: [] }, 'input'],
      [{ model: 'embed', input: 'a', encoding_format: 'hex' }, 'encoding_format'],
    ];
    for (const [body, param] of cases) {
      const res = await post(body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(await res.json()).toEqual({ error: { message: expect.any(String), type: 'invalid_request_error', param, code: 'invalid_request' } });
    }
    const bad = await call('/v1/embeddings', { method: 'POST', token: key, body: '{"model": ' });
    expect(await bad.json()).toEqual({ error: { message: expect.any(String), type: 'invalid_request_error', param: null, code: 'invalid_json' } });
    const anonymous = await post({ model: 'embed', input: 'a' }, null);
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers.get('www-authenticate')).toBe('Bearer error="invalid_request"');
    expect(await anonymous.json()).toEqual({ error: { message: expect.any(String), type: 'authentication_error', param: null, code: 'unauthorized' } });
    const billing = await post({ model: 'embed', input: 'a' }, await keyFor('billing'));
    expect(billing.status).toBe(403);
    expect(await billing.json()).toMatchObject({ error: { type: 'permission_error', param: null, code: 'forbidden' } });
    const nowhere = await call('/v1/models/embed/versions', { token: key });
    expect(nowhere.status).toBe(404);
    expect(await nowhere.json()).toMatchObject({ error: { type: 'not_found_error', code: 'not_found' } });
  });

  it('leave the mesh\'s own routes in the mesh\'s shape', async () => {
    const res = await call('/v1/settlement/batches');
    expect(res.status).toBe(401);
    expect(await res.json()).toEqual({ error: { code: 'unauthorized', message: expect.any(String) } });
    const nowhere = await call('/v1/chat/completions', { method: 'POST' });
    expect(await nowhere.json()).toEqual({ error: { code: 'not_found', message: 'No route for POST /v1/chat/completions.' } });
  });
});
