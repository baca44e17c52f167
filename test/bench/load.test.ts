/**
 * The interleaved closed loop: with one worker, requests alternate between
 * the endpoints one by one; every token goes to its own endpoint, at most
 * once; the loop stops when one pool runs out; each endpoint's answers and
 * failures are counted apart.
 */

import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { interleavedLoop } from '../../bench/lib/load.ts';

const hits: string[] = [];
let servers: Server[] = [];
let urls: string[] = [];

beforeAll(async () => {
  servers = ['a', 'b'].map((name) =>
    createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        hits.push(`${name}:${(req.headers.authorization ?? '').replace(/^Bearer /, '')}`);
        // Endpoint b refuses its token 3.
        if (name === 'b' && req.headers.authorization === 'Bearer b3') res.writeHead(503).end('busy');
        else res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      });
    }),
  );
  urls = await Promise.all(
    servers.map(
      (s) =>
        new Promise<string>((resolve) => s.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${(s.address() as AddressInfo).port}/x`))),
    ),
  );
});
afterAll(() => Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve())))));

describe('interleavedLoop', () => {
  it('alternates the endpoints request by request and counts each apart', async () => {
    hits.length = 0;
    const [a, b] = await interleavedLoop({
      targets: [
        { url: urls[0]!, tokens: Array.from({ length: 10 }, (_, i) => `a${i}`) },
        { url: urls[1]!, tokens: Array.from({ length: 6 }, (_, i) => `b${i}`) },
      ],
      body: new TextEncoder().encode('{}'),
      concurrency: 1,
      durationMs: 10_000,
    });
    // One worker: a0 b0 a1 b1 ... until b's six tokens are spent.
    expect(hits).toEqual(Array.from({ length: 6 }, (_, i) => [`a:a${i}`, `b:b${i}`]).flat());
    expect(a).toMatchObject({ ok: 6, errors: {}, exhausted: true });
    expect(b).toMatchObject({ ok: 5, errors: { '503': 1 }, exhausted: true });
    expect(b!.errorSamples[0]).toBe('503: busy');
    expect(a!.latenciesMs).toHaveLength(6);
  });

  it('starts each worker on another endpoint, so both see the same concurrency', async () => {
    hits.length = 0;
    const [a, b] = await interleavedLoop({
      targets: [
        { url: urls[0]!, tokens: Array.from({ length: 40 }, (_, i) => `a${i}`) },
        { url: urls[1]!, tokens: Array.from({ length: 40 }, (_, i) => `c${i}`) },
      ],
      body: new TextEncoder().encode('{}'),
      concurrency: 4,
      durationMs: 10_000,
    });
    expect(new Set(hits).size).toBe(hits.length);
    expect(Math.abs(a!.ok - b!.ok)).toBeLessThanOrEqual(4);
    expect(a!.ok + b!.ok).toBe(hits.length);
  });
});
