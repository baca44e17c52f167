/**
 * Operator routes, admin token only: admit, re-key and remove providers
 * (docs/api.md section 3.1) and list them with their standing (section 6.3),
 * see the backends the mesh knows, issue bearer keys
 * (consumer, billing, admin) and revoke them, and read and change a consumer
 * key's settings: limits, budget, CORS origins (section 2.14).
 */

import { Hono } from 'hono';
import { MeshError } from '../../shared/errors.ts';
import { isEd25519PublicJwk, issueKey } from '../../shared/keys.ts';
import { parseJson } from '../../shared/protocol.ts';
import { isRegionId, REGIONS } from '../../shared/regions.ts';
import { decodePayload, type KeyClaims, type KeyRole } from '../../shared/jwt.ts';
import { authenticate } from '../auth.ts';
import type { AppEnv } from '../context.ts';
import { settings } from '../env.ts';
import { signingKeys } from '../keys.ts';
import { invalidateSnapshot, noteAccount, noteRevoked } from '../directory/snapshot.ts';
import { readWithin } from '../body.ts';
import { accountView } from '../account/view.ts';
import { applyPatch, hasSettings, NO_SETTINGS, parsePatch, parseSettingsFields } from '../account/settings.ts';
import { forgetProvider, PROVIDER_TOMBSTONE_MS } from './providers.ts';

const ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;
const ROLES: readonly KeyRole[] = ['consumer', 'billing', 'admin', 'provider'];
/** A revocation named by jti alone is kept this long (longer than any key we issue by default). */
const MAX_KEY_LIFETIME_MS = 10 * 365 * 24 * 3600 * 1000;

const invalid = (message: string) => new MeshError('invalid_request', message);
/** The largest settings body, bytes: the largest valid one is far smaller. */
const MAX_SETTINGS_BODY = 64 * 1024;

function keyId(jti: string): string {
  if (!ID.test(jti)) throw invalid('The key id (jti) must be 1-128 letters, digits, ".", "_", ":" or "-".');
  return jti;
}

const noAccount = (jti: string) =>
  new MeshError('not_found', `No consumer key "${jti}" has an account: POST /admin/keys opens one for every consumer key it issues (keys issued before accounts existed have none; issue a new key).`);

