/**
 * One config, three kinds of test:
 * - `workers`: edge code and Durable Objects inside workerd (Workers Vitest plugin);
 * - `node`: shared code, the receipts library and `mesh-verify`, the GPU backend (in Node with
 *   real ONNX Runtime), the test and benchmark helpers;
 * - `integration`: real backend processes and the Worker in workerd (wrangler dev), on loopback.
 */

import { cloudflareTest } from '@cloudflare/vitest-plugin';
import { defineConfig } from 'vitest/config';
import { generateEd25519 } from './shared/keys.ts';

// Local-test signing key, generated per run; never a real secret.
const meshKey = await generateEd25519('test-mesh-key');

export default defineConfig({
  test: {
    // The edge's per-request log line (workers/request-log.ts, tested where it matters) would bury the rest; 5xx lines still print.
    onConsoleLog: (log) => (log.startsWith('{"level":"info","msg":"request"') ? false : undefined),
    projects: [
      {
        test: {
          name: 'node',
          include: [
            'test/shared/**/*.test.ts',
            'test/receipts/**/*.test.ts',
            'test/bin/**/*.test.ts',
            'test/helpers/**/*.test.ts',
            'test/scripts/**/*.test.ts',
            'test/*.test.ts',
            'test/gpu-backend/**/*.test.ts',
            'test/bench/**/*.test.ts',
            'test/sim/**/*.test.ts',
          ],
          environment: 'node',
          testTimeout: 30_000,
          hookTimeout: 60_000,
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          environment: 'node',
          testTimeout: 60_000,
          hookTimeout: 120_000,
          // Each file starts its own mesh of processes; run files one after another.
          fileParallelism: false,
        },
      },
      {
        plugins: [
          cloudflareTest({
            wrangler: { configPath: './wrangler.toml' },
            miniflare: {
              bindings: {
                MESH_SIGNING_KEYS: JSON.stringify({ keys: [meshKey.privateJwk] }),
                MESH_ISSUER: 'https://mesh.test',
                MESH_DEV: '1',
                BACKEND_TTL_SECONDS: '10',
                // Test helpers wait for a request's background work, which may hold the status page's counts this long.
                STATUS_FLUSH_MS: '100',
              },
            },
          }),
        ],
        test: {
          name: 'workers',
          include: ['test/workers/**/*.test.ts'],
        },
      },
    ],
  },
});
