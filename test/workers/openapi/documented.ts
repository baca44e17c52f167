/**
 * The OpenAPI document as the tests read it, and the check that an answer of
 * the edge is one it documents: the operation lists the status, and a JSON
 * body conforms to that status's schema (json-schema.ts). Used by the
 * examples and the fuzz tests on every answer they get.
 */

import { openApiText } from '../../../workers/openapi/document.ts';
import { check, resolve } from './json-schema.ts';

export type Doc = {
  paths: Record<string, Record<string, Operation>>;
  components: Record<string, Record<string, unknown>>;
};
export type Operation = {
  operationId: string;
  security?: Record<string, string[]>[];
  parameters?: Record<string, any>[];
  requestBody?: { content: Record<string, { schema: any }> };
  responses: Record<string, any>;
};

export const doc = JSON.parse(openApiText()) as Doc;

const literalCount = (template: string) => template.split('/').filter((s) => s && !s.startsWith('{')).length;

/** The documented path template and operation that `method path` reaches, if any (the most literal match wins, as in the router). */
export function operationOf(method: string, path: string): { template: string; op: Operation } | undefined {
  const matches = Object.keys(doc.paths)
    .filter((t) => new RegExp(`^${t.replace(/[.]/g, '\\.').replace(/\{\w+\}/g, '[^/]+')}$`).test(path) && doc.paths[t]![method.toLowerCase()])
    .sort((a, b) => literalCount(b) - literalCount(a));
  const template = matches[0];
  return template === undefined ? undefined : { template, op: doc.paths[template]![method.toLowerCase()]! };
}

/** A response object, its `$ref` followed. */
export const responseOf = (op: Operation, status: number) => {
  const r = op.responses[String(status)];
  return r?.$ref ? (resolve(doc, r.$ref) as Record<string, any>) : (r as Record<string, any> | undefined);
};

/** The request body schema of `op` for a content type. */
export const requestSchema = (op: Operation, type = 'application/json') => op.requestBody?.content[type]?.schema;

/**
 * What is wrong with answering `method path` with `status`, `body` (parsed
 * JSON, or undefined) and `headers`, by the document: empty when nothing is.
 */
export function undocumented(method: string, path: string, status: number, body: unknown, headers: Headers): string[] {
  const found = operationOf(method, path);
  if (!found) return [`${method} ${path} is not documented`];
  const where = `${method} ${found.template} ${status}`;
  const response = responseOf(found.op, status);
  if (!response) return [`${where}: status not documented (body ${JSON.stringify(body)?.slice(0, 300)})`];
  const problems: string[] = [];
  if (!headers.get('x-request-id')) problems.push(`${where}: no x-request-id`);
  const type = (headers.get('content-type') ?? '').split(';')[0]!.trim();
  const schema = response.content?.[type]?.schema;
  if (response.content && !schema) problems.push(`${where}: content type "${type}" not documented`);
  if (schema && type === 'application/json') problems.push(...check(body, schema, doc).map((p) => `${where}: ${p} (body ${JSON.stringify(body)?.slice(0, 300)})`));
  return problems;
}

/** `res`'s body as JSON when it is JSON, else undefined; the response itself is left unread otherwise. */
export async function jsonOf(res: Response): Promise<unknown> {
  const text = await res.text();
  if (!(res.headers.get('content-type') ?? '').startsWith('application/json')) return undefined;
  return JSON.parse(text);
}
