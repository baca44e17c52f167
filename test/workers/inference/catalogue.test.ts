import { env } from 'cloudflare:test';
import { describe, expect, it } from 'vitest';
import { MeshError } from '../../../shared/errors.ts';
import { catalogue, DEFAULT_CACHE_TTL_S, offered, parseCatalogue } from '../../../workers/inference/catalogue.ts';
import { priceOf } from '../../../workers/inference/pricing.ts';

function refusal(source: unknown): string {
  try {
    parseCatalogue(source);
  } catch (err) {
    expect(err).toBeInstanceOf(MeshError);
    expect((err as MeshError).code).toBe('not_ready');
    return (err as MeshError).message;
  }
  throw new Error('accepted');
}

describe('the model catalogue (MESH_MODELS)', () => {
  it('is what wrangler.toml sets: embed by tokens, classifier by rows, with their prices', () => {
    expect(offered(env, 'embed')).toMatchObject({ meter: 'tokens', tokenizer: 'mesh-hash-v1', maxTokens: 128, price: { input: 0.1, output: 0 } });
    expect(offered(env, 'classifier')).toMatchObject({ meter: 'rows', price: { input: 0, output: 5 } });
    expect(offered(env, 'embed').fallback?.model).toBe('sentence-transformers/all-MiniLM-L6-v2');
  });

  it('answers 404 model_not_found for a model it does not list, whatever its name', () => {
    for (const name of ['nope', 'constructor', '__proto__', 'toString', 'hasOwnProperty']) {
      expect(() => offered(env, name)).toThrow(expect.objectContaining({ code: 'model_not_found' }));
    }
  });

  it('parses from a JSON string too, and keys any model name safely', () => {
    const models = parseCatalogue('{"constructor":{"meter":"requests","price":{"input":2}},"toString":{"meter":"rows","price":{"output":1}}}');
    expect(models.get('constructor')).toMatchObject({ meter: 'requests', price: { input: 2, output: 0 } });
    expect(models.get('toString')).toMatchObject({ meter: 'rows', price: { input: 0, output: 1 } });
    expect(models.get('hasOwnProperty')).toBeUndefined();
    // Model names start with a letter or digit, as backends announce them.
    expect(refusal('{"__proto__":{"meter":"rows","price":{}}}')).toMatch(/not a valid model name/);
    expect(priceOf(models.get('constructor')!.price, { input: 1, output: 1 })).toBe(2);
  });

  it('refuses a catalogue that would price wrongly, naming the model and field', () => {
    expect(refusal('')).toMatch(/not set/);
    expect(refusal('{')).toMatch(/not valid JSON/);
    expect(refusal({ embed: { meter: 'bytes', price: {} } })).toMatch(/"embed".meter/);
    expect(refusal({ embed: { meter: 'rows' } })).toMatch(/"embed".price/);
    expect(refusal({ embed: { meter: 'rows', price: { input: -1 } } })).toMatch(/price.input/);
    expect(refusal({ embed: { meter: 'rows', price: { input: 'free' } } })).toMatch(/price.input/);
    expect(refusal({ embed: { meter: 'tokens', tokenizer: 'bert', price: {} } })).toMatch(/tokenizer/);
    expect(refusal({ embed: { meter: 'tokens', max_tokens: 0, price: {} } })).toMatch(/max_tokens/);
    expect(refusal({ embed: { meter: 'rows', price: {}, fallback: { model: 'x y' } } })).toMatch(/fallback/);
    expect(refusal({ embed: { meter: 'rows', price: {}, fallback: { model: 'a/b', price: {}, region: 'mars' } } })).toMatch(/fallback.region/);
    expect(refusal({ 'bad name!': { meter: 'rows', price: {} } })).toMatch(/not a valid model name/);
  });

  it('caches a deterministic model\'s answers: cache price (default the price) and time to keep, refused on a model that is not', () => {
    expect(offered(env, 'embed').cache).toEqual({ price: { input: 0.02, output: 0 }, ttlSeconds: DEFAULT_CACHE_TTL_S });
    expect(offered(env, 'classifier').cache).toBeUndefined();
    const one = (entry: Record<string, unknown>) => parseCatalogue({ m: { meter: 'rows', price: { input: 1, output: 2 }, ...entry } }).get('m')!;
    expect(one({ deterministic: true }).cache).toEqual({ price: { input: 1, output: 2 }, ttlSeconds: DEFAULT_CACHE_TTL_S });
    expect(one({ deterministic: true, cache_price: { input: 0.5 }, cache_ttl: 60 }).cache).toEqual({ price: { input: 0.5, output: 0 }, ttlSeconds: 60 });
    expect(one({ deterministic: false }).cache).toBeUndefined();
    expect(refusal({ m: { meter: 'rows', price: {}, deterministic: 'yes' } })).toMatch(/"m".deterministic must be true or false/);
    expect(refusal({ m: { meter: 'rows', price: {}, cache_price: { input: 1 } } })).toMatch(/"m": cache_price and cache_ttl need deterministic = true/);
    expect(refusal({ m: { meter: 'rows', price: {}, deterministic: true, cache_price: { input: -1 } } })).toMatch(/"m".cache_price.input must be/);
    for (const ttl of [0, 1.5, 31 * 24 * 3600, '60']) expect(refusal({ m: { meter: 'rows', price: {}, deterministic: true, cache_ttl: ttl } })).toMatch(/"m".cache_ttl must be/);
  });

  it('is parsed once per isolate', () => {
    expect(catalogue(env)).toBe(catalogue(env));
  });
});

describe('prices', () => {
  it('are the catalogue price times the metered units, rounded up once, never negative or NaN', () => {
    expect(priceOf({ input: 0.1, output: 0 }, { input: 25, output: 2 })).toBe(3);
    expect(priceOf({ input: 0.1, output: 0 }, { input: 30, output: 2 })).toBe(3);
    expect(priceOf({ input: 0, output: 5 }, { input: 2, output: 2 })).toBe(10);
    expect(priceOf({ input: 0, output: 0 }, { input: 5, output: 5 })).toBe(0);
  });
});
