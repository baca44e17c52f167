/** What the SVG tests read of a chart: its elements with their attributes, and whether it is well-formed XML. */

import { expect } from 'vitest';

export type Attrs = Record<string, string> & { body?: string };

/** The elements named `name` (within the group of class `group` if given), with their attributes and, for non-empty ones, their content. */
export function elements(svg: string, name: string, group?: string): Attrs[] {
  let scope = svg;
  if (group) {
    const start = svg.indexOf(`<g class="${group}"`);
    expect(start, `group ${group}`).toBeGreaterThanOrEqual(0);
    scope = svg.slice(start, svg.indexOf('</g>', start));
  }
  const re = new RegExp(`<${name}((?:\\s+[\\w:.-]+="[^"]*")*)\\s*(?:/>|>([\\s\\S]*?)</${name}>)`, 'g');
  return [...scope.matchAll(re)].map((m) => {
    const attrs: Attrs = Object.fromEntries([...m[1]!.matchAll(/([\w:.-]+)="([^"]*)"/g)].map((a) => [a[1]!, a[2]!]));
    if (m[2] !== undefined) attrs.body = m[2];
    return attrs;
  });
}

/** Throws unless `svg` is one well-formed element tree: balanced tags, quoted attributes, no raw `<` or stray `&`. */
export function expectWellFormed(svg: string): void {
  const tag = /<(\/?)([A-Za-z][\w:.-]*)((?:\s+[\w:.-]+="[^"<]*")*)\s*(\/?)>/y;
  const strayAmp = /&(?!(?:amp|lt|gt|quot|apos|#\d+);)/;
  const stack: string[] = [];
  let roots = 0;
  let i = 0;
  while (i < svg.length) {
    const lt = svg.indexOf('<', i);
    const text = svg.slice(i, lt < 0 ? svg.length : lt);
    expect(text, `text at ${i}`).not.toMatch(strayAmp);
    expect(text, `text at ${i}`).not.toMatch(/>/);
    if (lt < 0) break;
    tag.lastIndex = lt;
    const m = tag.exec(svg);
    if (!m) throw new Error(`malformed tag at ${lt}: ${svg.slice(lt, lt + 80)}`);
    expect(m[3]!, `attributes at ${lt}`).not.toMatch(strayAmp);
    if (m[1]) expect(stack.pop(), `closing ${m[2]} at ${lt}`).toBe(m[2]);
    else {
      if (stack.length === 0) roots++;
      if (!m[4]) stack.push(m[2]!);
    }
    i = tag.lastIndex;
  }
  expect(stack).toEqual([]);
  expect(roots).toBe(1);
}
