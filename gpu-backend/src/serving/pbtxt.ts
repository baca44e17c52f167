/**
 * The protobuf text format Triton's `config.pbtxt` is written in, parsed into
 * the JSON form of the config that model-config.ts's `parseModelConfig`
 * validates. Only the subset Triton configs use:
 *
 * - `field: value` scalars: strings in double or single quotes (C escapes,
 *   adjacent strings joined), integers (negative, hex), floats, `true` and
 *   `false`, and bare enum identifiers (`TYPE_FP32`, `KIND_GPU`), which
 *   become strings;
 * - nested messages `field { ... }`, `field: { ... }` (or `< ... >`);
 * - repeated fields written by repetition or as lists `[1, 2]`,
 *   `[{ ... }, { ... }]`;
 * - `#` comments, and `,` or `;` between fields;
 * - map fields as entries: `parameters { key: "k" value: { string_value: "v" } }`.
 *
 * The JSON shape follows Triton's schema (model_config.proto): the fields it
 * declares repeated (`input`, `output`, `dims`, `instance_group`, ...) are
 * arrays even when written once, its map fields (`parameters`, the `inputs`
 * of `model_warmup`, ...) objects keyed by the entries' keys, any other field
 * a single value (set twice: an error). Field names are not checked here:
 * `parseModelConfig` refuses the ones the backend does not know. Errors carry
 * `where:line:column`; a text over `MAX_PBTXT_BYTES` is refused unread.
 */

/** A config.pbtxt may be at most this many bytes (UTF-8). */
export const MAX_PBTXT_BYTES = 1024 * 1024;

/** Messages nest at most this deep (Triton's schema needs under 10). */
const MAX_DEPTH = 64;

export type PbtxtValue = string | number | boolean | PbtxtValue[] | PbtxtObject;
export interface PbtxtObject {
  [field: string]: PbtxtValue;
}

/** Fields declared `repeated` in Triton's model_config.proto: arrays even when written once. */
const REPEATED = new Set([
  'input',
  'output',
  'batch_input',
  'batch_output',
  'instance_group',
  'model_warmup',
  'dims',
  'shape',
  'dim',
  'gpus',
  'profile',
  'secondary_devices',
  'resources',
  'preferred_batch_size',
  'versions',
  'target_name',
  'source_input',
  'graph_spec',
  'gpu_execution_accelerator',
  'cpu_execution_accelerator',
  'int32_false_true',
  'fp32_false_true',
  'bool_false_true',
  'control',
  'control_input',
  'state',
  'initial_state',
  'step',
  'op_library_filename',
  'agents',
  'buckets',
  'metric_control',
]);

/** Map fields of Triton's schema (written as `{ key: ... value: ... }` entries): objects by key. */
const MAPS = new Set(['parameters', 'inputs', 'input_map', 'output_map', 'cc_model_filenames', 'metric_tags', 'priority_queue_policy']);

/** `input` is a map (not the repeated ModelInput) inside these messages of the CUDA graph spec. */
const INPUT_MAP_PARENTS = new Set(['graph_spec', 'lower_bound']);

type Punct = '{' | '}' | '[' | ']' | '<' | '>' | ':' | ',' | ';';

type Token =
  | { kind: 'ident'; text: string; line: number; col: number }
  | { kind: 'string'; value: string; line: number; col: number }
  | { kind: 'number'; value: number; text: string; line: number; col: number }
  | { kind: 'punct'; text: Punct; line: number; col: number }
  | { kind: 'eof'; line: number; col: number };

interface Pos {
  line: number;
  col: number;
}

/** One field as written in a message: where its name was written (each time), every value and where, and whether list syntax was used. */
interface FieldAcc {
  names: Pos[];
  values: { value: PbtxtValue; pos: Pos }[];
  list: boolean;
}

