/** The RegionDirectory's side of proof of location: its round-trip table, the verdict and the heartbeat's PoP on each entry; and the execution provider an entry keeps. */

import { env, runDurableObjectAlarm, runInDurableObject } from 'cloudflare:test';
import { describe, expect, it } from 'vitest';
import { RTT_IDLE_MS, RTT_MAX_POPS, RTT_WINDOW_MS } from '../../../workers/directory/round-trips.ts';
import type { BackendEntry } from '../../../workers/directory/backend.ts';
import { POPS } from '../../../workers/geo/pops.ts';
import { admitProvider, call, heartbeatBody, heartbeatToken, keyFor, nextSeq } from '../helpers.ts';

const REGION = 'ap-southeast';
const directory = () => env.REGION_DIRECTORY.getByName(REGION);
const token = () => ({ seq: nextSeq(), expiresAt: Date.now() + 60_000 });

async function register(id: string, ttlMs = 60_000) {
  const p = await admitProvider(`prov-${id}`);
  const result = await directory().heartbeat(p.id, {}, heartbeatBody(id, REGION), token(), ttlMs);
  expect(result).toMatchObject({ ok: true });
  return p;
}

const entry = async (id: string) => (await directory().backends()).find((b) => b.id === id) as BackendEntry;
const rows = (id: string) =>
  runInDurableObject(directory(), (_o, state: DurableObjectState) =>
    state.storage.sql.exec('SELECT pop, min_rtt, samples, probe_min_rtt, probe_samples FROM rtt WHERE backend_id = ? ORDER BY pop', id).toArray(),
  );

describe('RegionDirectory round trips', () => {
  it('merges reports: the lower minimum, the summed counts, probes apart', async () => {
    await register('loc-merge');
    await directory().recordRtt([{ backend: 'loc-merge', pop: 'SIN', minMs: 4, count: 2, probeMinMs: 5, probeCount: 1 }]);
    await directory().recordRtt([
      { backend: 'loc-merge', pop: 'sin', minMs: 3, count: 3 },
      { backend: 'loc-merge', pop: 'KUL', minMs: 9, count: 1, probeMinMs: 9, probeCount: 1 },
    ]);
    await directory().recordRtt([{ backend: 'loc-merge', pop: 'SIN', minMs: 6, count: 2, probeMinMs: 6, probeCount: 2 }]);
    expect(await rows('loc-merge')).toEqual([
      { pop: 'KUL', min_rtt: 9, samples: 1, probe_min_rtt: 9, probe_samples: 1 },
      { pop: 'SIN', min_rtt: 3, samples: 7, probe_min_rtt: 5, probe_samples: 3 },
    ]);
  });

  it('ignores samples for unknown backends, unknown PoPs and malformed ones', async () => {
    await register('loc-junk');
    await directory().recordRtt([
      { backend: 'not-here', pop: 'SIN', minMs: 1, count: 9 },
      { backend: 'loc-junk', pop: 'XXX', minMs: 1, count: 9 },
      { backend: 'loc-junk', pop: 'SIN', minMs: -1, count: 9 },
      { backend: 'loc-junk', pop: 'SIN', minMs: 1, count: 0 },
      { backend: 'loc-junk', pop: 'SIN', minMs: 1, count: 1.5 },
      null as never,
      { backend: 'loc-junk', pop: 'constructor', minMs: 1, count: 1 },
    ]);
    await directory().recordRtt('nope' as never);
    expect(await rows('loc-junk')).toEqual([]);
    // A probe part that cannot be (a lower minimum than all samples', more probes than samples) is dropped; the rest counts.
    await directory().recordRtt([{ backend: 'loc-junk', pop: 'SIN', minMs: 5, count: 2, probeMinMs: 4, probeCount: 1 }]);
    await directory().recordRtt([{ backend: 'loc-junk', pop: 'KUL', minMs: 5, count: 2, probeMinMs: 6, probeCount: 3 }]);
    expect(await rows('loc-junk')).toEqual([
      { pop: 'KUL', min_rtt: 5, samples: 2, probe_min_rtt: null, probe_samples: 0 },
      { pop: 'SIN', min_rtt: 5, samples: 2, probe_min_rtt: null, probe_samples: 0 },
    ]);
  });

  it('keeps at most RTT_MAX_POPS PoPs per backend, evicting the one with the fewest samples', async () => {
    await register('loc-bound');
    const codes = Object.keys(POPS).slice(0, RTT_MAX_POPS + 1);
    // Every PoP has 10 samples but the fifth, which has 2.
    await directory().recordRtt(codes.slice(0, RTT_MAX_POPS).map((pop, i) => ({ backend: 'loc-bound', pop, minMs: 200, count: i === 4 ? 2 : 10 })));
    expect(await rows('loc-bound')).toHaveLength(RTT_MAX_POPS);
    await directory().recordRtt([{ backend: 'loc-bound', pop: codes[RTT_MAX_POPS]!, minMs: 200, count: 1 }]);
    const pops = (await rows('loc-bound')).map((r) => r.pop);
    expect(pops).toHaveLength(RTT_MAX_POPS);
    expect(pops).toContain(codes[RTT_MAX_POPS]);
    expect(pops).not.toContain(codes[4]);
  });

  it('drops round trips with the backend, and after a day idle', async () => {
    await register('loc-gone');
    await directory().recordRtt([{ backend: 'loc-gone', pop: 'SIN', minMs: 2, count: 5, probeMinMs: 2, probeCount: 5 }]);
    expect(await directory().remove('loc-gone')).toBe(true);
    expect(await rows('loc-gone')).toEqual([]);

    // A backend whose row expired comes back with no evidence.
    const p = await register('loc-expired', 30);
    await directory().recordRtt([{ backend: 'loc-expired', pop: 'SIN', minMs: 2, count: 5, probeMinMs: 2, probeCount: 5 }]);
    await new Promise((r) => setTimeout(r, 50));
    expect(await directory().heartbeat(p.id, {}, heartbeatBody('loc-expired', REGION), token(), 60_000)).toMatchObject({ ok: true });
    expect(await rows('loc-expired')).toEqual([]);
    expect((await entry('loc-expired')).location).toEqual({ state: 'unverified' });

    // Idle for a day: the alarm (which runs while the region has backends) deletes it, and the verdict follows.
    await register('loc-idle');
    await directory().recordRtt([
      { backend: 'loc-idle', pop: 'SIN', minMs: 2, count: 5, probeMinMs: 2, probeCount: 5 },
      { backend: 'loc-idle', pop: 'KUL', minMs: 8, count: 5, probeMinMs: 8, probeCount: 5 },
    ]);
    expect((await entry('loc-idle')).location).toMatchObject({ state: 'verified', evidence: { pop: 'SIN' } });
    await runInDurableObject(directory(), (_o, state: DurableObjectState) =>
      state.storage.sql.exec("UPDATE rtt SET updated_at = ? WHERE backend_id = 'loc-idle' AND pop = 'SIN'", Date.now() - RTT_IDLE_MS - 1),
    );
    await runDurableObjectAlarm(directory());
    expect((await rows('loc-idle')).map((r) => r.pop)).toEqual(['KUL']);
    expect((await entry('loc-idle')).location).toMatchObject({ state: 'verified', evidence: { pop: 'KUL' } });
  });
});

