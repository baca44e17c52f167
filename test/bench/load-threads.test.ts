/**
 * The load generator over several threads: each pre-signed token is sent at
 * most once whichever thread sends it, the counts and latencies of every
 * thread are merged, refusals are counted by status, and the first answer is
 * checked once, here.
 */

import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closedLoopThreads } from '../../bench/lib/load-threads.ts';

let server: Server;
let url: string;
const seen: string[] = [];

beforeAll(async () => {
  server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      const token = (req.headers.authorization ?? '').replace(/^Bearer /, '');
      seen.push(token);
      // Every tenth token is refused, as a full queue would be.
      if (token.endsWith('0')) res.writeHead(429, { 'content-type': 'application/json' }).end('{"error":{"code":"rate_limited"}}');
      else res.writeHead(200, { 'content-type': 'application/json', 'x-token': token }).end(`{"token":"${token}"}`);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/infer`;
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

describe('closedLoopThreads', () => {
  it.each([1, 3])('sends each token at most once and merges what %i thread(s) saw', async (threads) => {
    seen.length = 0;
    const tokens = Array.from({ length: 300 }, (_, i) => `t${threads}-${i}`);
    const checked: string[] = [];
    const result = await closedLoopThreads({
      url,
      body: new TextEncoder().encode('{}'),
      tokens,
      concurrency: 6,
      durationMs: 10_000,
      threads,
      check: (body, headers) => checked.push(`${String(headers['x-token'])} ${body.toString()}`),
    });
    // The pool ran out long before the deadline: every token was sent, exactly once.
    expect(result.exhausted).toBe(true);
    expect([...seen].sort()).toEqual([...tokens].sort());
    expect(result.ok).toBe(270);
    expect(result.latenciesMs.length).toBe(270);
    expect(result.errors).toEqual({ '429': 30 });
    expect(result.errorSamples[0]).toMatch(/^429: .*rate_limited/);
    expect(checked).toHaveLength(1);
    expect(checked[0]).toMatch(/^(t\S+) \{"token":"\1"\}$/);
    expect(Math.min(...result.latenciesMs)).toBeGreaterThan(0);
  });
});
