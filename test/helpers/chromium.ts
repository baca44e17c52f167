/**
 * The system's Chromium for browser tests (driven by playwright-core, which
 * downloads no browser of its own): CHROMIUM_PATH when set, else `chromium`
 * or `chromium-browser` on PATH (Debian's `chromium` package puts it at
 * /usr/bin/chromium). `.ci/run` installs that package when it is missing.
 */

import { accessSync, constants } from 'node:fs';
import path from 'node:path';

export const CHROMIUM_MISSING =
  'no Chromium found (CHROMIUM_PATH, or chromium / chromium-browser on PATH): the browser test skips. ' +
  'Install one with `sudo apt-get install chromium` (Debian, Ubuntu) or point CHROMIUM_PATH at a Chromium or Chrome binary.';

function executable(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** The Chromium executable to launch, or undefined when this machine has none. */
export function findChromium(env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (env.CHROMIUM_PATH) return executable(env.CHROMIUM_PATH) ? env.CHROMIUM_PATH : undefined;
  const dirs = (env.PATH ?? '').split(path.delimiter).filter(Boolean);
  for (const name of ['chromium', 'chromium-browser']) {
    for (const dir of [...dirs, '/usr/bin']) {
      const file = path.join(dir, name);
      if (executable(file)) return file;
    }
  }
  return undefined;
}
