/**
 * The backend's logger: one JSON object per line on stdout (stderr for
 * errors), `{ "time", "level", "name", "msg", ...fields }`, so that a log
 * pipeline reads every line of every backend the same way; `name` tells the
 * processes and threads of one machine apart (`backend sg-1 http-worker-3`).
 * Modules take a `Logger` as a dependency, so tests capture records instead
 * of printing.
 *
 * Lines go straight to the process's file descriptors from whichever thread
 * logs them (`stdioLogger`, through sonic-boom, pino's writer: synchronous
 * writes, retried on EAGAIN), never through `console`: in a worker thread
 * `console` hands each line to the main thread, which then writes it, so
 * an HTTP worker's `request` line cost the main thread, the one that batches
 * and runs models, a message and a write per request (docs/benchmarks.md,
 * `bench:main-thread`).
 *
 * Fields are ids, codes and numbers. A field whose name says it may carry a
 * secret or a consumer's data (a token, a key, an input, a body) is written
 * as `[redacted]` whatever the caller passes, and every string is bounded:
 * a log line never holds a token, a key or an input (docs/api.md section 2.12).
 */

import SonicBoom from 'sonic-boom';

/** What a log line may carry besides its message. */
export type LogFields = Record<string, string | number | boolean | null | undefined>;

export interface Logger {
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  /** `err` goes in the line as `err: { name, message, stack }`, for failures nobody expected. */
  error(msg: string, err?: unknown, fields?: LogFields): void;
}

export type Level = 'info' | 'warn' | 'error';

/** The line's own keys: a field of the same name is dropped rather than let it pass for them. */
const RESERVED = new Set(['time', 'level', 'name', 'msg', 'err']);
/** Field names that may hold a secret or a consumer's data. */
const SECRET_FIELD = /authorization|token|secret|password|private|jwk|^key$|^inputs?$|^body$|^data$/i;
/** The longest string kept in a field or the message, and in an error's stack. */
const STRING_MAX = 1024;
const STACK_MAX = 8192;

function bounded(s: string, max = STRING_MAX): string {
  return s.length > max ? `${s.slice(0, max)}…` : s;
}

function errorOf(err: unknown): { name: string; message: string; stack?: string } {
  if (err instanceof Error) {
    return { name: err.name, message: bounded(err.message), ...(err.stack ? { stack: bounded(err.stack, STACK_MAX) } : {}) };
  }
  return { name: typeof err, message: bounded(String(err)) };
}

/** One log line's object, as `stdioLogger` writes it. */
export function logRecord(level: Level, name: string, msg: string, fields: LogFields = {}, err?: unknown, now = new Date()): Record<string, unknown> {
  const record: Record<string, unknown> = { time: now.toISOString(), level, name, msg: bounded(msg) };
  for (const [k, v] of Object.entries(fields)) {
    if (v === undefined || RESERVED.has(k)) continue;
    record[k] = SECRET_FIELD.test(k) ? '[redacted]' : typeof v === 'string' ? bounded(v) : v;
  }
  if (err !== undefined) record.err = errorOf(err);
  return record;
}

/** Where a logger's lines go: `out` for info, `err` for warnings and errors; each gets one line without its newline. */
export interface LogSink {
  out(line: string): void;
  err(line: string): void;
}

/** A writer of one file descriptor; on a write error (a closed pipe) the rest goes to `fallback`. */
function fdWriter(fd: number, fallback: (line: string) => void): (line: string) => void {
  let boom: SonicBoom | undefined = new SonicBoom({ fd, sync: true });
  boom.on('error', () => {
    boom = undefined;
  });
  return (line) => {
    if (boom) boom.write(`${line}\n`);
    else fallback(line);
  };
}

let stdio: LogSink | undefined;

/** This thread's writers of fd 1 and fd 2 (made once per thread). */
export function stdioSink(): LogSink {
  stdio ??= { out: fdWriter(1, (line) => console.log(line)), err: fdWriter(2, (line) => console.error(line)) };
  return stdio;
}

/** Logs JSON lines, each with `name`: info to stdout, warnings and errors to stderr, written by the calling thread. */
export function stdioLogger(name: string, sink: LogSink = stdioSink()): Logger {
  const line = (level: Level, msg: string, fields?: LogFields, err?: unknown) => JSON.stringify(logRecord(level, name, msg, fields, err));
  return {
    info: (msg, fields) => sink.out(line('info', msg, fields)),
    warn: (msg, fields) => sink.err(line('warn', msg, fields)),
    error: (msg, err, fields) => sink.err(line('error', msg, fields, err)),
  };
}

/** Discards everything. */
export const silentLogger: Logger = { info() {}, warn() {}, error() {} };

/**
 * Keeps everything in memory (tests): `lines` holds `"level: msg"` (with an
 * error's message in parentheses), `records` the objects `stdioLogger`
 * would write.
 */
export function memoryLogger(): Logger & { lines: string[]; records: Record<string, unknown>[] } {
  const lines: string[] = [];
  const records: Record<string, unknown>[] = [];
  return {
    lines,
    records,
    info: (msg, fields) => {
      lines.push(`info: ${msg}`);
      records.push(logRecord('info', 'memory', msg, fields));
    },
    warn: (msg, fields) => {
      lines.push(`warn: ${msg}`);
      records.push(logRecord('warn', 'memory', msg, fields));
    },
    error: (msg, err, fields) => {
      lines.push(`error: ${msg}${err instanceof Error ? ` (${err.message})` : ''}`);
      records.push(logRecord('error', 'memory', msg, fields, err));
    },
  };
}
