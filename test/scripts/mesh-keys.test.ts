import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify, type JWK } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateEd25519 } from '../../shared/keys.ts';
import { runCli } from '../helpers/cli.ts';

/** `npm run mesh-keys` runs this file with the pinned Node (22, which runs the .ts directly); so do the tests. */
const CLI = fileURLToPath(new URL('../../scripts/mesh-keys.ts', import.meta.url));
const ISSUER = 'https://mesh.example.com';

/** Runs `mesh-keys args...` in the test's folder, as a plain `node` run (not under `npm run`). */
function cli(args: string[]) {
  const env = { ...process.env };
  delete env.npm_lifecycle_event;
  return runCli(CLI, args, { cwd: dir, env });
}

/** The public halves, as the edge publishes them: what a token must verify against. */
async function publicJwks(file: string) {
  const { keys } = JSON.parse(await readFile(file, 'utf8')) as { keys: JWK[] };
  return createLocalJWKSet({ keys: keys.map(({ kty, crv, x, kid }) => ({ kty, crv, x, kid, alg: 'EdDSA', use: 'sig' })) });
}

let dir: string;
const path = (name: string) => join(dir, name);

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mesh-keys-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('mesh-keys new', () => {
  it('writes a JWKS of one Ed25519 private key, mode 0600, and prints the public JWK', async () => {
    const run = await cli(['new', '--kid', 'mesh-2026-12', '--out', 'keys.json']);
    expect(run.code, run.stderr).toBe(0);
    expect((await stat(path('keys.json'))).mode & 0o777).toBe(0o600);
    const { keys } = JSON.parse(await readFile(path('keys.json'), 'utf8')) as { keys: JWK[] };
    expect(keys).toHaveLength(1);
    expect(keys[0]).toMatchObject({ kty: 'OKP', crv: 'Ed25519', kid: 'mesh-2026-12', alg: 'EdDSA' });
    expect(typeof keys[0]!.d).toBe('string');
    const printed = JSON.parse(run.stdout) as JWK;
    expect(printed).toMatchObject({ kty: 'OKP', crv: 'Ed25519', kid: 'mesh-2026-12', x: keys[0]!.x });
    expect(printed.d).toBeUndefined();
    expect(run.stderr).toContain('wrangler secret put MESH_SIGNING_KEYS < keys.json');
  });

  it('refuses to overwrite an existing file', async () => {
    const before = await readFile(path('keys.json'), 'utf8');
    const run = await cli(['new', '--kid', 'mesh-2027-01', '--out', 'keys.json']);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/exists; not overwriting/);
    expect(run.stdout).toBe('');
    expect(await readFile(path('keys.json'), 'utf8')).toBe(before);
  });

  it('makes a missing folder, private', async () => {
    const run = await cli(['new', '--kid', 'mesh-2026-12', '--out', 'secrets/mesh/keys.json']);
    expect(run.code, run.stderr).toBe(0);
    expect((await stat(path('secrets/mesh'))).mode & 0o777).toBe(0o700);
    expect((await stat(path('secrets/mesh/keys.json'))).mode & 0o777).toBe(0o600);
  });

  it('needs a good --kid', async () => {
    for (const args of [['new'], ['new', '--kid', 'no spaces'], ['new', '--kid', 'k', '--bogus']]) {
      const run = await cli([...args, '--out', 'never.json']);
      expect(run.code, args.join(' ')).toBe(2);
      expect(run.stderr).toContain('usage: npm run mesh-keys');
    }
    await expect(stat(path('never.json'))).rejects.toThrow();
  });
});

