import { describe, expect, it } from 'vitest';
import type { HeartbeatModel } from '../../../shared/heartbeat.ts';
import { DEFAULT_PLACEMENT, placementActions } from '../../../workers/directory/placement.ts';

type PlacementInput = Parameters<typeof placementActions>[0];
type PlacedBackend = PlacementInput['backend'];

const model = (name: string, warm = true): HeartbeatModel => ({ name, version: '1', warm, maxBatchSize: 8, p50Ms: 5 });
const MIN = 60_000;

function input(over: Partial<PlacementInput> & { backend: PlacedBackend }): PlacementInput {
  return {
    now: 100 * MIN,
    region: [over.backend],
    lastRequest: new Map(),
    trackingSince: 0,
    asked: new Map(),
    policy: DEFAULT_PLACEMENT,
    ...over,
  };
}

describe('placementActions', () => {
  const idle: PlacedBackend = { id: 'a', ready: true, models: [model('embed')], available: ['classifier'] };

  it('asks a backend that can to load a model in demand that the region lacks', () => {
    const demand = new Map([['classifier', 100 * MIN - 1_000]]);
    expect(placementActions(input({ backend: idle, lastRequest: demand }))).toEqual([{ op: 'load', model: 'classifier' }]);
  });

  it('does not ask when the region already has it, when asked recently, when demand is old, or when the backend cannot', () => {
    const demand = new Map([['classifier', 100 * MIN - 1_000]]);
    const other: PlacedBackend = { id: 'b', ready: true, models: [model('classifier', false)] };
    expect(placementActions(input({ backend: idle, region: [idle, other], lastRequest: demand }))).toEqual([]);
    expect(placementActions(input({ backend: idle, lastRequest: demand, asked: new Map([['load:classifier', 100 * MIN - 5_000]]) }))).toEqual([]);
    expect(placementActions(input({ backend: idle, lastRequest: new Map([['classifier', 100 * MIN - 2 * MIN]]) }))).toEqual([]);
    expect(placementActions(input({ backend: { ...idle, available: [] }, lastRequest: demand }))).toEqual([]);
    expect(placementActions(input({ backend: { ...idle, ready: false }, lastRequest: demand }))).toEqual([]);
    const full = { ...DEFAULT_PLACEMENT, maxWarmModels: 1 };
    expect(placementActions(input({ backend: idle, lastRequest: demand, policy: full }))).toEqual([]);
  });

  it('unloads a model idle for the whole period, keeping at least one model and only after tracking that long', () => {
    const two: PlacedBackend = { id: 'a', ready: true, models: [model('embed'), model('classifier')] };
    const busyEmbed = new Map([['embed', 100 * MIN - 1_000]]);
    expect(placementActions(input({ backend: two, lastRequest: busyEmbed }))).toEqual([{ op: 'unload', model: 'classifier' }]);
    expect(placementActions(input({ backend: two, lastRequest: busyEmbed, trackingSince: 100 * MIN - 5 * MIN }))).toEqual([]);
    expect(placementActions(input({ backend: { ...two, models: [model('classifier')] }, lastRequest: new Map() }))).toEqual([]);
    const recent = new Map([['embed', 100 * MIN - 1_000], ['classifier', 100 * MIN - 5 * MIN]]);
    expect(placementActions(input({ backend: two, lastRequest: recent }))).toEqual([]);
  });
});
