/**
 * The fault proxy of test/helpers against local servers on loopback: each
 * fault does what it says, on new and on live connections. Every wait is
 * bounded; every server and socket is closed at the end.
 */

import http from 'node:http';
import net from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startFaultProxy, type FaultProxy } from './fault-proxy.ts';

let server: http.Server;
let port: number;
let served = 0;
const proxies: FaultProxy[] = [];
const agents: http.Agent[] = [];

beforeAll(async () => {
  // /fast answers at once, /wait/<ms> after ms, /big/<n> with n bytes of body.
  server = http.createServer((req, res) => {
    served += 1;
    const [, what, arg] = (req.url ?? '/').split('/');
    const body = what === 'big' ? 'x'.repeat(Number(arg)) : `hello ${req.method}`;
    const answer = () => res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) }).end(body);
    req.resume();
    req.on('end', () => (what === 'wait' ? setTimeout(answer, Number(arg)) : answer()));
  });
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as net.AddressInfo).port;
});

afterEach(async () => {
  for (const a of agents.splice(0)) a.destroy();
  await Promise.all(proxies.splice(0).map((p) => p.close()));
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

async function proxy(options: Partial<Parameters<typeof startFaultProxy>[0]> = {}): Promise<FaultProxy> {
  const p = await startFaultProxy({ target: { host: '127.0.0.1', port }, ...options });
  proxies.push(p);
  return p;
}

function keepAlive(): http.Agent {
  const a = new http.Agent({ keepAlive: true, maxSockets: 1 });
  agents.push(a);
  return a;
}

interface Answer {
  status: number;
  body: string;
  ms: number;
}

/** One HTTP request through `p`; rejects with the socket error's code, or 'TIMEOUT' after timeoutMs. */
function request(p: FaultProxy, path = '/fast', { method = 'GET', agent = false as http.Agent | false, timeoutMs = 3_000 } = {}): Promise<Answer> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: p.port, path, method, agent }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, ms: performance.now() - started }));
      res.on('error', (err: NodeJS.ErrnoException) => reject(new Error(err.code ?? err.message)));
    });
    req.setTimeout(timeoutMs, () => req.destroy(Object.assign(new Error('TIMEOUT'), { code: 'TIMEOUT' })));
    req.on('error', (err: NodeJS.ErrnoException) => reject(new Error(err.code ?? err.message)));
    req.end(method === 'POST' ? 'some body' : undefined);
  });
}

/** A raw TCP connection through `p` that collects what comes back and how it ended. */
function raw(p: FaultProxy) {
  const sock = net.connect({ host: '127.0.0.1', port: p.port });
  const got: Buffer[] = [];
  const ended = new Promise<string>((resolve) => {
    sock.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
    sock.on('close', () => resolve('close'));
  });
  sock.on('data', (c: Buffer) => got.push(c));
  const connected = new Promise<void>((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', reject);
  });
  return { sock, connected, ended, received: () => Buffer.concat(got).toString('latin1') };
}