const IDENT_START = /[A-Za-z_]/;
const IDENT_CHAR = /[A-Za-z0-9_]/;
const NUMBER = /(?:0[xX][0-9a-fA-F]+|(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?[fF]?)/y;
const PUNCT = '{}[]<>:,;';
const SIMPLE_ESCAPES: Record<string, number> = { n: 10, t: 9, r: 13, a: 7, b: 8, f: 12, v: 11, '\\': 92, "'": 39, '"': 34, '?': 63 };

/** Sets an own, enumerable property (even one named `__proto__`). */
function put(obj: PbtxtObject, key: string, value: PbtxtValue): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

const shown = (tok: Token): string => {
  switch (tok.kind) {
    case 'eof':
      return 'end of input';
    case 'ident':
      return tok.text;
    case 'number':
      return tok.text;
    case 'punct':
      return `"${tok.text}"`;
    case 'string': {
      const s = JSON.stringify(tok.value);
      return s.length > 40 ? `${s.slice(0, 37)}..."` : s;
    }
  }
};

class Lexer {
  #i = 0;
  #line = 1;
  #col = 1;
  #peeked: Token | undefined;
  readonly #text: string;
  readonly #fail: (pos: Pos, message: string) => never;

  constructor(text: string, fail: (pos: Pos, message: string) => never) {
    this.#text = text;
    this.#fail = fail;
  }

  peek(): Token {
    this.#peeked ??= this.#lex();
    return this.#peeked;
  }

  next(): Token {
    const tok = this.peek();
    this.#peeked = undefined;
    return tok;
  }

  #advance(n = 1): void {
    for (let k = 0; k < n; k++) {
      if (this.#text[this.#i] === '\n') {
        this.#line++;
        this.#col = 1;
      } else {
        this.#col++;
      }
      this.#i++;
    }
  }

  #skipSpaceAndComments(): void {
    const t = this.#text;
    while (this.#i < t.length) {
      const c = t[this.#i]!;
      if (c === '#') {
        while (this.#i < t.length && t[this.#i] !== '\n') this.#advance();
      } else if (c === ' ' || c === '\t' || c === '\n' || c === '\r' || c === '\f' || c === '\v') {
        this.#advance();
      } else {
        return;
      }
    }
  }

  #lex(): Token {
    this.#skipSpaceAndComments();
    const t = this.#text;
    const line = this.#line;
    const col = this.#col;
    if (this.#i >= t.length) return { kind: 'eof', line, col };
    const c = t[this.#i]!;
    if (PUNCT.includes(c)) {
      this.#advance();
      return { kind: 'punct', text: c as Punct, line, col };
    }
    if (c === '"' || c === "'") return { kind: 'string', value: this.#string(), line, col };
    if (IDENT_START.test(c)) {
      const start = this.#i;
      while (this.#i < t.length && IDENT_CHAR.test(t[this.#i]!)) this.#advance();
      return { kind: 'ident', text: t.slice(start, this.#i), line, col };
    }
    const digitAfter = (k: number) => /[0-9]/.test(t[k] ?? '');
    if (c === '-' || (c === '.' && digitAfter(this.#i + 1)) || (c >= '0' && c <= '9')) {
      const negative = c === '-';
      if (negative) this.#advance();
      NUMBER.lastIndex = this.#i;
      const m = NUMBER.exec(t);
      if (!m) this.#fail({ line, col }, `malformed number ${JSON.stringify(t.slice(this.#i - (negative ? 1 : 0), this.#i + 10).split(/\s/)[0])}`);
      const body = m![0];
      this.#advance(body.length);
      const text = (negative ? '-' : '') + body;
      if (this.#i < t.length && IDENT_CHAR.test(t[this.#i]!)) {
        this.#fail({ line, col }, `malformed number ${JSON.stringify(text + t.slice(this.#i, this.#i + 10).split(/[^A-Za-z0-9_]/)[0])}`);
      }
      let value: number;
      if (/^0[xX]/.test(body)) {
        value = parseInt(body.slice(2), 16);
      } else {
        value = Number(body.replace(/[fF]$/, ''));
      }
      if (negative) value = -value;
      const integer = !/[.eEfF]/.test(body) || /^0[xX]/.test(body);
      if (integer && !Number.isSafeInteger(value)) this.#fail({ line, col }, `integer ${text} is out of range (beyond ±${Number.MAX_SAFE_INTEGER})`);
      if (!Number.isFinite(value)) this.#fail({ line, col }, `number ${text} is out of range`);
      return { kind: 'number', value, text, line, col };
    }
    return this.#fail({ line, col }, `unexpected character ${JSON.stringify(c)}`);
  }

  /** A quoted string with protobuf's C escapes; its bytes must be UTF-8. */
  #string(): string {
    const t = this.#text;
    const quote = t[this.#i]!;
    const start: Pos = { line: this.#line, col: this.#col };
    this.#advance();
    // Most strings have no escape: their text is the value.
    const end = t.indexOf(quote, this.#i);
    const plain = end === -1 ? '' : t.slice(this.#i, end);
    if (end !== -1 && !plain.includes('\\') && !plain.includes('\n')) {
      this.#advance(plain.length + 1);
      return plain;
    }
    const bytes: number[] = [];
    const encoder = new TextEncoder();
    while (true) {
      if (this.#i >= t.length || t[this.#i] === '\n') this.#fail(start, `unterminated string (no closing ${quote} on its line)`);
      const c = t[this.#i]!;
      if (c === quote) {
        this.#advance();
        break;
      }
      if (c !== '\\') {
        const cp = t.codePointAt(this.#i)!;
        const ch = String.fromCodePoint(cp);
        bytes.push(...encoder.encode(ch));
        this.#advance(ch.length);
        continue;
      }
      const escPos: Pos = { line: this.#line, col: this.#col };
      this.#advance();
      const e = t[this.#i];
      if (e === undefined || e === '\n') this.#fail(start, `unterminated string (no closing ${quote} on its line)`);
      if (SIMPLE_ESCAPES[e!] !== undefined) {
        bytes.push(SIMPLE_ESCAPES[e!]!);
        this.#advance();
      } else if (e! >= '0' && e! <= '7') {
        const m = /^[0-7]{1,3}/.exec(t.slice(this.#i, this.#i + 3))![0];
        const v = parseInt(m, 8);
        if (v > 255) this.#fail(escPos, `octal escape \\${m} is over \\377`);
        bytes.push(v);
        this.#advance(m.length);
      } else if (e === 'x' || e === 'X') {
        const m = /^[0-9a-fA-F]{1,2}/.exec(t.slice(this.#i + 1, this.#i + 3));
        if (!m) this.#fail(escPos, 'expected hex digits after \\x');
        bytes.push(parseInt(m![0], 16));
        this.#advance(1 + m![0].length);
      } else if (e === 'u' || e === 'U') {
        const n = e === 'u' ? 4 : 8;
        const hex = t.slice(this.#i + 1, this.#i + 1 + n);
        if (!new RegExp(`^[0-9a-fA-F]{${n}}$`).test(hex)) this.#fail(escPos, `expected ${n} hex digits after \\${e}`);
        const cp = parseInt(hex, 16);
        if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) this.#fail(escPos, `\\${e}${hex} is not a Unicode scalar value`);
        bytes.push(...encoder.encode(String.fromCodePoint(cp)));
        this.#advance(1 + n);
      } else {
        this.#fail(escPos, `unknown escape \\${e}`);
      }
    }
    try {
      return new TextDecoder('utf-8', { fatal: true }).decode(Uint8Array.from(bytes));
    } catch {
      return this.#fail(start, 'string is not valid UTF-8 (check its \\x or octal escapes)');
    }
  }
}

/**
 * Parses the text of a config.pbtxt into the JSON form `parseModelConfig`
 * accepts. Throws an `Error` whose message starts with `where:line:column:`
 * (`where` alone when the text is too large).
 */
export function parsePbtxt(text: string, where = 'config.pbtxt'): PbtxtObject {
  // Bytes of UTF-8 are at least the UTF-16 code units, so a long string is refused before it is measured.
  const bytes = text.length > MAX_PBTXT_BYTES ? Infinity : Buffer.byteLength(text, 'utf8');
  if (bytes > MAX_PBTXT_BYTES) {
    throw new Error(`${where}: is ${Number.isFinite(bytes) ? `${bytes} bytes` : 'over 1 MiB'}; a config may be at most ${MAX_PBTXT_BYTES} bytes (1 MiB)`);
  }
  const fail = (pos: Pos, message: string): never => {
    throw new Error(`${where}:${pos.line}:${pos.col}: ${message}`);
  };
  const lexer = new Lexer(text.startsWith('\uFEFF') ? ` ${text.slice(1)}` : text, fail);

  /** A message's fields up to `close` (end of input at the top level). */
  const message = (parent: string, depth: number, close?: { text: '}' | '>'; open: Token }): PbtxtObject => {
    if (depth > MAX_DEPTH) fail(close!.open, `messages nest deeper than ${MAX_DEPTH} levels`);
    const fields = new Map<string, FieldAcc>();
    while (true) {
      const tok = lexer.peek();
      if (close && tok.kind === 'punct' && tok.text === close.text) {
        lexer.next();
        break;
      }
      if (tok.kind === 'eof') {
        if (close) fail(tok, `expected "${close.text}" to close "${parent}" (opened at ${close.open.line}:${close.open.col}), got end of input`);
        break;
      }
      if (tok.kind !== 'ident') {
        fail(tok, `expected a field name${close ? ` or "${close.text}"` : ''}, got ${shown(tok)}`);
      }
      lexer.next();
      const name = (tok as { text: string }).text;
      const values: { value: PbtxtValue; pos: Pos }[] = [];
      let list = false;
      let colon = false;
      if (lexer.peek().kind === 'punct' && (lexer.peek() as { text: string }).text === ':') {
        lexer.next();
        colon = true;
      }
      const start = lexer.peek();
      if (start.kind === 'punct' && start.text === '[') {
        lexer.next();
        list = true;
        while (true) {
          const item = lexer.peek();
          if (item.kind === 'punct' && item.text === ']') {
            lexer.next();
            break;
          }
          values.push({ value: value(name, depth, true), pos: item });
          const sep = lexer.next();
          if (sep.kind === 'punct' && sep.text === ']') break;
          if (!(sep.kind === 'punct' && sep.text === ',')) {
            fail(sep, `expected "," or "]" in the list of "${name}" (opened at ${start.line}:${start.col}), got ${shown(sep)}`);
          }
        }
      } else if (start.kind === 'punct' && (start.text === '{' || start.text === '<')) {
        values.push({ value: value(name, depth, false), pos: start });
      } else if (!colon) {
        fail(start, `expected ":" or "{" after field "${name}", got ${shown(start)}`);
      } else {
        values.push({ value: value(name, depth, false), pos: start });
      }
      const acc = fields.get(name);
      if (acc) {
        acc.names.push(tok);
        acc.values.push(...values);
        acc.list ||= list;
      } else {
        fields.set(name, { names: [tok], values, list });
      }
      const sep = lexer.peek();
      if (sep.kind === 'punct' && (sep.text === ',' || sep.text === ';')) lexer.next();
    }
    return build(parent, fields);
  };

  /** One value: a scalar, or a message in `{ }` / `< >`. */
  const value = (field: string, depth: number, inList: boolean): PbtxtValue => {
    const tok = lexer.next();
    if (tok.kind === 'punct' && (tok.text === '{' || tok.text === '<')) {
      return message(field, depth + 1, { text: tok.text === '{' ? '}' : '>', open: tok });
    }
    if (tok.kind === 'string') {
      let s = tok.value;
      // Adjacent string literals are one string.
      while (lexer.peek().kind === 'string') s += (lexer.next() as { value: string }).value;
      return s;
    }
    if (tok.kind === 'number') return tok.value;
    if (tok.kind === 'ident') {
      if (tok.text === 'true' || tok.text === 'True') return true;
      if (tok.text === 'false' || tok.text === 'False') return false;
      return tok.text; // an enum value, e.g. TYPE_FP32
    }
    return fail(tok, `expected a value for "${field}"${inList ? ' in its list' : ''}, got ${shown(tok)}`);
  };

  /** The JSON object of a message's fields, by Triton's schema. */
  const build = (parent: string, fields: Map<string, FieldAcc>): PbtxtObject => {
    const out: PbtxtObject = {};
    for (const [name, acc] of fields) {
      const isMap = MAPS.has(name) || (name === 'input' && INPUT_MAP_PARENTS.has(parent));
      if (isMap) {
        const map: PbtxtObject = {};
        const seen = new Map<string, Pos>();
        for (const { value: entry, pos } of acc.values) {
          if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) {
            fail(pos, `"${name}" is a map: expected an entry { key: ... value: ... }, got ${JSON.stringify(entry)}`);
          }
          const e = entry as PbtxtObject;
          const other = Object.keys(e).find((k) => k !== 'key' && k !== 'value');
          if (other !== undefined) {
            fail(pos, `"${name}" is a map: an entry has only "key" and "value", got "${other}" (write ${name} { key: "${other}" value: ... })`);
          }
          const key = e.key;
          if (typeof key !== 'string' && typeof key !== 'number') fail(pos, `"${name}" map entry needs a "key" (a string or an integer)`);
          if (e.value === undefined) fail(pos, `"${name}" map entry ${JSON.stringify(String(key))} has no "value"`);
          const k = String(key);
          const first = seen.get(k);
          if (first) fail(pos, `"${name}" repeats the key ${JSON.stringify(k)} (first at ${first.line}:${first.col})`);
          seen.set(k, pos);
          put(map, k, e.value!);
        }
        put(out, name, map);
      } else if (REPEATED.has(name) || acc.list) {
        put(out, name, acc.values.map((v) => v.value));
      } else {
        if (acc.values.length > 1) {
          const [first, second] = acc.names as [Pos, Pos];
          fail(second, `field "${name}" is set twice (first at ${first.line}:${first.col}); it is not a repeated field`);
        }
        put(out, name, acc.values[0]!.value);
      }
    }
    return out;
  };

  return message('', 0);
}
