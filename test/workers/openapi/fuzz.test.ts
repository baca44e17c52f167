/**
 * Fuzzed bodies never 5xx (issue 16, part 9). Every route the OpenAPI
 * document gives a request body (so a route added and documented later is
 * fuzzed too) gets, with valid auth for its role (a key, or a heartbeat
 * token over the exact bytes sent) and sometimes without: random JSON;
 * mutations of a valid body (a field set to a value of another type, a huge
 * or tiny number, a long or odd string, a field deleted or added, a level
 * wrapped in a list, a number written as 1e400); nesting thousands of levels
 * deep within the route's size bound; random bytes; binary tensor bodies cut
 * anywhere, with a random `inference-header-content-length`; and random
 * values of the headers the routes read.
 *
 * Every answer must be below 500, except 503 `no_capacity` on a consumer
 * route: no backend runs here, and a mesh without capacity says so with a
 * 503 by contract (the Hugging Face routes say it as 429). Every answer must
 * also be one the document lists for its operation, its body conforming to
 * that status's schema: each 4xx in its route family's error shape (the
 * mesh's, OpenAI's or Hugging Face's). With no backend, an inference body
 * that passes the edge's checks ends at the model lookup: the translation
 * to OIP and what the edge does with a backend's answer are not reached.
 */

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { encodeBinaryBody, encodeBytesElements } from '../../../shared/binary.ts';
import type { KeyRole } from '../../../shared/jwt.ts';
import { generateEd25519 } from '../../../shared/keys.ts';
import { sha256Hex } from '../../../receipts/index.ts';
import { routeFamily } from '../../../workers/errors.ts';
import { admitProvider, call, heartbeatBody, heartbeatToken, keyFor } from '../helpers.ts';
import { doc, undocumented } from './documented.ts';

/** Runs per route: enough to reach every kind of body several times, in a few seconds overall. */
const RUNS = 100;
/**
 * The one 5xx a mesh without backends may give: 503 `no_capacity`, on the
 * consumer routes (the Hugging Face ones send it as 429). `not_ready` (no
 * usable signing key, revocations never loaded) cannot happen here: the test
 * edge has its key and its registry, so a `not_ready` is a failure too.
 */
const CAPACITY = /^\/(v2\/models|v1\/embeddings|v1\/models|models)\//;
const legitimate5xx = (path: string, status: number, code: string | undefined) => status === 503 && code === 'no_capacity' && CAPACITY.test(path + '/');
/** Nesting depth of the deep bodies, at most: two bytes a level, within the heartbeat's size bound (a receipt proof's is smaller: 413). */
const DEEP_MAX = 20_000;

const SCHEMES: Record<string, KeyRole | 'heartbeat'> = { consumerKey: 'consumer', billingKey: 'billing', adminToken: 'admin', heartbeatToken: 'heartbeat' };

/** A documented route that takes a body. */
interface Target {
  method: string;
  template: string;
  auth: KeyRole | 'heartbeat' | undefined;
  types: string[];
}

const targets: Target[] = Object.entries(doc.paths).flatMap(([template, methods]) =>
  Object.entries(methods)
    .filter(([, op]) => op.requestBody)
    .map(([method, op]) => ({
      method: method.toUpperCase(),
      template,
      auth: op.security ? SCHEMES[Object.keys(op.security[0]!)[0]!] : undefined,
      types: Object.keys(op.requestBody!.content),
    })),
);

const oipInput = { name: 'text', shape: [1], datatype: 'BYTES', data: ['hello'] };
const fuzzJwk = (await generateEd25519('fuzz-key')).publicJwk;

