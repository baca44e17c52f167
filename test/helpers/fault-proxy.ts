/**
 * A fault-injecting TCP proxy for tests: put it in front of a real server
 * (a GPU backend) and make the link, or the server as the client sees it,
 * misbehave on demand. Plain `node:net`, loopback only, no dependencies.
 *
 *   const proxy = await startFaultProxy({ target: { host: '127.0.0.1', port } });
 *   await proxy.setFault({ kind: 'latency', ms: 200, jitterMs: 50 });
 *   ... proxy.stats.connections ...
 *   await proxy.close();
 *
 * Faults (`setFault` switches at any time; it resolves once the fault is in force):
 *
 * - `none`: bytes pass through unchanged.
 * - `latency { ms, jitterMs?, direction? }`: every chunk is held `ms` plus a
 *   uniform random [0, jitterMs) before it is passed on, per chunk and in
 *   order (a chunk never overtakes the one before it), like netem's delay.
 *   `direction` is `both` (default), `request` (client to target) or
 *   `response`; with `both`, one HTTP round trip gets about 2 x ms. Applies to
 *   live connections from their next chunk on.
 * - `slow { factor }`: each response is delayed so that it arrives `factor`
 *   times as late as the target produced it (time from the last request chunk
 *   to the first response chunk, times factor - 1, added to every chunk of
 *   that response): a server `factor` times slower.
 *   `slow { bytesPerSecond }`: response bytes trickle at that rate (chunks are
 *   split into twentieths of a second). Both only on the response direction.
 * - `hang { afterResponseBytes? }`: a new connection is accepted and read but
 *   never answered and never forwarded. A live connection hangs at its next
 *   chunk in either direction. With `afterResponseBytes`, requests still reach
 *   the target and that many bytes of each response pass before the
 *   connection hangs (a hang mid-response). A hung connection stays hung, even
 *   after the fault is cleared, until either side closes it.
 * - `reset { afterResponseBytes? }`: a new connection is accepted and reset
 *   at once (RST, `socket.resetAndDestroy()`); live connections are reset when
 *   the fault is set. With `afterResponseBytes`, requests reach the target and
 *   the connection is reset after that many bytes of a response.
 * - `down`: the listener is closed (new connections are refused,
 *   ECONNREFUSED) and live connections are reset; setting any other fault
 *   listens again on the same port.
 *
 * Every fault but `down` takes `share` (0..1, default 1): the fraction of
 * connections, or of HTTP requests, it acts on. Each connection draws a
 * number when it is accepted and draws again at each HTTP request head it
 * carries (a client chunk that starts with a method), and is affected while
 * its number is below `share`; so on keep-alive connections `share` is the
 * fraction of requests (and of their responses) that meet the fault.
 *
 * When the target cannot be reached (refused, reset) the client's connection
 * is reset too, so a dead target looks dead through the proxy. Data is
 * buffered without backpressure: this is a test tool for small messages.
 */

import net from 'node:net';

export type Direction = 'both' | 'request' | 'response';

export type Fault =
  | { kind: 'none' }
  | { kind: 'latency'; ms: number; jitterMs?: number; direction?: Direction; share?: number }
  | { kind: 'slow'; factor: number; share?: number }
  | { kind: 'slow'; bytesPerSecond: number; share?: number }
  | { kind: 'hang'; afterResponseBytes?: number; share?: number }
  | { kind: 'reset'; afterResponseBytes?: number; share?: number }
  | { kind: 'down' };

export type FaultKind = Fault['kind'];

export interface FaultProxyStats {
  /** Connections accepted (while down, refused ones never reach the proxy). */
  connections: number;
  /** Connections open now. */
  active: number;
  /** HTTP request heads seen from clients (chunks that start with a method), counted even on a hung connection. */
  requests: number;
  /** Bytes received from clients and from the target. */
  bytesIn: { request: number; response: number };
  /** Bytes passed on to the target and to clients. */
  bytesOut: { request: number; response: number };
  /**
   * What the faults did: `latency` and `slow` count delayed chunks; `hang`,
   * `reset` and `down` count connections hung, reset, or cut when going down.
   */
  faults: Record<Exclude<FaultKind, 'none'>, number>;
}

export interface FaultProxyOptions {
  target: { host: string; port: number };
  /** Port to listen on, 127.0.0.1; 0 (default) picks a free one. */
  listenPort?: number;
  /** Initial fault (default `none`). */
  fault?: Fault;
  /** Randomness for `share` and jitter (default Math.random). */
  random?: () => number;
}

export interface FaultProxy {
  port: number;
  /** `http://127.0.0.1:<port>` */
  url: string;
  /** Switches the fault; resolves once it is in force (for `down`, once the listener is closed). */
  setFault(fault: Fault): Promise<void>;
  /** The fault in force. */
  readonly fault: Fault;
  /** A copy of the counters at the time of the call. */
  readonly stats: FaultProxyStats;
  /** Closes the listener and resets every connection. */
  close(): Promise<void>;
}

type Item = Buffer | 'end';

interface Pipe {
  queue: { at: number; item: Item }[];
  /** Release time of the last queued item, so a later chunk never overtakes it. */
  last: number;
  timer: ReturnType<typeof setTimeout> | undefined;
}

