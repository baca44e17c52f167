import { env } from 'cloudflare:test';
import { describe, expect, it } from 'vitest';
import { popLocation } from '../../workers/geo/pops.ts';
import { rankByScore } from '../../workers/routing/rank.ts';
import { refreshSnapshot } from '../../workers/directory/snapshot.ts';
import { admitProvider, call, heartbeatBody, keyFor, sendHeartbeat } from './helpers.ts';

describe('routing from the directories, per PoP', () => {
  it('sends each PoP to its nearest region with the model warm, then to the next one', async () => {
    const p = await admitProvider('prov-route');
    for (const [id, region] of [['sg-1', 'ap-southeast'], ['fra-1', 'eu-west'], ['iad-1', 'us-east']] as const) {
      expect((await sendHeartbeat(p, heartbeatBody(id, region))).status).toBe(200);
    }
    // A cold backend in Jakarta must not attract Jakarta's traffic.
    await sendHeartbeat(p, heartbeatBody('cgk-cold', 'ap-southeast-3', { models: [{ name: 'embed', version: '1', warm: false, maxBatchSize: 8, p50Ms: 5 }] }));
    const snap = await refreshSnapshot(env);
    const rank = (colo: string, pin?: string) =>
      rankByScore(snap.backends, { model: 'embed', from: { code: colo, ...popLocation(colo)! }, pin }, {}, Date.now(), { allowCold: false });
    const first = (colo: string) => rank(colo)[0]?.backend.region;
    expect(first('SIN')).toBe('ap-southeast');
    expect(first('CGK')).toBe('ap-southeast');
    expect(first('FRA')).toBe('eu-west');
    expect(first('IAD')).toBe('us-east');
    expect(first('GRU')).toBe('us-east');
    const order = rank('SIN').map((c) => c.backend.id);
    expect(order).toEqual(['sg-1', 'fra-1', 'iad-1']);
    // Pinned to a region: only that region.
    const pinned = rank('SIN', 'us-east');
    expect(pinned.map((c) => c.backend.id)).toEqual(['iad-1']);
  });

  it('answers 404 for a model nobody serves or the catalogue does not offer, and 503 with retry-after when none is warm', async () => {
    const p = await admitProvider('prov-404');
    // Nobody serves the classifier warm; a backend announces a model the operator's catalogue does not offer.
    await sendHeartbeat(
      p,
      heartbeatBody('cold-only', 'eu-west', {
        models: [
          { name: 'classifier', version: '1', warm: false, maxBatchSize: 8, p50Ms: 5 },
          { name: 'unpriced', version: '1', warm: true, maxBatchSize: 8, p50Ms: 5 },
        ],
      }),
    );
    const key = await keyFor('consumer');
    const body = JSON.stringify({ inputs: [{ name: 'x', shape: [1], datatype: 'FP32', data: [1] }] });
    const unknown = await call('/v2/models/nope/infer', { method: 'POST', token: key, body, colo: 'FRA' });
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toMatchObject({ error: { code: 'model_not_found' } });
    const unpriced = await call('/v2/models/unpriced/infer', { method: 'POST', token: key, body, colo: 'FRA' });
    expect(unpriced.status).toBe(404);
    expect(await unpriced.json()).toMatchObject({ error: { code: 'model_not_found', message: expect.stringMatching(/does not offer/) } });
    const cold = await call('/v2/models/classifier/infer', { method: 'POST', token: key, body, colo: 'FRA' });
    expect(cold.status).toBe(503);
    expect(cold.headers.get('retry-after')).toBe('5');
    expect(await cold.json()).toMatchObject({ error: { code: 'no_capacity' } });
  });
});
