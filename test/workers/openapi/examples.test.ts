/**
 * The OpenAPI document against the routes' own validators, by example: each
 * body (or query, or header) below is checked against the documented schema
 * and sent to the edge. A documented-valid one must get past the route's
 * checks (no 400 or 413; with no backend running, an inference ends in 404
 * or 503/429); a documented-invalid one must fail the schema and get the
 * documented 4xx with its code. Every answer, success or error, must be one
 * the document lists for the operation, its body conforming to that
 * status's schema (documented.ts).
 */

import { env } from 'cloudflare:workers';
import { describe, expect, it } from 'vitest';
import { encodeBinaryBody, encodeBytesElements } from '../../../shared/binary.ts';
import { generateEd25519 } from '../../../shared/keys.ts';
import type { KeyRole } from '../../../shared/jwt.ts';
import { signReceipt } from '../../../workers/inference/receipts.ts';
import { signingKeys } from '../../../workers/keys.ts';
import { ledgerShard, shardOfReceipt } from '../../../workers/settlement/ledger.ts';
import { receiptClaims } from '../../helpers/receipts.ts';
import { admitProvider, call, heartbeatBody, heartbeatToken, keyFor } from '../helpers.ts';
import { check } from './json-schema.ts';
import { doc, jsonOf, operationOf, requestSchema, undocumented } from './documented.ts';

interface Sent {
  status: number;
  body: any;
}

const tokens = new Map<KeyRole, string>();
const token = async (role: KeyRole) => tokens.get(role) ?? tokens.set(role, await keyFor(role)).get(role)!;

/** Sends a request as `role` and checks the answer is documented; returns its status and JSON body. */
async function send(method: string, path: string, role: KeyRole | undefined, init: { body?: BodyInit; headers?: Record<string, string> } = {}): Promise<Sent> {
  const res = await call(path, { method, ...(role ? { token: await token(role) } : {}), ...init });
  const body = await jsonOf(res);
  expect(undocumented(method, path.split('?')[0]!, res.status, body, res.headers)).toEqual([]);
  return { status: res.status, body };
}

/** The documented JSON request schema of `method path`. */
function schemaOf(method: string, path: string) {
  const schema = requestSchema(operationOf(method, path)!.op);
  expect(schema, `${method} ${path}`).toBeDefined();
  return schema;
}

/** A mesh, OpenAI or Hugging Face error body's code. */
const codeOf = (body: any): string => (typeof body?.error === 'string' ? body.code : body?.error?.code);

/** Headers that keep the Hugging Face routes from waiting for capacity that will not come. */
const NO_WAIT = { 'x-wait-for-model': 'false' };

/**
 * `valid` bodies conform to the schema and pass the route's checks;
 * `invalid` ones (with the code the route answers) fail both.
 */
async function bodies(
  method: string,
  path: string,
  role: KeyRole,
  cases: { valid: unknown[]; invalid: [unknown, string][] },
  headers: Record<string, string> = {},
): Promise<Sent[]> {
  const schema = schemaOf(method, path);
  const answers: Sent[] = [];
  for (const body of cases.valid) {
    expect(check(body, schema, doc), JSON.stringify(body)).toEqual([]);
    const sent = await send(method, path, role, { body: JSON.stringify(body), headers });
    expect([400, 413], `${JSON.stringify(body)}: ${JSON.stringify(sent.body)}`).not.toContain(sent.status);
    answers.push(sent);
  }
  for (const [body, code] of cases.invalid) {
    expect(check(body, schema, doc), JSON.stringify(body)).not.toEqual([]);
    const sent = await send(method, path, role, { body: JSON.stringify(body), headers });
    expect([sent.status, codeOf(sent.body)], JSON.stringify(body)).toEqual([400, code]);
  }
  return answers;
}

const text = { name: 'text', shape: [1], datatype: 'BYTES', data: ['hello'] };