describe('the location verdict on directory entries', () => {
  it('is judged afresh when the claim or the round trips change', async () => {
    const p = await register('loc-moves');
    await directory().recordRtt([{ backend: 'loc-moves', pop: 'SIN', minMs: 2, count: 5, probeMinMs: 2, probeCount: 5 }]);
    expect((await entry('loc-moves')).location!.state).toBe('verified');
    // The same backend now claims Jakarta (within its region's reach): SIN sees it 2 ms away, so it is within 250 km of SIN, not 900.
    const jakarta = { lat: -6.21, lon: 106.85 };
    expect(await directory().heartbeat(p.id, {}, heartbeatBody('loc-moves', REGION, jakarta), token(), 60_000)).toMatchObject({ ok: true });
    expect((await entry('loc-moves')).location).toMatchObject({ state: 'refuted', evidence: { pop: 'SIN', reachKm: 250, failed: 'reach' } });
    // Back at its place, verified again; then Frankfurt reaches it in 3 ms.
    expect(await directory().heartbeat(p.id, {}, heartbeatBody('loc-moves', REGION), token(), 60_000)).toMatchObject({ ok: true });
    expect((await entry('loc-moves')).location!.state).toBe('verified');
    await directory().recordRtt([{ backend: 'loc-moves', pop: 'FRA', minMs: 3, count: 5 }]);
    expect((await entry('loc-moves')).location).toMatchObject({ state: 'refuted', evidence: { pop: 'FRA', failed: 'reach' } });
  });

  it('reads the last two windows only: a backend verified once, then measured far from its claim, is refuted once its near minima age out', async () => {
    await register('loc-drifts');
    /** Moves the backend's windows `ms` into the past, as if that much time had gone by. */
    const age = (ms: number) =>
      runInDurableObject(directory(), (_o, state: DurableObjectState) =>
        state.storage.sql.exec("UPDATE rtt SET window_start = window_start - ?, updated_at = updated_at - ? WHERE backend_id = 'loc-drifts'", ms, ms),
      );
    const far = { backend: 'loc-drifts', pop: 'SIN', minMs: 160, count: 5, probeMinMs: 160, probeCount: 5 };
    await directory().recordRtt([{ backend: 'loc-drifts', pop: 'SIN', minMs: 2, count: 5, probeMinMs: 2, probeCount: 5 }]);
    expect((await entry('loc-drifts')).location).toMatchObject({ state: 'verified', evidence: { minRttMs: 2, probeSamples: 5 } });
    // A window on, round trips of 160 ms from SIN: the window before still holds 2 ms.
    await age(RTT_WINDOW_MS);
    await directory().recordRtt([far]);
    expect((await entry('loc-drifts')).location).toMatchObject({ state: 'verified', evidence: { minRttMs: 2, samples: 10, probeSamples: 10 } });
    // Another window on: only 160 ms is left, above the ceiling for a backend in Singapore.
    await age(RTT_WINDOW_MS);
    await directory().recordRtt([far]);
    expect((await entry('loc-drifts')).location).toMatchObject({ state: 'refuted', evidence: { minRttMs: 160, samples: 10, failed: 'ceiling' } });
    // Unmeasured for two windows: no evidence is left (the alarm clears the verdicts cached before the rows were aged by hand).
    await age(2 * RTT_WINDOW_MS);
    await runDurableObjectAlarm(directory());
    expect((await entry('loc-drifts')).location).toEqual({ state: 'unverified' });
    // Two windows on since the last report, the next one keeps nothing from before.
    await directory().recordRtt([{ backend: 'loc-drifts', pop: 'SIN', minMs: 3, count: 1 }]);
    expect((await rows('loc-drifts'))[0]).toMatchObject({ min_rtt: 3, samples: 1, probe_min_rtt: null, probe_samples: 0 });
    expect((await entry('loc-drifts')).location).toMatchObject({ state: 'unverified', evidence: { minRttMs: 3, samples: 1 } });
  });

  it('is unverified with no round trips, verified by probes near the claim, refuted by a far PoP', async () => {
    await register('loc-honest');
    await register('loc-liar');
    expect((await entry('loc-honest')).location).toEqual({ state: 'unverified' });
    await directory().recordRtt([
      { backend: 'loc-honest', pop: 'SIN', minMs: 2, count: 6, probeMinMs: 2, probeCount: 5 },
      // Claims Singapore, but Frankfurt reaches it in 3 ms.
      { backend: 'loc-liar', pop: 'FRA', minMs: 3, count: 5 },
      { backend: 'loc-liar', pop: 'SIN', minMs: 160, count: 5, probeMinMs: 160, probeCount: 5 },
    ]);
    expect((await entry('loc-honest')).location).toMatchObject({ state: 'verified', evidence: { pop: 'SIN', minRttMs: 2, samples: 6, probeSamples: 5 } });
    expect((await entry('loc-liar')).location).toMatchObject({ state: 'refuted', evidence: { pop: 'FRA', minRttMs: 3, reachKm: 350, failed: 'reach' } });
  });

  it('records the PoP that carried the heartbeat, and /admin/backends shows it with the verdict', async () => {
    const p = await admitProvider('prov-colo');
    const body = JSON.stringify(heartbeatBody('loc-colo', REGION));
    const res = await call('/v1/providers/heartbeat', { method: 'POST', token: await heartbeatToken(p, 'loc-colo', body), body, colo: 'sin' });
    expect(res.status).toBe(200);
    expect((await entry('loc-colo')).heartbeatColo).toBe('SIN');
    await directory().recordRtt([{ backend: 'loc-colo', pop: 'SIN', minMs: 150, count: 5 }]);

    const admin = (await call('/admin/backends', { token: await keyFor('admin') }).then((r) => r.json())) as { backends: Record<string, unknown>[] };
    const shown = admin.backends.find((b) => b.id === 'loc-colo')!;
    expect(shown).toMatchObject({ heartbeatColo: 'SIN', location: { state: 'refuted', evidence: { pop: 'SIN', minRttMs: 150, failed: 'ceiling' } } });
    expect(shown).not.toHaveProperty('providerKey');

    // The next heartbeat names no PoP (none in this request): the witness is the last heartbeat's.
    const again = JSON.stringify(heartbeatBody('loc-colo', REGION));
    expect((await call('/v1/providers/heartbeat', { method: 'POST', token: await heartbeatToken(p, 'loc-colo', again), body: again })).status).toBe(200);
    expect((await entry('loc-colo')).heartbeatColo).toBeUndefined();
  });
});

describe('RegionDirectory entries', () => {
  it('keeps the execution provider each heartbeat reports, webgpu as well as cuda and cpu', async () => {
    for (const provider of ['webgpu', 'cuda', 'cpu'] as const) {
      const id = `ep-${provider}`;
      const p = await admitProvider(`prov-${id}`);
      const result = await directory().heartbeat(p.id, {}, heartbeatBody(id, REGION, { executionProvider: provider }), token(), 60_000);
      expect(result).toMatchObject({ ok: true });
      expect((await entry(id)).executionProvider).toBe(provider);
    }
  });
});