/** A valid body per route, the seed of the mutations; a route added later starts from `{}`. */
function validBody(template: string): unknown {
  if (template.startsWith('/v2/models/')) return { id: 'f', inputs: [oipInput, { name: 'x', shape: [2], datatype: 'INT64', data: [1, 2] }], outputs: [{ name: 'embedding' }] };
  if (template.startsWith('/models/')) return { inputs: ['a', 'b'], parameters: { normalize: true }, options: { use_cache: true, wait_for_model: false } };
  const bodies: Record<string, unknown> = {
    '/v1/embeddings': { model: 'embed', input: ['a', 'b'], encoding_format: 'float', dimensions: 256 },
    '/v1/providers/heartbeat': heartbeatBody('fuzz-backend', 'eu-west', {
      models: [{ name: 'fuzz-model', version: '1', warm: true, maxBatchSize: 8, p50Ms: 3, memoryBytes: 1024 }],
      available: ['fuzz-other'],
    }),
    '/v1/receipts/proof': { receipt: 'eyJhbGciOiJFZERTQSJ9.eyJqdGkiOiJ4In0.c2ln' },
    '/admin/providers': { id: 'fuzz-provider', publicJwk: fuzzJwk },
    '/admin/keys': { sub: 'fuzz-consumer', role: 'consumer', regions: ['eu-west'], ttlSeconds: 60 },
    '/admin/keys/revoke': { jti: 'fuzz-jti', exp: Math.floor(Date.now() / 1000) + 60 },
    '/admin/settlement/disputes': { jti: 'fuzz-receipt', reason: 'fuzz' },
    '/admin/providers/{id}/verification': { sample_rate: 0.5 },
  };
  return bodies[template] ?? {};
}

/** Values that break assumptions: other types, extreme numbers, long and odd strings, empty containers. */
const nasty = fc.oneof(
  fc.constantFrom<unknown>(
    1e308,
    -1e308,
    2 ** 53 + 2,
    -(2 ** 64),
    1e21,
    5e-324,
    -0,
    0.5,
    -1,
    0,
    '',
    'x'.repeat(5000),
    '\u0000',
    '\ud800',
    '../../x',
    '%00',
    null,
    true,
    [],
    {},
    [[[[]]]],
    JSON.parse('{"__proto__":{"inputs":1}}'),
    { constructor: { prototype: 1 } },
  ),
  fc.jsonValue({ maxDepth: 3 }),
  fc.string({ maxLength: 40 }),
  fc.double(),
  fc.integer(),
);

type Json = unknown;

/** Every path (list of keys) inside `v`, the root included. */
function pathsOf(v: Json, at: (string | number)[] = [], out: (string | number)[][] = []): (string | number)[][] {
  out.push(at);
  if (Array.isArray(v)) v.forEach((x, i) => pathsOf(x, [...at, i], out));
  else if (typeof v === 'object' && v !== null) for (const [k, x] of Object.entries(v)) pathsOf(x, [...at, k], out);
  return out;
}

type Mutation = { pick: number; op: 'set' | 'delete' | 'wrap' | 'add'; value: unknown; key: string };
const mutation = fc.record<Mutation>({
  pick: fc.nat(),
  op: fc.constantFrom('set', 'delete', 'wrap', 'add'),
  value: nasty,
  key: fc.constantFrom('extra', '__proto__', 'constructor', 'data', 'inputs', 'parameters', ''),
});

/** `base` with the mutations applied (on a copy). */
function mutate(base: Json, mutations: Mutation[]): Json {
  let root = structuredClone(base);
  for (const m of mutations) {
    const paths = pathsOf(root);
    const path = paths[m.pick % paths.length]!;
    const replace = (v: Json): Json => {
      switch (m.op) {
        case 'set':
          return m.value;
        case 'wrap':
          return [v];
        case 'add':
          return typeof v === 'object' && v !== null && !Array.isArray(v) ? { ...v, [m.key]: m.value } : Array.isArray(v) ? [...v, m.value] : m.value;
        default:
          return undefined;
      }
    };
    if (path.length === 0) {
      root = m.op === 'delete' ? {} : replace(root);
      continue;
    }
    const parent = path.slice(0, -1).reduce<any>((o, k) => o[k], root);
    const key = path.at(-1)!;
    if (m.op === 'delete') {
      if (Array.isArray(parent)) parent.splice(key as number, 1);
      else delete parent[key];
    } else {
      parent[key] = replace(parent[key]);
    }
  }
  return root;
}

