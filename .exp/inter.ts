import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { importJWK } from 'jose';
import { ROOT, startMesh } from '/work/main/scripts/local-mesh.ts';
import { interleavedLoop, quantile } from '/work/main/bench/lib/load.ts';
import { startWranglerDev } from '/work/main/bench/lib/processes.ts';
import { benchWranglerConfigs } from '/work/main/bench/lib/edge-config.ts';
import { signDispatchTokens } from '/work/main/bench/lib/tokens.ts';
import { sha256Hex } from '/work/main/receipts/index.ts';
const S = Number(process.env.S ?? 8);
const body = new TextEncoder().encode(JSON.stringify({ inputs: [{ name: 'features', shape: [1, 16], datatype: 'FP32', data: Array.from({ length: 16 }, (_, i) => i / 10) }] }));
const tmp = await mkdtemp(path.join(os.tmpdir(), 'inter-'));
process.env.WRANGLER_REGISTRY_PATH = path.join(tmp, 'registry');
await mkdir(process.env.WRANGLER_REGISTRY_PATH, { recursive: true });
process.env.X_LOCAL_OBSERVABILITY = 'false'; process.env.X_LOCAL_EXPLORER = 'false';
const configs = await benchWranglerConfigs(ROOT, path.join(tmp, 'config'));
const mesh = await startMesh({ port: 0, backendPortBase: 0, backends: [{ id: 'fra-1', region: 'eu-west', provider: 'provider-fra' }, { id: 'iad-1', region: 'us-east', provider: 'provider-iad' }], dir: path.join(tmp, 'mesh'), log: () => {}, wranglerConfig: configs.edge });
const settlement = await startWranglerDev({ root: ROOT, config: configs.settlement, stateDir: path.join(tmp, 'settlement'), envFile: path.join(tmp, 'mesh', 'edge.env'), vars: { MESH_ISSUER: mesh.edgeUrl, MESH_DEV: '1' }, readyPath: '/v2/health/live', readyTimeoutMs: 60_000, graceMs: 3000, name: 'settlement', nice: 19 });
const backend = mesh.backends.find((b) => b.id === 'fra-1')!;
const pt = await startWranglerDev({ root: ROOT, config: path.join(ROOT, 'bench', 'passthrough', 'wrangler.toml'), stateDir: path.join(tmp, 'pt'), vars: { TARGET: backend.url }, readyPath: '/v2/health/ready', readyTimeoutMs: 60_000, graceMs: 5000, name: 'pt' });
const key = (await importJWK(mesh.meshPrivateJwk, 'EdDSA')) as CryptoKey;
const bodySha256 = await sha256Hex(body);
const tk = () => signDispatchTokens({ key, kid: mesh.meshPrivateJwk.kid!, issuer: mesh.edgeUrl, aud: 'fra-1', model: 'classifier', bodySha256, count: 3000 });
const ck = () => new Array<string>(3000).fill(mesh.consumerKey);
const u = (b: string) => `${b}/v2/models/classifier/infer`;
for (let r = 0; r < Number(process.env.R ?? 3); r++) {
  const h = (x: Record<string, string>) => ({ 'x-mesh-dev-colo': 'FRA', 'x-mesh-verify': 'none', ...x });
  const targets: any[] = [
    { url: u(mesh.edgeUrl), tokens: await tk(), headers: { 'x-exp-bare': backend.url } },
    { url: u(mesh.edgeUrl), tokens: ck(), headers: h({}) },
    { url: u(mesh.edgeUrl), tokens: ck(), headers: h({ 'x-exp-stage': 'fetched' }) },
    { url: u(mesh.edgeUrl), tokens: await tk(), headers: { 'x-exp-bare': backend.url, 'x-exp-mode': 'buffered,fresh' } },
    { url: u(mesh.edgeUrl), tokens: ck(), headers: h({ 'x-exp-stage': 'f-start', 'x-exp-url': backend.url }) },
    { url: u(mesh.edgeUrl), tokens: ck(), headers: h({ 'x-exp-stage': 'f-auth', 'x-exp-url': backend.url }) },
    { url: u(mesh.edgeUrl), tokens: ck(), headers: h({ 'x-exp-stage': 'f-parsed', 'x-exp-url': backend.url }) },
    { url: u(mesh.edgeUrl), tokens: ck(), headers: h({ 'x-exp-stage': 'f-meta', 'x-exp-url': backend.url }) },
    { url: u(mesh.edgeUrl), tokens: ck(), headers: h({ 'x-exp-stage': 'barefetch' }) },
    { url: u(mesh.edgeUrl), tokens: await tk(), headers: { 'x-exp-bare': backend.url, 'x-exp-mode': 'buffered' } },
  ];
  const names = ['bare', 'full', 'fetched', 'fresh', 'f-start', 'f-auth', 'f-parsed', 'f-meta', 'barefetch', 'buffered'];
  const st: Record<string, number[]> = {};
  const grab = (name: string) => (hh: any) => { for (const m of String(hh['server-timing'] ?? '').matchAll(/(\w+);dur=([0-9.]+)/g)) (st[`${name}.${m[1]}`] ??= []).push(Number(m[2])); };
  targets[0].onAnswer = grab('bare');
  targets[2].onAnswer = grab('fetched');
  
  const res = await interleavedLoop({ targets, body, concurrency: 1, durationMs: S * 1000 });
  if (r === 0) continue;
  console.log(res.map((x, i) => `${names[i]} ${quantile(x.latenciesMs, 0.5).toFixed(2)}${x.ok === 0 ? ' ERR ' + x.errorSamples[0] : ''}`).join(' | '));
  console.log(Object.entries(st).map(([k, v]) => `${k} ${(v.reduce((a, b) => a + b, 0) / v.length).toFixed(3)}`).join(', '));
}
await pt.stop(); await settlement.stop(); await mesh.stop(); await rm(tmp, { recursive: true, force: true });
