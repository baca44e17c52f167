/**
 * The operator's mesh-key command (`npm run mesh-keys -- ...`), so that nothing
 * of a first deployment has to be guessed (docs/operating.md):
 *
 *   new --kid K [--out mesh-signing-keys.json]
 *     writes a JWKS of one fresh Ed25519 private JWK (mode 0600, never over an
 *     existing file), ready for `npx wrangler secret put MESH_SIGNING_KEYS <
 *     mesh-signing-keys.json`; prints the public JWK.
 *   admin-token --keys mesh-signing-keys.json --issuer URL [--sub S] [--role admin|billing] [--ttl-days N]
 *     prints a bearer token (`typ: mesh-key+jwt`) with the claims `POST
 *     /admin/keys` gives, signed by the key of that JWKS that signs now.
 *
 * The key logic is shared/keys.ts (`generateEd25519`, `issueKey`); the choice
 * of the signing key is the rule of workers/keys.ts. Exit codes: 0 done, 1
 * failed (file exists, unreadable or unusable keys), 2 usage error.
 */

import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { importJWK, type JWK } from 'jose';
import { generateEd25519, issueKey } from '../shared/keys.ts';
import { decodePayload, type KeyClaims, type KeyRole } from '../shared/jwt.ts';

const USAGE = `usage: npm run mesh-keys -- <command> [options]

commands:
  new --kid <kid> [--out <file>]
      Writes a JWKS of one fresh Ed25519 private key, { "keys": [ <private JWK> ] },
      to <file> (default mesh-signing-keys.json; mode 0600; an existing file is
      never overwritten) and prints its public JWK. Next:
        npx wrangler secret put MESH_SIGNING_KEYS < <file>

  admin-token --keys <file> --issuer <url> [--sub <id>] [--role admin|billing] [--ttl-days <n>]
      Prints a bearer token signed by the key of <file> that signs now (the first
      key whose "use_from" is absent or past, as the edge picks it), with the
      claims POST /admin/keys gives. --issuer must equal the Worker's MESH_ISSUER
      exactly. Defaults: --sub operator, --role admin, --ttl-days 30.

  --help, -h   this text

Keep the key file in your secret store: Cloudflare cannot show a secret back.`;

const ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;
const ROLES: readonly KeyRole[] = ['admin', 'billing'];

/** A mistake in the command line: usage on stderr, exit 2. */
class UsageError extends Error {}

/** Relative paths are the caller's: `npm run` moves to the package root, and names the caller's directory INIT_CWD. */
const CALLER_CWD = (process.env.npm_lifecycle_event === 'mesh-keys' && process.env.INIT_CWD) || process.cwd();
const resolve = (file: string) => path.resolve(CALLER_CWD, file);

