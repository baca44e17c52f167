/**
 * The operator's model catalogue (`MESH_MODELS`, docs/api.md section 4.3): the
 * models the mesh offers, how each is metered (shared/metering.ts) and priced,
 * and which may fall back to a Hugging Face model. It is the only source of
 * prices and metering rules: nothing a provider says changes a bill. Parsed
 * once per isolate into a Map, so any model name is a safe key.
 */

import { MeshError } from '../../shared/errors.ts';
import { isMeter, TOKENIZERS, type MeterRule, type TokenizerName } from '../../shared/metering.ts';
import { isRegionId } from '../../shared/regions.ts';
import type { Env } from '../env.ts';
import type { Price } from './pricing.ts';
import type { CompareRule } from '../../shared/jwt.ts';
import { DEFAULT_RULE } from '../../receipts/compare.ts';

/** A Hugging Face model that may answer for a mesh model when no backend can. */
export interface Fallback {
  /** The upstream model id, e.g. `sentence-transformers/all-MiniLM-L6-v2`. */
  model: string;
  price: Price;
  /** Where the upstream runs, for residency: without it, a request restricted to regions never falls back. */
  region?: string;
}

/**
 * How a deterministic model's answers are cached per PoP (docs/api.md
 * section 2.13): present only when the catalogue says `deterministic = true`.
 */
export interface AnswerCaching {
  /** What a hit costs, micro-USD per unit (`cache_price`; default the model's `price`). */
  price: Price;
  /** How long an answer is kept, seconds (`cache_ttl`; default DEFAULT_CACHE_TTL_S). */
  ttlSeconds: number;
}

export interface CatalogueModel extends MeterRule {
  name: string;
  price: Price;
  fallback?: Fallback;
  /** Set when the model is deterministic: its answers are cached at each PoP. */
  cache?: AnswerCaching;
  /**
   * How two providers' answers are compared when one is re-executed
   * (docs/api.md section 6.2): `tolerance = { abs, rel }` for floating-point
   * outputs; default DEFAULT_RULE. Integers and strings must be equal.
   */
  rule: CompareRule;
}

export type Catalogue = ReadonlyMap<string, CatalogueModel>;

/** The most a price may be, micro-USD per unit. */
const MAX_PRICE = 1_000_000;
/** How long a cached answer is kept when the catalogue does not say (`cache_ttl`), seconds. */
export const DEFAULT_CACHE_TTL_S = 3600;
/** The longest `cache_ttl`, seconds. */
export const MAX_CACHE_TTL_S = 30 * 24 * 3600;
const MODEL_NAME = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;
const UPSTREAM_ID = /^[A-Za-z0-9][A-Za-z0-9._/-]{0,255}$/;

const bad = (message: string) => new MeshError('not_ready', `MESH_MODELS: ${message}`);

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function parsePrice(v: unknown, where: string, field = 'price'): Price {
  if (!isObject(v)) throw bad(`${where}.${field} must be { "input": µUSD, "output": µUSD }.`);
  const price = (x: unknown, side: string) => {
    if (typeof x !== 'number' || !Number.isFinite(x) || x < 0 || x > MAX_PRICE) {
      throw bad(`${where}.${field}.${side} must be a number of micro-USD per unit, 0..${MAX_PRICE}.`);
    }
    return x;
  };
  return { input: price(v.input ?? 0, 'input'), output: price(v.output ?? 0, 'output') };
}

function parseRule(v: unknown, where: string): CompareRule {
  if (v === undefined) return DEFAULT_RULE;
  const tolerance = (x: unknown, side: string) => {
    if (typeof x !== 'number' || !Number.isFinite(x) || x < 0 || x > 1) throw bad(`${where}.tolerance.${side} must be a number in 0..1.`);
    return x;
  };
  if (!isObject(v)) throw bad(`${where}.tolerance must be { "abs": number, "rel": number }.`);
  return { float: { abs: tolerance(v.abs ?? DEFAULT_RULE.float.abs, 'abs'), rel: tolerance(v.rel ?? DEFAULT_RULE.float.rel, 'rel') } };
}

