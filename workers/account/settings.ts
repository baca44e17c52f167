/**
 * A consumer key's settings (docs/api.md section 2.14): its limits (requests
 * and tokens per minute, concurrent requests), its spend budget per period,
 * and the browser origins it may be used from (CORS). What the operator sends
 * to `POST /admin/keys` and `PATCH /admin/keys/{jti}` is checked here, field
 * by field, into the one normalised shape the key's KeyAccount object stores
 * and leases from. Every number is an integer within a bound; every list is
 * bounded; an unknown field is refused.
 */

import { MeshError } from '../../shared/errors.ts';

/** Limits of one key; an absent field is no limit of that kind. */
export interface KeyLimits {
  requestsPerMinute?: number;
  concurrent?: number;
  /** Metered units (docs/api.md section 4.3) per minute, input and output together. */
  tokensPerMinute?: number;
}

export const PERIODS = ['day', 'month', 'total'] as const;
export type BudgetPeriod = (typeof PERIODS)[number];

export interface KeyBudget {
  /** What the key may spend per period, integer micro-USD. */
  microUsd: number;
  /** UTC day, UTC calendar month, or the key's whole life. */
  period: BudgetPeriod;
}

export interface KeyCors {
  /** Exact origins (`https://app.example.com`, normalised) or `*` (any origin). */
  origins: string[];
}

/** Everything a key may have set; null is "not set". */
export interface KeySettings {
  limits: KeyLimits | null;
  budget: KeyBudget | null;
  cors: KeyCors | null;
}

/** A change: each field present replaces that setting (null removes it); absent fields stay. */
export type SettingsPatch = Partial<KeySettings>;

export const NO_SETTINGS: KeySettings = { limits: null, budget: null, cors: null };

/** Upper bounds of each setting (docs/api.md section 2.14). */
export const MAX_REQUESTS_PER_MINUTE = 10_000_000;
export const MAX_CONCURRENT = 100_000;
export const MAX_TOKENS_PER_MINUTE = 1_000_000_000_000;
/** One billion USD: a bound, not a plan. */
export const MAX_BUDGET_MICRO_USD = 1_000_000_000_000_000;
export const MAX_ORIGINS = 32;
export const MAX_ORIGIN_LENGTH = 256;

const LIMIT_FIELDS = {
  requestsPerMinute: MAX_REQUESTS_PER_MINUTE,
  concurrent: MAX_CONCURRENT,
  tokensPerMinute: MAX_TOKENS_PER_MINUTE,
} as const;

const invalid = (message: string) => new MeshError('invalid_request', message);

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function onlyFields(v: Record<string, unknown>, allowed: readonly string[], where: string): void {
  for (const key of Object.keys(v)) {
    if (!allowed.includes(key)) throw invalid(`Unknown field "${key.slice(0, 64)}" in ${where}; it takes ${allowed.map((a) => `"${a}"`).join(', ')}.`);
  }
}

function parseLimits(v: unknown): KeyLimits | null {
  if (v === null) return null;
  if (!isObject(v)) throw invalid('"limits" must be an object: { "requestsPerMinute"?, "concurrent"?, "tokensPerMinute"? }, or null.');
  onlyFields(v, Object.keys(LIMIT_FIELDS), '"limits"');
  const limits: KeyLimits = {};
  for (const [name, max] of Object.entries(LIMIT_FIELDS) as [keyof KeyLimits, number][]) {
    const n = v[name];
    if (n === undefined || n === null) continue;
    if (!Number.isSafeInteger(n) || (n as number) < 1 || (n as number) > max) {
      throw invalid(`"limits.${name}" must be an integer from 1 to ${max}, or null for no limit.`);
    }
    limits[name] = n as number;
  }
  return Object.keys(limits).length > 0 ? limits : null;
}

function parseBudget(v: unknown): KeyBudget | null {
  if (v === null) return null;
  if (!isObject(v)) throw invalid('"budget" must be { "microUsd": <integer>, "period": "day" | "month" | "total" }, or null.');
  onlyFields(v, ['microUsd', 'period'], '"budget"');
  const { microUsd, period } = v;
  if (!Number.isSafeInteger(microUsd) || (microUsd as number) < 0 || (microUsd as number) > MAX_BUDGET_MICRO_USD) {
    throw invalid(`"budget.microUsd" must be an integer number of micro-USD from 0 to ${MAX_BUDGET_MICRO_USD}.`);
  }
  if (!(PERIODS as readonly unknown[]).includes(period)) throw invalid(`"budget.period" must be one of ${PERIODS.join(', ')} (UTC).`);
  return { microUsd: microUsd as number, period: period as BudgetPeriod };
}

