import { describe, expect, it } from 'vitest';
import { MeshError } from '../../../shared/errors.ts';
import { resolvePop } from '../../../workers/geo/pop.ts';

function request(headers: Record<string, string>, cf?: Record<string, unknown>) {
  const req = new Request('https://mesh.test/', { headers });
  if (cf) Object.defineProperty(req, 'cf', { value: cf });
  return req;
}

describe('resolvePop', () => {
  it('acts as the PoP named by x-mesh-dev-colo only when MESH_DEV is on', () => {
    const req = request({ 'x-mesh-dev-colo': 'sin' }, { colo: 'FRA' });
    expect(resolvePop(req, true)).toMatchObject({ code: 'SIN', simulated: true });
    expect(resolvePop(req, false)).toMatchObject({ code: 'FRA' });
  });
  it('refuses an unknown dev colo with a 400', () => {
    expect(() => resolvePop(request({ 'x-mesh-dev-colo': 'ZZZ' }), true)).toThrow(MeshError);
  });
  it('falls back to cf coordinates, then to a placeholder', () => {
    expect(resolvePop(request({}, { colo: 'QQQ', latitude: '10.5', longitude: '20.25' }), false)).toEqual({ code: 'QQQ', lat: 10.5, lon: 20.25 });
    expect(resolvePop(request({}), false)).toEqual({ code: 'unknown', lat: 0, lon: 0 });
  });
});
