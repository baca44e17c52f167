/**
 * Builds the edge's static assets, the folder wrangler.toml's [assets]
 * serves before the Worker runs (docs/design.md, "The status page"): the
 * status page (scripts/status-page.ts) and the OpenAPI document
 * (workers/openapi/), which the Worker would otherwise carry in its bundle
 * and serialise in every isolate; and `_headers`, their response headers.
 * Files are written only when their bytes change, and files the build no
 * longer makes are removed, so that a build while `wrangler dev` serves the
 * folder disturbs nothing.
 *
 *   node scripts/build-assets.ts [--out <dir>] [--quiet]
 *
 * wrangler.toml's [build] runs it before `wrangler dev` and `wrangler deploy`.
 */

import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { openApiText } from '../workers/openapi/document.ts';
import { STATUS_PAGE_HEADERS, statusPageFiles } from './status-page.ts';

const ROOT = path.resolve(import.meta.dirname, '..');
/** Where wrangler.toml's [assets] directory points. */
export const ASSETS_DIR = path.join(ROOT, 'build', 'assets');
/** `GET /openapi.json`'s cache lifetime, seconds (docs/api.md, "OpenAPI"): as the JWKS's. */
export const OPENAPI_MAX_AGE_S = 300;

/** The OpenAPI document's headers, after the status page's own in `_headers`. */
const OPENAPI_HEADERS = `
# The OpenAPI document (docs/api.md, "OpenAPI"), built from workers/openapi/.
/openapi.json
  Content-Type: application/json; charset=utf-8
  Cache-Control: public, max-age=${OPENAPI_MAX_AGE_S}
  X-Content-Type-Options: nosniff
`;

export interface AssetsBuild {
  outDir: string;
  /** Every file written, relative to outDir (`/` separators), with its size in bytes. */
  files: { path: string; bytes: number }[];
}

async function writeIfChanged(file: string, bytes: Uint8Array): Promise<void> {
  try {
    const old = await readFile(file);
    if (Buffer.compare(old, bytes) === 0) return;
  } catch {
    // New file.
  }
  await mkdir(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, bytes);
  await rename(tmp, file);
}

async function listFiles(dir: string): Promise<string[]> {
  try {
    const entries = await readdir(dir, { withFileTypes: true, recursive: true });
    return entries.filter((e) => e.isFile()).map((e) => path.relative(dir, path.join(e.parentPath, e.name)).split(path.sep).join('/'));
  } catch {
    return [];
  }
}

/** Builds every asset into `outDir` (default ASSETS_DIR). */
export async function buildAssets(opts: { outDir?: string } = {}): Promise<AssetsBuild> {
  const outDir = path.resolve(opts.outDir ?? ASSETS_DIR);
  const encode = (text: string) => new TextEncoder().encode(text);
  const outputs = await statusPageFiles(outDir);
  outputs.set('openapi.json', encode(openApiText()));
  outputs.set('_headers', encode((await readFile(STATUS_PAGE_HEADERS, 'utf8')) + OPENAPI_HEADERS));
  for (const [rel, bytes] of outputs) await writeIfChanged(path.join(outDir, rel), bytes);
  for (const rel of await listFiles(outDir)) {
    if (!outputs.has(rel) && !rel.endsWith('.tmp')) await rm(path.join(outDir, rel), { force: true });
  }
  return { outDir, files: [...outputs].map(([rel, bytes]) => ({ path: rel, bytes: bytes.byteLength })).sort((a, b) => a.path.localeCompare(b.path)) };
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === import.meta.filename) {
  const { values } = parseArgs({ options: { out: { type: 'string' }, quiet: { type: 'boolean' } } });
  try {
    const built = await buildAssets(values.out ? { outDir: values.out } : {});
    if (!values.quiet) {
      const sizes = built.files.map((f) => `${f.path} ${(f.bytes / 1024).toFixed(1)} KiB`).join(', ');
      console.log(`assets: ${path.relative(process.cwd(), built.outDir) || '.'}: ${sizes}`);
    }
  } catch (err) {
    console.error(`assets: build failed: ${(err as Error).message}`);
    process.exit(1);
  }
}