function options(argv: string[], spec: Record<string, { type: 'string' }>): Record<string, string | boolean | undefined> {
  try {
    return parseArgs({ args: argv, options: { ...spec, help: { type: 'boolean', short: 'h' } }, strict: true, allowPositionals: false }).values as Record<string, string | boolean | undefined>;
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

function required(values: Record<string, unknown>, name: string, what: string): string {
  const v = values[name];
  if (typeof v !== 'string' || v.trim() === '') throw new UsageError(`--${name} is required: ${what}.`);
  return v.trim();
}

async function newKey(argv: string[]): Promise<void> {
  const values = options(argv, { kid: { type: 'string' }, out: { type: 'string' } });
  if (values.help) return void console.log(USAGE);
  const kid = required(values, 'kid', 'a fresh, dated key id, e.g. --kid mesh-2026-12');
  if (!ID.test(kid)) throw new UsageError(`--kid must be 1-128 letters, digits, ".", "_", ":" or "-", got ${JSON.stringify(kid)}.`);
  const out = resolve(typeof values.out === 'string' && values.out !== '' ? values.out : 'mesh-signing-keys.json');

  const { privateJwk, publicJwk } = await generateEd25519(kid);
  try {
    // A missing folder is made private; 'wx': never overwrite a private key by accident.
    await mkdir(path.dirname(out), { recursive: true, mode: 0o700 });
    await writeFile(out, `${JSON.stringify({ keys: [privateJwk] })}\n`, { mode: 0o600, flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
      throw new Error(`${out} exists; not overwriting a key file (choose another --out, or move it away first).`);
    }
    throw err;
  }
  const relative = path.relative(CALLER_CWD, out);
  const rel = relative && !relative.startsWith('..') ? relative : out;
  console.error(`mesh-keys: private JWKS written to ${out} (mode 0600). Keep it in your secret store.`);
  console.error(`next: npx wrangler secret put MESH_SIGNING_KEYS < ${rel}`);
  console.error(`then: npm run --silent mesh-keys -- admin-token --keys ${rel} --issuer <MESH_ISSUER>`);
  console.error('public JWK (/.well-known/jwks.json lists it once the secret is in place):');
  console.log(JSON.stringify(publicJwk));
}

/** The keys of a JWKS file (or of a single JWK), as the edge reads MESH_SIGNING_KEYS. */
async function readKeys(file: string): Promise<Record<string, unknown>[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new Error(`cannot read ${file}: ${(err as Error).message}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new Error(`${file} is not JSON: it must be the MESH_SIGNING_KEYS JWKS, { "keys": [...] }.`);
  }
  if (typeof parsed !== 'object' || parsed === null) throw new Error(`${file} must be a JWKS, { "keys": [...] }.`);
  const list = Array.isArray((parsed as { keys?: unknown }).keys) ? (parsed as { keys: unknown[] }).keys : [parsed];
  if (list.length === 0) throw new Error(`${file} holds no key.`);
  if (!list.every((k) => typeof k === 'object' && k !== null && !Array.isArray(k))) throw new Error(`every key in ${file} must be a JWK object.`);
  return list as Record<string, unknown>[];
}

/**
 * The key that signs at `now`: the FIRST key whose `use_from` is absent or
 * <= now (workers/keys.ts). A kid the operator has already listed in
 * MESH_RETIRED_KEYS never signs there; such a key should be out of the file.
 */
function signerAt(keys: Record<string, unknown>[], now: number, file: string): Record<string, unknown> {
  for (const jwk of keys) {
    const useFrom = jwk.use_from;
    if (useFrom === undefined) return jwk;
    const ms = typeof useFrom === 'string' ? Date.parse(useFrom) : NaN;
    if (!Number.isFinite(ms)) throw new Error(`"use_from" of key ${JSON.stringify(jwk.kid)} in ${file} is not an ISO 8601 time.`);
    if (ms <= now) return jwk;
  }
  throw new Error(`no key in ${file} may sign yet: every key has a "use_from" in the future.`);
}

async function adminToken(argv: string[]): Promise<void> {
  const values = options(argv, {
    keys: { type: 'string' },
    issuer: { type: 'string' },
    sub: { type: 'string' },
    role: { type: 'string' },
    'ttl-days': { type: 'string' },
  });
  if (values.help) return void console.log(USAGE);
  const file = resolve(required(values, 'keys', 'the MESH_SIGNING_KEYS JWKS file (`npm run mesh-keys -- new` writes one)'));
  const issuer = required(values, 'issuer', "the Worker's MESH_ISSUER, e.g. --issuer https://mesh.example.com");
  let url: URL;
  try {
    url = new URL(issuer);
  } catch {
    throw new UsageError(`--issuer must be an absolute URL (the Worker's MESH_ISSUER), got ${JSON.stringify(issuer)}.`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new UsageError(`--issuer must be an http(s) URL, got ${JSON.stringify(issuer)}.`);
  if (issuer.endsWith('/')) {
    console.error(`mesh-keys: note: --issuer ends with "/": the edge accepts the token only if MESH_ISSUER is exactly ${JSON.stringify(issuer)}, slash included.`);
  }
  const sub = typeof values.sub === 'string' ? values.sub : 'operator';
  if (!ID.test(sub)) throw new UsageError(`--sub must be 1-128 letters, digits, ".", "_", ":" or "-", got ${JSON.stringify(sub)}.`);
  const role = (typeof values.role === 'string' ? values.role : 'admin') as KeyRole;
  if (!ROLES.includes(role)) throw new UsageError(`--role must be ${ROLES.join(' or ')} (consumer keys: POST /admin/keys), got ${JSON.stringify(role)}.`);
  const ttlRaw = typeof values['ttl-days'] === 'string' ? values['ttl-days'] : '30';
  const ttlDays = Number(ttlRaw);
  if (!/^\d+(\.\d+)?$/.test(ttlRaw) || !(ttlDays > 0) || ttlDays > 3650) {
    throw new UsageError(`--ttl-days must be a number of days above 0 and at most 3650, got ${JSON.stringify(ttlRaw)}.`);
  }
  const ttlSeconds = Math.max(1, Math.round(ttlDays * 24 * 3600));

  const jwk = signerAt(await readKeys(file), Date.now(), file);
  const { kty, crv, x, d, kid } = jwk;
  if (kty !== 'OKP' || crv !== 'Ed25519' || typeof kid !== 'string' || !kid || typeof x !== 'string' || typeof d !== 'string') {
    throw new Error(`the signing key in ${file} must be an Ed25519 private JWK with a kid (kty "OKP", crv "Ed25519", x, d, kid).`);
  }
  let key: Awaited<ReturnType<typeof importJWK>>;
  try {
    key = await importJWK({ kty, crv, x, d } as JWK, 'EdDSA');
  } catch (err) {
    throw new Error(`key "${kid}" in ${file} is not a valid Ed25519 key: ${(err as Error).message}`);
  }
  const token = await issueKey(key, kid, { issuer, sub, role, ttlSeconds });
  const exp = new Date(decodePayload<KeyClaims>(token)!.exp * 1000).toISOString();
  console.error(`mesh-keys: ${role} token for "${sub}", signed by "${kid}", issuer ${issuer}, expires ${exp}`);
  console.log(token);
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'new':
        await newKey(rest);
        return 0;
      case 'admin-token':
        await adminToken(rest);
        return 0;
      case '--help':
      case '-h':
      case 'help':
        console.log(USAGE);
        return 0;
      case undefined:
        throw new UsageError('name a command: new or admin-token.');
      default:
        throw new UsageError(`unknown command ${JSON.stringify(command)}: use new or admin-token.`);
    }
  } catch (err) {
    if (err instanceof UsageError) {
      console.error(`mesh-keys: ${err.message}\n\n${USAGE}`);
      return 2;
    }
    console.error(`mesh-keys: ${err instanceof Error ? err.message : String(err)}`);
    return 1;
  }
}

process.exitCode = await main(process.argv.slice(2));
