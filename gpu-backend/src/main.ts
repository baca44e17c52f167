/**
 * The backend process: `npm run backend` (node gpu-backend/src/main.ts).
 * Only wiring: read the config, make sure the model repository exists
 * (generating the demo models when it does not), load and warm the models,
 * listen (on the main thread, or on HTTP workers: http/http-pool.ts), heartbeat,
 * and drain on SIGTERM/SIGINT. Prints one line when it is ready:
 * `backend <id> ready: <models> warm on <provider>, listening on <url> (<how>)`.
 */

import { serve } from '@hono/node-server';
import { existsSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { availableParallelism } from 'node:os';
import { createBackend } from './backend.ts';
import { ConfigError, loadConfig } from './config.ts';
import { prepareRepository } from './models.ts';
import { HttpPool, httpThreadsFor } from './http/http-pool.ts';
import { closeServer } from './lifecycle.ts';
import { stdioLogger } from './log.ts';

const DRAIN_TIMEOUT_MS = 10_000;

async function main(): Promise<void> {
  const config = loadConfig(process.env);
  const log = stdioLogger(`backend ${config.backendId}`);

  if (!existsSync(config.modelRepository)) {
    log.info(`model repository ${config.modelRepository} does not exist: writing the shipped models into it`);
    await prepareRepository(config.modelRepository, (line) => log.info(line));
  }

  const backend = await createBackend(config, log);
  const loaded = await backend.repository.loadAll(config.models);

  const threadCount = httpThreadsFor(config.httpThreads, availableParallelism());
  let address: AddressInfo;
  let stopListening: (timeoutMs: number) => Promise<boolean>;
  if (threadCount === 0) {
    const server = serve({ fetch: backend.app.fetch, hostname: config.host, port: config.port }) as Server;
    address = await new Promise<AddressInfo>((resolve, reject) => {
      server.once('listening', () => resolve(server.address() as AddressInfo));
      server.once('error', reject);
    });
    stopListening = (timeoutMs) => closeServer(server, backend.lifecycle, timeoutMs);
  } else {
    const pool = await HttpPool.start({ count: threadCount, config, executor: backend.executor, app: backend.app, log });
    address = pool.address;
    stopListening = async (timeoutMs) => {
      const started = Date.now();
      const idle = await pool.drain(timeoutMs);
      // Forwarded requests are the main thread's too: they are done when their worker is.
      const rest = await backend.lifecycle.idle(Math.max(0, timeoutMs - (Date.now() - started)));
      await pool.terminate();
      return idle && rest;
    };
  }
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const listening = `http://${host}:${address.port}`;
  if (config.port === 0 && !process.env.PUBLIC_URL) config.publicUrl = listening;

  backend.heartbeat.start();
  const names = loaded.map((m) => m.name).join(', ');
  const http = threadCount === 0 ? 'HTTP on the main thread' : `${threadCount} HTTP threads`;
  log.info(`backend ${config.backendId} ready: ${names} warm on ${backend.repository.executionProvider}, listening on ${listening} (${http})`);

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) {
      log.warn(`${signal} again: exiting now`);
      process.exit(1);
    }
    stopping = true;
    log.info(`${signal}: draining (not ready, finishing requests in flight, at most ${DRAIN_TIMEOUT_MS / 1000} s)`);
    backend.lifecycle.beginDrain();
    await backend.heartbeat.stop();
    const idle = await stopListening(DRAIN_TIMEOUT_MS);
    if (!idle) log.warn(`request(s) still in flight after ${DRAIN_TIMEOUT_MS / 1000} s; exiting anyway`);
    await backend.repository.close();
    log.info('stopped');
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
}

main().catch((err: unknown) => {
  const log = stdioLogger('backend');
  if (err instanceof ConfigError) log.error(`configuration error: ${err.message}`);
  else log.error('failed to start', err);
  process.exit(1);
});
