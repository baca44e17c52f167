/**
 * `npm run profile:edge`: where the mesh edge's CPU goes, from a V8 sampling
 * profile of the edge isolate (wrangler dev's inspector) under the same closed
 * loop as `bench:edge` path (c). A diagnostic: it prints the functions and
 * files with the most self time as shares of the isolate's busy time (the
 * inspector slows the isolate unevenly: read shares, not times), and writes
 * bench/results/edge.cpuprofile. Method: docs/benchmarks.md.
 *
 * Env: PROFILE_SECONDS (8), PROFILE_CONCURRENCY (1), PROFILE_TOP (40),
 * PROFILE_INTERVAL_US (1000), BENCH_EDGE_VARS and BENCH_EDGE_SETTLEMENT as in
 * bench:edge (by default no settlement runs and Miniflare drops the receipts).
 */

import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { ROOT, startMesh } from '../scripts/local-mesh.ts';
import { envNumber } from './lib/env.ts';
import { closedLoop } from './lib/load.ts';
import { benchWranglerConfigs } from './lib/edge-config.ts';

const SECONDS = envNumber('PROFILE_SECONDS', 8, 1, 120);
const CONCURRENCY = envNumber('PROFILE_CONCURRENCY', 1, 1, 256);
const TOP = envNumber('PROFILE_TOP', 40, 5, 500);
const INTERVAL_US = envNumber('PROFILE_INTERVAL_US', 1000, 50, 100_000);
const BODY = new TextEncoder().encode(
  JSON.stringify({ inputs: [{ name: 'features', shape: [1, 16], datatype: 'FP32', data: Array.from({ length: 16 }, (_, i) => i / 10) }] }),
);

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** One DevTools protocol session over WebSocket. */
async function inspect(inspectorUrl: string) {
  const targets = (await (await fetch(`${inspectorUrl}/json`)).json()) as { webSocketDebuggerUrl: string; title?: string }[];
  const target = targets.find((t) => /edge|mesh/i.test(t.title ?? '')) ?? targets[0];
  if (!target) throw new Error(`no inspector target at ${inspectorUrl}/json`);
  // Miniflare's inspector proxy wants an Origin on the host it allows (DNS-rebinding guard); undici's WebSocket takes headers.
  const ws = new WebSocket(target.webSocketDebuggerUrl, { headers: { origin: 'http://localhost' } } as unknown as string[]);
  await new Promise<void>((resolve, reject) => {
    ws.onopen = () => resolve();
    ws.onerror = () => reject(new Error(`cannot connect to ${target.webSocketDebuggerUrl}`));
  });
  let next = 1;
  const waiting = new Map<number, (result: unknown) => void>();
  ws.onmessage = (event) => {
    const message = JSON.parse(String(event.data)) as { id?: number; result?: unknown; error?: { message: string } };
    if (message.id === undefined) return;
    waiting.get(message.id)?.(message.error ? Promise.reject(new Error(message.error.message)) : message.result);
    waiting.delete(message.id);
  };
  const call = <T>(method: string, params: Record<string, unknown> = {}) =>
    new Promise<T>((resolve) => {
      const id = next++;
      waiting.set(id, resolve as (r: unknown) => void);
      ws.send(JSON.stringify({ id, method, params }));
    });
  return { title: target.title, call, close: () => ws.close() };
}

/** Self time per function and per source file, and inclusive time per function (itself and what it called), µs. */
function summarise(profile: CpuProfile) {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const child of n.children ?? []) parent.set(child, n.id);
  const self = new Map<number, number>();
  for (let i = 0; i < profile.samples.length; i++) self.set(profile.samples[i]!, (self.get(profile.samples[i]!) ?? 0) + (profile.timeDeltas[i] ?? 0));
  const fns = new Map<string, number>();
  const files = new Map<string, number>();
  const inclusive = new Map<string, number>();
  let total = 0;
  const nameOf = (id: number) => {
    const { functionName, url, lineNumber } = byId.get(id)!.callFrame;
    const file = url ? url.replace(/^.*?(workers\/|shared\/|receipts\/|node_modules\/)/, '$1') : '(native)';
    return { file, fn: `${functionName || '(anonymous)'}  ${file}${url ? `:${lineNumber + 1}` : ''}` };
  };
  for (const [id, us] of self) {
    const { functionName, url } = byId.get(id)!.callFrame;
    const { file, fn } = nameOf(id);
    fns.set(fn, (fns.get(fn) ?? 0) + us);
    // Every function on the stack, once per sample however deep its recursion.
    const seen = new Set<string>();
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const name = nameOf(at).fn;
      if (seen.has(name)) continue;
      seen.add(name);
      inclusive.set(name, (inclusive.get(name) ?? 0) + us);
    }
    const group = /^\(/.test(functionName) && !url ? functionName : file.replace(/^(node_modules\/(?:@[^/]+\/)?[^/]+).*$/, '$1');
    files.set(group, (files.get(group) ?? 0) + us);
    total += us;
  }
  const sorted = (m: Map<string, number>) => [...m].sort((a, b) => b[1] - a[1]);
  return { total, fns: sorted(fns), files: sorted(files), inclusive: sorted(inclusive) };
}

