/**
 * What mesh-verify reads, and how: receipt and batch arguments (a file, the
 * JWT itself, or stdin), the JWT inside a file (bare, a JSON string, or a
 * JSON object's field), receipts.ndjson, and the JWKS (a file or an http(s)
 * URL). Unreadable input is a `UsageError` (exit 2); input that was read but
 * is not what it should be is an `InputError` (exit 1, like a failed check).
 */

import { readFile, stat } from 'node:fs/promises';
import { VerifyError, type Jwks } from '../receipts/index.ts';
import type { BatchClaims } from '../shared/jwt.ts';

/** A usage error or input that cannot be read: exit 2. */
export class UsageError extends Error {}

/** Input that was read but is not what it should be: a verification failure (exit 1), like a VerifyError. */
export class InputError extends Error {
  readonly code = 'malformed';
}

export interface LoadedBatch {
  jwt: string;
  /** The `id` of a `{ "id", "batch" }` file, when there was one. */
  id?: string;
}

/** A batch.json's `id` must name the batch its JWT signs. */
export function checkBatchId(batch: LoadedBatch, claims: BatchClaims): void {
  if (batch.id !== undefined && batch.id !== claims.batch_id) {
    throw new VerifyError('proof_mismatch', `batch file says id ${batch.id}, but its signed batch_id is ${claims.batch_id}`);
  }
}

const JWT_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*$/;

export async function readText(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

export async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** A receipt or batch argument: `-` (stdin), a file, or the JWT itself. */
async function loadTokenText(arg: string): Promise<{ text: string; source: string }> {
  if (arg === '-') return { text: await readStdin(), source: 'stdin' };
  const isFile = await stat(arg).then((s) => s.isFile(), () => false);
  if (isFile) return { text: await readText(arg), source: arg };
  if (JWT_SHAPE.test(arg.trim())) return { text: arg, source: 'argument' };
  throw new UsageError(`${arg} is neither a file nor a JWT`);
}

/** The JWT in a text: bare, a JSON string, or a JSON object's `field`. */
function tokenIn(text: string, field: 'receipt' | 'batch', source: string): { jwt: string; json?: Record<string, unknown> } {
  const t = text.trim();
  if (t.startsWith('{')) {
    const json = parseJson(t, source) as Record<string, unknown>;
    const jwt = json[field];
    if (typeof jwt !== 'string') throw new InputError(`${source}: no "${field}" JWT in this JSON object`);
    return { jwt: jwt.trim(), json };
  }
  if (t.startsWith('"')) {
    const jwt = parseJson(t, source);
    if (typeof jwt !== 'string') throw new InputError(`${source}: not a JWT string`);
    return { jwt: jwt.trim() };
  }
  if (t === '') throw new InputError(`${source}: empty`);
  return { jwt: t };
}

export async function loadToken(arg: string, field: 'receipt' | 'batch'): Promise<string> {
  const { text, source } = await loadTokenText(arg);
  return tokenIn(text, field, source).jwt;
}

export async function loadBatch(arg: string): Promise<LoadedBatch> {
  const { text, source } = await loadTokenText(arg);
  const { jwt, json } = tokenIn(text, 'batch', source);
  const id = json?.id;
  if (id !== undefined && typeof id !== 'string') throw new InputError(`${source}: "id" must be a string`);
  return id === undefined ? { jwt } : { jwt, id };
}

/** receipts.ndjson: one receipt per line, as `{"receipt": JWT, ...}`, a JSON string, or the bare JWT. */
export function parseNdjson(text: string, source: string): string[] {
  const out: string[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === '') continue;
    out.push(tokenIn(line, 'receipt', `${source} line ${i + 1}`).jwt);
  }
  return out;
}

export function parseJson(text: string, source: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new InputError(`${source}: not valid JSON`);
  }
}

export async function loadJwks(arg: string): Promise<Jwks> {
  let text: string;
  if (/^https?:\/\//i.test(arg)) {
    try {
      const res = await fetch(arg, { signal: AbortSignal.timeout(15_000), headers: { accept: 'application/json' } });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      text = await res.text();
    } catch (err) {
      throw new UsageError(`cannot fetch JWKS from ${arg}: ${(err as Error).message}`);
    }
  } else {
    text = await readText(arg);
  }
  let jwks: unknown;
  try {
    jwks = JSON.parse(text);
  } catch {
    throw new UsageError(`JWKS ${arg} is not valid JSON`);
  }
  if (typeof jwks !== 'object' || jwks === null || !Array.isArray((jwks as Jwks).keys)) {
    throw new UsageError(`JWKS ${arg} has no "keys" array`);
  }
  return jwks as Jwks;
}
