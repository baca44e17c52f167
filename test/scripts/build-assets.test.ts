/**
 * The edge's static assets (scripts/build-assets.ts): the OpenAPI document
 * as the Worker's routes describe it, and the status page
 * (scripts/status-page.ts): what it emits, that
 * the page asks nothing of any other origin and runs nothing inline (the
 * CSP in its `_headers` forbids both), that a rebuild rewrites nothing and
 * drops what it no longer makes, and that the browser's projection
 * (workers/status/page/projection.ts) puts points where d3-geo does.
 */

import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { geoNaturalEarth1, geoNaturalEarth1Raw } from 'd3-geo';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildAssets, OPENAPI_MAX_AGE_S, type AssetsBuild } from '../../scripts/build-assets.ts';
import { fillTemplate, mapGeometry } from '../../scripts/status-page.ts';
import { openApiText } from '../../workers/openapi/document.ts';
import { MAP_HEIGHT, MAP_WIDTH, naturalEarth1Raw, parseFit, project } from '../../workers/status/page/projection.ts';

let dir: string;
let built: AssetsBuild;
const read = (rel: string) => readFile(path.join(dir, rel), 'utf8');

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'status-page-'));
  built = await buildAssets({ outDir: dir });
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('buildAssets', () => {
  it('emits the page at the root (served at /status) and its files under status/', () => {
    const files = built.files.map((f) => f.path);
    expect(files).toEqual(expect.arrayContaining(['status.html', 'status/main.js', 'status/style.css', 'status/icon.svg', '_headers', 'openapi.json']));
    for (const f of built.files) expect(f.bytes, f.path).toBeGreaterThan(0);
    // The page's script stays small: no library at run time.
    expect(built.files.find((f) => f.path === 'status/main.js')!.bytes).toBeLessThan(40_000);
  });

  it('references only files of its own origin, all of which it emits, and nothing inline', async () => {
    const html = await read('status.html');
    const refs = [...html.matchAll(/\s(?:src|href)="([^"]*)"/g)].map((m) => m[1]!);
    expect(refs.sort()).toEqual(['#main', '/status/icon.svg', '/status/main.js', '/status/style.css']);
    for (const ref of refs.filter((r) => r.startsWith('/'))) expect(built.files.map((f) => `/${f.path}`)).toContain(ref);
    expect(html).not.toMatch(/<script(?![^>]*\ssrc=)[^>]*>/);
    expect(html).not.toMatch(/\sstyle="|<style|\son[a-z]+="/i);
    expect(html).not.toMatch(/\{\{[A-Z]+\}\}/);
    expect(html).not.toMatch(/https?:\/\/(?!www\.w3\.org\/)/);
  });

  it('asks no other origin from its script or stylesheet', async () => {
    const js = await read('status/main.js');
    expect([...js.matchAll(/https?:\/\/[^\s"'`)]+/g)].map((m) => m[0])).toEqual(['http://www.w3.org/2000/svg']);
    expect(js).toContain('/v1/mesh/status');
    expect(js).not.toMatch(/\b(?:eval|innerHTML|outerHTML|insertAdjacentHTML|document\.write)\b/);
    const css = await read('status/style.css');
    expect(css).not.toMatch(/@import|url\(|@font-face/);
  });

  it('draws the land and every PoP into the map, with the fit the browser projects by', async () => {
    const html = await read('status.html');
    expect(html).toContain(`viewBox="0 0 ${MAP_WIDTH} ${MAP_HEIGHT}"`);
    const land = /class="land" d="([^"]+)"/.exec(html)?.[1] ?? '';
    expect(land.length).toBeGreaterThan(10_000);
    expect(land).toMatch(/^M[\d.,LZM-]+$/);
    const fit = parseFit(/data-fit="([^"]+)"/.exec(html)?.[1]);
    expect(fit).toEqual(mapGeometry().fit);
    const dots = /class="pop-dot" d="([^"]+)"/.exec(html)?.[1] ?? '';
    expect(dots.match(/M/g)).toHaveLength(308);
  });

  it('serves its files with a strict CSP, nosniff, no referrer and a short cache', async () => {
    const headers = await read('_headers');
    const rules = headers.split('/openapi.json')[0]!.split('\n').filter((l) => !l.startsWith('#') && l.trim());
    expect(rules.filter((l) => !l.startsWith(' '))).toEqual(['/status', '/status/*']);
    const csp = rules.filter((l) => /^\s+Content-Security-Policy:/.test(l));
    expect(csp).toHaveLength(2);
    for (const line of csp) {
      expect(line).toContain("default-src 'self'");
      expect(line).toContain("script-src 'self'");
      expect(line).toContain("frame-ancestors 'none'");
      expect(line).not.toMatch(/unsafe-|\*|https?:/);
    }
    expect(rules.filter((l) => /X-Content-Type-Options: nosniff/.test(l))).toHaveLength(2);
    expect(rules.filter((l) => /Referrer-Policy: no-referrer/.test(l))).toHaveLength(2);
    expect(rules.filter((l) => /Cache-Control: no-cache/.test(l))).toHaveLength(2);
  });

  it('rewrites nothing on a rebuild and removes files it no longer makes', async () => {
    const before = await stat(path.join(dir, 'status/main.js'));
    await writeFile(path.join(dir, 'status', 'stale.js'), 'old');
    const again = await buildAssets({ outDir: dir });
    expect(again.files).toEqual(built.files);
    expect((await stat(path.join(dir, 'status/main.js'))).mtimeMs).toBe(before.mtimeMs);
    await expect(stat(path.join(dir, 'status', 'stale.js'))).rejects.toThrow();
  });

  it('writes the OpenAPI document as the Worker\'s routes describe it, cacheable like the JWKS', async () => {
    expect(await read('openapi.json')).toBe(openApiText());
    expect(JSON.parse(await read('openapi.json'))).toMatchObject({ openapi: '3.1.0', paths: { '/v1/mesh/status': { get: {} } } });
    const block = (await read('_headers')).split('\n/openapi.json\n')[1]!;
    expect(block).toContain('Content-Type: application/json; charset=utf-8');
    expect(block).toContain(`Cache-Control: public, max-age=${OPENAPI_MAX_AGE_S}`);
    expect(block).not.toContain('/status');
  });

  it('refuses a template slot it has no value for', () => {
    expect(fillTemplate('<p>{{A}} {{B}}</p>', { A: 'x', B: 'y' })).toBe('<p>x y</p>');
    expect(() => fillTemplate('<p>{{MISSING}}</p>', {})).toThrow(/MISSING/);
  });
});

