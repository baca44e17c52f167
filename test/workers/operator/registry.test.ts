/**
 * The OperatorRegistry called directly: provider records, mesh-wide
 * backend-id ownership, and standing under verification (strikes,
 * quarantine, sampling rate, the disputes index and events).
 */

import { env, runInDurableObject } from 'cloudflare:test';
import { describe, expect, it } from 'vitest';
import { generateEd25519 } from '../../../shared/keys.ts';
import type { DisputeSummary, OperatorRegistry, ProviderEvent } from '../../../workers/operator/OperatorRegistry.ts';
import { NEW_PROVIDER_MS } from '../../../workers/verification/sampling.ts';

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

/** A dispute id at `ms` (13 digits) with an 8-hex suffix. */
const did = (ms: number, hex = '0000abcd') => `d-${String(ms).padStart(13, '0')}-${hex}`;

function summary(id: string, over: Partial<DisputeSummary> = {}): DisputeSummary {
  return {
    id,
    kind: 'mismatch',
    verdict: 'proven',
    accused: null,
    providers: [],
    model: 'embed',
    withheld: [],
    createdAt: 1_700_000_000_000,
    ...over,
  };
}

/** The events about `provider` after `after`. */
async function eventsOf(provider: string, after = 0): Promise<ProviderEvent[]> {
  return (await registry().events(after, 1000)).filter((e) => e.provider === provider);
}

