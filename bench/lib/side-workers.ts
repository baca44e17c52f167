/**
 * The Workers the edge benchmarks start beside the local mesh, each in a
 * `wrangler dev` of its own: settlement apart, as production runs it
 * (edge-config.ts says why), and the bare pass-through Worker
 * (bench/passthrough/), the local runtime's own floor for a request.
 */

import path from 'node:path';
import { ROOT } from '../../scripts/local-mesh.ts';
import { startWranglerDev, type WranglerDev } from './processes.ts';

/**
 * The settlement Worker (`config`: edge-config.ts's `settlement`) for the mesh
 * whose edge is `edgeUrl` and whose secrets are in `<meshDir>/edge.env`. At
 * the lowest CPU priority: it stands for invocations that production runs on
 * other machines, so it takes the cores the request path leaves idle.
 */
export function startSettlementApart(o: { config: string; edgeUrl: string; meshDir: string; stateDir: string; inspector?: boolean }): Promise<WranglerDev> {
  return startWranglerDev({
    root: ROOT,
    config: o.config,
    stateDir: o.stateDir,
    envFile: path.join(o.meshDir, 'edge.env'),
    vars: { MESH_ISSUER: o.edgeUrl, MESH_DEV: '1' },
    readyPath: '/v2/health/live',
    readyTimeoutMs: 60_000,
    graceMs: 3000,
    name: 'the settlement Worker',
    nice: 19,
    ...(o.inspector === undefined ? {} : { inspector: o.inspector }),
  });
}

/** The bare pass-through Worker, forwarding every request to `target` (a backend); `inspector` as `startWranglerDev`'s. */
export function startPassthrough(target: string, stateDir: string, inspector = true): Promise<WranglerDev> {
  return startWranglerDev({
    root: ROOT,
    config: path.join(ROOT, 'bench', 'passthrough', 'wrangler.toml'),
    stateDir,
    vars: { TARGET: target },
    readyPath: '/v2/health/ready',
    readyTimeoutMs: 60_000,
    graceMs: 5000,
    name: 'the pass-through Worker',
    inspector,
  });
}
