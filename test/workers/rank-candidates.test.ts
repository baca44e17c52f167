import { describe, expect, it } from 'vitest';
import { popLocation } from '../../shared/geo.ts';
import type { BackendEntry } from '../../workers/directory/backend.ts';
import { isKnownModel, rankCandidates } from '../../workers/routing.ts';

function backend(id: string, region: string, over: Partial<BackendEntry> = {}): BackendEntry {
  return {
    id,
    provider: 'p',
    region,
    url: `http://127.0.0.1/${id}`,
    lat: 0,
    lon: 0,
    executionProvider: 'cpu',
    ready: true,
    models: [{ name: 'embed', version: '1', warm: true, maxBatchSize: 8, p50Ms: 5 }],
    capacity: { slots: 4, inFlight: 0, queued: 0 },
    lastSeen: 0,
    expiresAt: Infinity,
    ...over,
  };
}

const mesh = [backend('sg', 'ap-southeast'), backend('fra', 'eu-west'), backend('iad', 'us-east')];
const ids = (list: ReturnType<typeof rankCandidates>) => list.map((c) => c.backend.id);

describe('rankCandidates (nearest warm region first)', () => {
  it('orders regions by great-circle distance from the PoP', () => {
    expect(ids(rankCandidates(mesh, { model: 'embed', from: popLocation('SIN')! }))).toEqual(['sg', 'fra', 'iad']);
    expect(ids(rankCandidates(mesh, { model: 'embed', from: popLocation('FRA')! }))[0]).toBe('fra');
    expect(ids(rankCandidates(mesh, { model: 'embed', from: popLocation('IAD')! }))[0]).toBe('iad');
    expect(ids(rankCandidates(mesh, { model: 'embed', from: popLocation('GRU')! }))[0]).toBe('iad');
  });

  it('skips backends that are not ready, lack the model or have it cold', () => {
    const list = [
      backend('sg-draining', 'ap-southeast', { ready: false }),
      backend('sg-cold', 'ap-southeast', { models: [{ name: 'embed', version: '1', warm: false, maxBatchSize: 8, p50Ms: 5 }] }),
      backend('sg-other', 'ap-southeast', { models: [{ name: 'classifier', version: '1', warm: true, maxBatchSize: 8, p50Ms: 1 }] }),
      backend('fra', 'eu-west'),
    ];
    expect(ids(rankCandidates(list, { model: 'embed', from: popLocation('SIN')! }))).toEqual(['fra']);
    expect(isKnownModel(list, 'classifier')).toBe(true);
    expect(isKnownModel(list, 'nope')).toBe(false);
  });

  it('prefers the less loaded backend within a region and tries ejected ones last', () => {
    const list = [
      backend('busy', 'ap-southeast', { capacity: { slots: 4, inFlight: 4, queued: 4 } }),
      backend('idle', 'ap-southeast'),
      backend('fra', 'eu-west'),
    ];
    expect(ids(rankCandidates(list, { model: 'embed', from: popLocation('SIN')! }))).toEqual(['idle', 'busy', 'fra']);
    const ejected = rankCandidates(list, { model: 'embed', from: popLocation('SIN')!, isEjected: (id) => id === 'idle' });
    expect(ids(ejected)).toEqual(['busy', 'fra', 'idle']);
  });

  it('serves a requested version only from backends that have it warm', () => {
    const list = [backend('sg-v1', 'ap-southeast'), backend('fra-v2', 'eu-west', { models: [{ name: 'embed', version: '2', warm: true, maxBatchSize: 8, p50Ms: 5 }] })];
    expect(ids(rankCandidates(list, { model: 'embed', version: '2', from: popLocation('SIN')! }))).toEqual(['fra-v2']);
    expect(ids(rankCandidates(list, { model: 'embed', from: popLocation('SIN')! }))).toEqual(['sg-v1', 'fra-v2']);
    expect(isKnownModel(list, 'embed', '3')).toBe(false);
  });

  it('never leaves the allowed regions', () => {
    const only = rankCandidates(mesh, { model: 'embed', from: popLocation('SIN')!, regions: new Set(['eu-west']) });
    expect(ids(only)).toEqual(['fra']);
    expect(rankCandidates(mesh, { model: 'embed', from: popLocation('SIN')!, regions: new Set(['sa-east']) })).toEqual([]);
  });
});
