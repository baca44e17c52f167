import { exports } from 'cloudflare:workers';
import { describe, expect, it } from 'vitest';

describe('edge health and JWKS', () => {
  it('is live and ready without auth', async () => {
    expect((await exports.default.fetch('https://mesh.test/v2/health/live')).status).toBe(200);
    const ready = await exports.default.fetch('https://mesh.test/v2/health/ready');
    expect(ready.status).toBe(200);
  });
  it('publishes only public Ed25519 keys with kid', async () => {
    const res = await exports.default.fetch('https://mesh.test/.well-known/jwks.json');
    const jwks = (await res.json()) as { keys: Record<string, unknown>[] };
    expect(jwks.keys).toHaveLength(1);
    expect(jwks.keys[0]).toMatchObject({ kty: 'OKP', crv: 'Ed25519', kid: 'test-mesh-key', alg: 'EdDSA' });
    expect(jwks.keys[0]).not.toHaveProperty('d');
  });
  it('publishes the JWKS archive without auth', async () => {
    const res = await exports.default.fetch('https://mesh.test/.well-known/jwks-archive.json');
    expect(res.status).toBe(200);
    expect(res.headers.get('cache-control')).toMatch(/^public, max-age=\d+$/);
    const archive = (await res.json()) as { keys: Record<string, unknown>[] };
    expect(archive.keys).toEqual([expect.objectContaining({ kty: 'OKP', crv: 'Ed25519', kid: 'test-mesh-key', alg: 'EdDSA', use: 'sig' })]);
    expect(archive.keys[0]).not.toHaveProperty('d');
    expect(archive.keys[0]).not.toHaveProperty('retired_at');
  });
  it('answers unknown routes with a JSON 404', async () => {
    const res = await exports.default.fetch('https://mesh.test/nope');
    expect(res.status).toBe(404);
    expect(await res.json()).toMatchObject({ error: { code: 'not_found' } });
  });
});
