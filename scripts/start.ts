/**
 * `npm start`: the local mesh of docs/api.md section 1, with a `mesh ready` line and
 * a copy-paste example; Ctrl-C stops everything it started.
 */

import path from 'node:path';
import { ALL_MODEL_NAMES, ROOT, startMesh } from './local-mesh.ts';

const started = Date.now();
let mesh: Awaited<ReturnType<typeof startMesh>> | undefined;
let stopping = false;

async function shutdown(signal: string) {
  if (stopping) return;
  stopping = true;
  console.log(`\n[mesh] ${signal}: stopping every process`);
  await mesh?.stop();
  process.exit(0);
}
process.on('SIGINT', () => void shutdown('SIGINT'));
process.on('SIGTERM', () => void shutdown('SIGTERM'));

try {
  mesh = await startMesh({ models: ALL_MODEL_NAMES });
} catch (err) {
  console.error(`[mesh] failed to start: ${(err as Error).message}`);
  process.exit(1);
}
if (stopping) await new Promise(() => {});

const body = JSON.stringify({ inputs: [{ name: 'text', shape: [1], datatype: 'BYTES', data: ['hello from Jakarta'] }] });
console.log(`
[mesh] mesh ready in ${((Date.now() - started) / 1000).toFixed(1)} s: edge ${mesh.edgeUrl}, backends ${mesh.backends.map((b) => `${b.id} (${b.region}) ${b.url}`).join(', ')}
[mesh] keys and URLs: ${path.relative(ROOT, mesh.localJson)}
[mesh] status page: ${mesh.edgeUrl}/status (sign in with the adminToken of ${path.relative(ROOT, mesh.localJson)})

Try it (a request entering at Jakarta's PoP, served from the nearest warm region):

  curl -si ${mesh.edgeUrl}/v2/models/embed/infer \\
    -H "authorization: Bearer $(node -p "require('./.mesh/local.json').consumerKey")" \\
    -H "x-mesh-dev-colo: CGK" -H "content-type: application/json" \\
    -d '${body}'

Receipts verify against ${mesh.edgeUrl}/.well-known/jwks.json. Ctrl-C stops the mesh.
`);
