/**
 * The layout's rules (docs/design.md, "Layout"), checked on the source's own
 * import graph: no import cycles; `shared/` holds only what both the edge and
 * the backend import and depends on neither; `receipts/` depends only on
 * `shared/`; the backend's image (which copies `shared/` and
 * `gpu-backend/src/` alone) imports nothing else; the edge imports nothing
 * from the backend; nothing imports the simulator.
 */

import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(import.meta.dirname, '..');
const SOURCES = ['workers', 'gpu-backend/src', 'shared', 'receipts', 'bin', 'scripts', 'sim'];

/** Relative specifiers of `import`/`export ... from` and `import('...')`, type-only ones included. */
const SPECIFIER = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)(['"])(\.\.?\/[^'"]+)\1/g;
/** Files started as worker threads (`new Worker(new URL('./x.ts', import.meta.url))`): they must exist, but are not imports. */
const WORKER_URL = /new URL\(\s*(['"])(\.\.?\/[^'"]+)\1/g;

function sourceFiles(dir: string): string[] {
  return readdirSync(path.join(ROOT, dir), { withFileTypes: true, recursive: true })
    .filter((d) => d.isFile() && /\.ts$/.test(d.name))
    .map((d) => path.relative(ROOT, path.join(d.parentPath, d.name)));
}

const texts = new Map(SOURCES.flatMap(sourceFiles).map((file) => [file, readFileSync(path.join(ROOT, file), 'utf8')]));
/** Specifiers resolved to repository paths; an extensionless one (generated declarations write `import("./index")`) is a `.ts` file. */
const targets = (file: string, pattern: RegExp) =>
  [...texts.get(file)!.matchAll(pattern)].map((m) => {
    const target = path.normalize(path.join(path.dirname(file), m[2]!));
    return path.extname(target) === '' ? `${target}.ts` : target;
  });

/** file -> the repository files it imports. */
function importGraph(): Map<string, string[]> {
  return new Map([...texts.keys()].map((file) => [file, targets(file, SPECIFIER)]));
}

/** Every cycle's files, as found by a depth-first search (each cycle reported once per entry point). */
function cycles(graph: Map<string, string[]>): string[][] {
  const found: string[][] = [];
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (file: string) => {
    state.set(file, 'open');
    stack.push(file);
    for (const next of graph.get(file) ?? []) {
      if (state.get(next) === 'open') found.push([...stack.slice(stack.indexOf(next)), next]);
      else if (!state.has(next)) visit(next);
    }
    stack.pop();
    state.set(file, 'done');
  };
  for (const file of graph.keys()) if (!state.has(file)) visit(file);
  return found;
}

const graph = importGraph();
const under = (dir: string) => (file: string) => file.startsWith(dir + '/');
const importsOf = (dir: string) => [...graph].filter(([file]) => under(dir)(file)).flatMap(([file, to]) => to.map((t) => [file, t] as const));

describe('layout', () => {
  it('finds the source files and their imports (the rules below have something to check)', () => {
    expect(graph.size).toBeGreaterThan(80);
    expect(importsOf('gpu-backend/src').some(([, t]) => under('shared')(t))).toBe(true);
  });

  it('has no import cycle', () => {
    expect(cycles(graph).map((c) => c.join(' -> '))).toEqual([]);
  });

  it('imports and starts only files that exist', () => {
    const missing = [...graph.keys()].flatMap((file) =>
      [...graph.get(file)!, ...targets(file, WORKER_URL)].filter((t) => !graph.has(t) && !/\.(js|json)$/.test(t)).map((t) => `${file} -> ${t}`),
    );
    expect(missing).toEqual([]);
  });

  it('shared/ depends on nothing outside it', () => {
    expect(importsOf('shared').filter(([, t]) => !under('shared')(t))).toEqual([]);
  });

  it('shared/ holds only what both the edge and the backend import', () => {
    const reached = (roots: string[]) => {
      const seen = new Set<string>();
      const walk = (f: string) => {
        for (const t of graph.get(f) ?? []) {
          if (seen.has(t)) continue;
          seen.add(t);
          walk(t);
        }
      };
      roots.forEach(walk);
      return seen;
    };
    const files = [...graph.keys()];
    const edge = reached(files.filter(under('workers')));
    const backend = reached(files.filter(under('gpu-backend/src')));
    const oneSided = files.filter(under('shared')).filter((f) => !edge.has(f) || !backend.has(f));
    expect(oneSided).toEqual([]);
  });

  it('receipts/ depends only on shared/', () => {
    expect(importsOf('receipts').filter(([, t]) => !under('receipts')(t) && !under('shared')(t))).toEqual([]);
  });

  it('the backend imports only gpu-backend/src and shared/ (what its image copies)', () => {
    expect(importsOf('gpu-backend/src').filter(([, t]) => !under('gpu-backend/src')(t) && !under('shared')(t))).toEqual([]);
  });

  it('the edge imports nothing from the backend', () => {
    expect(importsOf('workers').filter(([, t]) => under('gpu-backend')(t))).toEqual([]);
  });

  it('nothing imports the simulator (sim/), which imports the production routing rather than copying it', () => {
    expect([...graph].filter(([file]) => !under('sim')(file)).flatMap(([file, to]) => to.filter(under('sim')).map((t) => `${file} -> ${t}`))).toEqual([]);
    expect(importsOf('sim').some(([, t]) => t === 'workers/routing/attempts.ts')).toBe(true);
    expect(importsOf('sim').some(([, t]) => t === 'workers/routing/snapshot-index.ts')).toBe(true);
  });

  it('detects a cycle when there is one (the checker itself)', () => {
    const g = new Map([
      ['a.ts', ['b.ts']],
      ['b.ts', ['c.ts']],
      ['c.ts', ['a.ts']],
      ['d.ts', ['a.ts']],
    ]);
    expect(cycles(g)).toEqual([['a.ts', 'b.ts', 'c.ts', 'a.ts']]);
  });
});
