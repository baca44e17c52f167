/**
 * Signed location probes from the edge (workers/directory/probes.ts). The
 * backend is stubbed by the global `fetch` (vi.spyOn): it answers
 * `POST /v2/mesh/probe` as gpu-backend/src/mesh/probe.ts does, signing
 * `mesh-probe:<backendId>:<nonce>` with a provider key, or lies. Only an
 * answer signed by the entry's admitted key for this backend and this nonce
 * counts its round trip; every other answer counts nothing and is logged.
 * Which backends are probed: too few probe round trips known from this PoP
 * (only probes verify a claim; dispatch round trips do not count here), one
 * probe per backend per 10 s, at most 4 per round, one round per 2 s. From
 * the request path nothing waits: the probes run in `ctx.waitUntil` and their
 * round trips reach the backend's directory (`recordRtt`, rtt-report.ts).
 */

import { base64url, type JWK } from 'jose';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { generateEd25519 } from '../../../shared/keys.ts';
import type { BackendEntry } from '../../../workers/directory/backend.ts';
import type { Env } from '../../../workers/env.ts';
import { probeMessage } from '../../../shared/probe.ts';
import { FORGOTTEN_AFTER_MS, Prober } from '../../../workers/directory/probes.ts';
import { RTT_WINDOW_MS } from '../../../workers/directory/round-trips.ts';
import type { RttSample } from '../../../workers/directory/rtt-report.ts';

afterEach(() => vi.restoreAllMocks());

const provider = await generateEd25519('prov-probe-key');
const stranger = await generateEd25519('stranger-key');
const importSigner = (jwk: JWK) => crypto.subtle.importKey('jwk', jwk as JsonWebKey, { name: 'Ed25519' }, false, ['sign']);
const providerSigner = await importSigner(provider.privateJwk);
const strangerSigner = await importSigner(stranger.privateJwk);

function entry(id: string, over: Partial<BackendEntry> = {}): BackendEntry {
  return {
    id,
    provider: 'prov-probe',
    providerKey: provider.publicJwk,
    region: 'ap-southeast',
    url: `http://${id}.backend.test`,
    lat: 1.35,
    lon: 103.82,
    executionProvider: 'cpu',
    ready: true,
    models: [{ name: 'embed', version: '1', warm: true, maxBatchSize: 8, p50Ms: 1 }],
    capacity: { slots: 1, inFlight: 0, queued: 0 },
    lastSeen: Date.now(),
    expiresAt: Date.now() + 60_000,
    ...over,
  };
}

interface Answer {
  /** The text to sign (default the right one for the backend the URL names and the nonce sent). */
  message?: (backendId: string, nonce: string) => string;
  key?: CryptoKey;
  nonce?: (sent: string) => unknown;
  noSignature?: boolean;
  status?: number;
  body?: string;
  delayMs?: number;
  throws?: boolean;
}

/** Stubs the global fetch as a backend answering probes; returns the requests it saw. */
function stubBackend(answer: Answer = {}) {
  const seen: { url: string; method: string; nonce: string }[] = [];
  vi.spyOn(globalThis, 'fetch').mockImplementation(async (input, init) => {
    const url = String(input);
    const { nonce } = JSON.parse(String(init?.body)) as { nonce: string };
    seen.push({ url, method: init?.method ?? 'GET', nonce });
    if (answer.delayMs) await new Promise((r) => setTimeout(r, answer.delayMs));
    if (answer.throws) throw new Error('connection refused');
    if (answer.body !== undefined) return new Response(answer.body, { status: answer.status ?? 200 });
    const backendId = new URL(url).hostname.split('.')[0]!;
    const text = (answer.message ?? probeMessage)(backendId, nonce);
    const signature = base64url.encode(new Uint8Array(await crypto.subtle.sign('Ed25519', answer.key ?? providerSigner, new TextEncoder().encode(text))));
    const body = { nonce: answer.nonce ? answer.nonce(nonce) : nonce, ...(answer.noSignature ? {} : { signature }) };
    return new Response(JSON.stringify(body), { status: answer.status ?? 200, headers: { 'content-type': 'application/json' } });
  });
  return seen;
}

