import { describe, expect, it } from 'vitest';
import { REGIONS, regionById } from '../../../shared/regions.ts';
import type { DirectoryStatus } from '../../../workers/directory/RegionDirectory.ts';
import type { TrafficCell } from '../../../workers/directory/traffic-report.ts';
import { backendState, DOWN_AFTER_MS, meshStatus, STATUS_BATCHES, type StatusSources } from '../../../workers/status/collect.ts';
import { bucketOf } from '../../../workers/status/latency-histogram.ts';
import type { BatchStatus } from '../../../workers/status/view.ts';

const NOW = 1_800_000_000_000;
type Entry = DirectoryStatus['backends'][number];

function entry(id: string, region: string, over: Partial<Entry> = {}): Entry {
  const r = regionById(region)!;
  return {
    id,
    provider: 'p1',
    region,
    url: `http://127.0.0.1:1/${id}`,
    lat: r.lat,
    lon: r.lon,
    executionProvider: 'cpu',
    ready: true,
    models: [{ name: 'embed', version: '1', warm: true, maxBatchSize: 8, p50Ms: 5 }],
    capacity: { slots: 4, inFlight: 1, queued: 2 },
    lastSeen: NOW - 1000,
    expiresAt: NOW + 9000,
    location: { state: 'verified' } as Entry['location'],
    ...over,
  };
}

function cell(pop: string, region: string, provider: string, latencies: number[], errors = 0): TrafficCell {
  const hist: Record<number, number> = {};
  for (const ms of latencies) hist[bucketOf(ms)] = (hist[bucketOf(ms)] ?? 0) + 1;
  return { pop, region, provider, requests: latencies.length, errors, hist };
}

function sources(byRegion: Record<string, Partial<DirectoryStatus>>, over: Partial<StatusSources> = {}): StatusSources {
  return {
    now: NOW,
    pop: 'FRA',
    viewer: { role: 'admin' },
    directories: REGIONS.map((region) => {
      const d = byRegion[region.id];
      return { region, status: d ? { backends: [], departed: [], traffic: { since: NOW - 60_000, cells: [] }, ...d } : { backends: [], departed: [], traffic: { since: NOW - 60_000, cells: [] } } };
    }),
    quarantined: new Set(),
    isEjected: () => false,
    batches: [],
    ...over,
  };
}

describe('backend state', () => {
  const src = { now: NOW, quarantined: new Set(['bad']), isEjected: (id: string) => id === 'ej' };
  it('takes the most severe state that applies', () => {
    expect(backendState(entry('a', 'eu-west'), false, src)).toBe('warm');
    expect(backendState(entry('a', 'eu-west', { models: [{ name: 'embed', version: '1', warm: false, maxBatchSize: 8, p50Ms: 5 }] }), false, src)).toBe('cold');
    expect(backendState(entry('a', 'eu-west', { ready: false }), false, src)).toBe('starting');
    expect(backendState(entry('ej', 'eu-west', { ready: false }), false, src)).toBe('ejected');
    expect(backendState(entry('ej', 'eu-west', { provider: 'bad' }), false, src)).toBe('quarantined');
    expect(backendState(entry('ej', 'eu-west', { provider: 'bad' }), true, src)).toBe('down');
  });

  it(`is down once silent for more than ${DOWN_AFTER_MS} ms, before its entry expires`, () => {
    expect(backendState(entry('a', 'eu-west', { lastSeen: NOW - DOWN_AFTER_MS }), false, src)).toBe('warm');
    expect(backendState(entry('a', 'eu-west', { lastSeen: NOW - DOWN_AFTER_MS - 1 }), false, src)).toBe('down');
  });
});

