/**
 * wrangler configs for benchmarks that measure the edge's request path with
 * settlement running the way production runs it: apart. In production the
 * receipts queue's consumer and the ledger shards are other invocations, on
 * other threads and machines than the isolate answering a request; locally,
 * under one `wrangler dev`, they would share the edge's workerd, its thread
 * and this machine's two cores. So:
 *
 * - `edge`: the repository's wrangler.toml without `[[queues.consumers]]`:
 *   the edge still sends every receipt to the RECEIPTS queue;
 * - `settlement`: the repository's wrangler.toml as is, under another name,
 *   for a second `wrangler dev`. Miniflare's queue broker in the edge's
 *   workerd, having no consumer of its own, hands each batch through wrangler's
 *   dev registry (WRANGLER_REGISTRY_PATH, shared by both) to this process's
 *   broker, whose consumer appends to its ledger shards.
 *
 * Both point `main` (and the status page's assets and build) at the repository by absolute path.
 */

import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';

export interface BenchConfigs {
  edge: string;
  settlement: string;
  /** The settlement Worker's name (its dev registry entry). */
  settlementName: string;
}

/**
 * Writes `<dir>/edge/wrangler.toml` and `<dir>/settlement/wrangler.toml` from `<root>/wrangler.toml`.
 * `readable`: both bundles unminified, so that a profile names the functions it samples.
 */
export async function benchWranglerConfigs(root: string, dir: string, options: { readable?: boolean } = {}): Promise<BenchConfigs> {
  let text = await readFile(path.join(root, 'wrangler.toml'), 'utf8');
  if (options.readable) text = text.replace(/^minify\s*=\s*true\s*$/m, 'minify = false');
  const name = /^name\s*=\s*"([^"]+)"/m.exec(text)?.[1];
  if (!name || !/^main\s*=/m.test(text) || !/\[\[queues\.producers\]\]/.test(text) || !/\[\[queues\.consumers\]\]/.test(text)) {
    throw new Error('benchWranglerConfigs: wrangler.toml no longer has the shape this expects (name, main, queue producers and consumers)');
  }
  // The copies live elsewhere: every path in them (the Worker, the status page's assets and build) made absolute.
  const absolutePaths = (t: string) =>
    t
      .replace(/^main\s*=\s*"([^"]+)"/m, (_m, main: string) => `main = ${JSON.stringify(path.join(root, main))}`)
      .replace(/^(directory|watch_dir)\s*=\s*"([^"]+)"/gm, (_m, key: string, dir: string) => `${key} = ${JSON.stringify(path.join(root, dir))}`)
      .replace(/^\[build\]\s*$/m, `[build]\ncwd = ${JSON.stringify(root)}`);

  const edgeLines: string[] = [];
  let skipping = false;
  for (const line of absolutePaths(text).split('\n')) {
    if (/^\s*\[/.test(line)) skipping = /^\s*\[\[queues\.consumers\]\]/.test(line);
    if (!skipping) edgeLines.push(line);
  }
  const settlementName = `${name}-settlement`;
  const settlement = absolutePaths(text).replace(/^name\s*=\s*"[^"]+"/m, `name = ${JSON.stringify(settlementName)}`);

  const write = async (sub: string, content: string) => {
    await mkdir(path.join(dir, sub), { recursive: true });
    const file = path.join(dir, sub, 'wrangler.toml');
    await writeFile(file, content);
    return file;
  };
  return { edge: await write('edge', edgeLines.join('\n')), settlement: await write('settlement', settlement), settlementName };
}
