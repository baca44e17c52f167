/** The OperatorRegistry's provider records and mesh-wide backend-id ownership, called directly. */

import { env } from 'cloudflare:test';
import { describe, expect, it } from 'vitest';
import { generateEd25519 } from '../../../shared/keys.ts';

const registry = () => env.OPERATOR_REGISTRY.getByName('global');
const jwk = async (id: string) => (await generateEd25519(id)).publicJwk;

describe('OperatorRegistry.claimBackend', () => {
  it('gives an id to the first admitted provider that claims it, and to no other', async () => {
    const r = registry();
    await r.put('own-a', await jwk('a'));
    await r.put('own-b', await jwk('b'));
    expect(await r.claimBackend('own-a', 'gpu-1', 64)).toEqual({ ok: true });
    expect(await r.claimBackend('own-a', 'gpu-1', 64)).toEqual({ ok: true });
    expect(await r.claimBackend('own-b', 'gpu-1', 64)).toEqual({ ok: false, reason: 'owned' });
    expect(await r.claimBackend('not-admitted', 'gpu-2', 64)).toEqual({ ok: false, reason: 'unknown' });
    expect(await r.ownedBackends('own-a')).toEqual(['gpu-1']);
    expect(await r.ownedBackends('not-admitted')).toEqual([]);
  });

  it('caps the ids one provider owns, counting only new ones', async () => {
    const r = registry();
    await r.put('own-cap', await jwk('cap'));
    expect(await r.claimBackend('own-cap', 'cap-1', 2)).toEqual({ ok: true });
    expect(await r.claimBackend('own-cap', 'cap-2', 2)).toEqual({ ok: true });
    expect(await r.claimBackend('own-cap', 'cap-3', 2)).toEqual({ ok: false, reason: 'too_many' });
    expect(await r.claimBackend('own-cap', 'cap-2', 2)).toEqual({ ok: true });
    expect(await r.ownedBackends('own-cap')).toEqual(['cap-1', 'cap-2']);
  });

  it('keys everything by the exact string: constructor, __proto__ and toString are plain ids', async () => {
    const r = registry();
    for (const id of ['constructor', '__proto__', 'toString']) await r.put(id, await jwk(id));
    expect(await r.claimBackend('constructor', '__proto__', 64)).toEqual({ ok: true });
    expect(await r.claimBackend('__proto__', 'toString', 64)).toEqual({ ok: true });
    expect(await r.claimBackend('toString', 'constructor', 64)).toEqual({ ok: true });
    expect(await r.claimBackend('toString', '__proto__', 64)).toEqual({ ok: false, reason: 'owned' });
    expect(await r.ownedBackends('__proto__')).toEqual(['toString']);
    expect((await r.get('__proto__'))?.id).toBe('__proto__');
    expect(await r.get('hasOwnProperty')).toBeNull();
    expect(await r.remove('__proto__')).toEqual({ backends: ['toString'] });
    expect(await r.get('__proto__')).toBeNull();
    expect(await r.claimBackend('constructor', 'toString', 64)).toEqual({ ok: true });
  });
});

describe('OperatorRegistry.remove', () => {
  it('removes the provider with its ownership records; a new admission is a new one', async () => {
    const r = registry();
    await r.put('own-gone', await jwk('gone'));
    const first = (await r.get('own-gone'))!;
    await r.claimBackend('own-gone', 'gone-x', 64);
    await r.claimBackend('own-gone', 'gone-y', 64);
    // Re-keying keeps the admission (and so the ownership cache in isolates).
    await new Promise((res) => setTimeout(res, 2));
    expect(await r.put('own-gone', await jwk('gone-2'))).toEqual({ created: false });
    expect((await r.get('own-gone'))!.addedAt).toBe(first.addedAt);

    expect(await r.remove('own-gone')).toEqual({ backends: ['gone-x', 'gone-y'] });
    expect(await r.remove('own-gone')).toBeNull();
    expect(await r.get('own-gone')).toBeNull();
    expect(await r.ownedBackends('own-gone')).toEqual([]);
    expect(await r.claimBackend('own-gone', 'gone-x', 64)).toEqual({ ok: false, reason: 'unknown' });

    await new Promise((res) => setTimeout(res, 2));
    expect(await r.put('own-gone', await jwk('gone-3'))).toEqual({ created: true });
    expect((await r.get('own-gone'))!.addedAt).toBeGreaterThan(first.addedAt);
  });
});