function recorder() {
  const notes: { pop: string; backend: { id: string; region: string }; rttMs: number }[] = [];
  return { notes, note: (pop: string, backend: { id: string; region: string }, rttMs: number) => void notes.push({ pop, backend, rttMs }) };
}

describe('one probe', () => {
  it('counts the round trip of an answer signed by the provider key for this backend and nonce', async () => {
    const seen = stubBackend({ delayMs: 30 });
    const { notes, note } = recorder();
    const result = await new Prober({ note }).probe('SIN', entry('sg-1'));
    expect(result.ok).toBe(true);
    expect(seen).toHaveLength(1);
    expect(seen[0]!.url).toBe('http://sg-1.backend.test/v2/mesh/probe');
    expect(seen[0]!.method).toBe('POST');
    expect(seen[0]!.nonce).toMatch(/^[A-Za-z0-9_-]{16,64}$/);
    expect(notes).toHaveLength(1);
    expect(notes[0]!.pop).toBe('SIN');
    expect(notes[0]!.backend).toEqual({ id: 'sg-1', region: 'ap-southeast' });
    // The fetch's own duration: at least the backend's delay.
    expect(notes[0]!.rttMs).toBeGreaterThanOrEqual(29);
    expect(notes[0]!.rttMs).toBeLessThan(2_000);
  });

  it('sends a fresh nonce every time', async () => {
    const seen = stubBackend();
    const prober = new Prober({ note: () => {} });
    await prober.probe('SIN', entry('sg-1'));
    await prober.probe('SIN', entry('sg-1'));
    expect(seen[0]!.nonce).not.toBe(seen[1]!.nonce);
  });

  const lies: [string, Answer][] = [
    ['signed by a key the provider was not admitted with', { key: strangerSigner }],
    ['signed for another backend id', { message: (_id, nonce) => probeMessage('sg-2', nonce) }],
    ['signed over the nonce alone', { message: (_id, nonce) => nonce }],
    ['for another nonce', { nonce: () => 'A'.repeat(43) }],
    ['with a nonce that is not a string', { nonce: () => 12345 }],
    ['without a signature', { noSignature: true }],
    ['an error status', { status: 500 }],
    ['not JSON', { body: 'pong' }],
    ['over 1 KiB', { body: JSON.stringify({ pad: 'x'.repeat(2048) }) }],
    ['a JSON non-object', { body: '"hello"' }],
    ['no answer at all (the connection fails)', { throws: true }],
  ];
  for (const [what, answer] of lies) {
    it(`counts nothing, and logs it, for an answer ${what}`, async () => {
      stubBackend(answer);
      const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
      const { notes, note } = recorder();
      const result = await new Prober({ note }).probe('SIN', entry('sg-1'));
      expect(result.ok).toBe(false);
      expect(notes).toEqual([]);
      expect(warn).toHaveBeenCalledTimes(1);
      expect(String(warn.mock.calls[0]![0])).toMatch(/^probe sg-1 from SIN: .*counts nothing/);
    });
  }

  it('counts nothing for a backend that answers after the probe timeout', async () => {
    vi.spyOn(globalThis, 'fetch').mockImplementation(
      (_input, init) =>
        new Promise((_resolve, reject) => {
          init?.signal?.addEventListener('abort', () => reject(new Error('The operation was aborted')));
        }),
    );
    vi.spyOn(console, 'warn').mockImplementation(() => {});
    const { notes, note } = recorder();
    const result = await new Prober({ note, timeoutMs: 50 }).probe('SIN', entry('sg-1'));
    expect(result).toMatchObject({ ok: false, reason: expect.stringMatching(/aborted/) });
    expect(notes).toEqual([]);
  });
});

