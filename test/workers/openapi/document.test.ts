/**
 * The OpenAPI document (workers/openapi/): it documents exactly the routes
 * the app registers; it is well-formed (every reference resolves, every
 * path parameter is declared, only keywords the tests' checker knows); its
 * error answers are the ones workers/errors.ts sends, per route family.
 * `GET /openapi.json` itself is a static asset (scripts/build-assets.ts,
 * tested in test/scripts/build-assets.test.ts and through wrangler dev).
 */

import { describe, expect, it } from 'vitest';
import apiMd from '../../../docs/api.md?raw';
import { MeshError } from '../../../shared/errors.ts';
import { app } from '../../../workers/app.ts';
import { errorAnswer, routeFamily } from '../../../workers/errors.ts';
import { ERROR_CODES } from '../../../workers/openapi/build.ts';
import { openApiText } from '../../../workers/openapi/document.ts';
import { call } from '../helpers.ts';
import { check, KEYWORDS, resolve, subschemas } from './json-schema.ts';
import { doc, responseOf } from './documented.ts';

/** `METHOD /path/{param}` of every route handler the app registers (middleware, method ALL, aside). */
function registered(): string[] {
  const routes = app.routes.filter((r) => r.method !== 'ALL').map((r) => `${r.method} ${r.path.replace(/:(\w+)/g, '{$1}')}`);
  return [...new Set(routes)].sort();
}

function documentedRoutes(): string[] {
  return Object.entries(doc.paths)
    .flatMap(([path, methods]) => Object.keys(methods).map((m) => `${m.toUpperCase()} ${path}`))
    .sort();
}

/** Every `$ref` in `value`. */
function* refs(value: unknown): Generator<string> {
  if (typeof value !== 'object' || value === null) return;
  for (const [k, v] of Object.entries(value)) {
    if (k === '$ref' && typeof v === 'string') yield v;
    else yield* refs(v);
  }
}

/** Every schema in the document: components, request bodies, parameters, headers, responses. */
function* schemas(): Generator<unknown> {
  yield* Object.values(doc.components.schemas!);
  const withSchema = function* (value: unknown): Generator<unknown> {
    if (typeof value !== 'object' || value === null) return;
    for (const [k, v] of Object.entries(value)) {
      if (k === 'schema') yield v;
      else if (k !== 'schemas') yield* withSchema(v);
    }
  };
  yield* withSchema(doc.paths);
  yield* withSchema(doc.components);
}

