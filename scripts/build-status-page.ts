/**
 * Builds the status page (GET /status, workers/status/page/) into the folder
 * wrangler.toml's [assets] serves: the HTML with the map's land and PoPs
 * drawn here (world-atlas land-110m in d3-geo's Natural Earth projection,
 * fitted to the page's frame) and the fit written on the map for the browser
 * to project live points the same way; the page's script bundled by esbuild
 * (no d3 at run time: workers/status/page/projection.ts); the stylesheet; the
 * icon; `_headers`. Files are written only when their bytes change, and
 * files the build no longer makes are removed, so that a build while
 * `wrangler dev` serves the folder disturbs nothing.
 *
 *   node scripts/build-status-page.ts [--out <dir>] [--quiet]
 *
 * wrangler.toml's [build] runs it before `wrangler dev` and `wrangler deploy`.
 */

import { createRequire } from 'node:module';
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { geoNaturalEarth1, geoPath, type GeoPermissibleObjects } from 'd3-geo';
import * as esbuild from 'esbuild';
import { feature } from 'topojson-client';
import { POPS } from '../workers/geo/pops.ts';
import { formatFit, MAP_HEIGHT, MAP_PADDING, MAP_WIDTH, project, type MapFit } from '../workers/status/page/projection.ts';

const ROOT = path.resolve(import.meta.dirname, '..');
const PAGE = path.join(ROOT, 'workers', 'status', 'page');
/** Where wrangler.toml's [assets] directory points. */
export const STATUS_ASSETS_DIR = path.join(ROOT, 'build', 'status-assets');
/** The radius of a quiet PoP's dot on the map. */
const POP_DOT_RADIUS = 1.3;
const BANNER = '/* Mesh status page. Natural Earth I formula from d3-geo (ISC licence, Copyright 2010-2024 Mike Bostock). */';

export interface StatusPageBuild {
  outDir: string;
  /** Every file written, relative to outDir (`/` separators), with its size in bytes. */
  files: { path: string; bytes: number }[];
}

type Topology = Parameters<typeof feature>[0];

/** The projection fitted to the page's frame, the globe's outline and the land as SVG path data. */
export function mapGeometry(): { fit: MapFit; sphere: string; land: string } {
  const sphere: GeoPermissibleObjects = { type: 'Sphere' };
  const projection = geoNaturalEarth1().fitExtent(
    [
      [MAP_PADDING, MAP_PADDING],
      [MAP_WIDTH - MAP_PADDING, MAP_HEIGHT - MAP_PADDING],
    ],
    sphere,
  );
  const topology = createRequire(import.meta.url)('world-atlas/land-110m.json') as Topology;
  const land = feature(topology, (topology.objects as Record<string, Parameters<typeof feature>[1]>)['land']!);
  const draw = geoPath(projection).digits(1);
  const [tx, ty] = projection.translate();
  return { fit: { scale: projection.scale(), translate: [tx, ty] }, sphere: draw(sphere) ?? '', land: draw(land) ?? '' };
}

/** Every PoP as a small circle, one path: the map's quiet background. */
export function popDots(fit: MapFit, r = POP_DOT_RADIUS): string {
  return Object.values(POPS)
    .map(([lat, lon]) => {
      const [x, y] = project(lon, lat, fit).map((v) => Math.round(v * 10) / 10) as [number, number];
      return `M${(x - r).toFixed(1)},${y}a${r},${r} 0 1,0 ${2 * r},0a${r},${r} 0 1,0 ${-2 * r},0`;
    })
    .join('');
}

/** status.html with its {{SLOTS}} filled; throws on a slot left unfilled. */
export function fillTemplate(template: string, slots: Record<string, string>): string {
  const html = template.replace(/\{\{([A-Z]+)\}\}/g, (whole, name: string) => {
    const value = slots[name];
    if (value === undefined) throw new Error(`status.html: no value for ${whole}`);
    return value;
  });
  return html;
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

/** Builds the page into `outDir` (default STATUS_ASSETS_DIR). */
export async function buildStatusPage(opts: { outDir?: string } = {}): Promise<StatusPageBuild> {
  const outDir = path.resolve(opts.outDir ?? STATUS_ASSETS_DIR);
  const { fit, sphere, land } = mapGeometry();
  const template = await readFile(path.join(PAGE, 'status.html'), 'utf8');
  const html = fillTemplate(template, {
    VIEWBOX: `0 0 ${MAP_WIDTH} ${MAP_HEIGHT}`,
    FIT: formatFit(fit),
    SPHERE: sphere,
    LAND: land,
    POPS: popDots(fit),
  });

  const bundle = await esbuild.build({
    absWorkingDir: ROOT,
    entryPoints: { main: path.join(PAGE, 'main.ts'), style: path.join(PAGE, 'style.css') },
    outdir: path.join(outDir, 'status'),
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: ['es2022', 'chrome110', 'firefox110', 'safari16'],
    minify: true,
    sourcemap: 'linked',
    sourcesContent: true,
    banner: { js: BANNER },
    legalComments: 'eof',
    write: false,
    logLevel: 'silent',
  });

  const outputs = new Map<string, Uint8Array>([
    ['status.html', new TextEncoder().encode(html)],
    ['status/icon.svg', await readFile(path.join(PAGE, 'icon.svg'))],
    ['_headers', await readFile(path.join(PAGE, '_headers'))],
  ]);
  for (const file of bundle.outputFiles) {
    outputs.set(path.relative(outDir, file.path).split(path.sep).join('/'), file.contents);
  }
  for (const [rel, bytes] of outputs) await writeIfChanged(path.join(outDir, rel), bytes);
  for (const rel of await listFiles(outDir)) {
    if (!outputs.has(rel) && !rel.endsWith('.tmp')) await rm(path.join(outDir, rel), { force: true });
  }
  return { outDir, files: [...outputs].map(([rel, bytes]) => ({ path: rel, bytes: bytes.byteLength })).sort((a, b) => a.path.localeCompare(b.path)) };
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === import.meta.filename) {
  const { values } = parseArgs({ options: { out: { type: 'string' }, quiet: { type: 'boolean' } } });
  try {
    const built = await buildStatusPage(values.out ? { outDir: values.out } : {});
    if (!values.quiet) {
      const sizes = built.files.map((f) => `${f.path} ${(f.bytes / 1024).toFixed(1)} KiB`).join(', ');
      console.log(`status page: ${path.relative(process.cwd(), built.outDir) || '.'}: ${sizes}`);
    }
  } catch (err) {
    console.error(`status page: build failed: ${(err as Error).message}`);
    process.exit(1);
  }
}
