/**
 * The operator's key-account routes (docs/api.md section 2.14): issuing a
 * consumer key with limits, a budget and CORS origins, reading and changing
 * them with `GET` and `PATCH /admin/keys/{jti}`, and every 4xx of the bodies.
 */

import { env } from 'cloudflare:test';
import { describe, expect, it } from 'vitest';
import { decodePayload, type KeyClaims } from '../../../shared/jwt.ts';
import { call, keyFor } from '../helpers.ts';

async function admin(path: string, method: string, body?: unknown, token?: string) {
  return call(path, { method, token: token ?? (await keyFor('admin')), ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }) });
}

async function issue(body: Record<string, unknown>) {
  const res = await admin('/admin/keys', 'POST', body);
  expect(res.status, await res.clone().text()).toBe(201);
  return (await res.json()) as { key: string; jti: string; exp: number; limits: unknown; budget: unknown; cors: unknown };
}

async function code(res: Response) {
  return ((await res.json()) as { error: { code: string; message: string } }).error;
}

describe('POST /admin/keys with settings', () => {
  it('issues a key that claims its account, and opens the account with the settings', async () => {
    const settings = {
      limits: { requestsPerMinute: 60, concurrent: 4, tokensPerMinute: 10_000 },
      budget: { microUsd: 5_000_000, period: 'month' },
      cors: { origins: ['https://App.Example.com', 'http://localhost:5173', '*'] },
    };
    const issued = await issue({ sub: 'acct-full', ...settings });
    expect(issued).toMatchObject({ limits: settings.limits, budget: settings.budget, cors: { origins: ['https://app.example.com', 'http://localhost:5173', '*'] } });
    expect(decodePayload<KeyClaims>(issued.key)).toMatchObject({ acct: true, role: 'consumer' });

    const res = await admin(`/admin/keys/${issued.jti}`, 'GET');
    expect(res.status).toBe(200);
    const view = (await res.json()) as Record<string, unknown>;
    expect(view).toMatchObject({
      jti: issued.jti,
      sub: 'acct-full',
      exp: issued.exp,
      limits: settings.limits,
      budget: settings.budget,
      acctClaim: true,
      version: 1,
      usage: { window: { requests: 0, tokens: 0 }, concurrent: 0, budget: { spentMicroUsd: 0, heldMicroUsd: 0, remainingMicroUsd: 5_000_000 } },
    });
    const periodStart = new Date((view.usage as { budget: { periodStart: string } }).budget.periodStart);
    expect(periodStart.getUTCDate()).toBe(1);
    expect(periodStart.getUTCHours()).toBe(0);
  });

  it('gives every consumer key an account, without the claim when it has no settings', async () => {
    const issued = await issue({ sub: 'acct-plain' });
    expect(issued).toMatchObject({ limits: null, budget: null, cors: null });
    expect(decodePayload<KeyClaims>(issued.key)!.acct).toBeUndefined();
    expect(await (await admin(`/admin/keys/${issued.jti}`, 'GET')).json()).toMatchObject({ acctClaim: false, limits: null, version: 1 });
  });

  it.each([
    [{ limits: { requestsPerMinute: 0 } }, 'limits.requestsPerMinute'],
    [{ limits: { concurrent: 1.5 } }, 'limits.concurrent'],
    [{ limits: { tokensPerMinute: '100' } }, 'limits.tokensPerMinute'],
    [{ limits: { requestsPerMinute: 10_000_001 } }, 'limits.requestsPerMinute'],
    [{ limits: { perHour: 3 } }, 'Unknown field "perHour"'],
    [{ limits: [1] }, '"limits" must be an object'],
    [{ budget: { microUsd: -1, period: 'day' } }, 'budget.microUsd'],
    [{ budget: { microUsd: 10, period: 'week' } }, 'budget.period'],
    [{ budget: { microUsd: 10 } }, 'budget.period'],
    [{ budget: { microUsd: 10, period: 'day', rollover: true } }, 'Unknown field "rollover"'],
    [{ cors: { origins: [] } }, 'cors.origins'],
    [{ cors: { origins: ['https://app.example.com/path'] } }, 'cors.origins'],
    [{ cors: { origins: ['ftp://app.example.com'] } }, 'cors.origins'],
    [{ cors: { origins: ['null'] } }, 'cors.origins'],
    [{ cors: { origins: [42] } }, 'cors.origins'],
    [{ cors: { origins: Array.from({ length: 33 }, (_, i) => `https://a${i}.example`) } }, 'cors.origins'],
    [{ cors: { origins: [`https://${'a'.repeat(260)}.example`] } }, 'cors.origins'],
    [{ cors: '*' }, '"cors" must be'],
  ])('refuses %j with 400 invalid_request naming the field', async (settings, named) => {
    const res = await admin('/admin/keys', 'POST', { sub: 'acct-bad', ...settings });
    expect(res.status).toBe(400);
    const error = await code(res);
    expect(error.code).toBe('invalid_request');
    expect(error.message).toContain(named);
  });

  it('refuses a lifetime past ten years (the account and revocations are kept that long)', async () => {
    for (const ttlSeconds of [1e300, 315_360_001, 2 ** 53]) expect((await admin('/admin/keys', 'POST', { sub: 'acct-ttl', ttlSeconds })).status).toBe(400);
    expect((await admin('/admin/keys', 'POST', { sub: 'acct-ttl', ttlSeconds: 315_360_000 })).status).toBe(201);
  });

  it('refuses settings on billing and admin keys', async () => {
    const res = await admin('/admin/keys', 'POST', { sub: 'acct-billing', role: 'billing', limits: { requestsPerMinute: 5 } });
    expect(res.status).toBe(400);
    expect((await code(res)).message).toContain('consumer keys only');
  });
});