describe('the browser projection', () => {
  it('is d3-geo\'s Natural Earth, raw', () => {
    fc.assert(
      fc.property(fc.double({ min: -Math.PI, max: Math.PI, noNaN: true }), fc.double({ min: -Math.PI / 2, max: Math.PI / 2, noNaN: true }), (lambda, phi) => {
        const [x, y] = naturalEarth1Raw(lambda, phi);
        const [dx, dy] = geoNaturalEarth1Raw(lambda, phi);
        expect(x).toBeCloseTo(dx, 12);
        expect(y).toBeCloseTo(dy, 12);
      }),
    );
  });

  it('puts a point where d3-geo fitted to the map puts it', () => {
    const { fit } = mapGeometry();
    const d3 = geoNaturalEarth1().scale(fit.scale).translate([...fit.translate]);
    const places: [number, number][] = [
      [0, 0],
      [103.8198, 1.3521], // Singapore
      [8.6821, 50.1109], // Frankfurt
      [-77.4874, 39.0438], // Ashburn
      [-179.9, -89.9],
      [180, 90],
      [190, 10], // wrapped to -170
    ];
    for (const [lon, lat] of places) {
      const [x, y] = project(lon, lat, fit);
      const [ex, ey] = d3([lon, lat])!;
      expect(x).toBeCloseTo(ex, 9);
      expect(y).toBeCloseTo(ey, 9);
    }
    // The map is centred in its frame: (0, 0) is its middle.
    expect(project(0, 0, fit)).toEqual([MAP_WIDTH / 2, MAP_HEIGHT / 2]);
  });

  it('reads back the fit it wrote and nothing else', () => {
    expect(parseFit('150.5 480 250')).toEqual({ scale: 150.5, translate: [480, 250] });
    for (const bad of [undefined, null, '', '1 2', '1 2 x', '1 2 3 4']) expect(parseFit(bad)).toBeUndefined();
  });
});
