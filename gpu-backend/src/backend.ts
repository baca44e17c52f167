/**
 * Assembles a backend from its configuration: the session factory, model
 * repository, scheduler, dispatch verifier, attestor, metrics, the executor
 * (the main thread's half of an inference), heartbeats and the Hono app.
 * `main.ts` calls it and serves the app; tests and the local-mesh
 * launcher can call it too, swapping the edge's JWKS, `fetch` or the logger.
 */

import type { JWTVerifyGetKey } from 'jose';
import type { Heartbeat } from '../../shared/heartbeat.ts';
import { createApp } from './http/app.ts';
import { Attestor } from './mesh/attestation.ts';
import { ProbeSigner } from './mesh/probe.ts';
import type { BackendConfig } from './config.ts';
import { DispatchVerifier, edgeJwks } from './mesh/dispatch.ts';
import { Executor } from './serving/executor.ts';
import { Heartbeater } from './mesh/heartbeat.ts';
import { Lifecycle } from './lifecycle.ts';
import type { Logger } from './log.ts';
import { Metrics } from './metrics.ts';
import { importProviderKey } from './mesh/provider-key.ts';
import { ModelRepository } from './serving/repository.ts';
import { Scheduler } from './serving/scheduler.ts';
import type { CreateSession } from './serving/model-session.ts';
import { SessionFactory } from './serving/sessions.ts';

export interface BackendOverrides {
  /** The mesh's public keys; default: the edge's JWKS at `<EDGE_URL>/.well-known/jwks.json`. */
  getKey?: JWTVerifyGetKey;
  /** Used for heartbeats. */
  fetch?: typeof fetch;
  /** Wall-clock milliseconds, for token times. */
  clock?: () => number;
  createSession?: CreateSession;
}

export interface Backend {
  app: ReturnType<typeof createApp>;
  config: BackendConfig;
  repository: ModelRepository;
  scheduler: Scheduler;
  sessions: SessionFactory;
  lifecycle: Lifecycle;
  /** The main thread's half of every inference (HTTP workers call it across the thread). */
  executor: Executor;
  heartbeat: Heartbeater;
  metrics: Metrics;
  /** The body of a heartbeat now. */
  snapshot(): Heartbeat;
}

/** Builds every part of a backend; loads nothing and sends nothing yet. */
export async function createBackend(config: BackendConfig, log: Logger, overrides: BackendOverrides = {}): Promise<Backend> {
  const key = await importProviderKey(config.providerKey);
  const sessions = new SessionFactory({
    providers: config.executionProviders,
    cudaDeviceId: config.cudaDeviceId,
    thread: config.inferenceThread,
    log,
    ...(config.intraOpThreads !== undefined ? { intraOpThreads: config.intraOpThreads } : {}),
    ...(overrides.createSession ? { create: overrides.createSession } : {}),
  });
  const scheduler = new Scheduler({ slots: config.slots, maxQueue: config.maxQueue });
  const repository = new ModelRepository({
    dir: config.modelRepository,
    sessions,
    scheduler,
    log,
    onExecution: (model, rows) => metrics.execution(model.name, model.version, rows),
  });
  const lifecycle = new Lifecycle();
  const clock = overrides.clock ?? Date.now;
  const dispatch = new DispatchVerifier({
    backendId: config.backendId,
    issuer: config.meshIssuer,
    getKey: overrides.getKey ?? edgeJwks(config.edgeUrl),
    now: clock,
  });
  const attestor = new Attestor({ key, providerId: config.providerId, backendId: config.backendId, now: clock });
  const metrics = new Metrics({
    backendId: config.backendId,
    providerId: config.providerId,
    region: config.region,
    executionProvider: () => repository.executionProvider,
    capacity: () => scheduler.capacity,
    models: () => repository.modelStats(),
  });

  const snapshot = (): Heartbeat => ({
    backendId: config.backendId,
    url: config.publicUrl,
    region: config.region,
    lat: config.lat,
    lon: config.lon,
    executionProvider: repository.executionProvider,
    ready: repository.allReady && !lifecycle.draining,
    models: repository.heartbeatModels(),
    available: repository.availableModels(),
    capacity: scheduler.capacity,
  });

  const heartbeat = new Heartbeater({
    edgeUrl: config.edgeUrl,
    providerId: config.providerId,
    backendId: config.backendId,
    key,
    intervalMs: config.heartbeatIntervalMs,
    snapshot,
    apply: async ({ op, model }) => {
      const before = repository.state(model);
      if (op === 'load') await repository.load(model);
      else await repository.unload(model);
      return repository.state(model) !== before;
    },
    log,
    now: clock,
    ...(overrides.fetch ? { fetch: overrides.fetch } : {}),
  });

  const executor = new Executor({ repository, dispatch, metrics, lifecycle });
  const app = createApp({
    backendId: config.backendId,
    maxBodyBytes: config.maxBodyBytes,
    repository,
    executor,
    dispatch,
    attestor,
    probe: new ProbeSigner({ key, backendId: config.backendId }),
    metrics,
    lifecycle,
    log,
    sessions,
  });

  return { app, config, repository, scheduler, sessions, lifecycle, executor, heartbeat, metrics, snapshot };
}
