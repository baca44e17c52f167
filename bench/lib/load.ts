/**
 * A closed-loop HTTP load generator for single-use bearer tokens: `concurrency`
 * workers, each sending one request, waiting for its answer, then sending the
 * next, over keep-alive connections (node:http, one socket per worker), until
 * the deadline or until the pre-signed tokens run out (`closedLoop`; and
 * `interleavedLoop`, which alternates several endpoints request by request). Every request spends
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
  /** Extra request headers, the same on every request (a `content-type` here replaces the default application/json). */
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
  const [result] = await interleavedLoop({
    targets: [{ url: o.url, tokens: o.tokens, ...(o.headers ? { headers: o.headers } : {}), ...(o.check ? { check: o.check } : {}), ...(o.onAnswer ? { onAnswer: o.onAnswer } : {}) }],
    body: o.body,
    concurrency: o.concurrency,
    durationMs: o.durationMs,
    ...(o.timeoutMs !== undefined ? { timeoutMs: o.timeoutMs } : {}),
  });
  return result!;
}

/** One endpoint of an interleaved loop: its URL, token pool and per-target options. */
export interface LoopTarget extends Pick<ClosedLoopOptions, 'url' | 'tokens' | 'headers' | 'check' | 'onAnswer'> {
  /** This target's own body (its tokens bound to it); default the loop's `body`. */
  body?: Uint8Array;
  /** A body per request instead (`i`: the target's request number, from 0), for tokens bound to no body (consumer keys). */
  bodyFor?: (i: number) => Uint8Array;
}

export interface InterleavedLoopOptions {
  targets: readonly LoopTarget[];
  /** The body of every target that has none of its own. */
  body: Uint8Array;
  concurrency: number;
  durationMs: number;
  timeoutMs?: number;
}

/**
 * A closed loop over several endpoints at once, request by request: each
 * worker sends to target 0, then 1, ... then 0 again (worker w starts at
 * target w mod n), so every target meets the same machine at the same time,
 * and a drift of the machine's speed lands on all of them alike. Each target
 * has its own token pool and keep-alive sockets; the loop ends at the
 * deadline or when any pool runs out. One result per target, in order.
 */
export async function interleavedLoop(o: InterleavedLoopOptions): Promise<ClosedLoopResult[]> {
  const timeoutMs = o.timeoutMs ?? 10_000;
  const targets = o.targets.map((t) => ({
    t,
    body: t.body ?? o.body,
    bodyLength: String((t.body ?? o.body).byteLength),
    url: new URL(t.url),
    agent: new http.Agent({ keepAlive: true, maxSockets: o.concurrency, maxFreeSockets: o.concurrency }),
    latencies: new Float64Array(t.tokens.length),
    errors: {} as Record<string, number>,
    errorSamples: [] as string[],
    ok: 0,
    next: 0,
    checked: t.check === undefined,
    last: 0,
  }));
  type Target = (typeof targets)[number];

  const fail = (target: Target, key: string, sample: string) => {
    target.errors[key] = (target.errors[key] ?? 0) + 1;
    if (target.errorSamples.length < 5) target.errorSamples.push(`${key}: ${sample.slice(0, 300)}`);
  };

  const once = (target: Target, token: string, i: number) =>
    new Promise<void>((resolve) => {
      const body = target.t.bodyFor ? target.t.bodyFor(i) : target.body;
      const t0 = performance.now();
      const req = http.request(
        {
          agent: target.agent,
          host: target.url.hostname,
          port: target.url.port,
          path: target.url.pathname,
          method: 'POST',
          headers: { 'content-type': 'application/json', ...target.t.headers, 'content-length': target.t.bodyFor ? String(body.byteLength) : target.bodyLength, authorization: `Bearer ${token}` },
        },
        (res) => {
          const status = res.statusCode ?? 0;
          const keep = status !== 200 || !target.checked;
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => {
            if (keep) chunks.push(c);
          });
          res.on('end', () => {
            const ms = performance.now() - t0;
            if (status === 200) {
              target.latencies[target.ok++] = ms;
              target.t.onAnswer?.(res.headers, ms);
              if (!target.checked) {
                target.checked = true;
                try {
                  target.t.check!(Buffer.concat(chunks), res.headers);
                } catch (err) {
                  fail(target, 'bad-answer', (err as Error).message);
                }
              }
            } else fail(target, String(status), Buffer.concat(chunks).toString('utf8'));
            resolve();
          });
          res.on('error', (err) => {
            fail(target, '0', err.message);
            resolve();
          });
        },
      );
      req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
      req.on('error', (err) => {
        fail(target, '0', err.message);
        resolve();
      });
      req.end(body);
    });

  const started = performance.now();
  const deadline = started + o.durationMs;
  const left = () => targets.every((t) => t.next < t.t.tokens.length);
  const worker = async (w: number) => {
    for (let i = w; performance.now() < deadline && left(); i++) {
      const target = targets[i % targets.length]!;
      const n = target.next++;
      await once(target, target.t.tokens[n]!, n);
      target.last = performance.now();
    }
  };
  await Promise.all(Array.from({ length: o.concurrency }, (_, w) => worker(w)));
  for (const t of targets) t.agent.destroy();
  const last = Math.max(...targets.map((t) => t.last));
  const exhausted = !left() && last < deadline;
  return targets.map((t) => ({
    latenciesMs: t.latencies.subarray(0, t.ok),
    ok: t.ok,
    errors: t.errors,
    errorSamples: t.errorSamples,
    elapsedMs: Math.max(t.last, started) - started,
    exhausted,
  }));
}

/** The q-quantile (0..1) of `values` by nearest rank; NaN when empty. */
export function quantile(values: Float64Array, q: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = Float64Array.from(values).sort();
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank]!;
}

/** The median of the finite `values` (the mean of the middle two for an even count); NaN when there are none. */
export function median(values: readonly number[]): number {
  const s = values.filter(Number.isFinite).sort((a, b) => a - b);
  if (s.length === 0) return Number.NaN;
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}
