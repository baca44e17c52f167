/**
 * Whether two OIP v2 answers of one model agree (docs/api.md section 6.2):
 * the comparison the edge makes when it re-executes a request on another
 * provider, and the one a verifier recomputes from a fraud proof. Only
 * `outputs` is compared, by name: same datatype, same shape, same flattened
 * data, floating-point elements within the model's `CompareRule`, every
 * other element exactly equal. A disagreement carries a short reason that
 * names the first difference.
 *
 * Pure and allocation-free per element (nested data is walked in place), so
 * answers of millions of elements compare quickly in Node and workerd alike.
 */

import { answerAsJson } from '../shared/binary.ts';
import type { CompareRule } from '../shared/jwt.ts';

/** The rule of a model that names none. */
export const DEFAULT_RULE: CompareRule = Object.freeze({ float: Object.freeze({ abs: 1e-4, rel: 1e-3 }) });

export type Comparison = { agree: true } | { agree: false; reason: string };

/** A rule is valid when `float.abs` and `float.rel` are finite numbers in [0, 1]. */
export function isCompareRule(x: unknown): x is CompareRule {
  if (typeof x !== 'object' || x === null || Array.isArray(x)) return false;
  const float = (x as { float?: unknown }).float;
  if (typeof float !== 'object' || float === null || Array.isArray(float)) return false;
  const { abs, rel } = float as { abs?: unknown; rel?: unknown };
  return isUnit(abs) && isUnit(rel);
}

function isUnit(v: unknown): v is number {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0 && v <= 1;
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false });

/** Compares two answers given as their bytes (UTF-8 JSON, or the binary tensor extension). Bytes that are neither disagree. */
export function compareAnswerBytes(a: Uint8Array, b: Uint8Array, rule: CompareRule = DEFAULT_RULE): Comparison {
  const pa = parseAnswer(a, 'first');
  if (!pa.ok) return pa.result;
  const pb = parseAnswer(b, 'second');
  if (!pb.ok) return pb.result;
  return compareAnswers(pa.value, pb.value, rule);
}

/** An answer's bytes as OIP JSON: plain JSON, or a binary-extension answer with its binary outputs decoded (shared/binary.ts). */
function parseAnswer(bytes: Uint8Array, which: string): { ok: true; value: unknown } | { ok: false; result: Comparison } {
  try {
    return { ok: true, value: JSON.parse(utf8.decode(bytes)) };
  } catch {
    const binary = answerAsJson(bytes);
    if (binary !== undefined) return { ok: true, value: binary };
    return { ok: false, result: { agree: false, reason: `the ${which} answer is neither UTF-8 JSON nor a binary-extension answer` } };
  }
}

/** Compares two parsed OIP answers under `rule`. Anything that is not an OIP answer disagrees. */
export function compareAnswers(a: unknown, b: unknown, rule: CompareRule = DEFAULT_RULE): Comparison {
  if (!isCompareRule(rule)) throw new TypeError('rule must be { float: { abs, rel } } with abs and rel finite in [0, 1]');
  const oa = outputsOf(a, 'first');
  if (typeof oa === 'string') return differ(oa);
  const ob = outputsOf(b, 'second');
  if (typeof ob === 'string') return differ(ob);

  for (const name of oa.keys()) if (!ob.has(name)) return differ(`output ${show(name)} is only in the first answer`);
  for (const name of ob.keys()) if (!oa.has(name)) return differ(`output ${show(name)} is only in the second answer`);

  // Names in the first answer's order, so the reason names the first difference a reader would meet.
  for (const [name, x] of oa) {
    const y = ob.get(name)!;
    const label = `output ${show(name)}`;
    if (x.datatype !== y.datatype) return differ(`${label}: datatype ${x.datatype} vs ${y.datatype}`);
    if (x.shape.length !== y.shape.length || x.shape.some((d, i) => d !== y.shape[i])) {
      return differ(`${label}: shape [${x.shape.join(',')}] vs [${y.shape.join(',')}]`);
    }
    const na = leafCount(x.data, 0);
    if (na < 0) return differ(`the first answer's ${label} data is nested too deeply`);
    const nb = leafCount(y.data, 0);
    if (nb < 0) return differ(`the second answer's ${label} data is nested too deeply`);
    if (na !== nb) return differ(`${label}: ${na} vs ${nb} data elements`);
    const reason = FLOAT_TYPES.has(x.datatype) ? compareFloats(label, x.data, y.data, na, rule) : compareExact(label, x.datatype, x.data, y.data, na);
    if (reason !== undefined) return differ(reason);
  }
  return { agree: true };
}

