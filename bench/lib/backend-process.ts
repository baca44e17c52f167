/**
 * What a benchmark needs to run a real backend process without the edge: a
 * bench mesh key, a tiny fake edge on loopback (serves the key's JWKS and
 * answers heartbeats 200), dispatch tokens signed with that key, and a backend
 * started as `node gpu-backend/src/main.ts` and stopped with SIGTERM (SIGKILL
 * after a bound).
 */

import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { importJWK, type CryptoKey, type JWK } from 'jose';
import { generateProviderKey } from '../../gpu-backend/src/mesh/provider-key.ts';
import { sha256Hex } from '../../receipts/hash.ts';
import { generateEd25519 } from '../../shared/keys.ts';
import { processCpuMs, threadCpuMs } from './cpu.ts';
import { signDispatchTokens } from './tokens.ts';

export const ROOT = path.resolve(import.meta.dirname, '..', '..');
export const BACKEND_ID = 'bench-1';
export const MESH_ISSUER = 'https://mesh.bench.invalid';

export interface FakeEdge {
  url: string;
  /** Heartbeats answered so far. */
  readonly heartbeats: number;
  /** Signs `count` single-use dispatch tokens for `model` bound to `body`, valid for 60 s from now. */
  signTokens(model: string, body: Uint8Array, count: number): Promise<string[]>;
  close(): Promise<void>;
}

/** A mesh key and a loopback server standing for the edge (JWKS + heartbeats). */
export async function startFakeEdge(): Promise<FakeEdge> {
  const { privateJwk, publicJwk } = await generateEd25519('bench-mesh-key');
  const key = (await importJWK(privateJwk, 'EdDSA')) as CryptoKey;
  const jwks = JSON.stringify({ keys: [{ ...publicJwk, use: 'sig' } satisfies JWK] });
  let heartbeats = 0;
  const server: Server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      if (req.method === 'GET' && req.url === '/.well-known/jwks.json') {
        res.writeHead(200, { 'content-type': 'application/json' }).end(jwks);
      } else if (req.method === 'POST' && req.url === '/v1/providers/heartbeat') {
        heartbeats++;
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true,"ttlSeconds":10,"actions":[]}');
      } else res.writeHead(404).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    get heartbeats() {
      return heartbeats;
    },
    async signTokens(model, body, count) {
      const bodySha256 = await sha256Hex(body);
      return signDispatchTokens({ key, kid: 'bench-mesh-key', issuer: MESH_ISSUER, aud: BACKEND_ID, model, bodySha256, count });
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

export interface BackendProcess {
  url: string;
  pid: number;
  /** User + system CPU time of the process so far, ms (Linux /proc; NaN elsewhere). */
  cpuMs(): number;
  /** CPU time of its main thread alone (the executor: batching, and the model too with INFERENCE_THREAD=main), ms. */
  mainThreadCpuMs(): number;
  /** The last lines it printed. */
  output(): string;
  /** SIGTERM, then SIGKILL after `graceMs`. Resolves with the exit code (null when killed). */
  stop(graceMs?: number): Promise<number | null>;
}

const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

/** Starts `node gpu-backend/src/main.ts` on a free loopback port and waits until it is ready. */
export async function startBackend(o: { edge: FakeEdge; repository: string; models: string; env?: Record<string, string>; readyTimeoutMs?: number }): Promise<BackendProcess> {
  const provider = await generateProviderKey('bench-provider-key');
  const child = spawn(process.execPath, [path.join(ROOT, 'gpu-backend', 'src', 'main.ts')], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      ...process.env,
      BACKEND_ID,
      PROVIDER_ID: 'bench-provider',
      PROVIDER_KEY: JSON.stringify(provider.privateJwk),
      HOST: '127.0.0.1',
      PORT: '0',
      REGION: 'eu-west',
      EDGE_URL: o.edge.url,
      MESH_ISSUER,
      MODEL_REPOSITORY: o.repository,
      MODELS: o.models,
      EXECUTION_PROVIDERS: 'cpu',
      HEARTBEAT_INTERVAL_MS: '60000',
      ...o.env,
    },
  });
  live.add(child);
  let out = '';
  const append = (c: Buffer) => {
    out = (out + c.toString('utf8')).slice(-8000);
  };
  child.stdout.on('data', append);
  child.stderr.on('data', append);
  let exitCode: number | null | undefined;
  const exited = new Promise<number | null>((resolve) =>
    child.on('exit', (code) => {
      exitCode = code;
      live.delete(child);
      resolve(code);
    }),
  );

  const deadline = Date.now() + (o.readyTimeoutMs ?? 60_000);
  let url: string | undefined;
  while (url === undefined) {
    url = /ready: .* listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(out)?.[1];
    if (url) break;
    if (exitCode !== undefined) throw new Error(`the backend exited (${exitCode}) before it was ready:\n${out}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`the backend was not ready within ${(o.readyTimeoutMs ?? 60_000) / 1000} s:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  const ready = await fetch(`${url}/v2/health/ready`);
  if (ready.status !== 200) throw new Error(`${url}/v2/health/ready answered ${ready.status}: ${await ready.text()}`);

  const pid = child.pid!;
  return {
    url,
    pid,
    cpuMs: () => processCpuMs(pid),
    mainThreadCpuMs: () => threadCpuMs(pid),
    output: () => out,
    async stop(graceMs = 15_000) {
      if (exitCode !== undefined) return exitCode;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}