const encoder = new TextEncoder();

/** A number in the JSON text written as one a double cannot hold. */
const hugeNumberText = (text: string, pick: number, huge: string) => {
  const numbers = [...text.matchAll(/(?<=[:,[])-?\d+(\.\d+)?(e[+-]?\d+)?/gi)];
  if (numbers.length === 0) return text;
  const m = numbers[pick % numbers.length]!;
  return text.slice(0, m.index) + huge + text.slice(m.index! + m[0].length);
};

/** A binary tensor extension body, valid before it is cut and mislabelled. */
function binaryBody(): { body: Uint8Array; headerLength: number } {
  const texts = encodeBytesElements([encoder.encode('hello'), encoder.encode('world')]);
  const floats = new Uint8Array(new Float32Array([1, 2]).buffer);
  return encodeBinaryBody(
    {
      inputs: [
        { name: 'text', shape: [2], datatype: 'BYTES', parameters: { binary_data_size: texts.byteLength } },
        { name: 'x', shape: [2], datatype: 'FP32', parameters: { binary_data_size: floats.byteLength } },
      ],
    },
    [texts, floats],
  );
}

interface Sample {
  body: Uint8Array;
  headers: Record<string, string>;
  what: string;
}

/** The bodies (and body-related headers) thrown at `target`. */
function bodies(target: Target): fc.Arbitrary<Sample> {
  const base = validBody(target.template);
  const json = (v: unknown, what: string): Sample => ({ body: encoder.encode(JSON.stringify(v) ?? 'null'), headers: {}, what });
  const kinds: fc.Arbitrary<Sample>[] = [
    fc.jsonValue({ maxDepth: 6 }).map((v) => json(v, 'random JSON')),
    fc.array(mutation, { minLength: 1, maxLength: 4 }).map((ms) => json(mutate(base, ms), 'mutated')),
    fc
      .tuple(fc.array(mutation, { maxLength: 2 }), fc.nat(), fc.constantFrom('1e400', '-1e400', '1' + '0'.repeat(400), '123456789012345678901234567890', '1e300', '9007199254740993'))
      .map(([ms, pick, huge]) => ({ body: encoder.encode(hugeNumberText(JSON.stringify(mutate(base, ms)) ?? 'null', pick, huge)), headers: {}, what: 'huge number' })),
    fc.tuple(fc.integer({ min: 33, max: DEEP_MAX }), fc.constantFrom('[', '{"inputs":', '{"a":[')).map(([depth, open]) => {
      const close = open === '[' ? ']' : open === '{"inputs":' ? '}' : ']}';
      return { body: encoder.encode(open.repeat(depth) + '1' + close.repeat(depth)), headers: {}, what: `nested ${depth} deep` };
    }),
    fc.tuple(fc.integer({ min: 33, max: DEEP_MAX }), fc.array(mutation, { maxLength: 1 })).map(([depth, ms]) => {
      // Written as text: a value this deep would overflow the test's own stack in JSON.stringify.
      const deep = '['.repeat(depth) + '1' + ']'.repeat(depth);
      const mutated = mutate(base, ms);
      const placed = typeof mutated === 'object' && mutated !== null && !Array.isArray(mutated) ? { ...mutated, inputs: 0, input: 0, data: 0 } : 0;
      const text = JSON.stringify(placed).replace(/"(inputs|input|data)":0/g, `"$1":${deep}`).replace(/^0$/, deep);
      return { body: encoder.encode(text), headers: {}, what: `valid body, a field nested ${depth} deep` };
    }),
    fc.uint8Array({ maxLength: 512 }).map((bytes) => ({ body: bytes, headers: {}, what: 'random bytes' })),
  ];
  if (target.template.startsWith('/v2/models/')) {
    const full = binaryBody();
    kinds.push(
      fc
        .tuple(
          fc.nat({ max: full.body.byteLength }),
          fc.oneof(fc.constant(String(full.headerLength)), fc.nat({ max: full.body.byteLength + 8 }).map(String), fc.constantFrom('-1', '0', '1', '2', 'abc', '1e3', ' 12', '99999999999', '', '0x10')),
          fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 4 }),
        )
        .map(([cut, length, flips]) => {
          const body = full.body.slice(0, cut);
          for (const [at, byte] of flips) if (body.byteLength) body[at % body.byteLength] = byte;
          return { body, headers: { 'inference-header-content-length': length }, what: `binary tensor body cut at ${cut}` };
        }),
    );
  }
  return fc.oneof(...kinds);
}