describe('the OpenAPI document', () => {
  it('documents every route the app registers and its own static asset, and no other', () => {
    const routes = registered();
    expect(routes.length).toBeGreaterThan(30);
    expect(documentedRoutes()).toEqual([...routes, 'GET /openapi.json'].sort());
  });

  it('lists the same routes as docs/api.md\'s table "Every route of the edge", with the same auth', () => {
    const table = apiMd.split('### Every route of the edge')[1]!.split('\n\n')[1]!;
    const rows = table.split('\n').slice(2);
    const auth = (row: string) => row.split('|')[2]!.trim();
    const listed = rows.flatMap((row) => [...row.split('|')[1]!.matchAll(/`(\w+) ([^`]+)`/g)].map((m) => [`${m[1]} ${m[2]}`, auth(row)] as const));
    expect(listed.map(([route]) => route).sort()).toEqual(documentedRoutes());
    const schemes: Record<string, string> = {
      'consumer key': 'consumerKey',
      'billing or admin token': 'billingKey,adminToken',
      'admin, billing or provider key': 'billingKey,adminToken,providerKey',
      'admin token': 'adminToken',
      none: '',
    };
    for (const [route, who] of listed) {
      const [method, path] = route.split(' ') as [string, string];
      const security = doc.paths[path]![method.toLowerCase()]!.security ?? [];
      const expected = schemes[who] ?? (who.startsWith('heartbeat') ? 'heartbeatToken' : who);
      expect(security.flatMap((r) => Object.keys(r)).join(), route).toBe(expected);
    }
  });

  it('is OpenAPI 3.1 with unique operation ids, each naming its section of docs/api.md', () => {
    expect(doc).toMatchObject({ openapi: '3.1.0', info: { title: expect.any(String), version: expect.any(String) } });
    const ops = Object.values(doc.paths).flatMap((m) => Object.values(m));
    expect(new Set(ops.map((o) => o.operationId)).size).toBe(ops.length);
    for (const op of ops) expect((op as { description?: string }).description).toMatch(/^docs\/api\.md section /);
  });

  it('resolves every reference, and declares every path parameter', () => {
    for (const ref of refs(doc)) expect(() => resolve(doc, ref), ref).not.toThrow();
    for (const [path, methods] of Object.entries(doc.paths)) {
      const names = [...path.matchAll(/\{(\w+)\}/g)].map((m) => m[1]);
      for (const op of Object.values(methods)) {
        const declared = (op.parameters ?? []).filter((p) => p.in === 'path').map((p) => p.name);
        expect(declared, path).toEqual(names);
      }
    }
  });

  it('uses only JSON Schema keywords the tests check', () => {
    const unknown = new Set<string>();
    for (const schema of schemas()) for (const s of subschemas(schema)) for (const k of Object.keys(s)) if (!KEYWORDS.has(k)) unknown.add(k);
    expect([...unknown]).toEqual([]);
  });

  it('names a defined security scheme for every authenticated route, and none for the public ones', () => {
    const schemes = Object.keys(doc.components.securitySchemes!);
    const publicRoutes: string[] = [];
    for (const [path, methods] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(methods)) {
        if (!op.security) publicRoutes.push(`${method.toUpperCase()} ${path}`);
        for (const requirement of op.security ?? []) for (const name of Object.keys(requirement)) expect(schemes).toContain(name);
        if (op.security) expect(op.responses['401'], `${method} ${path}`).toBeDefined();
      }
    }
    expect(publicRoutes.sort()).toEqual([
      'GET /.well-known/jwks-archive.json',
      'GET /.well-known/jwks.json',
      'GET /openapi.json',
      'GET /v2/health/live',
      'GET /v2/health/ready',
    ]);
  });

  it("documents each family's error body exactly as workers/errors.ts answers every code", () => {
    const samples: Record<string, string> = { mesh: '/v2/models/{model}/infer', openai: '/v1/embeddings', huggingface: '/models/{model}' };
    for (const [family, path] of Object.entries(samples)) {
      expect(routeFamily(path)).toBe(family);
      for (const code of ERROR_CODES) {
        const answer = errorAnswer(new MeshError(code, 'Something.', { param: 'input' }), family as 'mesh');
        const response = responseOf(doc.paths[path]!.post!, answer.status);
        // An operation documents the statuses it can answer; where it does, the body must conform.
        if (!response) continue;
        expect(check(answer.body, response.content['application/json'].schema, doc), `${family} ${code}`).toEqual([]);
        for (const header of Object.keys(answer.headers)) expect(Object.keys(response.headers), `${family} ${code}`).toContain(header);
      }
    }
    // OpenAI's shape carries type, param and code, as OpenAI's errors do.
    const openai = resolve(doc, '#/components/responses/openai-400') as any;
    expect(Object.keys(openai.content['application/json'].schema.properties.error.properties).sort()).toEqual(['code', 'message', 'param', 'type']);
    // Hugging Face's routes answer a 503 as 429.
    expect(doc.paths['/models/{model}']!.post!.responses['503']).toBeUndefined();
    expect(doc.paths['/models/{model}']!.post!.responses['429']).toBeDefined();
  });

  it('is not a route of the Worker: the Worker carries no OpenAPI code (GET /openapi.json is a static asset)', async () => {
    const res = await call('/openapi.json');
    expect(res.status).toBe(404);
    expect(openApiText()).toBe(openApiText());
  });
});
