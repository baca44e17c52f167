/**
 * Verification routes (docs/api.md section 6). Billing reads, for the admin
 * token or a billing token: fraud proofs (listed, and each as the document
 * `mesh-verify dispute` checks) and the providers' standing events (proven
 * frauds, quarantines, clearances). Operator actions, admin only: clear a
 * quarantined provider, set a provider's sample rate.
 */

import { Hono } from 'hono';
import { MeshError } from '../../shared/errors.ts';
import { parseJson } from '../../shared/protocol.ts';
import { authenticate } from '../auth.ts';
import type { AppEnv } from '../context.ts';
import { invalidateSnapshot } from '../directory/snapshot.ts';
import { disputeKey, isDisputeId } from '../verification/disputes.ts';

const BILLING = ['billing', 'admin'] as const;
const LIST_MAX = 1000;
const PROVIDER_ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;

const invalid = (message: string) => new MeshError('invalid_request', message);

function limitParam(value: string | undefined): number {
  if (value === undefined || value === '') return 100;
  if (!/^\d{1,6}$/.test(value) || Number(value) < 1) throw invalid('"limit" must be a positive integer.');
  return Math.min(Number(value), LIST_MAX);
}

function providerParam(id: string): string {
  if (!PROVIDER_ID.test(id)) throw invalid('The provider id must be 1-128 characters of letters, digits, ".", "_", ":" or "-".');
  return id;
}

const registry = (c: { env: AppEnv['Bindings'] }) => c.env.OPERATOR_REGISTRY.getByName('global');

export const disputeRoutes = new Hono<AppEnv>()
  .get('/v1/disputes', async (c) => {
    await authenticate(c, BILLING);
    const after = c.req.query('after') ?? '';
    if (after !== '' && !isDisputeId(after)) throw invalid('"after" must be a dispute id from an earlier listing.');
    const provider = c.req.query('provider');
    const limit = limitParam(c.req.query('limit'));
    const disputes = await registry(c).listDisputes(after, limit, provider === undefined ? undefined : providerParam(provider));
    return c.json({ disputes, next: disputes.length === limit ? disputes[disputes.length - 1]!.id : null });
  })
  .get('/v1/disputes/:id', async (c) => {
    await authenticate(c, BILLING);
    const id = c.req.param('id');
    const stored = isDisputeId(id) ? await c.env.SETTLEMENT_ARCHIVE.get(disputeKey(id)) : null;
    if (!stored) throw new MeshError('dispute_not_found', `No dispute "${id.slice(0, 64)}".`);
    return new Response(stored.body, { headers: { 'content-type': 'application/json' } });
  })
  .get('/v1/verification/events', async (c) => {
    await authenticate(c, BILLING);
    const after = c.req.query('after') ?? '0';
    if (!/^\d{1,15}$/.test(after)) throw invalid('"after" must be an event seq from an earlier listing.');
    const limit = limitParam(c.req.query('limit'));
    const events = await registry(c).events(Number(after), limit);
    return c.json({ events, next: events.length === limit ? events[events.length - 1]!.seq : null });
  })
  .post('/admin/providers/:id/clear', async (c) => {
    await authenticate(c, ['admin']);
    const standing = await registry(c).clearQuarantine(providerParam(c.req.param('id')));
    if (!standing) throw new MeshError('not_found', `No provider "${c.req.param('id')}" is admitted.`);
    invalidateSnapshot();
    return c.json(standing);
  })
  .put('/admin/providers/:id/verification', async (c) => {
    await authenticate(c, ['admin']);
    const id = providerParam(c.req.param('id'));
    const body = parseJson(await c.req.text()) as { sample_rate?: unknown };
    const rate = typeof body === 'object' && body !== null ? body.sample_rate : undefined;
    if (!(rate === null || (typeof rate === 'number' && Number.isFinite(rate) && rate >= 0 && rate <= 1))) {
      throw invalid(`The body must be { "sample_rate": <0..1> } or { "sample_rate": null } (the mesh's rule).`);
    }
    const standing = await registry(c).setSampleRate(id, rate);
    if (!standing) throw new MeshError('not_found', `No provider "${id}" is admitted.`);
    invalidateSnapshot();
    return c.json(standing);
  });