/** Random values of the headers the routes read; the Hugging Face routes never wait for capacity that cannot come. */
function headers(target: Target): fc.Arbitrary<Record<string, string>> {
  const odd = fc.oneof(fc.constantFrom('', ' ', 'none', 'sampled', 'redundant', 'eu-west', 'mars', 'SIN', 'true', 'false', '1', 'x'.repeat(300)), fc.string({ maxLength: 12 }));
  const safe = (s: string) => s.replace(/[^\x20-\x7e]/g, '').trim();
  return fc
    .record(
      {
        'content-type': fc.constantFrom('application/json', 'text/plain', 'image/png', 'application/octet-stream', 'multipart/form-data', ''),
        'x-mesh-region': odd,
        'x-mesh-verify': odd,
        'x-mesh-dev-colo': odd,
        'inference-header-content-length': odd,
        'cache-control': fc.oneof(odd, fc.constantFrom('no-store', 'no-cache', 'max-age=0')),
      },
      { requiredKeys: [] },
    )
    .chain((h) =>
      fc.constantFrom('false', '0', 'soon', 'TRUE?').map((wait) => {
        const out: Record<string, string> = {};
        for (const [k, v] of Object.entries(h)) out[k] = safe(v);
        if (target.template.startsWith('/models/')) out['x-wait-for-model'] = wait;
        return out;
      }),
    );
}

/** A path for the template: known and unknown models, tasks, provider ids, jtis. */
function pathFor(template: string): fc.Arbitrary<string> {
  const ids = fc.oneof(fc.constantFrom('embed', 'fuzz-provider', 'no-such-thing', '1', 'a.b', '%2F', '..'), fc.string({ minLength: 1, maxLength: 20 }));
  const params: Record<string, fc.Arbitrary<string>> = {
    task: fc.oneof(fc.constantFrom('feature-extraction', 'sentence-similarity', 'image-to-text'), fc.string({ minLength: 1, maxLength: 20 })),
  };
  const names = [...template.matchAll(/\{(\w+)\}/g)].map((m) => m[1]!);
  return fc.tuple(...names.map((n) => params[n] ?? ids)).map((values) => {
    let path = template;
    values.forEach((v, i) => (path = path.replace(`{${names[i]}}`, encodeURIComponent(v).replace(/^\.\.?$/, 'dot'))));
    return path;
  });
}

/**
 * Samples every run starts with, whatever the seed, with valid auth: the
 * valid body; the valid body with its first number written as 1e400 (a JSON
 * number no double holds, read as Infinity); and with every number 1e300 (an
 * integer a double holds, far past any date or count).
 */
