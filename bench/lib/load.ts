/**
 * A closed-loop HTTP load generator for single-use bearer tokens: `concurrency`
 * workers, each sending one request, waiting for its answer, then sending the
 * next, over keep-alive connections (node:http, one socket per worker), until
 * the deadline or until the pre-signed tokens run out. Every request spends
 * exactly one token, so none is wasted on a retry or a pre-built request.
 *
 * Why not autocannon: its latencies are whole milliseconds (too coarse for a
 * 5 ms model), and its request rotation would still need this token pool; this
 * is ~100 lines on node:http with microsecond timing and no dependency.
 */

import http from 'node:http';

export interface ClosedLoopOptions {
  /** e.g. http://127.0.0.1:9101/v2/models/embed/infer */
  url: string;
  /** The exact body every request sends (the tokens are bound to it). */
  body: Uint8Array;
  /** One per request, used in order; the run ends early when they run out. */
  tokens: readonly string[];
  concurrency: number;
  durationMs: number;
  /** Per-request bound; a request past it counts as an error. */
  timeoutMs?: number;
  /** Called with the first 200 response body, to check it once. */
  check?: (body: Buffer, headers: http.IncomingHttpHeaders) => void;
  /** Extra request headers, the same on every request. */
  headers?: Readonly<Record<string, string>>;
  /** Called with the headers and latency (ms) of every 200 answer. */
  onAnswer?: (headers: http.IncomingHttpHeaders, ms: number) => void;
}

export interface ClosedLoopResult {
  /** Latencies of the 200 answers, ms, in completion order. */
  latenciesMs: Float64Array;
  ok: number;
  /** Non-200 answers and transport errors, by status (0: transport error or timeout). */
  errors: Record<string, number>;
  /** First error bodies/messages seen (a few). */
  errorSamples: string[];
  /** From the first request sent to the last answer received, ms. */
  elapsedMs: number;
  /** True when the tokens ran out before the deadline. */
  exhausted: boolean;
}

export async function closedLoop(o: ClosedLoopOptions): Promise<ClosedLoopResult> {
  const url = new URL(o.url);
  const agent = new http.Agent({ keepAlive: true, maxSockets: o.concurrency, maxFreeSockets: o.concurrency });
  const latencies = new Float64Array(o.tokens.length);
  const errors: Record<string, number> = {};
  const errorSamples: string[] = [];
  let ok = 0;
  let next = 0;
  let checked = o.check === undefined;
  const timeoutMs = o.timeoutMs ?? 10_000;
  const bodyLength = String(o.body.byteLength);

  const fail = (key: string, sample: string) => {
    errors[key] = (errors[key] ?? 0) + 1;
    if (errorSamples.length < 5) errorSamples.push(`${key}: ${sample.slice(0, 300)}`);
  };

  const once = (token: string) =>
    new Promise<void>((resolve) => {
      const t0 = performance.now();
      const req = http.request(
        {
          agent,
          host: url.hostname,
          port: url.port,
          path: url.pathname,
          method: 'POST',
          headers: { ...o.headers, 'content-type': 'application/json', 'content-length': bodyLength, authorization: `Bearer ${token}` },
        },
        (res) => {
          const status = res.statusCode ?? 0;
          const keep = status !== 200 || !checked;
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => {
            if (keep) chunks.push(c);
          });
          res.on('end', () => {
            const ms = performance.now() - t0;
            if (status === 200) {
              latencies[ok++] = ms;
              o.onAnswer?.(res.headers, ms);
              if (!checked) {
                checked = true;
                try {
                  o.check!(Buffer.concat(chunks), res.headers);
                } catch (err) {
                  fail('bad-answer', (err as Error).message);
                }
              }
            } else fail(String(status), Buffer.concat(chunks).toString('utf8'));
            resolve();
          });
          res.on('error', (err) => {
            fail('0', err.message);
            resolve();
          });
        },
      );
      req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
      req.on('error', (err) => {
        fail('0', err.message);
        resolve();
      });
      req.end(o.body);
    });

  const started = performance.now();
  const deadline = started + o.durationMs;
  let last = started;
  const worker = async () => {
    while (performance.now() < deadline && next < o.tokens.length) {
      await once(o.tokens[next++]!);
      last = performance.now();
    }
  };
  await Promise.all(Array.from({ length: o.concurrency }, worker));
  agent.destroy();
  return {
    latenciesMs: latencies.subarray(0, ok),
    ok,
    errors,
    errorSamples,
    elapsedMs: last - started,
    exhausted: next >= o.tokens.length && last < deadline,
  };
}

/** The q-quantile (0..1) of `values` by nearest rank; NaN when empty. */
export function quantile(values: Float64Array, q: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = Float64Array.from(values).sort();
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank]!;
}
