/**
 * Where a bench's results go: JSON under bench/results/ (not kept in git),
 * non-finite numbers written as null, and a line saying where.
 */

import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';

/** The repository's bench/results folder. */
export const RESULTS_DIR = path.resolve(import.meta.dirname, '..', 'results');

/** Writes `results` as JSON to `file` (a name in RESULTS_DIR, or a path) and logs where. */
export async function writeResults(file: string, results: unknown, log: (line: string) => void): Promise<string> {
  const target = path.isAbsolute(file) || file.includes('/') ? path.resolve(file) : path.join(RESULTS_DIR, file);
  await mkdir(path.dirname(target), { recursive: true });
  await writeFile(target, `${JSON.stringify(results, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 2)}\n`);
  log(`results written to ${path.relative(process.cwd(), target)}`);
  return target;
}