function examples(target: Target): [Sample, Record<string, string>, string, number][] {
  const headers: Record<string, string> = target.template.startsWith('/models/') ? { 'x-wait-for-model': 'false' } : {};
  const filled: Record<string, string> = { model: 'embed', version: '1', task: 'feature-extraction', id: 'fuzz-provider', jti: 'fuzz-jti' };
  const path = target.template.replace(/\{(\w+)\}/g, (_, name: string) => filled[name] ?? 'x');
  const text = JSON.stringify(validBody(target.template));
  return [
    [{ body: encoder.encode(text), headers: {}, what: 'valid body' }, headers, path, 2],
    [{ body: encoder.encode(hugeNumberText(text, 0, '1e400')), headers: {}, what: 'first number 1e400' }, headers, path, 2],
    [{ body: encoder.encode(text.replace(/(?<=[:,[])-?\d+(\.\d+)?(e[+-]?\d+)?/gi, '1e300')), headers: {}, what: 'every number 1e300' }, headers, path, 2],
  ];
}

/** The error code of any family's error body. */
const codeOf = (body: any): string | undefined => (typeof body?.error === 'string' ? body.code : body?.error?.code);

/** The error shape each route family answers. */
function familyShaped(path: string, body: any): boolean {
  const keys = (o: unknown) => (typeof o === 'object' && o !== null ? Object.keys(o).sort().join() : '');
  switch (routeFamily(path)) {
    case 'openai':
      return keys(body) === 'error' && keys(body.error) === 'code,message,param,type';
    case 'huggingface':
      return keys(body) === 'code,error' && typeof body.error === 'string';
    default:
      return keys(body) === 'error' && keys(body.error) === 'code,message';
  }
}

let provider: Awaited<ReturnType<typeof admitProvider>> | undefined;
const keys: Partial<Record<KeyRole, string>> = {};

/** The Authorization header: a valid one for the route's role mostly, sometimes none or a forged one. */
async function authorization(target: Target, body: Uint8Array, choice: number): Promise<Record<string, string>> {
  if (!target.auth || choice === 0) return {};
  if (choice === 1) return { authorization: 'Bearer eyJhbGciOiJub25lIn0.e30.' };
  if (target.auth !== 'heartbeat') return { authorization: `Bearer ${(keys[target.auth] ??= await keyFor(target.auth))}` };
  provider ??= await admitProvider('fuzz-heartbeat-provider');
  let sub = 'fuzz-backend';
  try {
    const parsed = JSON.parse(new TextDecoder().decode(body)) as { backendId?: unknown };
    if (typeof parsed?.backendId === 'string' && parsed.backendId) sub = parsed.backendId;
  } catch {
    // Not JSON: the token is still over these exact bytes.
  }
  const token = await heartbeatToken(provider, sub, '', { bodySha256: await sha256Hex(body) });
  return { authorization: `Bearer ${token}` };
}

describe('fuzzed bodies never 5xx, and every answer is a documented one', () => {
  it('fuzzes every route the document gives a body', () => {
    expect(targets.map((t) => `${t.method} ${t.template}`)).toEqual(expect.arrayContaining(['POST /v2/models/{model}/infer', 'POST /v1/providers/heartbeat', 'POST /admin/keys']));
  });

  // The heartbeat last: what it admits to a region directory is a model no consumer route serves, but keep it apart anyway.
  const ordered = [...targets].sort((a, b) => Number(a.auth === 'heartbeat') - Number(b.auth === 'heartbeat'));
  for (const target of ordered) {
    it(`${target.method} ${target.template}`, async () => {
      await fc.assert(
        fc.asyncProperty(bodies(target), headers(target), pathFor(target.template), fc.nat({ max: 9 }), async (sample, extra, path, authChoice) => {
          const sent = { ...extra, ...sample.headers, ...(await authorization(target, sample.body, authChoice)) };
          const res = await call(path, { method: target.method, body: sample.body, headers: sent });
          const text = new TextDecoder().decode(await res.arrayBuffer());
          const isJson = (res.headers.get('content-type') ?? '').startsWith('application/json');
          const body = isJson ? JSON.parse(text) : undefined;
          const context = `${target.method} ${path} (${sample.what}, headers ${JSON.stringify({ ...sent, authorization: undefined })}): ${res.status} ${text.slice(0, 300)}`;
          expect(res.status < 500 || legitimate5xx(path, res.status, codeOf(body)), context).toBe(true);
          if (res.status >= 400) expect(familyShaped(path, body), context).toBe(true);
          expect(undocumented(target.method, path, res.status, body, res.headers), context).toEqual([]);
        }),
        { numRuns: RUNS, examples: examples(target) },
      );
    });
  }
});