function parseModel(name: string, v: unknown): CatalogueModel {
  if (!MODEL_NAME.test(name)) throw bad(`"${name.slice(0, 64)}" is not a valid model name.`);
  if (!isObject(v)) throw bad(`"${name}" must be an object.`);
  if (!isMeter(v.meter)) throw bad(`"${name}".meter must be tokens, rows, elements or requests.`);
  const model: CatalogueModel = { name, meter: v.meter, price: parsePrice(v.price, `"${name}"`), rule: parseRule(v.tolerance, `"${name}"`) };
  if (v.meter === 'tokens') {
    const tokenizer = v.tokenizer ?? TOKENIZERS[0];
    if (!(TOKENIZERS as readonly unknown[]).includes(tokenizer)) throw bad(`"${name}".tokenizer must be one of ${TOKENIZERS.join(', ')}.`);
    model.tokenizer = tokenizer as TokenizerName;
    if (v.max_tokens !== undefined) {
      if (!Number.isSafeInteger(v.max_tokens) || (v.max_tokens as number) < 1 || (v.max_tokens as number) > 1_000_000) {
        throw bad(`"${name}".max_tokens must be a positive integer.`);
      }
      model.maxTokens = v.max_tokens as number;
    }
    if (v.pad_id !== undefined) {
      if (!Number.isSafeInteger(v.pad_id)) throw bad(`"${name}".pad_id must be an integer.`);
      model.padId = v.pad_id as number;
    }
  }
  if (v.deterministic !== undefined && typeof v.deterministic !== 'boolean') throw bad(`"${name}".deterministic must be true or false.`);
  if (v.deterministic === true) {
    let ttlSeconds = DEFAULT_CACHE_TTL_S;
    if (v.cache_ttl !== undefined) {
      if (!Number.isSafeInteger(v.cache_ttl) || (v.cache_ttl as number) < 1 || (v.cache_ttl as number) > MAX_CACHE_TTL_S) {
        throw bad(`"${name}".cache_ttl must be a whole number of seconds, 1..${MAX_CACHE_TTL_S}.`);
      }
      ttlSeconds = v.cache_ttl as number;
    }
    model.cache = { price: v.cache_price === undefined ? model.price : parsePrice(v.cache_price, `"${name}"`, 'cache_price'), ttlSeconds };
  } else if (v.cache_price !== undefined || v.cache_ttl !== undefined) {
    throw bad(`"${name}": cache_price and cache_ttl need deterministic = true (only a deterministic model's answers are cached).`);
  }
  if (v.fallback !== undefined) {
    const f = v.fallback;
    if (!isObject(f) || typeof f.model !== 'string' || !UPSTREAM_ID.test(f.model)) {
      throw bad(`"${name}".fallback must be { "model": <Hugging Face model id>, "price": {...}, "region"?: <mesh region> }.`);
    }
    if (f.region !== undefined && !isRegionId(f.region)) throw bad(`"${name}".fallback.region is not a mesh region.`);
    model.fallback = { model: f.model, price: parsePrice(f.price, `"${name}".fallback`), ...(f.region ? { region: f.region as string } : {}) };
  }
  return model;
}

/** Parses the catalogue from the var: a JSON string or (a wrangler.toml table) the object itself. */
export function parseCatalogue(source: unknown): Catalogue {
  let parsed: unknown = source;
  if (typeof source === 'string') {
    if (source.trim() === '') throw bad('not set: the operator lists the models the mesh offers, with their prices.');
    try {
      parsed = JSON.parse(source);
    } catch {
      throw bad('not valid JSON.');
    }
  }
  if (!isObject(parsed)) throw bad('must map model names to { "meter", "price", ... }.');
  const models = new Map<string, CatalogueModel>();
  for (const [name, entry] of Object.entries(parsed)) models.set(name, parseModel(name, entry));
  return models;
}

let cached: { source: unknown; catalogue: Catalogue } | undefined;

/** The isolate's catalogue; a 503 `not_ready` when the var is missing or bad. */
export function catalogue(env: Env): Catalogue {
  const source: unknown = (env as { MESH_MODELS?: unknown }).MESH_MODELS;
  if (!cached || cached.source !== source) cached = { source, catalogue: parseCatalogue(source ?? '') };
  return cached.catalogue;
}

/** The catalogue entry of `model`; 404 `model_not_found` when the mesh does not offer it. */
export function offered(env: Env, model: string): CatalogueModel {
  const entry = catalogue(env).get(model);
  if (!entry) throw new MeshError('model_not_found', `This mesh does not offer a model named "${model.slice(0, 128)}" (see GET /v1/models).`);
  return entry;
}