interface Conn {
  client: net.Socket;
  upstream: net.Socket | undefined;
  roll: number;
  hung: boolean;
  closed: boolean;
  up: Pipe;
  down: Pipe;
  /** When the last request chunk arrived, for `slow { factor }`. */
  requestAt: number;
  /** Delay of the current response under `slow { factor }`; undefined until its first chunk. */
  responseDelay: number | undefined;
  /** Response bytes since the last request chunk, for `afterResponseBytes`. */
  responseBytes: number;
}

const METHOD = /^(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS) /;

const pipe = (): Pipe => ({ queue: [], last: 0, timer: undefined });

export async function startFaultProxy(options: FaultProxyOptions): Promise<FaultProxy> {
  const random = options.random ?? Math.random;
  const { host, port: targetPort } = options.target;
  let fault: Fault = options.fault ?? { kind: 'none' };
  const conns = new Set<Conn>();
  const stats: FaultProxyStats = {
    connections: 0,
    active: 0,
    requests: 0,
    bytesIn: { request: 0, response: 0 },
    bytesOut: { request: 0, response: 0 },
    faults: { latency: 0, slow: 0, hang: 0, reset: 0, down: 0 },
  };

  /** The fault acting on `conn` now, or undefined. */
  const active = (conn: Conn): Exclude<Fault, { kind: 'none' } | { kind: 'down' }> | undefined => {
    if (fault.kind === 'none' || fault.kind === 'down') return undefined;
    return conn.roll < (fault.share ?? 1) ? fault : undefined;
  };

  const finish = (conn: Conn) => {
    if (conn.closed) return;
    conn.closed = true;
    for (const p of [conn.up, conn.down]) {
      if (p.timer) clearTimeout(p.timer);
      p.timer = undefined;
      p.queue.length = 0;
    }
    conns.delete(conn);
    stats.active = conns.size;
  };

  const reset = (conn: Conn, why: 'reset' | 'down' | undefined) => {
    if (conn.closed) return;
    if (why) stats.faults[why] += 1;
    finish(conn);
    if (!conn.client.destroyed) conn.client.resetAndDestroy();
    if (conn.upstream && !conn.upstream.destroyed) conn.upstream.resetAndDestroy();
  };

  const hang = (conn: Conn) => {
    if (conn.hung || conn.closed) return;
    conn.hung = true;
    stats.faults.hang += 1;
    // Nothing queued goes out any more; the target is not needed.
    for (const p of [conn.up, conn.down]) {
      if (p.timer) clearTimeout(p.timer);
      p.timer = undefined;
      p.queue.length = 0;
    }
    if (conn.upstream && !conn.upstream.destroyed) conn.upstream.destroy();
  };

  /** Writes what is due from `p` to `to`, and arms a timer for the rest. */
  const pump = (conn: Conn, p: Pipe, to: () => net.Socket | undefined, dir: 'request' | 'response') => {
    if (p.timer) clearTimeout(p.timer);
    p.timer = undefined;
    const now = Date.now();
    while (p.queue.length > 0 && p.queue[0]!.at <= now) {
      const { item } = p.queue.shift()!;
      const sock = to();
      if (!sock || sock.destroyed || conn.closed || conn.hung) return;
      if (item === 'end') sock.end();
      else {
        stats.bytesOut[dir] += item.length;
        sock.write(item);
      }
    }
    if (p.queue.length > 0) p.timer = setTimeout(() => pump(conn, p, to, dir), p.queue[0]!.at - now);
  };

  const enqueue = (conn: Conn, dir: 'request' | 'response', item: Item, delayMs: number) => {
    const p = dir === 'request' ? conn.up : conn.down;
    const at = Math.max(Date.now() + delayMs, p.last);
    p.last = at;
    p.queue.push({ at, item });
    pump(conn, p, () => (dir === 'request' ? conn.upstream : conn.client), dir);
  };

  const latencyFor = (f: ReturnType<typeof active>, dir: 'request' | 'response'): number => {
    if (f?.kind !== 'latency') return 0;
    const d = f.direction ?? 'both';
    if (d !== 'both' && d !== dir) return 0;
    stats.faults.latency += 1;
    return f.ms + (f.jitterMs ? random() * f.jitterMs : 0);
  };

  const onRequestChunk = (conn: Conn, chunk: Buffer) => {
    stats.bytesIn.request += chunk.length;
    if (METHOD.test(chunk.subarray(0, 8).toString('latin1'))) {
      stats.requests += 1;
      conn.roll = random();
    }
    if (conn.hung || conn.closed) return;
    const f = active(conn);
    if (f?.kind === 'reset' && f.afterResponseBytes === undefined) return reset(conn, 'reset');
    if (f?.kind === 'hang' && f.afterResponseBytes === undefined) return hang(conn);
    conn.requestAt = Date.now();
    conn.responseDelay = undefined;
    conn.responseBytes = 0;
    enqueue(conn, 'request', chunk, latencyFor(f, 'request'));
  };

  const onResponseChunk = (conn: Conn, chunk: Buffer) => {
    stats.bytesIn.response += chunk.length;
    if (conn.hung || conn.closed) return;
    const f = active(conn);
    if ((f?.kind === 'reset' || f?.kind === 'hang') && f.afterResponseBytes === undefined) {
      return f.kind === 'reset' ? reset(conn, 'reset') : hang(conn);
    }
    if (f?.kind === 'reset' || f?.kind === 'hang') {
      const room = f.afterResponseBytes! - conn.responseBytes;
      if (room < chunk.length) {
        if (room > 0) {
          conn.responseBytes += room;
          enqueue(conn, 'response', chunk.subarray(0, room), 0);
        }
        // Let what may pass reach the client first.
        const now = Date.now();
        const at = Math.max(now, conn.down.last) - now;
        setTimeout(() => (f.kind === 'reset' ? reset(conn, 'reset') : hang(conn)), at + 5);
        return;
      }
    }
    conn.responseBytes += chunk.length;
    if (f?.kind === 'slow' && 'factor' in f) {
      conn.responseDelay ??= Math.max(0, (f.factor - 1) * (Date.now() - conn.requestAt));
      stats.faults.slow += 1;
      return enqueue(conn, 'response', chunk, conn.responseDelay);
    }
    if (f?.kind === 'slow' && 'bytesPerSecond' in f) {
      const bps = Math.max(1, f.bytesPerSecond);
      const piece = Math.max(1, Math.floor(bps / 20));
      stats.faults.slow += 1;
      for (let i = 0; i < chunk.length; i += piece) {
        const part = chunk.subarray(i, i + piece);
        const p = conn.down;
        const at = Math.max(Date.now(), p.last) + (part.length / bps) * 1000;
        enqueue(conn, 'response', part, at - Date.now());
      }
      return;
    }
    enqueue(conn, 'response', chunk, latencyFor(f, 'response'));
  };

  const onConnection = (client: net.Socket) => {
    stats.connections += 1;
    const conn: Conn = {
      client,
      upstream: undefined,
      roll: random(),
      hung: false,
      closed: false,
      up: pipe(),
      down: pipe(),
      requestAt: Date.now(),
      responseDelay: undefined,
      responseBytes: 0,
    };
    conns.add(conn);
    stats.active = conns.size;
    client.on('error', () => reset(conn, undefined));
    client.on('close', () => {
      finish(conn);
      if (conn.upstream && !conn.upstream.destroyed) conn.upstream.destroy();
    });
    if (fault.kind === 'down') return reset(conn, 'down');
    const f = active(conn);
    if (f?.kind === 'reset' && f.afterResponseBytes === undefined) return reset(conn, 'reset');
    client.on('data', (chunk: Buffer) => onRequestChunk(conn, chunk));
    client.on('end', () => {
      if (!conn.hung) enqueue(conn, 'request', 'end', 0);
    });
    if (f?.kind === 'hang' && f.afterResponseBytes === undefined) return hang(conn);

    client.pause();
    const upstream = net.connect({ host, port: targetPort });
    conn.upstream = upstream;
    upstream.on('connect', () => {
      if (!conn.closed) client.resume();
      pump(conn, conn.up, () => conn.upstream, 'request');
    });
    upstream.on('data', (chunk: Buffer) => onResponseChunk(conn, chunk));
    upstream.on('end', () => {
      if (!conn.hung) enqueue(conn, 'response', 'end', 0);
    });
    // The target refused or reset: so does the proxy (a dead target looks dead).
    upstream.on('error', () => {
      if (!conn.hung) reset(conn, undefined);
    });
    upstream.on('close', () => {
      if (conn.hung || conn.closed) return;
      // A plain close after 'end' is handled by the queued 'end'; anything else cuts the client.
      if (!upstream.readableEnded) reset(conn, undefined);
    });
  };

  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: false }, onConnection);
  let listening = false;
  const listen = (port: number) =>
    new Promise<number>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ port, host: '127.0.0.1', exclusive: true }, () => {
        server.off('error', reject);
        listening = true;
        resolve((server.address() as net.AddressInfo).port);
      });
    });
  const unlisten = (why: 'down' | undefined) =>
    new Promise<void>((resolve) => {
      for (const conn of [...conns]) reset(conn, why);
      if (!listening) return resolve();
      listening = false;
      server.close(() => resolve());
    });

  const port = await listen(options.listenPort ?? 0);
  if (fault.kind === 'down') await unlisten('down');
  let closed = false;

  return {
    port,
    url: `http://127.0.0.1:${port}`,
    get fault() {
      return fault;
    },
    get stats(): FaultProxyStats {
      return structuredClone(stats);
    },
    async setFault(next: Fault) {
      if (closed) throw new Error('fault proxy is closed');
      const was = fault;
      fault = next;
      if (next.kind === 'down') return unlisten('down');
      if (was.kind === 'down' && !listening) await listen(port);
      if (next.kind === 'reset' && next.afterResponseBytes === undefined) {
        for (const conn of [...conns]) if (active(conn)) reset(conn, 'reset');
      }
    },
    async close() {
      if (closed) return;
      closed = true;
      await unlisten(undefined);
    },
  };
}
