/** Benchmark settings from the environment, checked, with the variable named when one is wrong. */

/** A number from `name`, or `fallback` when unset. */
export function envNumber(name: string, fallback: number, min: number, max: number): number {
  const raw = process.env[name]?.trim();
  if (!raw) return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < min || n > max) throw new Error(`${name} must be a number from ${min} to ${max}, got ${JSON.stringify(raw)}`);
  return n;
}

/** A comma list from `name` (or `fallback`), empty items dropped. */
export function envList(name: string, fallback: string): string[] {
  return (process.env[name]?.trim() || fallback).split(',').map((s) => s.trim()).filter(Boolean);
}

/** A comma list of integers from `name` (or `fallback`). */
export function envIntList(name: string, fallback: string, min: number, max: number): number[] {
  return envList(name, fallback).map((raw) => {
    const n = Number(raw);
    if (!/^\d+$/.test(raw) || n < min || n > max) throw new Error(`${name} must be a comma list of integers from ${min} to ${max}, got ${JSON.stringify(raw)}`);
    return n;
  });
}
