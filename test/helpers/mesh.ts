/**
 * A local mesh for one integration test file: started in `beforeAll` on free
 * ports in a temp dir (its logs kept, printed if it fails to start), stopped
 * and removed in `afterAll`. `mesh()` is the running mesh inside tests.
 */

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import { startMesh, type LocalMesh, type MeshOptions } from '../../scripts/local-mesh.ts';

export function useMesh(options: Omit<MeshOptions, 'port' | 'backendPortBase' | 'dir' | 'log'> = {}): {
  mesh: () => LocalMesh;
  logs: string[];
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
  };
}