const within = <T>(ms: number, p: Promise<T>): Promise<T | 'TIMEOUT'> =>
  Promise.race([p, new Promise<'TIMEOUT'>((r) => setTimeout(() => r('TIMEOUT'), ms))]);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('fault proxy', () => {
  it('none: passes requests and answers through and counts them', async () => {
    const p = await proxy();
    const a = await request(p, '/fast', { method: 'POST' });
    expect(a).toMatchObject({ status: 200, body: 'hello POST' });
    const agent = keepAlive();
    for (let i = 0; i < 3; i++) expect((await request(p, '/fast', { agent })).status).toBe(200);
    const s = p.stats;
    expect(s.connections).toBe(2);
    expect(s.requests).toBe(4);
    expect(s.bytesOut.request).toBe(s.bytesIn.request);
    expect(s.bytesOut.response).toBe(s.bytesIn.response);
    expect(s.bytesIn.response).toBeGreaterThan(4 * 'hello GET'.length);
    expect(s.faults).toEqual({ latency: 0, slow: 0, hang: 0, reset: 0, down: 0 });
  });

  it('latency: adds ms (+ jitter) per direction, on new and on live connections', async () => {
    const p = await proxy();
    const agent = keepAlive();
    const base = await request(p, '/fast', { agent }); // opens the live connection
    await p.setFault({ kind: 'latency', ms: 150, direction: 'response' });
    const one = await request(p, '/fast', { agent });
    expect(p.stats.connections).toBe(1); // the same live connection
    expect(one.ms).toBeGreaterThanOrEqual(145);
    expect(one.ms).toBeLessThan(base.ms + 600);
    await p.setFault({ kind: 'latency', ms: 100, jitterMs: 100 }); // both directions: 200..400 ms a round trip
    const both = await request(p, '/fast');
    expect(both.ms).toBeGreaterThanOrEqual(195);
    expect(both.ms).toBeLessThan(900);
    expect(p.stats.faults.latency).toBeGreaterThanOrEqual(3);
    await p.setFault({ kind: 'none' });
    expect((await request(p, '/fast', { agent })).ms).toBeLessThan(100);
  });

  it('latency keeps the order of chunks', async () => {
    const p = await proxy({ fault: { kind: 'latency', ms: 20, jitterMs: 40 } });
    const a = await request(p, '/big/200000');
    expect(a.body).toBe('x'.repeat(200000));
  });

  it('slow { factor }: a response arrives factor times as late as the target made it', async () => {
    const p = await proxy({ fault: { kind: 'slow', factor: 5 } });
    const a = await request(p, '/wait/60');
    expect(a.status).toBe(200);
    expect(a.ms).toBeGreaterThanOrEqual(5 * 60 - 10);
    expect(a.ms).toBeLessThan(5 * 60 + 400);
    expect(p.stats.faults.slow).toBeGreaterThan(0);
  });

  it('slow { bytesPerSecond }: the body trickles at that rate', async () => {
    const p = await proxy({ fault: { kind: 'slow', bytesPerSecond: 20_000 } });
    const a = await request(p, '/big/6000');
    expect(a.body.length).toBe(6000);
    expect(a.ms).toBeGreaterThanOrEqual(280); // 6000 B + headers at 20 kB/s
    expect(a.ms).toBeLessThan(1_500);
  });

  it('hang: a new connection is read but never answered, nor forwarded', async () => {
    const p = await proxy({ fault: { kind: 'hang' } });
    const before = served;
    await expect(request(p, '/fast', { timeoutMs: 400 })).rejects.toThrow('TIMEOUT');
    expect(served).toBe(before);
    const s = p.stats;
    expect(s.requests).toBe(1);
    expect(s.bytesIn.request).toBeGreaterThan(0);
    expect(s.bytesOut.request).toBe(0);
    expect(s.faults.hang).toBe(1);
    // Cleared, new connections work again.
    await p.setFault({ kind: 'none' });
    expect((await request(p)).status).toBe(200);
  });

  it('hang: a live connection hangs at its next request', async () => {
    const p = await proxy();
    const agent = keepAlive();
    expect((await request(p, '/fast', { agent })).status).toBe(200);
    await p.setFault({ kind: 'hang' });
    await expect(request(p, '/fast', { agent, timeoutMs: 400 })).rejects.toThrow('TIMEOUT');
    expect(p.stats.connections).toBe(1);
  });

  it('hang { afterResponseBytes }: the request is served and the answer stops midway', async () => {
    const p = await proxy({ fault: { kind: 'hang', afterResponseBytes: 30 } });
    const before = served;
    const c = raw(p);
    await c.connected;
    c.sock.write('GET /big/5000 HTTP/1.1\r\nhost: x\r\n\r\n');
    expect(await within(500, c.ended)).toBe('TIMEOUT');
    expect(served).toBe(before + 1);
    expect(c.received()).toHaveLength(30);
    expect(c.received().startsWith('HTTP/1.1 200')).toBe(true);
    c.sock.destroy();
  });

  it('reset: new connections are reset at once, live ones when it is set', async () => {
    const p = await proxy();
    const live = raw(p);
    await live.connected;
    await sleep(20);
    await p.setFault({ kind: 'reset' });
    expect(await within(1_000, live.ended)).toBe('ECONNRESET');
    await expect(request(p)).rejects.toThrow(/ECONNRESET|socket hang up/);
    expect(p.stats.faults.reset).toBe(2);
    await p.setFault({ kind: 'none' });
    expect((await request(p)).status).toBe(200);
  });

  it('reset { afterResponseBytes }: the answer is cut by a reset', async () => {
    const p = await proxy({ fault: { kind: 'reset', afterResponseBytes: 40 } });
    const c = raw(p);
    await c.connected;
    c.sock.write('GET /big/5000 HTTP/1.1\r\nhost: x\r\n\r\n');
    expect(await within(1_000, c.ended)).toBe('ECONNRESET');
    expect(c.received().length).toBeLessThanOrEqual(40);
  });

  it('down: refuses connections and cuts live ones; any other fault listens again on the same port', async () => {
    const p = await proxy();
    const live = raw(p);
    await live.connected;
    await sleep(20);
    await p.setFault({ kind: 'down' });
    expect(await within(1_000, live.ended)).toBe('ECONNRESET');
    await expect(request(p)).rejects.toThrow('ECONNREFUSED');
    expect(p.stats.faults.down).toBe(1);
    await p.setFault({ kind: 'none' });
    expect((await request(p)).status).toBe(200);
  });

  it('share: only that fraction of connections is affected', async () => {
    // One draw per connection at accept, one per request head on it.
    const draws = [0.1, 0.9, 0.9, 0.3, 0.7, 0.7];
    let i = 0;
    const p = await proxy({ random: () => draws[i++ % draws.length]!, fault: { kind: 'reset', share: 0.5 } });
    const outcomes: string[] = [];
    for (let n = 0; n < 4; n++) outcomes.push(await request(p).then(() => 'ok', () => 'reset'));
    expect(outcomes).toEqual(['reset', 'ok', 'reset', 'ok']);
  });

  it('share: on a keep-alive connection, that fraction of requests is affected', async () => {
    // Accept: 0.9; then the requests: 0.9, 0.1 (stalled), 0.9.
    const draws = [0.9, 0.9, 0.1, 0.9];
    let i = 0;
    const p = await proxy({ random: () => draws[i++ % draws.length]!, fault: { kind: 'latency', ms: 300, direction: 'response', share: 0.5 } });
    const agent = keepAlive();
    const times: number[] = [];
    for (let n = 0; n < 3; n++) times.push((await request(p, '/fast', { agent })).ms);
    expect(p.stats.connections).toBe(1);
    expect(times.map((t) => t >= 290)).toEqual([false, true, false]);
  });

  it('a dead target looks dead: the client is reset', async () => {
    const dead = await new Promise<number>((resolve) => {
      const s = net.createServer();
      s.listen(0, '127.0.0.1', () => {
        const { port: free } = s.address() as net.AddressInfo;
        s.close(() => resolve(free));
      });
    });
    const p = await proxy({ target: { host: '127.0.0.1', port: dead } });
    await expect(request(p, '/fast', { timeoutMs: 1_000 })).rejects.toThrow(/ECONNRESET|socket hang up/);
  });
});