describe('documented request bodies, against the routes', () => {
  it('OIP v2 infer: the documented request passes the edge\'s parser, what the schema refuses the parser refuses', async () => {
    const cases = {
      valid: [
        { inputs: [text] },
        { id: 'r-1', parameters: { binary_data_output: false }, inputs: [{ name: 'x', shape: [2, 2], datatype: 'FP32', data: [[1, 2], [3, 4]] }], outputs: [{ name: 'embedding' }] },
      ],
      invalid: [
        [{ inputs: [] }, 'invalid_request'],
        [{ inputs: [text], extra: true }, 'invalid_request'],
        [{ inputs: [{ ...text, datatype: 'FP8' }] }, 'invalid_tensor'],
        [{ inputs: [{ ...text, shape: [-1] }] }, 'invalid_tensor'],
        [{ inputs: [{ ...text, name: '' }] }, 'invalid_tensor'],
        [{ inputs: [{ ...text, device: 'gpu' }] }, 'invalid_request'],
        [{ inputs: [text], outputs: [{ name: 'embedding', binary: true }] }, 'invalid_request'],
      ] as [unknown, string][],
    };
    for (const sent of await bodies('POST', '/v2/models/embed/infer', 'consumer', cases)) expect([404, 503]).toContain(sent.status);
    await bodies('POST', '/v2/models/embed/versions/1/infer', 'consumer', cases);
  });

  it('OIP v2 infer in the binary tensor extension: the documented header, and a length the parameter schema refuses', async () => {
    const data = encodeBytesElements([new TextEncoder().encode('hello')]);
    const header = { inputs: [{ name: 'text', shape: [1], datatype: 'BYTES', parameters: { binary_data_size: data.byteLength } }] };
    expect(check(header, schemaOf('POST', '/v2/models/embed/infer'), doc)).toEqual([]);
    const { body, headerLength } = encodeBinaryBody(header, [data]);
    const ok = await send('POST', '/v2/models/embed/infer', 'consumer', { body, headers: { 'inference-header-content-length': String(headerLength) } });
    expect([404, 503]).toContain(ok.status);
    const lengthSchema = doc.components.parameters!['inference-header-content-length'] as { schema: Record<string, unknown> };
    expect(check('12a', lengthSchema.schema, doc)).not.toEqual([]);
    const bad = await send('POST', '/v2/models/embed/infer', 'consumer', { body, headers: { 'inference-header-content-length': '12a' } });
    expect([bad.status, codeOf(bad.body)]).toEqual([400, 'invalid_request']);
  });

  it('OpenAI embeddings: the documented request passes; what it refuses gets a 400 naming the field as param', async () => {
    await bodies('POST', '/v1/embeddings', 'consumer', {
      valid: [
        { model: 'embed', input: 'hello' },
        { model: 'embed', input: ['a', 'b'], encoding_format: 'base64', user: 'u-1' },
        { model: 'embed', input: [[1, 2], [3]] },
      ],
      invalid: [
        [{ model: 'embed' }, 'invalid_request'],
        [{ model: 'embed', input: [] }, 'invalid_request'],
        [{ model: '', input: 'a' }, 'invalid_request'],
        [{ model: 'embed', input: 'a', encoding_format: 'hex' }, 'invalid_request'],
        [{ model: 'embed', input: Array(2049).fill('a') }, 'invalid_request'],
      ],
    });
    const unknown = await send('POST', '/v1/embeddings', 'consumer', { body: JSON.stringify({ model: 'embed', input: 'a', temperature: 1 }) });
    expect(unknown.body.error).toMatchObject({ type: 'invalid_request_error', param: 'temperature', code: 'invalid_request' });
  });

  it('Hugging Face tasks: the documented request passes, the parameters the schema refuses are refused', async () => {
    const answers = await bodies(
      'POST',
      '/models/embed',
      'consumer',
      {
        valid: [
          { inputs: 'a' },
          { inputs: ['a', 'b'], normalize: true, truncate: true },
          { inputs: [1, 2], parameters: { truncation_direction: 'RIGHT', prompt_name: null }, options: { use_cache: false, wait_for_model: null } },
          { inputs: { source_sentence: 'a', sentences: ['b', 'c'] } },
        ],
        invalid: [
          [{ inputs: 'a', truncate: false }, 'invalid_request'],
          [{ inputs: 'a', prompt_name: 'query' }, 'invalid_request'],
          [{ inputs: 'a', truncation_direction: 'left' }, 'invalid_request'],
          [{ inputs: 'a', options: { use_gpu: true } }, 'invalid_request'],
          [{ inputs: 'a', normalize: 'yes' }, 'invalid_request'],
          [{ inputs: [] }, 'invalid_request'],
          [{ normalize: true }, 'invalid_request'],
          [{ inputs: 'a', dimensions: 8 }, 'invalid_request'],
        ],
      },
      NO_WAIT,
    );
    // No backend: Hugging Face's 429 (never 503), with retry-after.
    for (const sent of answers) expect([404, 429]).toContain(sent.status);
    const task = operationOf('POST', '/models/embed/pipeline/x')!.op.parameters!.find((p) => p.name === 'task')!;
    expect(check('summarization', task.schema, doc)).not.toEqual([]);
    const unknownTask = await send('POST', '/models/embed/pipeline/summarization', 'consumer', { body: JSON.stringify({ inputs: 'a' }), headers: NO_WAIT });
    expect([unknownTask.status, codeOf(unknownTask.body)]).toEqual([400, 'invalid_request']);
  });

  it('request headers: what the parameter schemas refuse, the routes refuse', async () => {
    const param = (name: string) => (doc.components.parameters![name] as { schema: Record<string, unknown> }).schema;
    const body = JSON.stringify({ inputs: [text] });
    // x-mesh-verify is read once the model has candidates, which takes a backend: only its schema is checked here.
    expect(check('always', param('x-mesh-verify'), doc)).not.toEqual([]);
    for (const [name, value, code] of [
      ['x-mesh-region', 'mars', 'unknown_region'],
      ['x-mesh-dev-colo', 'XXXX', 'invalid_request'],
    ] as const) {
      expect(check(value, param(name), doc), name).not.toEqual([]);
      const sent = await send('POST', '/v2/models/embed/infer', 'consumer', { body, headers: { [name]: value } });
      expect([sent.status, codeOf(sent.body)], name).toEqual([400, code]);
    }
    expect(check('soon', param('x-wait-for-model'), doc)).not.toEqual([]);
    const wait = await send('POST', '/models/embed', 'consumer', { body: JSON.stringify({ inputs: 'a' }), headers: { 'x-wait-for-model': 'soon' } });
    expect([wait.status, codeOf(wait.body)]).toEqual([400, 'invalid_request']);
  });

  it('the heartbeat: the documented body is accepted, what the schema refuses is refused', async () => {
    const provider = await admitProvider('openapi-doc-provider');
    const base = heartbeatBody('openapi-doc-1', 'eu-west', { models: [{ name: 'openapi-doc-model', version: '1', warm: true, maxBatchSize: 8, p50Ms: 3 }] });
    const schema = schemaOf('POST', '/v1/providers/heartbeat');
    const beat = async (body: Record<string, unknown>) => {
      const raw = JSON.stringify(body);
      const res = await call('/v1/providers/heartbeat', { method: 'POST', token: await heartbeatToken(provider, 'openapi-doc-1', raw), body: raw });
      const json = await jsonOf(res);
      expect(undocumented('POST', '/v1/providers/heartbeat', res.status, json, res.headers)).toEqual([]);
      return { status: res.status, body: json as any };
    };
    expect(check(base, schema, doc)).toEqual([]);
    expect((await beat({ ...base, unknownField: 1 })).status).toBe(200);
    for (const [over, code] of [
      [{ lat: 91 }, 'invalid_request'],
      [{ executionProvider: 'tpu' }, 'invalid_request'],
      [{ region: 'mars' }, 'unknown_region'],
      [{ capacity: { slots: 0, inFlight: 0, queued: 0 } }, 'invalid_request'],
      [{ url: 'ftp://example.com' }, 'invalid_request'],
      [{ models: Array(65).fill(base.models[0]) }, 'invalid_request'],
      [{ available: ['bad id!'] }, 'invalid_request'],
    ] as const) {
      const body = { ...base, ...over };
      expect(check(body, schema, doc), JSON.stringify(over)).not.toEqual([]);
      const sent = await beat(body);
      expect([sent.status, codeOf(sent.body)], JSON.stringify(over)).toEqual([400, code]);
    }
  });

  it('operator routes: keys, revocations, admissions, sample rates and disputes', async () => {
    await bodies('POST', '/admin/keys', 'admin', {
      valid: [{ sub: 'doc-consumer' }, { sub: 'doc-billing', role: 'billing', regions: ['eu-west'], ttlSeconds: 60 }],
      invalid: [
        [{}, 'invalid_request'],
        [{ sub: 'x', role: 'root' }, 'invalid_request'],
        [{ sub: 'x', regions: [] }, 'invalid_request'],
        [{ sub: 'x', regions: ['mars'] }, 'invalid_request'],
        [{ sub: 'x', ttlSeconds: 0 }, 'invalid_request'],
        [{ sub: 'bad id!' }, 'invalid_request'],
      ],
    });
    // A consumer key's settings (section 2.13): given at issue, read and changed by jti.
    const limited = await bodies('POST', '/admin/keys', 'admin', {
      valid: [{ sub: 'doc-limited', limits: { requestsPerMinute: 60, concurrent: null }, budget: { microUsd: 1000, period: 'day' }, cors: { origins: ['https://app.example.com', '*'] } }],
      invalid: [
        [{ sub: 'x', limits: { requestsPerMinute: 0 } }, 'invalid_request'],
        [{ sub: 'x', budget: { microUsd: 1, period: 'week' } }, 'invalid_request'],
        [{ sub: 'x', cors: { origins: ['https://app.example.com/path'] } }, 'invalid_request'],
      ],
    });
    const keyPath = `/admin/keys/${limited[0]!.body.jti}`;
    expect((await send('GET', keyPath, 'admin')).body.limits).toEqual({ requestsPerMinute: 60 });
    await bodies('PATCH', keyPath, 'admin', {
      valid: [{ limits: null }, { budget: { microUsd: 0, period: 'total' }, cors: null }],
      invalid: [
        [{}, 'invalid_request'],
        [{ limits: { perHour: 5 } }, 'invalid_request'],
        [{ sub: 'other' }, 'invalid_request'],
      ],
    });
    expect((await send('GET', '/admin/keys/no-such-key', 'admin')).status).toBe(404);
    const issued = await send('POST', '/admin/keys', 'admin', { body: JSON.stringify({ sub: 'doc-revoked' }) });
    await bodies('POST', '/admin/keys/revoke', 'admin', {
      valid: [{ jti: 'doc-jti-1' }, { jti: 'doc-jti-2', exp: Math.floor(Date.now() / 1000) + 60 }, { key: issued.body.key }],
      invalid: [
        [{}, 'invalid_request'],
        [{ jti: '' }, 'invalid_request'],
        [{ jti: 'x'.repeat(257) }, 'invalid_request'],
      ],
    });
    const { publicJwk, privateJwk } = await generateEd25519('doc-key');
    await bodies('POST', '/admin/providers', 'admin', {
      valid: [{ id: 'doc-provider', publicJwk }],
      invalid: [
        [{ id: 'doc-provider', publicJwk: privateJwk }, 'invalid_request'],
        [{ id: '', publicJwk }, 'invalid_request'],
        [{ id: 'doc-provider', publicJwk: { ...publicJwk, crv: 'P-256' } }, 'invalid_request'],
      ],
    });
    await bodies('PUT', '/admin/providers/doc-provider/verification', 'admin', {
      valid: [{ sample_rate: 0.5 }, { sample_rate: null }],
      invalid: [
        [{ sample_rate: 2 }, 'invalid_request'],
        [{ sample_rate: '0.5' }, 'invalid_request'],
        [{}, 'invalid_request'],
      ],
    });
    expect((await send('POST', '/admin/providers/doc-provider/clear', 'admin')).status).toBe(200);
    expect((await send('POST', '/admin/providers/nobody/clear', 'admin')).status).toBe(404);
    const disputes = await bodies('POST', '/admin/settlement/disputes', 'admin', {
      valid: [{ jti: 'doc-receipt-1', reason: 'doc' }, { jti: 'doc-receipt-2' }],
      invalid: [
        [{ reason: 'no jti' }, 'invalid_request'],
        [{ jti: 'x'.repeat(257) }, 'invalid_request'],
      ],
    });
    expect(disputes.map((d) => d.status)).toEqual([201, 201]);
    expect((await send('GET', '/admin/settlement/shards', 'admin')).status).toBe(200);
    expect((await send('GET', '/admin/providers', 'admin')).status).toBe(200);
    expect((await send('GET', '/admin/backends', 'admin')).status).toBe(200);
    expect((await send('DELETE', '/admin/providers/doc-provider', 'admin')).status).toBe(200);
    expect((await send('DELETE', '/admin/providers/doc-provider', 'admin')).status).toBe(404);
  });

  it('billing reads: a receipt from 202 receipt_pending to its proof, batches and pages, each answer as documented', async () => {
    const keys = await signingKeys(env);
    const jti = crypto.randomUUID();
    const receipt = await signReceipt(keys, receiptClaims(1, { iss: env.MESH_ISSUER, iat: Math.floor(Date.now() / 1000), jti }));
    const schema = schemaOf('POST', '/v1/receipts/proof');
    expect(check({ receipt }, schema, doc)).toEqual([]);
    expect(check({ receipt: 7 }, schema, doc)).not.toEqual([]);
    const bad = await send('POST', '/v1/receipts/proof', 'billing', { body: JSON.stringify({ receipt: 7 }) });
    expect([bad.status, codeOf(bad.body)]).toEqual([400, 'invalid_request']);

    const pending = await send('POST', '/v1/receipts/proof', 'billing', { body: JSON.stringify({ receipt }) });
    expect([pending.status, codeOf(pending.body)]).toEqual([202, 'receipt_pending']);
    expect((await send('GET', `/v1/receipts/${jti}/proof`, 'billing')).status).toBe(404);
    // The receipt reaches the log, its batch closes: every read answers as documented.
    const shard = shardOfReceipt(env, jti);
    await ledgerShard(env, shard).append(shard, [receipt]);
    const open = await send('POST', '/v1/receipts/proof', 'billing', { body: JSON.stringify({ receipt }) });
    expect([open.status, codeOf(open.body)]).toEqual([404, 'batch_open']);
    const closed = await send('POST', '/admin/settlement/close', 'admin');
    expect(closed.body.closed.length).toBeGreaterThan(0);
    const proof = await send('POST', '/v1/receipts/proof', 'billing', { body: JSON.stringify({ receipt }) });
    expect(proof.status).toBe(200);
    expect((await send('GET', `/v1/receipts/${jti}/proof`, 'billing')).body).toEqual(proof.body);
    const list = await send('GET', '/v1/settlement/batches?limit=10', 'billing');
    expect(list.body.batches.length).toBeGreaterThan(0);
    expect((await send('GET', `/v1/settlement/batches/${proof.body.batch_id}`, 'billing')).status).toBe(200);
    expect((await send('GET', `/v1/settlement/batches/${proof.body.batch_id}/receipts?from=0&limit=5`, 'billing')).body.receipts).toContain(receipt);
    // Query parameters the document refuses, the routes refuse.
    for (const path of ['/v1/settlement/batches?limit=ten', '/v1/disputes?limit=0', '/v1/verification/events?after=x', '/v1/disputes?after=nope']) {
      const sent = await send('GET', path, 'billing');
      expect([sent.status, codeOf(sent.body)], path).toEqual([400, 'invalid_request']);
    }
    expect((await send('GET', '/v1/disputes?limit=5', 'billing')).status).toBe(200);
    expect((await send('GET', '/v1/verification/events', 'billing')).status).toBe(200);
    expect((await send('GET', '/v1/disputes/d-0000000000000-00000000', 'billing')).status).toBe(404);
  });

  it('public and consumer reads answer as documented', async () => {
    for (const path of ['/v2/health/live', '/v2/health/ready', '/.well-known/jwks.json', '/.well-known/jwks-archive.json']) {
      expect((await send('GET', path, undefined)).status, path).toBe(200);
    }
    expect((await send('GET', '/v1/models', 'consumer')).status).toBe(200);
    expect((await send('GET', '/v1/models/embed', 'consumer')).status).toBe(404);
    expect([404, 503]).toContain((await send('GET', '/v2/models/embed', 'consumer')).status);
    // Auth failures, in each family's shape.
    for (const [method, path] of [['POST', '/v1/embeddings'], ['POST', '/models/embed'], ['GET', '/v1/settlement/batches'], ['POST', '/admin/keys']]) {
      expect((await send(method!, path!, undefined)).status).toBe(401);
    }
    expect((await send('GET', '/v1/settlement/batches', 'consumer')).status).toBe(403);
  });
});
