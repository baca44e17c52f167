/**
 * Warm placement on a real local mesh: a backend that starts with only `embed`
 * loaded is asked, through its heartbeat reply, to load `classifier` once
 * requests for it arrive in its region; the first requests get 503 with
 * retry-after (no warm copy anywhere, none waits on a cold load), later ones
 * are served.
 */

import { expect, it } from 'vitest';
import { useMesh } from '../helpers/mesh.ts';

const local = useMesh({
  backends: [{ id: 'fra-1', region: 'eu-west', provider: 'provider-fra' }],
  edgeVars: { SNAPSHOT_REFRESH_MS: '300' },
  backendEnv: { HEARTBEAT_INTERVAL_MS: '300', MODELS: 'embed' },
});
const logs = local.logs;

it('loads a model where it is requested, then serves it there', async () => {
  const mesh = local.mesh();
  const body = JSON.stringify({ inputs: [{ name: 'features', shape: [1, 16], datatype: 'FP32', data: Array(16).fill(0.5) }] });
  const ask = () =>
    fetch(`${mesh.edgeUrl}/v2/models/classifier/infer`, {
      method: 'POST',
      headers: { authorization: `Bearer ${mesh.consumerKey}`, 'content-type': 'application/json', 'x-mesh-dev-colo': 'FRA' },
      body,
    });
  const first = await ask();
  expect(first.status).toBe(503);
  expect(first.headers.get('retry-after')).toBeTruthy();
  const statuses = [first.status];
  const deadline = Date.now() + 20_000;
  let served: Response | undefined;
  while (Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 300));
    const res = await ask();
    statuses.push(res.status);
    if (res.status === 200) {
      served = res;
      break;
    }
    await res.body?.cancel();
  }
  expect(served, `statuses: ${statuses.join(',')}\n${logs.slice(-20).join('\n')}`).toBeDefined();
  expect(served!.headers.get('x-mesh-backend')).toBe('fra-1');
  expect(statuses.every((s) => s === 503 || s === 200)).toBe(true);
  expect(logs.some((l) => /classifier/.test(l) && /load/i.test(l))).toBe(true);
});
