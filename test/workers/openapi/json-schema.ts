/**
 * A small JSON Schema (2020-12) checker for the tests of the OpenAPI
 * document: just the keywords workers/openapi/ uses, with local `$ref`s into
 * the document. A keyword it does not know is an error, never ignored, so the
 * document cannot use one whose meaning these tests would not check.
 * (ajv compiles schemas with `new Function`, which workerd forbids.)
 */

type Schema = boolean | { [key: string]: unknown };

/** Keywords that only annotate: nothing to check. */
const ANNOTATIONS = new Set(['description', 'title', 'format', 'contentMediaType', 'contentEncoding', 'examples']);
/** Keywords this checker evaluates. */
export const KEYWORDS = new Set([
  '$ref',
  'type',
  'enum',
  'const',
  'properties',
  'required',
  'additionalProperties',
  'items',
  'minItems',
  'maxItems',
  'minimum',
  'maximum',
  'minLength',
  'maxLength',
  'pattern',
  'anyOf',
  'oneOf',
  'allOf',
  'not',
  ...ANNOTATIONS,
]);

function typeOk(type: string, v: unknown): boolean {
  switch (type) {
    case 'null':
      return v === null;
    case 'boolean':
      return typeof v === 'boolean';
    case 'string':
      return typeof v === 'string';
    case 'number':
      return typeof v === 'number' && Number.isFinite(v);
    case 'integer':
      return Number.isInteger(v);
    case 'array':
      return Array.isArray(v);
    case 'object':
      return typeof v === 'object' && v !== null && !Array.isArray(v);
    default:
      throw new Error(`unknown type ${type}`);
  }
}

const equal = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

/** Resolves a local reference (`#/components/schemas/X`) in `root`. */
export function resolve(root: unknown, ref: string): unknown {
  if (!ref.startsWith('#/')) throw new Error(`not a local $ref: ${ref}`);
  let at: unknown = root;
  for (const part of ref.slice(2).split('/')) {
    at = (at as Record<string, unknown> | undefined)?.[part.replace(/~1/g, '/').replace(/~0/g, '~')];
    if (at === undefined) throw new Error(`unresolved $ref ${ref}`);
  }
  return at;
}

/** The problems of `value` against `schema` (empty when it conforms), each with the path where it is. */
export function check(value: unknown, schema: Schema, root: unknown, path = '$'): string[] {
  if (schema === true) return [];
  if (schema === false) return [`${path}: no value is allowed`];
  for (const key of Object.keys(schema)) if (!KEYWORDS.has(key)) throw new Error(`${path}: unknown keyword ${key}`);
  const s = schema as Record<string, any>;
  const out: string[] = [];
  if (s.$ref) out.push(...check(value, resolve(root, s.$ref) as Schema, root, path));
  if (s.type !== undefined) {
    const types: string[] = Array.isArray(s.type) ? s.type : [s.type];
    if (!types.some((t) => typeOk(t, value))) return [...out, `${path}: not ${types.join(' or ')}`];
  }
  if (s.enum && !s.enum.some((e: unknown) => equal(e, value))) out.push(`${path}: not one of ${JSON.stringify(s.enum)}`);
  if ('const' in s && !equal(s.const, value)) out.push(`${path}: not ${JSON.stringify(s.const)}`);
  if (typeof value === 'string') {
    const length = [...value].length;
    if (s.minLength !== undefined && length < s.minLength) out.push(`${path}: shorter than ${s.minLength}`);
    if (s.maxLength !== undefined && length > s.maxLength) out.push(`${path}: longer than ${s.maxLength}`);
    if (s.pattern !== undefined && !new RegExp(s.pattern, 'u').test(value)) out.push(`${path}: does not match ${s.pattern}`);
  }
  if (typeof value === 'number') {
    if (s.minimum !== undefined && value < s.minimum) out.push(`${path}: below ${s.minimum}`);
    if (s.maximum !== undefined && value > s.maximum) out.push(`${path}: above ${s.maximum}`);
  }
  if (Array.isArray(value)) {
    if (s.minItems !== undefined && value.length < s.minItems) out.push(`${path}: fewer than ${s.minItems} items`);
    if (s.maxItems !== undefined && value.length > s.maxItems) out.push(`${path}: more than ${s.maxItems} items`);
    if (s.items !== undefined) value.forEach((v, i) => out.push(...check(v, s.items, root, `${path}[${i}]`)));
  }
  if (typeOk('object', value)) {
    const obj = value as Record<string, unknown>;
    for (const name of s.required ?? []) if (!(name in obj)) out.push(`${path}: no "${name}"`);
    for (const [name, v] of Object.entries(obj)) {
      const sub = s.properties?.[name] ?? s.additionalProperties;
      if (sub !== undefined) out.push(...check(v, sub, root, `${path}.${name}`));
    }
  }
  if (s.allOf) for (const sub of s.allOf) out.push(...check(value, sub, root, path));
  if (s.anyOf && !s.anyOf.some((sub: Schema) => check(value, sub, root, path).length === 0)) out.push(`${path}: matches none of anyOf`);
  if (s.oneOf && s.oneOf.filter((sub: Schema) => check(value, sub, root, path).length === 0).length !== 1) out.push(`${path}: does not match exactly one of oneOf`);
  if (s.not && check(value, s.not, root, path).length === 0) out.push(`${path}: matches "not"`);
  return out;
}

/** Every schema object inside `schema` (itself included), for checks over the whole document. */
export function* subschemas(schema: unknown): Generator<Record<string, unknown>> {
  if (typeof schema !== 'object' || schema === null) return;
  const s = schema as Record<string, any>;
  yield s;
  for (const key of ['items', 'additionalProperties', 'not']) if (typeof s[key] === 'object') yield* subschemas(s[key]);
  for (const key of ['anyOf', 'oneOf', 'allOf']) for (const sub of s[key] ?? []) yield* subschemas(sub);
  for (const sub of Object.values(s.properties ?? {})) yield* subschemas(sub);
}