describe('OperatorRegistry standing under verification', () => {
  it('strikes a proven accused once per dispute and quarantines it on reaching the threshold', async () => {
    const r = registry();
    for (const id of ['sv-a', 'sv-b', 'sv-c']) await r.put(id, await jwk(id));
    const proven = (n: number) =>
      summary(did(2_000_000_000_000 + n), { accused: 'sv-a', providers: ['sv-a', 'sv-b', 'sv-c'], withheld: [`rc-${n}`] });

    const first = await r.recordDispute(proven(1), 2);
    expect(first).toMatchObject({ recorded: true, newlyQuarantined: false, standing: { id: 'sv-a', strikes: 1, quarantinedAt: null, sampleRate: null } });
    expect(first.standing!.lastProvenAt).toEqual(expect.any(Number));

    // The same dispute again (a retried call) records nothing.
    expect(await r.recordDispute(proven(1), 2)).toEqual({ recorded: false, standing: first.standing, newlyQuarantined: false });

    const second = await r.recordDispute(proven(2), 2);
    expect(second).toMatchObject({ recorded: true, newlyQuarantined: true, standing: { strikes: 2, quarantinedAt: expect.any(Number) } });
    const third = await r.recordDispute(proven(3), 2);
    expect(third).toMatchObject({ recorded: true, newlyQuarantined: false, standing: { strikes: 3, quarantinedAt: second.standing!.quarantinedAt } });

    // The others in the dispute are not struck.
    const standings = await r.standings();
    expect(standings.find((s) => s.id === 'sv-b')).toMatchObject({ strikes: 0, lastProvenAt: null, quarantinedAt: null });
    expect(standings.map((s) => s.id)).toEqual([...standings.map((s) => s.id)].sort());

    const events = await eventsOf('sv-a');
    expect(events.map((e) => [e.kind, e.dispute])).toEqual([
      ['proven', did(2_000_000_000_001)],
      ['proven', did(2_000_000_000_002)],
      ['quarantined', did(2_000_000_000_002)],
      ['proven', did(2_000_000_000_003)],
    ]);
    expect(events.map((e) => e.seq)).toEqual([...events.map((e) => e.seq)].sort((a, b) => a - b));
    expect(await r.getDispute(did(2_000_000_000_001))).toEqual(proven(1));
    expect(await r.getDispute(did(2_000_000_000_999))).toBeNull();
  });

  it('strikes no one for an unresolved dispute, an accused that is not admitted, or a bad signature', async () => {
    const r = registry();
    await r.put('sv-u', await jwk('sv-u'));
    const unresolved = summary(did(2_100_000_000_001), { verdict: 'unresolved', providers: ['sv-u', 'sv-x'] });
    expect(await r.recordDispute(unresolved, 1)).toEqual({ recorded: true, standing: null, newlyQuarantined: false });
    const stranger = summary(did(2_100_000_000_002), { accused: 'sv-not-admitted', providers: ['sv-not-admitted', 'sv-u'] });
    expect(await r.recordDispute(stranger, 1)).toEqual({ recorded: true, standing: null, newlyQuarantined: false });
    // A bad attestation signature is proven, but costs only its receipt: no strike (docs/api.md section 3.5).
    const signature = summary(did(2_100_000_000_003), { kind: 'signature', accused: 'sv-u', providers: ['sv-u'], withheld: ['rc-sig'] });
    expect(await r.recordDispute(signature, 1)).toMatchObject({ recorded: true, standing: { id: 'sv-u', strikes: 0 }, newlyQuarantined: false });
    expect((await r.standings()).find((s) => s.id === 'sv-u')).toMatchObject({ strikes: 0, quarantinedAt: null });
    expect(await eventsOf('sv-u')).toEqual([]);
    expect(await r.getDispute(unresolved.id)).toEqual(unresolved);
  });

  it('clears a quarantine: strikes back to 0, a cleared event, and the count starts again', async () => {
    const r = registry();
    await r.put('sv-q', await jwk('sv-q'));
    const d = (n: number) => summary(did(2_200_000_000_000 + n), { accused: 'sv-q', providers: ['sv-q', 'sv-q2', 'sv-q3'], withheld: [`q-${n}`] });
    expect((await r.recordDispute(d(1), 1)).newlyQuarantined).toBe(true);
    const cleared = await r.clearQuarantine('sv-q');
    expect(cleared).toMatchObject({ id: 'sv-q', strikes: 0, quarantinedAt: null, lastProvenAt: expect.any(Number) });
    const events = await eventsOf('sv-q');
    expect(events.map((e) => [e.kind, e.dispute])).toEqual([
      ['proven', d(1).id],
      ['quarantined', d(1).id],
      ['cleared', null],
    ]);
    expect(await r.clearQuarantine('sv-never-admitted')).toBeNull();
    // Quarantined again by the next proven fraud at threshold 1.
    expect(await r.recordDispute(d(2), 1)).toMatchObject({ recorded: true, newlyQuarantined: true, standing: { strikes: 1 } });
  });

  it('sets and unsets a provider sampling rate, refusing anything outside [0, 1]', async () => {
    const r = registry();
    await r.put('sv-rate', await jwk('sv-rate'));
    expect(await r.setSampleRate('sv-rate', 0.25)).toMatchObject({ id: 'sv-rate', sampleRate: 0.25 });
    expect((await r.standings()).find((s) => s.id === 'sv-rate')?.sampleRate).toBe(0.25);
    expect(await r.setSampleRate('sv-rate', 1)).toMatchObject({ sampleRate: 1 });
    expect(await r.setSampleRate('sv-rate', null)).toMatchObject({ sampleRate: null });
    await runInDurableObject(r, (o: OperatorRegistry) => {
      for (const bad of [1.5, -0.1, Number.NaN, Infinity, '0.5' as unknown as number]) {
        expect(() => o.setSampleRate('sv-rate', bad)).toThrow(/sample rate/);
      }
    });
    expect(await r.setSampleRate('sv-no-such', 0.5)).toBeNull();
  });

  it('hands an isolate the revoked keys and every standing in one call', async () => {
    const r = registry();
    await r.put('sv-edge', await jwk('sv-edge'));
    await r.setSampleRate('sv-edge', 0.5);
    await r.revoke('edge-key-1', Date.now() + 60_000);
    const state = await r.edgeState();
    expect(state.revoked).toContain('edge-key-1');
    expect(state.standings.find((s) => s.id === 'sv-edge')).toMatchObject({ strikes: 0, quarantinedAt: null, sampleRate: 0.5, addedAt: expect.any(Number) });
    // Only notable standings travel: an established provider (admitted over NEW_PROVIDER_MS ago) with a clean record does not.
    await r.put('sv-old', await jwk('sv-old'));
    await runInDurableObject(r, (_o: OperatorRegistry, state: DurableObjectState) => {
      state.storage.sql.exec('UPDATE providers SET added_at = ? WHERE id = ?', Date.now() - NEW_PROVIDER_MS - 1000, 'sv-old');
    });
    const later = await r.edgeState();
    expect(later.standings.map((s) => s.id)).not.toContain('sv-old');
    expect((await r.standings()).map((s) => s.id)).toContain('sv-old');
    expect(later.standings.map((s) => s.id)).toContain('sv-edge');
    // A fraud proven over a day ago, its strikes cleared: still carried while the answer cache may hold an answer from before it.
    await runInDurableObject(r, (_o: OperatorRegistry, state: DurableObjectState) => {
      state.storage.sql.exec('UPDATE providers SET last_proven_at = ?, strikes = 0 WHERE id = ?', Date.now() - 2 * 24 * 3600_000, 'sv-old');
    });
    expect((await r.edgeState()).standings.find((s) => s.id === 'sv-old')).toMatchObject({ strikes: 0, lastProvenAt: expect.any(Number) });
    await runInDurableObject(r, (_o: OperatorRegistry, state: DurableObjectState) => {
      state.storage.sql.exec('UPDATE providers SET last_proven_at = ? WHERE id = ?', Date.now() - 31 * 24 * 3600_000, 'sv-old');
    });
    expect((await r.edgeState()).standings.map((s) => s.id)).not.toContain('sv-old');
  });

  it('lists disputes by id, paged by `after`, filtered by a provider involved', async () => {
    const r = registry();
    const base = 2_300_000_000_000;
    const made = [
      summary(did(base + 3, 'cccccccc'), { accused: 'ls-a', providers: ['ls-a', 'ls-b', 'ls-c'] }),
      summary(did(base + 1, 'aaaaaaaa'), { verdict: 'unresolved', providers: ['ls-a', 'ls-b'] }),
      summary(did(base + 2, 'bbbbbbbb'), { kind: 'signature', accused: 'ls-d', providers: ['ls-d'] }),
    ];
    for (const d of made) await r.recordDispute(d, 3);
    const ours = (list: DisputeSummary[]) => list.filter((d) => d.id.startsWith(`d-${base / 1e3}`.slice(0, 11)) && d.id < did(base + 10));
    const after = did(base, '00000000');
    const all = ours(await r.listDisputes(after, 1000));
    expect(all.map((d) => d.id)).toEqual([did(base + 1, 'aaaaaaaa'), did(base + 2, 'bbbbbbbb'), did(base + 3, 'cccccccc')]);
    expect(all[2]).toEqual(made[0]);
    expect((await r.listDisputes(after, 2)).map((d) => d.id)).toEqual(all.slice(0, 2).map((d) => d.id));
    expect((await r.listDisputes(all[1]!.id, 1)).map((d) => d.id)).toEqual([all[2]!.id]);
    expect((await r.listDisputes(after, 1000, 'ls-a')).map((d) => d.id)).toEqual([all[0]!.id, all[2]!.id]);
    expect((await r.listDisputes(after, 1000, 'ls-d')).map((d) => d.id)).toEqual([all[1]!.id]);
    expect((await r.listDisputes(after, 1000, 'ls-c')).map((d) => d.id)).toEqual([all[2]!.id]);
    expect(await r.listDisputes(after, 1000, 'ls-none')).toEqual([]);
    expect(await r.listDisputes(after, 0)).toEqual([]);
    // A huge limit is capped, not refused.
    expect((await r.listDisputes('', 1e9)).length).toBeLessThanOrEqual(1000);
  });

  it('pages events by seq', async () => {
    const r = registry();
    await r.put('ev-a', await jwk('ev-a'));
    await r.recordDispute(summary(did(2_400_000_000_001), { accused: 'ev-a', providers: ['ev-a'] }), 1);
    const all = await r.events(0, 1000);
    expect(all.length).toBeGreaterThanOrEqual(2);
    const [first, second] = all;
    expect(await r.events(0, 1)).toEqual([first]);
    expect(await r.events(first!.seq, 1)).toEqual([second]);
    expect(await r.events(all.at(-1)!.seq, 10)).toEqual([]);
  });

  it('keeps disputes and events when the provider is removed; a new admission starts clean', async () => {
    const r = registry();
    await r.put('sv-gone', await jwk('sv-gone'));
    const d = summary(did(2_500_000_000_001), { accused: 'sv-gone', providers: ['sv-gone'] });
    await r.recordDispute(d, 1);
    await r.remove('sv-gone');
    expect(await r.getDispute(d.id)).toEqual(d);
    expect((await eventsOf('sv-gone')).map((e) => e.kind)).toEqual(['proven', 'quarantined']);
    expect((await r.listDisputes('', 1000, 'sv-gone')).map((x) => x.id)).toEqual([d.id]);
    await r.put('sv-gone', await jwk('sv-gone-2'));
    expect((await r.standings()).find((s) => s.id === 'sv-gone')).toMatchObject({ strikes: 0, quarantinedAt: null, lastProvenAt: null });
  });

  it('refuses a malformed dispute or threshold with a clear error', async () => {
    const r = registry();
    const ok = summary(did(2_600_000_000_001));
    // Called in the object (a plain throw), not over RPC.
    await runInDurableObject(r, (o: OperatorRegistry) => {
      expect(() => o.recordDispute({ ...ok, id: 'd-123-abc' }, 1)).toThrow(/id must look like/);
      expect(() => o.recordDispute({ ...ok, id: did(2_600_000_000_001, 'ABCDEF01') }, 1)).toThrow(/id must look like/);
      expect(() => o.recordDispute({ ...ok, kind: 'other' as 'mismatch' }, 1)).toThrow(/kind/);
      expect(() => o.recordDispute({ ...ok, verdict: 'maybe' as 'proven' }, 1)).toThrow(/verdict/);
      expect(() => o.recordDispute({ ...ok, providers: Array.from({ length: 9 }, (_, i) => `p${i}`) }, 1)).toThrow(/providers/);
      expect(() => o.recordDispute({ ...ok, withheld: [''] }, 1)).toThrow(/withheld/);
      expect(() => o.recordDispute({ ...ok, accused: 'x'.repeat(257) }, 1)).toThrow(/accused/);
      expect(() => o.recordDispute(ok, 0)).toThrow(/quarantineAfter/);
      expect(() => o.recordDispute(ok, 1.5)).toThrow(/quarantineAfter/);
    });
    expect(await r.getDispute(ok.id)).toBeNull();
    await runInDurableObject(r, (o: OperatorRegistry) => expect(() => o.events(0, Number.NaN)).toThrow(/limit/));
  });
});
