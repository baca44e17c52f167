/**
 * Model metadata (OIP v2 `GET /v2/models/{m}`), fetched from a backend that
 * serves the model and kept per isolate for a minute: the metadata route
 * answers from it, and the OpenAI and Hugging Face routes read input names
 * and datatypes from it to build OIP requests.
 */

import type { Context } from 'hono';
import { MeshError } from '../../shared/errors.ts';
import type { ModelMetadata } from '../../shared/protocol.ts';
import type { KeyClaims } from '../../shared/jwt.ts';
import type { AppEnv } from '../context.ts';
import { settings } from '../env.ts';
import { mayFallBack } from './fallback.ts';
import { candidatesFor, MAX_ATTEMPTS, type InferenceCall } from './run.ts';
import { oipRequestBytes, type Rows } from './translate.ts';

const TTL_MS = 60_000;
const cache = new Map<string, { meta: ModelMetadata; at: number }>();

export async function modelMetadata(c: Context<AppEnv>, consumer: KeyClaims, model: string, version?: string): Promise<ModelMetadata> {
  const key = `${model}\u0000${version ?? ''}`;
  const hit = cache.get(key);
  if (hit && Date.now() - hit.at < TTL_MS) return hit.meta;
  const { candidates } = await candidatesFor(c, consumer, model, version);
  const path = `/v2/models/${encodeURIComponent(model)}${version ? `/versions/${encodeURIComponent(version)}` : ''}`;
  for (const { backend } of candidates.slice(0, MAX_ATTEMPTS)) {
    let res: Response;
    try {
      res = await fetch(backend.url + path, { signal: AbortSignal.timeout(settings(c.env).backendTimeoutMs) });
    } catch {
      continue;
    }
    if (res.status === 404) {
      const err = (await res.json().catch(() => undefined)) as { error?: { message?: string } } | undefined;
      throw new MeshError('model_not_found', err?.error?.message ?? `Model "${model}" version "${version}" is not served.`);
    }
    if (res.status !== 200) continue;
    const meta = (await res.json()) as ModelMetadata;
    cache.set(key, { meta, at: Date.now() });
    return meta;
  }
  throw new MeshError('backend_failed', `No backend answered the metadata of "${model}".`);
}

/**
 * The OIP side of a call made of `rows` (OpenAI and Hugging Face routes): the
 * request bytes built from the model's metadata. When no backend can serve the
 * model and the rows are texts, there is no metadata, and the call carries what
 * the Hugging Face fallback needs instead.
 */
export async function rowsCall(
  c: Context<AppEnv>,
  consumer: KeyClaims,
  model: string,
  rows: Rows,
): Promise<{ meta: ModelMetadata | undefined; call: Pick<InferenceCall, 'oipBody' | 'texts' | 'outputName'> }> {
  const texts = typeof rows[0] === 'string' ? (rows as string[]) : undefined;
  const meta = await modelMetadata(c, consumer, model).catch((err: unknown) => {
    if (mayFallBack(c.env, err, texts)) return undefined;
    throw err;
  });
  const call: Pick<InferenceCall, 'oipBody' | 'texts' | 'outputName'> = { oipBody: meta ? oipRequestBytes(meta, rows) : new Uint8Array() };
  if (texts) call.texts = texts;
  if (meta?.outputs[0]) call.outputName = meta.outputs[0].name;
  return { meta, call };
}