describe('which backends are probed', () => {
  const T = 1_000_000;

  it('only those with fewer than 5 probe round trips known from this PoP (dispatches do not count), unexpired and with an admitted key', () => {
    const prober = new Prober({ perRound: 10 });
    const evidence = (pop: string, samples: number, probeSamples?: number, windowProbeSamples = probeSamples) =>
      ({
        state: 'unverified',
        evidence: { pop, samples, minRttMs: 3, distanceKm: 10, reachKm: 350, ...(probeSamples !== undefined ? { probeSamples, probeMinRttMs: 4, windowProbeSamples } : {}) },
      }) as BackendEntry['location'];
    const backends = [
      entry('fresh'),
      entry('four-probes-here', { location: evidence('SIN', 40, 4) }),
      entry('five-probes-here', { location: evidence('SIN', 5, 5) }),
      // Five probes in the last two windows, none in the directory's current one: the window needs its own.
      entry('five-probes-last-window', { location: evidence('SIN', 9, 5, 1) }),
      entry('dispatches-only-here', { location: evidence('SIN', 90) }),
      entry('nine-probes-elsewhere', { location: evidence('FRA', 9, 9) }),
      entry('expired', { expiresAt: T - 1 }),
      entry('no-key', { providerKey: undefined }),
    ];
    expect(prober.due('SIN', backends, T).map((b) => b.id)).toEqual(['fresh', 'dispatches-only-here', 'nine-probes-elsewhere', 'five-probes-last-window', 'four-probes-here']);
  });

  it('at most 4 per round, one round per 2 s, and each backend at most once per 10 s', () => {
    const prober = new Prober();
    const backends = Array.from({ length: 6 }, (_, i) => entry(`b-${i}`));
    const ids = (now: number) => prober.due('SIN', backends, now).map((b) => b.id);
    expect(ids(T)).toEqual(['b-0', 'b-1', 'b-2', 'b-3']);
    expect(ids(T + 1_999)).toEqual([]);
    expect(ids(T + 2_000)).toEqual(['b-4', 'b-5']);
    expect(ids(T + 4_000)).toEqual([]);
    expect(ids(T + 9_999)).toEqual([]);
    expect(ids(T + 10_000)).toEqual(['b-0', 'b-1', 'b-2', 'b-3']);
    expect(ids(T + 12_000)).toEqual(['b-4', 'b-5']);
  });

  it('stops probing a backend from a PoP once it has counted 5 valid probes from there, not before, and not from other PoPs', async () => {
    stubBackend();
    let now = T;
    const prober = new Prober({ note: () => {}, now: () => now });
    const b = entry('sg-1');
    for (let i = 0; i < 5; i++) {
      expect(prober.due('SIN', [b], now).map((x) => x.id)).toEqual(['sg-1']);
      expect((await prober.probe('SIN', b)).ok).toBe(true);
      now += 10_000;
    }
    expect(prober.known('SIN', b)).toBe(5);
    expect(prober.due('SIN', [b], now)).toEqual([]);
    expect(prober.due('CGK', [b], now + 2_000).map((x) => x.id)).toEqual(['sg-1']);
    // A window after its first probe, the backend is probed from SIN again: the directory's evidence reads two windows only.
    // (Its verdict shows another PoP's evidence, which says nothing of SIN's probes.)
    const shownFromFra = entry('sg-1', {
      location: { state: 'verified', evidence: { pop: 'FRA', samples: 9, minRttMs: 3, probeMinRttMs: 3, probeSamples: 5, windowProbeSamples: 5, distanceKm: 10, reachKm: 350 } },
    });
    expect(prober.due('SIN', [shownFromFra], T + RTT_WINDOW_MS - 1)).toEqual([]);
    expect(prober.due('SIN', [shownFromFra], T + RTT_WINDOW_MS).map((x) => x.id)).toEqual(['sg-1']);
  });

  it('probes again once the directory shows it forgot this isolate\'s probes (a backend that left and came back), not before', async () => {
    stubBackend();
    let now = T;
    const prober = new Prober({ note: () => {}, now: () => now });
    const back = entry('sg-back');
    for (let i = 0; i < 5; i++) {
      expect(prober.due('SIN', [back], now)).toHaveLength(1);
      expect((await prober.probe('SIN', back)).ok).toBe(true);
      now += 10_000;
    }
    const last = now - 10_000;
    const evidence = (pop: string, windowProbeSamples: number) =>
      ({
        state: 'verified',
        evidence: { pop, samples: 9, minRttMs: 3, probeMinRttMs: 3, probeSamples: windowProbeSamples, windowProbeSamples, distanceKm: 10, reachKm: 350, ceilingMs: 27 },
      }) as BackendEntry['location'];
    // Too soon for the round trips to be in the verdict: no evidence yet is no proof of forgetting.
    expect(prober.due('SIN', [back], last + FORGOTTEN_AFTER_MS - 1)).toEqual([]);
    // Long after: the directory holds the five, or it forgot them.
    const later = last + FORGOTTEN_AFTER_MS;
    expect(prober.due('SIN', [entry('sg-back', { location: evidence('SIN', 5) })], later)).toEqual([]);
    // Evidence shown from another PoP says nothing of SIN's probes.
    expect(prober.due('SIN', [entry('sg-back', { location: evidence('FRA', 5) })], later + 2_000)).toEqual([]);
    expect(prober.due('SIN', [entry('sg-back', { location: { state: 'unverified' } })], later + 4_000).map((b) => b.id)).toEqual(['sg-back']);
    expect(prober.due('SIN', [entry('sg-back', { location: evidence('SIN', 2) })], later + 16_000).map((b) => b.id)).toEqual(['sg-back']);
  });

  it('keeps probing a backend whose answers do not verify (they count nothing)', async () => {
    stubBackend({ key: strangerSigner });
    vi.spyOn(console, 'warn').mockImplementation(() => {});
    let now = T;
    const prober = new Prober({ note: () => {}, now: () => now });
    const b = entry('liar');
    for (let i = 0; i < 6; i++) {
      expect(prober.due('SIN', [b], now)).toHaveLength(1);
      await prober.probe('SIN', b);
      now += 10_000;
    }
    expect(prober.known('SIN', b)).toBe(0);
  });
});

