/**
 * Which PoP a request entered at, and where that is: `request.cf.colo` in
 * production; with `MESH_DEV=1` the `x-mesh-dev-colo` header may name any PoP
 * (local development and tests simulate the world this way).
 */

import { MeshError } from '../../shared/errors.ts';
import type { LatLon } from '../../shared/regions.ts';
import { popLocation } from './pops.ts';

export interface Pop extends LatLon {
  code: string;
  /** True when `x-mesh-dev-colo` chose it: the network underneath is not that PoP's, so its RTTs mean nothing. */
  simulated?: boolean;
}

const DEV_COLO_HEADER = 'x-mesh-dev-colo';
/** The `pop` a receipt names when the runtime gave no colo. */
const UNKNOWN_COLO = 'unknown';

/** One object per known PoP (simulated or not), never changed: routing caches per origin object. */
const known = new Map<string, Readonly<Pop>>();

function knownPop(code: string, simulated: boolean): Pop | undefined {
  const key = simulated ? `${code}\u0000dev` : code;
  let pop = known.get(key);
  if (!pop) {
    const at = popLocation(code);
    if (!at) return undefined;
    pop = Object.freeze(simulated ? { code, ...at, simulated: true } : { code, ...at });
    known.set(key, pop);
  }
  return pop;
}

/** The data centre the runtime ran the request in (`cf.colo`), whatever PoP `x-mesh-dev-colo` simulates; `unknown` without one. */
export function runtimeColo(request: Request): string {
  const colo = (request as { cf?: IncomingRequestCfProperties }).cf?.colo;
  return typeof colo === 'string' ? colo : UNKNOWN_COLO;
}

/** Resolves the PoP of a request. Unknown dev colo: 400. No location at all: lat/lon 0. */
export function resolvePop(request: Request, dev: boolean): Pop {
  if (dev) {
    const forced = request.headers.get(DEV_COLO_HEADER);
    if (forced) {
      const pop = knownPop(forced.toUpperCase(), true);
      if (!pop) throw new MeshError('invalid_request', `${DEV_COLO_HEADER}: "${forced}" is not a known PoP IATA code.`);
      return pop;
    }
  }
  const cf = (request as { cf?: IncomingRequestCfProperties }).cf;
  const colo = typeof cf?.colo === 'string' ? cf.colo : UNKNOWN_COLO;
  const pop = knownPop(colo, false);
  if (pop) return pop;
  const lat = Number(cf?.latitude);
  const lon = Number(cf?.longitude);
  if (Number.isFinite(lat) && Number.isFinite(lon)) return { code: colo, lat, lon };
  return { code: colo, lat: 0, lon: 0 };
}