/** An origin as browsers send it (`scheme://host[:port]`, lower case, no default port), or undefined when `s` is not one. */
export function normaliseOrigin(s: string): string | undefined {
  if (s.length > MAX_ORIGIN_LENGTH || !/^https?:\/\/[^/?#@\s]+$/i.test(s)) return undefined;
  let url: URL;
  try {
    url = new URL(s);
  } catch {
    return undefined;
  }
  if (url.origin === 'null' || url.pathname !== '/' || url.search || url.hash || url.username || url.password) return undefined;
  return url.origin;
}

function parseCors(v: unknown): KeyCors | null {
  if (v === null) return null;
  if (!isObject(v)) throw invalid('"cors" must be { "origins": ["https://app.example.com", ...] }, or null.');
  onlyFields(v, ['origins'], '"cors"');
  const { origins } = v;
  if (!Array.isArray(origins) || origins.length === 0 || origins.length > MAX_ORIGINS) {
    throw invalid(`"cors.origins" must be a list of 1 to ${MAX_ORIGINS} origins.`);
  }
  const out = new Set<string>();
  for (const o of origins) {
    const origin = typeof o === 'string' ? (o === '*' ? '*' : normaliseOrigin(o)) : undefined;
    if (!origin) {
      throw invalid(`Each of "cors.origins" must be "*" or an origin like "https://app.example.com" (scheme, host and port only, at most ${MAX_ORIGIN_LENGTH} characters).`);
    }
    out.add(origin);
  }
  return { origins: [...out] };
}

const PARSERS = { limits: parseLimits, budget: parseBudget, cors: parseCors } as const;
export const SETTING_FIELDS = Object.keys(PARSERS) as (keyof KeySettings)[];

/**
 * The settings fields of `body` (the other fields are the caller's to
 * check): only those present. Throws 400 `invalid_request` naming the field.
 */
export function parseSettingsFields(body: Record<string, unknown>): SettingsPatch {
  const patch: SettingsPatch = {};
  if (body.limits !== undefined) patch.limits = PARSERS.limits(body.limits);
  if (body.budget !== undefined) patch.budget = PARSERS.budget(body.budget);
  if (body.cors !== undefined) patch.cors = PARSERS.cors(body.cors);
  return patch;
}

/** A `PATCH /admin/keys/{jti}` body: at least one of the settings, nothing else. */
export function parsePatch(body: unknown): SettingsPatch {
  if (!isObject(body)) throw invalid('The body must be a JSON object with "limits", "budget" or "cors".');
  onlyFields(body, SETTING_FIELDS, 'the body');
  const patch = parseSettingsFields(body);
  if (Object.keys(patch).length === 0) throw invalid('Send at least one of "limits", "budget" or "cors" (null removes one).');
  return patch;
}

/** `base` with `patch` applied. */
export function applyPatch(base: KeySettings, patch: SettingsPatch): KeySettings {
  return {
    limits: patch.limits !== undefined ? patch.limits : base.limits,
    budget: patch.budget !== undefined ? patch.budget : base.budget,
    cors: patch.cors !== undefined ? patch.cors : base.cors,
  };
}

/** True when any setting is set: the key has something for isolates to lease or check. */
export function hasSettings(s: KeySettings): boolean {
  return s.limits !== null || s.budget !== null || s.cors !== null;
}

/**
 * Settings read back from storage or received over RPC, checked again (the
 * object trusts no caller): the normalised shape or a thrown Error.
 */
export function checkSettings(v: unknown): KeySettings {
  if (!isObject(v)) throw new Error('settings must be an object.');
  try {
    return applyPatch(NO_SETTINGS, parseSettingsFields({ limits: v.limits ?? null, budget: v.budget ?? null, cors: v.cors ?? null }));
  } catch (err) {
    throw new Error(`settings: ${(err as Error).message}`);
  }
}
