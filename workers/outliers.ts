/**
 * Per-isolate memory of backends that just failed a call: such a backend is
 * tried last for a short while, so one dead backend costs at most one failed
 * attempt per isolate instead of one per request until its heartbeat expires.
 */

const EJECT_MS = 5_000;
const ejectedUntil = new Map<string, number>();

export function reportFailure(backendId: string, now = Date.now()): void {
  ejectedUntil.set(backendId, now + EJECT_MS);
}

export function reportSuccess(backendId: string): void {
  ejectedUntil.delete(backendId);
}

export function isEjected(backendId: string, now = Date.now()): boolean {
  const until = ejectedUntil.get(backendId);
  if (until === undefined) return false;
  if (until > now) return true;
  ejectedUntil.delete(backendId);
  return false;
}