function differ(reason: string): Comparison {
  return { agree: false, reason };
}

// --- answers ---------------------------------------------------------------

const FLOAT_TYPES: ReadonlySet<string> = new Set(['FP16', 'BF16', 'FP32', 'FP64']);

interface Output {
  datatype: string;
  shape: number[];
  data: unknown[];
}

/** The outputs of an OIP answer by name, or why it is not one. */
function outputsOf(answer: unknown, which: 'first' | 'second'): Map<string, Output> | string {
  const not = (why: string) => `the ${which} answer is not an OIP answer: ${why}`;
  if (typeof answer !== 'object' || answer === null || Array.isArray(answer)) return not('not a JSON object');
  const outputs = (answer as { outputs?: unknown }).outputs;
  if (!Array.isArray(outputs)) return not('"outputs" is not an array');
  const byName = new Map<string, Output>();
  for (let i = 0; i < outputs.length; i++) {
    const o = outputs[i] as Record<string, unknown> | null;
    if (typeof o !== 'object' || o === null || Array.isArray(o)) return not(`outputs[${i}] is not an object`);
    const { name, datatype, shape, data } = o;
    if (typeof name !== 'string') return not(`outputs[${i}] has no string "name"`);
    if (typeof datatype !== 'string' || datatype === '') return not(`output ${show(name)} has no "datatype"`);
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) return not(`output ${show(name)} "shape" is not a list of sizes`);
    if (!Array.isArray(data)) return not(`output ${show(name)} "data" is not an array`);
    if (byName.has(name)) return not(`output ${show(name)} appears twice`);
    byName.set(name, { datatype, shape: shape as number[], data });
  }
  return byName;
}

/** Nested arrays deeper than this are refused (no answer needs them; recursion stays bounded). */
const MAX_DEPTH = 32;

/** The number of leaves of nested arrays, or -1 when nested deeper than `MAX_DEPTH`. */
function leafCount(data: unknown[], depth: number): number {
  if (depth >= MAX_DEPTH) return -1;
  let n = 0;
  for (let i = 0; i < data.length; i++) {
    const v = data[i];
    if (Array.isArray(v)) {
      const m = leafCount(v, depth + 1);
      if (m < 0) return -1;
      n += m;
    } else n++;
  }
  return n;
}

/**
 * Walks the leaves of nested arrays in order (row-major, as flattening
 * would), without building the flat array: one stack per output, none per element.
 */
class Leaves {
  readonly #arrays: unknown[][] = [];
  readonly #index: number[] = [];
  #top = 0;
  /** True while every leaf so far sat directly in the root (the fast path). */
  readonly flat: boolean;

  constructor(root: unknown[], flat: boolean) {
    this.#arrays[0] = root;
    this.#index[0] = 0;
    this.flat = flat;
  }

  /** The next leaf; callers ask for exactly as many as `leafCount` gave. */
  next(): unknown {
    for (;;) {
      const arr = this.#arrays[this.#top]!;
      const i = this.#index[this.#top]!;
      if (i >= arr.length) {
        this.#top--;
        continue;
      }
      this.#index[this.#top] = i + 1;
      const v = arr[i];
      if (!Array.isArray(v)) return v;
      this.#top++;
      this.#arrays[this.#top] = v;
      this.#index[this.#top] = 0;
    }
  }
}

/** Whether `data` (of `count` leaves) has no nested arrays: then its leaves are its elements, in place. */
function isFlat(data: unknown[], count: number): boolean {
  if (data.length !== count) return false;
  for (let i = 0; i < data.length; i++) if (Array.isArray(data[i])) return false;
  return true;
}

// --- elements --------------------------------------------------------------

/**
 * A float element as a number: a JSON number, or the strings "NaN",
 * "Infinity", "-Infinity" some servers write; `null` (what JSON.stringify
 * makes of NaN and the infinities) reads as NaN. Anything else: undefined.
 */
