import { describe, expect, it } from 'vitest';
import { MeshError } from '../../shared/errors.ts';
import { errorAnswer, openaiType, routeFamily, throwIfRejected } from '../../workers/errors.ts';

describe('route families', () => {
  it.each([
    ['/v1/embeddings', 'openai'],
    ['/v1/models', 'openai'],
    ['/v1/models/embed', 'openai'],
    ['/v1/models/embed/extra', 'openai'],
    ['/models/embed', 'huggingface'],
    ['/models/embed/pipeline/feature-extraction', 'huggingface'],
    ['/v2/models/embed/infer', 'mesh'],
    ['/v1/providers/heartbeat', 'mesh'],
    ['/v1/settlement/batches', 'mesh'],
    ['/v1/modelsx', 'mesh'],
    ['/models', 'mesh'],
    ['/admin/keys', 'mesh'],
  ])('%s is %s', (path, family) => {
    expect(routeFamily(path)).toBe(family);
  });
});

describe('error answers', () => {
  const invalid = new MeshError('invalid_request', 'Unknown field "foo".', { param: 'foo' });

  it('keep the mesh shape on the mesh routes', () => {
    expect(errorAnswer(invalid, 'mesh')).toEqual({ status: 400, headers: {}, body: { error: { code: 'invalid_request', message: 'Unknown field "foo".' } } });
    const busy = errorAnswer(new MeshError('no_capacity', 'None warm.', { retryAfter: 5 }), 'mesh');
    expect(busy.status).toBe(503);
    expect(busy.headers).toEqual({ 'retry-after': '5' });
  });

  it('are OpenAI\'s on the OpenAI routes: message, type, param, code', () => {
    expect(errorAnswer(invalid, 'openai')).toEqual({
      status: 400,
      headers: {},
      body: { error: { message: 'Unknown field "foo".', type: 'invalid_request_error', param: 'foo', code: 'invalid_request' } },
    });
    const unauthorized = errorAnswer(new MeshError('unauthorized', 'No key.'), 'openai');
    expect(unauthorized.status).toBe(401);
    expect(unauthorized.headers).toEqual({ 'www-authenticate': 'Bearer error="invalid_request"' });
    expect(unauthorized.body).toEqual({ error: { message: 'No key.', type: 'authentication_error', param: null, code: 'unauthorized' } });
    const busy = errorAnswer(new MeshError('no_capacity', 'None warm.', { retryAfter: 5 }), 'openai');
    expect(busy).toMatchObject({ status: 503, headers: { 'retry-after': '5' }, body: { error: { type: 'server_error', code: 'no_capacity' } } });
  });

  it.each([
    [400, 'invalid_request_error'],
    [401, 'authentication_error'],
    [403, 'permission_error'],
    [404, 'not_found_error'],
    [409, 'invalid_request_error'],
    [413, 'invalid_request_error'],
    [429, 'rate_limit_error'],
    [500, 'server_error'],
    [502, 'server_error'],
    [503, 'server_error'],
  ])('OpenAI type of %i is %s', (status, type) => {
    expect(openaiType(status)).toBe(type);
  });

  it('are Hugging Face\'s on the Hugging Face routes, and never 503', () => {
    expect(errorAnswer(invalid, 'huggingface')).toEqual({ status: 400, headers: {}, body: { error: 'Unknown field "foo".', code: 'invalid_request' } });
    // @huggingface/inference retries a 503 at once and without end: a 429 with retry-after instead.
    expect(errorAnswer(new MeshError('no_capacity', 'None warm.', { retryAfter: 5 }), 'huggingface')).toEqual({
      status: 429,
      headers: { 'retry-after': '5' },
      body: { error: 'None warm.', code: 'no_capacity' },
    });
    expect(errorAnswer(new MeshError('not_ready', 'No key.'), 'huggingface')).toMatchObject({ status: 429, headers: { 'retry-after': '1' } });
    expect(errorAnswer(new MeshError('backend_failed', 'All failed.'), 'huggingface').status).toBe(502);
    expect(errorAnswer(new MeshError('invalid_token', 'Expired.'), 'huggingface')).toMatchObject({
      status: 401,
      headers: { 'www-authenticate': 'Bearer error="invalid_token"' },
    });
  });
});

describe('a backend\'s verdict passed on by the inference path', () => {
  const verdict = (status: number, code: string, message = 'Input "x": bad.') =>
    new Response(JSON.stringify({ error: { code, message } }), { status, headers: { 'content-type': 'application/json' } });
  const thrown = async (res: Response) => {
    try {
      await throwIfRejected(res);
    } catch (err) {
      return err instanceof MeshError ? [err.status, err.code, err.message] : err;
    }
    return 'nothing thrown';
  };

  it('passes an answer on', async () => {
    const ok = new Response('[1]', { status: 200 });
    expect(await throwIfRejected(ok)).toBe(ok);
  });

  it('becomes the MeshError it stands for, its message kept', async () => {
    expect(await thrown(verdict(400, 'shape_mismatch'))).toEqual([400, 'shape_mismatch', 'Input "x": bad.']);
    expect(await thrown(verdict(413, 'body_too_large', 'Too big.'))).toEqual([413, 'body_too_large', 'Too big.']);
  });

  it('keeps its status when its code is not a mesh code of that status', async () => {
    expect(await thrown(verdict(400, 'some_backend_code'))).toEqual([400, 'invalid_request', 'Input "x": bad.']);
    expect(await thrown(verdict(400, 'body_too_large'))).toEqual([400, 'invalid_request', 'Input "x": bad.']);
    expect(await thrown(verdict(413, 'mystery'))).toEqual([413, 'body_too_large', 'Input "x": bad.']);
  });
});
