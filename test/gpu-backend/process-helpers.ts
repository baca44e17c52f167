/**
 * For tests that run the backend as a process (`node gpu-backend/src/main.ts`):
 * a fake edge on loopback (the mesh JWKS, heartbeats recorded), a launcher
 * that captures a script's output, and a poll with a deadline that prints that
 * output when it times out.
 */

import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { meshKey, type MeshKey } from './helpers.ts';

export const ROOT = path.resolve(import.meta.dirname, '../..');

export interface FakeEdge {
  url: string;
  mesh: MeshKey;
  /** Every heartbeat received, in order. */
  beats: { ready: boolean; url: string; executionProvider: string }[];
  close(): Promise<void>;
}

/** Serves `/.well-known/jwks.json` (the mesh key) and answers heartbeats with no actions. */
export async function fakeEdge(): Promise<FakeEdge> {
  const mesh = await meshKey();
  const beats: FakeEdge['beats'] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      if (req.url === '/.well-known/jwks.json') {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [mesh.publicJwk] }));
        return;
      }
      if (req.url === '/v1/providers/heartbeat' && req.headers.authorization?.startsWith('Bearer ')) beats.push(JSON.parse(body));
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true,"ttlSeconds":10,"actions":[]}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    mesh,
    beats,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

export interface Running {
  child: ChildProcess;
  output: () => string;
  exit: Promise<number | null>;
}

/** Runs `script` (relative to the repository root) with Node, `env` over this process's. */
export function run(script: string, args: string[], env: Record<string, string>): Running {
  const child = spawn(process.execPath, [path.join(ROOT, script), ...args], { cwd: ROOT, env: { ...process.env, ...env }, stdio: 'pipe' });
  let out = '';
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (out += c.toString()));
  const exit = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, output: () => out, exit };
}

/** Polls `get` until it returns a value (after `refresh`, if given); throws with the output after `ms`. */
export async function until<T>(
  get: () => T | undefined,
  what: string,
  output: () => string,
  ms = 20_000,
  refresh?: () => Promise<void>,
): Promise<T> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    await refresh?.();
    const v = get();
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`timed out waiting for ${what}; output:\n${output()}`);
}
