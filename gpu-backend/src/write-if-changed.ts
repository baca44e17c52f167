/**
 * Writing a model repository's files safely (`npm run models`, the backend's
 * first start): a file is written through a temp file and a rename, so a
 * reader never sees half of it, and left alone when it already holds the
 * bytes, so a re-run rewrites nothing.
 */

import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';

/** Writes `bytes` to `file` (creating its folder) unless it already holds exactly them; true when it wrote. */
export async function writeIfChanged(file: string, bytes: Uint8Array): Promise<boolean> {
  const existing = await readFile(file).catch(() => undefined);
  if (existing && Buffer.compare(existing, bytes) === 0) return false;
  await mkdir(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.${Date.now()}.tmp`;
  try {
    await writeFile(tmp, bytes);
    await rename(tmp, file);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  return true;
}