describe('from the request path', () => {
  it('returns at once, probes in waitUntil, and the round trips reach the backend region\'s directory', async () => {
    const seen = stubBackend({ delayMs: 20 });
    const recorded: { region: string; samples: RttSample[] }[] = [];
    const env = {
      REGION_DIRECTORY: {
        getByName: (region: string) => ({ recordRtt: async (samples: RttSample[]) => void recorded.push({ region, samples }) }),
      },
    } as unknown as Env;
    const waiting: Promise<unknown>[] = [];
    const ctx = { waitUntil: (p: Promise<unknown>) => void waiting.push(p) };
    // The default sink: rtt-report.ts's noteRtt, flushed to the directories after the probes.
    const prober = new Prober();
    const picked = prober.schedule(env, ctx, 'SIN', [entry('sg-1'), entry('sg-2')]);
    expect(picked.map((b) => b.id)).toEqual(['sg-1', 'sg-2']);
    expect(waiting).toHaveLength(1);
    expect(recorded).toEqual([]);
    await Promise.all(waiting);
    expect(seen.map((s) => s.url).sort()).toEqual(['http://sg-1.backend.test/v2/mesh/probe', 'http://sg-2.backend.test/v2/mesh/probe']);
    expect(recorded).toHaveLength(1);
    expect(recorded[0]!.region).toBe('ap-southeast');
    const samples = [...recorded[0]!.samples].sort((a, b) => a.backend.localeCompare(b.backend));
    // Counted as probes (the kind that can verify a claim).
    expect(samples.map((s) => [s.backend, s.pop, s.count, s.probeCount])).toEqual([
      ['sg-1', 'SIN', 1, 1],
      ['sg-2', 'SIN', 1, 1],
    ]);
    for (const s of samples) {
      expect(s.minMs).toBeGreaterThanOrEqual(19);
      expect(s.probeMinMs).toBe(s.minMs);
    }
  });

  it('schedules nothing when nothing is due', () => {
    const waiting: Promise<unknown>[] = [];
    const picked = new Prober().schedule({} as Env, { waitUntil: (p) => void waiting.push(p) }, 'SIN', []);
    expect(picked).toEqual([]);
    expect(waiting).toEqual([]);
  });
});
