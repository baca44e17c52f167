/**
 * The status page's files (GET /status, workers/status/page/), for
 * scripts/build-assets.ts to write into the edge's static assets: the HTML
 * with the map's land and PoPs drawn here (world-atlas land-110m in d3-geo's
 * Natural Earth projection, fitted to the page's frame) and the fit written
 * on the map for the browser to project live points the same way; the
 * page's script bundled by esbuild (no d3 at run time:
 * workers/status/page/projection.ts); the stylesheet; the icon. Its
 * response headers (CSP and all) are workers/status/page/_headers.
 */

import { createRequire } from 'node:module';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { geoNaturalEarth1, geoPath, type GeoPermissibleObjects } from 'd3-geo';
import * as esbuild from 'esbuild';
import { feature } from 'topojson-client';
import { POPS } from '../workers/geo/pops.ts';
import { formatFit, MAP_HEIGHT, MAP_PADDING, MAP_WIDTH, project, type MapFit } from '../workers/status/page/projection.ts';

const ROOT = path.resolve(import.meta.dirname, '..');
const PAGE = path.join(ROOT, 'workers', 'status', 'page');
/** The page's response headers, in Workers static assets' `_headers` format. */
export const STATUS_PAGE_HEADERS = path.join(PAGE, '_headers');
/** The radius of a quiet PoP's dot on the map. */
const POP_DOT_RADIUS = 1.3;
const BANNER = '/* Mesh status page. Natural Earth I formula from d3-geo (ISC licence, Copyright 2010-2024 Mike Bostock). */';

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

/** The page's files by their path in the assets folder `outDir` (`/` separators; the script's source map links need the folder). */
export async function statusPageFiles(outDir: string): Promise<Map<string, Uint8Array>> {
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
  ]);
  for (const file of bundle.outputFiles) {
    outputs.set(path.relative(outDir, file.path).split(path.sep).join('/'), file.contents);
  }
  return outputs;
}
