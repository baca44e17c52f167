/**
 * Provider key generation, as a command:
 *
 *   node gpu-backend/src/keygen.ts [--out provider-key.json] [--kid K]
 *
 * writes the private Ed25519 JWK (mode 0600) for the backend's
 * PROVIDER_KEY_FILE and prints the public JWK for the operator to admit
 * (`POST /admin/providers`).
 */

import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { generateProviderKey } from './mesh/provider-key.ts';

async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      out: { type: 'string', default: 'provider-key.json' },
      kid: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log('usage: node gpu-backend/src/keygen.ts [--out provider-key.json] [--kid K]');
    return;
  }
  const kid = values.kid ?? `provider-${new Date().toISOString().slice(0, 10)}-${crypto.randomUUID().slice(0, 8)}`;
  const { privateJwk, publicJwk } = await generateProviderKey(kid);
  const out = path.resolve(values.out);
  // 'wx': never overwrite an existing private key by accident.
  await writeFile(out, `${JSON.stringify(privateJwk, null, 2)}\n`, { mode: 0o600, flag: 'wx' });
  console.error(`private key written to ${out} (mode 0600); set PROVIDER_KEY_FILE=${out}`);
  console.error('public key for the operator (POST /admin/providers { "id", "publicJwk" }):');
  console.log(JSON.stringify(publicJwk));
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === import.meta.filename) {
  main(process.argv.slice(2)).catch((err: unknown) => {
    console.error(`keygen: ${err instanceof Error ? err.message : String(err)}`);
    process.exitCode = 1;
  });
}