describe('meshStatus', () => {
  it('sums each region over the backends routing can use, and lists every backend with its state', () => {
    const status = meshStatus(
      sources(
        {
          'eu-west': {
            backends: [
              entry('fra-2', 'eu-west', { models: [{ name: 'chat', version: '1', warm: true, maxBatchSize: 1, p50Ms: 90 }] }),
              entry('fra-1', 'eu-west'),
              entry('fra-3', 'eu-west', { lastSeen: NOW - 6000, location: { state: 'refuted' } as Entry['location'] }),
              entry('fra-4', 'eu-west', { provider: 'bad' }),
            ],
            departed: [entry('fra-old', 'eu-west', { expiresAt: NOW - 1, location: { state: 'unverified' } as Entry['location'] })],
          },
        },
        { quarantined: new Set(['bad']) },
      ),
    );
    const eu = status.regions.find((r) => r.id === 'eu-west')!;
    expect(eu.backends).toEqual({ total: 5, warm: 2, cold: 0, starting: 0, ejected: 0, quarantined: 1, down: 2, unverified: 1, refuted: 1 });
    // What routing can use: the two warm ones, not the down or quarantined ones.
    expect(eu.capacity).toEqual({ slots: 8, inFlight: 2, queued: 4 });
    expect(eu.warmModels).toEqual(['chat', 'embed']);
    expect(status.backends.map((b) => [b.id, b.state, b.location])).toEqual([
      ['fra-1', 'warm', 'verified'],
      ['fra-2', 'warm', 'verified'],
      ['fra-3', 'down', 'refuted'],
      ['fra-4', 'quarantined', 'verified'],
      ['fra-old', 'down', 'unverified'],
    ]);
    expect(status.regions.map((r) => r.id)).toEqual(REGIONS.map((r) => r.id));
    expect(status.unavailable).toEqual([]);
    // Nothing secret travels: no provider key, no URL.
    expect(JSON.stringify(status)).not.toContain('127.0.0.1');
  });

  it('shows a departed backend that is live again once, as live', () => {
    const status = meshStatus(
      sources({
        'eu-west': { departed: [entry('mover', 'eu-west', { expiresAt: NOW - 1 })] },
        'us-east': { backends: [entry('mover', 'us-east')] },
      }),
    );
    expect(status.backends.map((b) => [b.id, b.region, b.state])).toEqual([['mover', 'us-east', 'warm']]);
  });

  it('reads traffic per answering region and per PoP, with rates over the window', () => {
    const status = meshStatus(
      sources({
        'eu-west': {
          traffic: {
            since: NOW - 60_000,
            cells: [cell('FRA', 'eu-west', 'p1', [10, 10, 10, 10, 400], 1), cell('AMS', 'eu-west', 'p2', [20]), cell('FRA', '', '', [1])],
          },
        },
        // Spilled over to another region: reported to that region's directory.
        'us-west': { traffic: { since: NOW - 60_000, cells: [cell('FRA', 'us-west', 'p3', [150, 160])] } },
      }),
    );
    const eu = status.regions.find((r) => r.id === 'eu-west')!;
    expect(eu.traffic).toMatchObject({ requests: 6, errors: 1, rps: 0.1 });
    expect(eu.traffic.p50Ms).toBeGreaterThanOrEqual(10);
    expect(eu.traffic.p50Ms).toBeLessThan(12);
    expect(eu.traffic.p99Ms).toBeGreaterThanOrEqual(400);
    expect(status.regions.find((r) => r.id === 'us-east')!.traffic).toEqual({ requests: 0, rps: 0, errors: 0, p50Ms: null, p90Ms: null, p99Ms: null });
    expect(status.pops.map((p) => [p.code, p.city, p.traffic.requests])).toEqual([
      ['FRA', 'Frankfurt-am-Main', 8],
      ['AMS', 'Amsterdam', 1],
    ]);
    // Where each PoP's requests went, most first; FRA's cache hit went to no region.
    expect(status.pops.map((p) => p.servedBy)).toEqual([
      [
        { region: 'eu-west', requests: 5 },
        { region: 'us-west', requests: 2 },
      ],
      [{ region: 'eu-west', requests: 1 }],
    ]);
    expect(status.regions.find((r) => r.id === 'us-west')!.traffic.requests).toBe(2);
    expect(status.windowSeconds).toBe(60);
  });

  it("gives a provider only its own backends, traffic and payouts", () => {
    const status = meshStatus(
      sources(
        {
          'eu-west': {
            backends: [entry('mine', 'eu-west', { provider: 'p2' }), entry('theirs', 'eu-west')],
            traffic: { since: NOW - 60_000, cells: [cell('FRA', 'eu-west', 'p1', [10, 10]), cell('AMS', 'eu-west', 'p2', [20])] },
          },
        },
        { viewer: { role: 'provider', provider: 'p2' } },
      ),
    );
    expect(status.backends.map((b) => b.id)).toEqual(['mine']);
    expect(status.regions.find((r) => r.id === 'eu-west')!.backends.total).toBe(1);
    expect(status.regions.find((r) => r.id === 'eu-west')!.traffic.requests).toBe(1);
    expect(status.pops.map((p) => p.code)).toEqual(['AMS']);
  });

  it('keeps the newest batches, and names the sources that did not answer', () => {
    const batch = (i: number): BatchStatus => ({ id: `b${String(i).padStart(3, '0')}`, shard: i % 4, closedAt: NOW - (100 - i) * 60_000, count: i, paid: i, withheld: 0 });
    const status = meshStatus({
      ...sources({}),
      directories: REGIONS.map((region) => ({ region, status: region.id === 'ap-northeast' ? undefined : { backends: [], departed: [], traffic: { since: NOW - 60_000, cells: [] } } })),
      batches: Array.from({ length: 30 }, (_, i) => batch(i)),
    });
    expect(status.batches.map((b) => b.id)).toEqual(Array.from({ length: STATUS_BATCHES }, (_, i) => batch(29 - i).id));
    expect(status.unavailable).toEqual(['ap-northeast']);
    expect(meshStatus(sources({}, { batches: undefined })).unavailable).toEqual(['settlement']);
  });
});