describe('mesh-keys admin-token', () => {
  it('prints an admin token that verifies against the JWKS with the claims POST /admin/keys gives', async () => {
    const run = await cli(['admin-token', '--keys', 'keys.json', '--issuer', ISSUER]);
    expect(run.code, run.stderr).toBe(0);
    const token = run.stdout.trim();
    expect(token.split('.')).toHaveLength(3);
    const { payload, protectedHeader } = await jwtVerify(token, await publicJwks(path('keys.json')), {
      algorithms: ['EdDSA'],
      typ: 'mesh-key+jwt',
      audience: 'mesh-api',
      issuer: ISSUER,
      requiredClaims: ['exp', 'sub', 'jti', 'role'],
    });
    expect(protectedHeader).toEqual({ alg: 'EdDSA', typ: 'mesh-key+jwt', kid: 'mesh-2026-12' });
    expect(payload).toMatchObject({ iss: ISSUER, aud: 'mesh-api', sub: 'operator', role: 'admin' });
    expect(payload.exp! - payload.iat!).toBe(30 * 24 * 3600);
    expect(payload.regions).toBeUndefined();
  });

  it('issues billing tokens with a chosen sub and lifetime, and nothing a verifier for another issuer accepts', async () => {
    const run = await cli(['admin-token', '--keys', 'keys.json', '--issuer', ISSUER, '--role', 'billing', '--sub', 'billing-acme', '--ttl-days', '2']);
    expect(run.code, run.stderr).toBe(0);
    const jwks = await publicJwks(path('keys.json'));
    const opts = { algorithms: ['EdDSA'], typ: 'mesh-key+jwt', audience: 'mesh-api' };
    const { payload } = await jwtVerify(run.stdout.trim(), jwks, { ...opts, issuer: ISSUER });
    expect(payload).toMatchObject({ sub: 'billing-acme', role: 'billing' });
    expect(payload.exp! - payload.iat!).toBe(2 * 24 * 3600);
    await expect(jwtVerify(run.stdout.trim(), jwks, { ...opts, issuer: 'https://other.example.com' })).rejects.toThrow();
  });

  it('signs with the first key whose use_from has passed, as the edge does', async () => {
    const pending = await generateEd25519('mesh-next');
    const current = await generateEd25519('mesh-now');
    const old = await generateEd25519('mesh-old');
    const future = new Date(Date.now() + 24 * 3600e3).toISOString();
    const past = new Date(Date.now() - 3600e3).toISOString();
    await writeFile(
      path('rotating.json'),
      JSON.stringify({ keys: [{ ...pending.privateJwk, use_from: future }, { ...current.privateJwk, use_from: past }, old.privateJwk] }),
    );
    const run = await cli(['admin-token', '--keys', 'rotating.json', '--issuer', ISSUER]);
    expect(run.code, run.stderr).toBe(0);
    expect(decodeProtectedHeader(run.stdout.trim()).kid).toBe('mesh-now');
    await jwtVerify(run.stdout.trim(), await publicJwks(path('rotating.json')), { algorithms: ['EdDSA'], typ: 'mesh-key+jwt', audience: 'mesh-api', issuer: ISSUER });

    await writeFile(path('not-yet.json'), JSON.stringify({ keys: [{ ...pending.privateJwk, use_from: future }] }));
    const none = await cli(['admin-token', '--keys', 'not-yet.json', '--issuer', ISSUER]);
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/no key .* may sign yet/);
    expect(none.stdout).toBe('');
  });

  it('refuses a file that is not a private key set', async () => {
    const pub = await generateEd25519('public-only');
    await writeFile(path('public.json'), JSON.stringify({ keys: [pub.publicJwk] }));
    await writeFile(path('garbage.json'), 'not json');
    for (const file of ['public.json', 'garbage.json', 'missing.json']) {
      const run = await cli(['admin-token', '--keys', file, '--issuer', ISSUER]);
      expect(run.code, file).toBe(1);
      expect(run.stdout).toBe('');
    }
  });

  it('answers usage errors with exit 2 and --help with exit 0', async () => {
    for (const args of [
      [],
      ['rotate'],
      ['admin-token', '--issuer', ISSUER],
      ['admin-token', '--keys', 'keys.json'],
      ['admin-token', '--keys', 'keys.json', '--issuer', 'mesh.example.com'],
      ['admin-token', '--keys', 'keys.json', '--issuer', ISSUER, '--role', 'consumer'],
      ['admin-token', '--keys', 'keys.json', '--issuer', ISSUER, '--ttl-days', '0'],
      ['admin-token', '--keys', 'keys.json', '--issuer', ISSUER, '--ttl-days', 'soon'],
    ]) {
      const run = await cli(args);
      expect(run.code, args.join(' ')).toBe(2);
      expect(run.stdout).toBe('');
      expect(run.stderr).toContain('usage: npm run mesh-keys');
    }
    for (const args of [['--help'], ['new', '--help'], ['admin-token', '-h']]) {
      const run = await cli(args);
      expect(run.code, args.join(' ')).toBe(0);
      expect(run.stdout).toContain('admin-token --keys <file> --issuer <url>');
    }
  });
});