const tmp = await mkdtemp(path.join(os.tmpdir(), 'mesh-profile-'));
// As bench:edge: wrangler dev's local trace store off, and a dev registry of its own.
process.env.WRANGLER_REGISTRY_PATH = path.join(tmp, 'registry');
await mkdir(process.env.WRANGLER_REGISTRY_PATH, { recursive: true });
process.env.X_LOCAL_OBSERVABILITY = 'false';
process.env.X_LOCAL_EXPLORER = 'false';
const mesh = await startMesh({
  port: 0,
  backendPortBase: 0,
  backends: [{ id: 'fra-1', region: 'eu-west', provider: 'provider-fra' }],
  dir: path.join(tmp, 'mesh'),
  log: (line) => console.log(`  ${line}`),
  ...(process.env.BENCH_EDGE_VARS ? { edgeVars: JSON.parse(process.env.BENCH_EDGE_VARS) as Record<string, string> } : {}),
  // Receipts are sent to the queue, but no consumer or ledger runs in this workerd (none runs at all here).
  // Unminified, so that the profile names functions; settlement in the edge's workerd only when asked.
  wranglerConfig: await (async () => {
    const configs = await benchWranglerConfigs(ROOT, path.join(tmp, 'config'), { readable: true });
    return process.env.BENCH_EDGE_SETTLEMENT === 'together' ? configs.settlement : configs.edge;
  })(),
});
try {
  const url = `${mesh.edgeUrl}/v2/models/classifier/infer`;
  const tokens = (n: number) => new Array<string>(n).fill(mesh.consumerKey);
  const headers = { 'x-mesh-dev-colo': 'FRA' };
  console.log(`[profile] warming up 2 s at concurrency ${CONCURRENCY}`);
  await closedLoop({ url, body: BODY, tokens: tokens(100_000), concurrency: CONCURRENCY, durationMs: 2000, headers });
  if (!mesh.inspectorUrl) throw new Error('profile-edge: the edge was started without its inspector');
  const inspector = await inspect(mesh.inspectorUrl);
  console.log(`[profile] inspector target: ${inspector.title ?? '?'}; profiling ${SECONDS} s`);
  await inspector.call('Profiler.enable');
  await inspector.call('Profiler.setSamplingInterval', { interval: INTERVAL_US });
  await inspector.call('Profiler.start');
  const result = await closedLoop({ url, body: BODY, tokens: tokens(1_000_000), concurrency: CONCURRENCY, durationMs: SECONDS * 1000, headers });
  const { profile } = await inspector.call<{ profile: CpuProfile }>('Profiler.stop');
  inspector.close();
  await mkdir(path.join(ROOT, 'bench', 'results'), { recursive: true });
  await writeFile(path.join(ROOT, 'bench', 'results', 'edge.cpuprofile'), JSON.stringify(profile));

  const { total, fns, files, inclusive } = summarise(profile);
  const wallMs = (profile.endTime - profile.startTime) / 1000;
  const idle = files.find(([f]) => f === '(idle)')?.[1] ?? 0;
  const busyMs = (total - idle) / 1000;
  const n = result.ok;
  const share = (us: number) => `${((100 * us) / Math.max(1, total - idle)).toFixed(1).padStart(5)} %`;
  console.log(`\n${n} answers in ${wallMs.toFixed(0)} ms; the edge isolate was busy ${busyMs.toFixed(0)} ms (profiled: several times slower than unprofiled)`);
  console.log('\nself time by source, share of busy time:');
  for (const [file, us] of files.filter(([f]) => f !== '(idle)').slice(0, 20)) console.log(`  ${share(us)}  ${file}`);
  console.log(`\nself time by function, top ${TOP}, share of busy time:`);
  for (const [fn, us] of fns.filter(([f]) => !f.startsWith('(idle)')).slice(0, TOP)) console.log(`  ${share(us)}  ${fn}`);
  console.log(`\ninclusive time (the function and what it called) of the Worker's functions, top ${TOP}, share of busy time:`);
  const ours = inclusive.filter(([f]) => !f.includes('(native)') && !f.startsWith('('));
  for (const [fn, us] of ours.slice(0, TOP)) console.log(`  ${share(us)}  ${fn}`);
} finally {
  await mesh.stop();
  await rm(tmp, { recursive: true, force: true });
}