function floatOf(v: unknown): number | undefined {
  if (typeof v === 'number') return v;
  if (v === null || v === 'NaN') return NaN;
  if (v === 'Infinity') return Infinity;
  if (v === '-Infinity') return -Infinity;
  return undefined;
}

function compareFloats(label: string, a: unknown[], b: unknown[], n: number, rule: CompareRule): string | undefined {
  const { abs, rel } = rule.float;
  const fa = isFlat(a, n);
  const fb = isFlat(b, n);
  if (fa && fb) {
    // Fast path: the usual flat data, read by index.
    for (let i = 0; i < n; i++) {
      const va = a[i];
      const vb = b[i];
      if (typeof va === 'number' && typeof vb === 'number') {
        // Finite pairs within the rule pass here; the rest (NaN, infinities, a difference) go the slow way.
        const m = Math.max(Math.abs(va), Math.abs(vb));
        if (m !== Infinity && Math.abs(va - vb) <= abs + rel * m) continue;
      }
      const r = floatDifference(label, i, va, vb, abs, rel);
      if (r !== undefined) return r;
    }
    return undefined;
  }
  const la = new Leaves(a, fa);
  const lb = new Leaves(b, fb);
  for (let i = 0; i < n; i++) {
    const r = floatDifference(label, i, la.next(), lb.next(), abs, rel);
    if (r !== undefined) return r;
  }
  return undefined;
}

/** Why two float elements differ, or undefined when they agree. */
function floatDifference(label: string, i: number, va: unknown, vb: unknown, abs: number, rel: number): string | undefined {
  const x = floatOf(va);
  if (x === undefined) return `the first answer's ${label} element ${i} is not a number (${showValue(va)})`;
  const y = floatOf(vb);
  if (y === undefined) return `the second answer's ${label} element ${i} is not a number (${showValue(vb)})`;
  if (Number.isNaN(x) && Number.isNaN(y)) return undefined;
  if (!Number.isFinite(x) || !Number.isFinite(y)) return x === y ? undefined : `${label} element ${i}: ${x} vs ${y}`;
  const d = Math.abs(x - y);
  const tolerance = abs + rel * Math.max(Math.abs(x), Math.abs(y));
  if (d <= tolerance) return undefined;
  return `${label} element ${i}: ${x} vs ${y} (differ by ${round(d)}, tolerance ${round(tolerance)})`;
}

function compareExact(label: string, datatype: string, a: unknown[], b: unknown[], n: number): string | undefined {
  const bool = datatype === 'BOOL';
  const la = new Leaves(a, isFlat(a, n));
  const lb = new Leaves(b, isFlat(b, n));
  for (let i = 0; i < n; i++) {
    const va = la.flat ? a[i] : la.next();
    const vb = lb.flat ? b[i] : lb.next();
    if (!isScalar(va)) return `the first answer's ${label} element ${i} is not a scalar (${showValue(va)})`;
    if (!isScalar(vb)) return `the second answer's ${label} element ${i} is not a scalar (${showValue(vb)})`;
    // BOOL may arrive as true/false or 1/0: compared as numbers.
    const same = bool && va !== null && vb !== null ? Number(va) === Number(vb) : va === vb;
    if (!same) return `${label} element ${i}: ${showValue(va)} vs ${showValue(vb)}`;
  }
  return undefined;
}

function isScalar(v: unknown): v is number | string | boolean | null {
  return v === null || typeof v === 'number' || typeof v === 'string' || typeof v === 'boolean';
}

// --- reasons ---------------------------------------------------------------

/** A name for a reason: quoted, and cut when long. */
function show(s: string): string {
  return JSON.stringify(s.length > 60 ? `${s.slice(0, 57)}...` : s);
}

function showValue(v: unknown): string {
  if (typeof v === 'string') return show(v);
  if (typeof v === 'number' || typeof v === 'boolean' || v === null) return String(v);
  if (v === undefined) return 'nothing';
  return Array.isArray(v) ? 'an array' : 'an object';
}

/** A difference or tolerance for a reason: enough digits to see, not a float dump. */
function round(x: number): string {
  return String(Number(x.toPrecision(3)));
}
