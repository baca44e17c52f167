/**
 * A local mesh for one integration test file: started in `beforeAll` on free
 * ports in a temp dir (its logs kept, printed if it fails to start), stopped
 * and removed in `afterAll`. `mesh()` is the running mesh inside tests;
 * `requestLine(id)` the edge's log line of one request.
 */

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import { startMesh, type LocalMesh, type MeshOptions } from '../../scripts/local-mesh.ts';

export function useMesh(options: Omit<MeshOptions, 'port' | 'backendPortBase' | 'dir' | 'log'> = {}): {
  mesh: () => LocalMesh;
  logs: string[];
  /** The edge's log line for one request (docs/api.md section 2.12), once wrangler has printed it. */
  requestLine: (requestId: string, timeoutMs?: number) => Promise<RequestRecord>;
} {
  let running: LocalMesh | undefined;
  let dir: string | undefined;
  const logs: string[] = [];
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'mesh-it-'));
    try {
      running = await startMesh({ readyTimeoutMs: 90_000, ...options, port: 0, backendPortBase: 0, dir, log: (line) => logs.push(line) });
    } catch (err) {
      console.error(logs.slice(-200).join('\n'));
      throw err;
    }
  });
  afterAll(async () => {
    await running?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });
  return {
    mesh: () => {
      if (!running) throw new Error('the mesh is not running (beforeAll failed?)');
      return running;
    },
    logs,
    requestLine: (requestId, timeoutMs = 5_000) => requestLine(logs, requestId, timeoutMs),
  };
}

/** The fields of the edge's request log line (workers/request-log.ts `RequestRecord`) the tests read. */
export interface RequestRecord {
  msg: string;
  request_id: string;
  status: number;
  pop: string;
  region?: string;
  backend?: string;
  attempts?: number;
  tried?: string[];
}

/** Waits for the edge's JSON line of request `requestId` among `logs` (it is printed after the response). */
async function requestLine(logs: string[], requestId: string, timeoutMs: number): Promise<RequestRecord> {
  const needle = `"request_id":"${requestId}"`;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    for (const line of logs) {
      const at = line.indexOf('{"level":');
      if (line.startsWith('[edge]') && at >= 0 && line.includes(needle)) {
        const record = JSON.parse(line.slice(at)) as RequestRecord;
        if (record.msg === 'request') return record;
      }
    }
    if (Date.now() > deadline) throw new Error(`the edge logged no request line for ${requestId} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