export const adminRoutes = new Hono<AppEnv>()
  .use('/admin/*', async (c, next) => {
    await authenticate(c, ['admin']);
    await next();
  })
  .post('/admin/providers', async (c) => {
    const body = parseJson(await c.req.text()) as { id?: unknown; publicJwk?: unknown };
    if (typeof body !== 'object' || body === null) throw invalid('The body must be { "id", "publicJwk" }.');
    if (typeof body.id !== 'string' || !ID.test(body.id)) {
      throw invalid('"id" must be 1-128 characters of letters, digits, ".", "_", ":" or "-".');
    }
    if (!isEd25519PublicJwk(body.publicJwk)) {
      throw invalid('"publicJwk" must be an Ed25519 public JWK ({ "kty": "OKP", "crv": "Ed25519", "x": ... }) without a private part.');
    }
    const { kty, crv, x, kid } = body.publicJwk;
    const { created } = await c.env.OPERATOR_REGISTRY.getByName('global').put(body.id, { kty, crv, x, ...(kid ? { kid } : {}) });
    // This isolate uses the new key at once; others within the provider-key cache time.
    forgetProvider(body.id);
    return c.json({ id: body.id, created }, created ? 201 : 200);
  })
  .get('/admin/providers', async (c) => {
    const registry = c.env.OPERATOR_REGISTRY.getByName('global');
    const [providers, standings] = await Promise.all([registry.list(), registry.standings()]);
    // Each provider with its standing under verification (docs/api.md section 6.3).
    const standing = new Map(standings.map(({ id, ...rest }) => [id, rest]));
    return c.json({ providers: providers.map((p) => ({ ...p, ...standing.get(p.id) })) });
  })
  .delete('/admin/providers/:id', async (c) => {
    const id = c.req.param('id');
    if (!ID.test(id)) throw invalid('The provider id must be 1-128 characters of letters, digits, ".", "_", ":" or "-".');
    const registry = c.env.OPERATOR_REGISTRY.getByName('global');
    if (!(await registry.get(id))) throw new MeshError('not_found', `No provider "${id}" is admitted.`);
    // Tombstones first, in every region: from here no heartbeat of this provider is accepted, whatever key an isolate
    // still caches. A failure leaves the provider admitted, so the operator can simply retry.
    const until = Date.now() + PROVIDER_TOMBSTONE_MS;
    const removed = await Promise.all(
      REGIONS.map((r) => c.env.REGION_DIRECTORY.getByName(r.id, { locationHint: r.locationHint }).removeProvider(id, until)),
    );
    const gone = await registry.remove(id);
    forgetProvider(id);
    invalidateSnapshot();
    if (!gone) throw new MeshError('not_found', `No provider "${id}" is admitted.`);
    return c.json({ id, removed: true, backends: removed.reduce((n, r) => n + r.removed, 0) });
  })
  .get('/admin/backends', async (c) => {
    const lists = await Promise.all(
      REGIONS.map((r) => c.env.REGION_DIRECTORY.getByName(r.id, { locationHint: r.locationHint }).backends()),
    );
    const backends = lists.flat().map(({ providerKey: _key, ...rest }) => rest);
    return c.json({ backends });
  })
  .post('/admin/keys', async (c) => {
    const body = parseJson(await c.req.text()) as Record<string, unknown>;
    if (typeof body !== 'object' || body === null) throw invalid('The body must be a JSON object.');
    const { sub, role = 'consumer', regions, ttlSeconds } = body;
    if (typeof sub !== 'string' || !ID.test(sub)) throw invalid('"sub" (the consumer id) must be 1-128 letters, digits, ".", "_", ":" or "-".');
    if (!ROLES.includes(role as KeyRole)) throw invalid(`"role" must be one of ${ROLES.join(', ')}.`);
    // Limits, budget and CORS origins (section 2.14): consumer keys only.
    const given = parseSettingsFields(body);
    if (Object.keys(given).length > 0 && role !== 'consumer') throw invalid('"limits", "budget" and "cors" are for consumer keys only.');
    const keySettings = applyPatch(NO_SETTINGS, given);
    if (regions !== undefined && !(Array.isArray(regions) && regions.length > 0 && regions.every(isRegionId))) {
      throw invalid(`"regions" must be a non-empty list of mesh regions (${REGIONS.map((r) => r.id).join(', ')}).`);
    }
    // At most MAX_KEY_LIFETIME_MS: a key's account and a revocation by jti alone are kept that long.
    if (ttlSeconds !== undefined && !(Number.isSafeInteger(ttlSeconds) && (ttlSeconds as number) > 0 && (ttlSeconds as number) * 1000 <= MAX_KEY_LIFETIME_MS)) {
      throw invalid(`"ttlSeconds" must be a positive integer of at most ${MAX_KEY_LIFETIME_MS / 1000} (ten years).`);
    }
    // A provider's key shows that provider's backends (docs/api.md section 2.15): it must name an admitted one.
    if (role === 'provider' && !(await c.env.OPERATOR_REGISTRY.getByName('global').get(sub))) {
      throw invalid(`"sub" must name an admitted provider for a provider key; "${sub}" is not admitted (POST /admin/providers).`);
    }
    const keys = await signingKeys(c.env);
    const key = await issueKey(keys.key, keys.kid, {
      issuer: settings(c.env).issuer,
      sub,
      role: role as KeyRole,
      ...(regions ? { regions: regions as string[] } : {}),
      ...(ttlSeconds ? { ttlSeconds: ttlSeconds as number } : {}),
      account: hasSettings(keySettings),
    });
    const { jti, exp } = decodePayload<KeyClaims>(key)!;
    if (role !== 'consumer') return c.json({ key, sub, role, jti, exp }, 201);
    // Every consumer key gets its account, so that settings can be given to it later; the key is handed out only once it exists.
    try {
      await c.env.KEY_ACCOUNT.getByName(jti).open({ jti, sub, expiresAt: exp * 1000, claim: hasSettings(keySettings), settings: keySettings });
    } catch (cause) {
      throw new MeshError('not_ready', "The key's account could not be created, so no key was issued; retry shortly.", { retryAfter: 1, cause });
    }
    return c.json({ key, sub, role, jti, exp, ...keySettings }, 201);
  })
  .get('/admin/keys/:jti', async (c) => {
    const jti = keyId(c.req.param('jti'));
    const got = await c.env.KEY_ACCOUNT.getByName(jti).read();
    if (!got) throw noAccount(jti);
    return c.json(accountView(got.account, got.usage));
  })
  .patch('/admin/keys/:jti', async (c) => {
    const jti = keyId(c.req.param('jti'));
    const bytes = await readWithin(c.req.raw, MAX_SETTINGS_BODY);
    if (!bytes) throw new MeshError('body_too_large', `The body is larger than ${MAX_SETTINGS_BODY} bytes.`);
    const patch = parsePatch(parseJson(new TextDecoder().decode(bytes)));
    const updated = await c.env.KEY_ACCOUNT.getByName(jti).update(patch);
    if (!updated) throw noAccount(jti);
    const { account } = updated;
    if (!account.claim) {
      // The key's JWT does not say it has an account: isolates learn it from the registry's list, with their snapshot.
      const on = hasSettings(account.settings);
      try {
        await c.env.OPERATOR_REGISTRY.getByName('global').noteAccount(jti, account.expiresAt, on);
      } catch (cause) {
        throw new MeshError('not_ready', 'The settings are saved, but the edge could not list the key for every isolate yet; send the same PATCH again.', { retryAfter: 1, cause });
      }
      noteAccount(jti, on);
    }
    return c.json(accountView(account, updated.usage));
  })
  .post('/admin/keys/revoke', async (c) => {
    const body = parseJson(await c.req.text()) as Record<string, unknown>;
    if (typeof body !== 'object' || body === null) throw invalid('The body must be { "jti" } or { "key" }.');
    // A key names itself; decoding without verifying is enough to revoke it (revoking a forged one harms nothing).
    const claims = typeof body.key === 'string' ? decodePayload<Partial<KeyClaims>>(body.key) : (body as Partial<KeyClaims>);
    const jti = claims?.jti;
    if (typeof jti !== 'string' || jti.length === 0 || jti.length > 256) throw invalid('Name the key to revoke by "jti", or send the whole "key".');
    // Kept until the key expires; no key this edge issues outlives MAX_KEY_LIFETIME_MS, so a larger or odd `exp` is clamped to it.
    const longest = Date.now() + MAX_KEY_LIFETIME_MS;
    const claimed = typeof claims?.exp === 'number' && Number.isFinite(claims.exp) && claims.exp > 0 ? claims.exp * 1000 : longest;
    const exp = Math.min(claimed, longest);
    const { revoked } = await c.env.OPERATOR_REGISTRY.getByName('global').revoke(jti, exp);
    noteRevoked(jti);
    return c.json({ jti, revoked, until: new Date(exp).toISOString() });
  });
