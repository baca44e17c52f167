/**
 * The backend's logger: one line per event on stdout/stderr, prefixed with the
 * backend id so the lines of several local backends can be told apart. Modules
 * take a `Logger` as a dependency, so tests capture lines instead of printing.
 */

export interface Logger {
  info(line: string): void;
  warn(line: string): void;
  /** `err` is printed after the line (its stack), for failures nobody expected. */
  error(line: string, err?: unknown): void;
}

/** Logs to the console, each line prefixed with `[prefix]`. */
export function consoleLogger(prefix: string): Logger {
  const tag = `[${prefix}]`;
  return {
    info: (line) => console.log(tag, line),
    warn: (line) => console.warn(tag, line),
    error: (line, err) => (err === undefined ? console.error(tag, line) : console.error(tag, line, err)),
  };
}

/** Discards everything. */
export const silentLogger: Logger = { info() {}, warn() {}, error() {} };

/** Keeps every line in memory (tests): `lines` holds `"level: text"`. */
export function memoryLogger(): Logger & { lines: string[] } {
  const lines: string[] = [];
  return {
    lines,
    info: (line) => lines.push(`info: ${line}`),
    warn: (line) => lines.push(`warn: ${line}`),
    error: (line, err) => lines.push(`error: ${line}${err instanceof Error ? ` (${err.message})` : ''}`),
  };
}