describe('GET and PATCH /admin/keys/{jti}', () => {
  it('changes settings field by field, null removing one, and raises the version', async () => {
    const { jti } = await issue({ sub: 'acct-patch', limits: { requestsPerMinute: 10 }, cors: { origins: ['https://a.example'] } });
    let res = await admin(`/admin/keys/${jti}`, 'PATCH', { budget: { microUsd: 1000, period: 'day' } });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ limits: { requestsPerMinute: 10 }, budget: { microUsd: 1000, period: 'day' }, cors: { origins: ['https://a.example'] }, version: 2 });
    res = await admin(`/admin/keys/${jti}`, 'PATCH', { limits: { concurrent: 2 }, cors: null });
    expect(await res.json()).toMatchObject({ limits: { concurrent: 2 }, budget: { microUsd: 1000 }, cors: null, version: 3 });
    expect(await (await admin(`/admin/keys/${jti}`, 'GET')).json()).toMatchObject({ limits: { concurrent: 2 }, cors: null, version: 3 });
  });

  it('lists a key without the claim in the registry once it has settings, and unlists it when they are gone', async () => {
    const { jti, exp } = await issue({ sub: 'acct-late' });
    const registry = env.OPERATOR_REGISTRY.getByName('global');
    expect((await registry.edgeState()).accounts).not.toContain(jti);
    expect((await admin(`/admin/keys/${jti}`, 'PATCH', { limits: { requestsPerMinute: 1 } })).status).toBe(200);
    expect((await registry.edgeState()).accounts).toContain(jti);
    expect(await (await admin(`/admin/keys/${jti}`, 'GET')).json()).toMatchObject({ acctClaim: false, exp });
    expect((await admin(`/admin/keys/${jti}`, 'PATCH', { limits: null })).status).toBe(200);
    expect((await registry.edgeState()).accounts).not.toContain(jti);
  });

  it('answers 404 for a key without an account, 400 for a bad id or body, 413 for a huge body, 403 for a non-admin', async () => {
    const { jti } = await issue({ sub: 'acct-4xx' });
    const missing = await admin('/admin/keys/no-such-key', 'GET');
    expect(missing.status).toBe(404);
    expect((await code(missing)).code).toBe('not_found');
    expect((await admin('/admin/keys/no-such-key', 'PATCH', { limits: null })).status).toBe(404);
    expect((await admin(`/admin/keys/${'x'.repeat(129)}`, 'GET')).status).toBe(400);
    expect((await admin('/admin/keys/bad%20id', 'GET')).status).toBe(400);
    for (const body of [{}, [], 'null', { ttlSeconds: 5 }, { limits: { requestsPerMinute: -5 } }, { budget: null, sub: 'x' }]) {
      const res = await admin(`/admin/keys/${jti}`, 'PATCH', body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect((await code(res)).code).toBe('invalid_request');
    }
    const notJson = await admin(`/admin/keys/${jti}`, 'PATCH', '{"limits":');
    expect(notJson.status).toBe(400);
    expect((await code(notJson)).code).toBe('invalid_json');
    const huge = await admin(`/admin/keys/${jti}`, 'PATCH', JSON.stringify({ limits: null, pad: 'x'.repeat(70_000) }));
    expect(huge.status).toBe(413);
    expect((await admin(`/admin/keys/${jti}`, 'GET', undefined, await keyFor('billing'))).status).toBe(403);
    expect((await admin(`/admin/keys/${jti}`, 'PATCH', { limits: null }, await keyFor('consumer'))).status).toBe(403);
    // Nothing changed.
    expect(await (await admin(`/admin/keys/${jti}`, 'GET')).json()).toMatchObject({ version: 1, limits: null });
  });
});
