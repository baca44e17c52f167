/**
 * Model metadata (OIP v2 `GET /v2/models/{m}`), fetched from a backend that
 * serves the model and kept per isolate for a minute: the metadata route
 * answers from it, and the OpenAI and Hugging Face routes read input names
 * and datatypes from it to build OIP requests.
 */

import type { Context } from 'hono';
import { MeshError } from '../shared/errors.ts';
import type { ModelMetadata } from '../shared/protocol.ts';
import type { KeyClaims } from '../shared/tokens.ts';
import type { AppEnv } from './context.ts';
import { settings } from './env.ts';
import { candidatesFor, MAX_ATTEMPTS } from './inference.ts';

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
