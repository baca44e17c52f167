/**
 * The Hugging Face fallback's one `fetch` against `@huggingface/inference`,
 * the client it replaces in the Worker: for each endpoint answer (global fetch
 * stubbed; no network), both send the same request and both succeed or both
 * fail, and every failure is `backend_failed`. Then what only the Worker does:
 * the size cap on the answer, the timeout, the shape check.
 */

import { env } from 'cloudflare:test';
import { InferenceClient } from '@huggingface/inference';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { MeshError } from '../../../shared/errors.ts';
import type { Env } from '../../../workers/env.ts';
import { parseCatalogue } from '../../../workers/inference/catalogue.ts';
import { embedOnHuggingFace, endpointFor, fallbackFor, HF_MAX_ANSWER_BYTES } from '../../../workers/inference/fallback.ts';

const ENDPOINT = 'https://embed.endpoints.huggingface.test/v1';
const TOKEN = 'hf_unit_test_token';
const UPSTREAM = 'sentence-transformers/all-MiniLM-L6-v2';

afterEach(() => vi.restoreAllMocks());

function withEndpoint(over: Partial<Env> = {}): Env {
  return { ...env, HF_ENDPOINT_URL: ENDPOINT, HF_TOKEN: TOKEN, ...over };
}

interface Sent {
  url: string;
  method: string | undefined;
  /** Lower-cased names; `user-agent` left out (the client names itself there). */
  headers: Record<string, string>;
  body: unknown;
}

/** Stubs fetch with `answers` (one per call, the last repeated) and records what is sent. */
function stubFetch(...answers: (() => Response | Promise<Response>)[]): Sent[] {
  const sent: Sent[] = [];
  vi.spyOn(globalThis, 'fetch').mockImplementation(async (input: RequestInfo | URL, init?: RequestInit) => {
    init?.signal?.throwIfAborted();
    const headers = Object.fromEntries([...new Headers(init?.headers)].filter(([name]) => name !== 'user-agent'));
    sent.push({ url: String(input), method: init?.method, headers, body: JSON.parse(String(init?.body)) });
    return answers[Math.min(sent.length, answers.length) - 1]!();
  });
  return sent;
}

const json = (value: unknown, status = 200, contentType = 'application/json') => () =>
  new Response(typeof value === 'string' ? value : JSON.stringify(value), { status, headers: { 'content-type': contentType } });

async function outcome<T>(p: Promise<T>): Promise<{ ok: true; value: T } | { ok: false; error: unknown }> {
  try {
    return { ok: true, value: await p };
  } catch (error) {
    return { ok: false, error };
  }
}

async function viaClient(texts: string[], answers: (() => Response)[], token = TOKEN) {
  const sent = stubFetch(...answers);
  const client = new InferenceClient(token, { endpointUrl: ENDPOINT });
  const result = await outcome(client.featureExtraction({ inputs: texts.length === 1 ? texts[0]! : texts }, { signal: AbortSignal.timeout(5_000) }));
  vi.restoreAllMocks();
  return { sent, result };
}

async function viaWorker(texts: string[], answers: (() => Response)[], e: Env = withEndpoint()) {
  const sent = stubFetch(...answers);
  const result = await outcome(embedOnHuggingFace(e, 'embed', UPSTREAM, texts, 'embedding', 5_000));
  vi.restoreAllMocks();
  return { sent, result };
}

/** The OIP data the Worker answered with. */
function data(body: Uint8Array): unknown {
  return (JSON.parse(new TextDecoder().decode(body)) as { outputs: { shape: number[]; data: number[] }[] }).outputs[0];
}

function expectBackendFailed(error: unknown, message = /the Hugging Face fallback failed too/) {
  expect(error).toBeInstanceOf(MeshError);
  expect((error as MeshError).code).toBe('backend_failed');
  expect((error as MeshError).message).toMatch(message);
}

const SCENARIOS: { name: string; texts: string[]; answers: (() => Response)[]; ok: boolean }[] = [
  { name: 'one text, one row', texts: ['hello'], answers: [json([0.6, 0.8])], ok: true },
  { name: 'two texts, two rows', texts: ['ab', 'abcd'], answers: [json([[2, 1], [4, 1]])], ok: true },
  { name: 'JSON with a charset', texts: ['a'], answers: [json([1, 2], 200, 'application/json; charset=utf-8')], ok: true },
  { name: '503 (scaling up), then an answer', texts: ['a'], answers: [json({ error: 'loading' }, 503), json('', 503, 'text/plain'), json([1, 2])], ok: true },
  { name: 'HTTP 500 with a JSON error', texts: ['a'], answers: [json({ error: 'boom' }, 500)], ok: false },
  { name: 'HTTP 400 in plain text', texts: ['a'], answers: [json('bad input', 400, 'text/plain; charset=utf-8')], ok: false },
  { name: 'HTTP 401 without a body', texts: ['a'], answers: [() => new Response(null, { status: 401 })], ok: false },
  { name: 'a 200 that is not JSON', texts: ['a'], answers: [json('[1,2]', 200, 'text/plain')], ok: false },
  { name: 'a 200 with an upper-case JSON type', texts: ['a'], answers: [json([1, 2], 200, 'Application/JSON')], ok: false },
  { name: 'a 200 whose JSON does not parse', texts: ['a'], answers: [json('[1,', 200)], ok: false },
  { name: 'a 200 with an empty body', texts: ['a'], answers: [json('', 200)], ok: false },
  { name: 'a JSON object', texts: ['a'], answers: [json({ embeddings: [1, 2] })], ok: false },
  { name: 'strings, not numbers', texts: ['a'], answers: [json(['1', '2'])], ok: false },
  { name: 'arrays nested five deep', texts: ['a'], answers: [json([[[[[1]]]]])], ok: false },
];

describe('the Hugging Face fallback request, next to @huggingface/inference', () => {
  for (const s of SCENARIOS) {
    it(`${s.name}: the same request, the same outcome`, async () => {
      const client = await viaClient(s.texts, s.answers);
      const worker = await viaWorker(s.texts, s.answers);
      expect(worker.sent).toEqual(client.sent);
      expect(worker.sent[0]).toEqual({
        url: ENDPOINT,
        method: 'POST',
        headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
        body: { inputs: s.texts.length === 1 ? s.texts[0] : s.texts },
      });
      expect(client.result.ok).toBe(s.ok);
      expect(worker.result.ok).toBe(s.ok);
      if (client.result.ok && worker.result.ok) {
        const rows = (s.texts.length === 1 ? [client.result.value] : client.result.value) as number[][];
        expect(data(worker.result.value.body)).toEqual({ name: 'embedding', datatype: 'FP32', shape: [rows.length, rows[0]!.length], data: rows.flat() });
        expect(worker.result.value.endpoint).toBe('embed.endpoints.huggingface.test');
      }
      if (!worker.result.ok) expectBackendFailed(worker.result.error);
    });
  }

  it('sends no authorization header without a token, like the client', async () => {
    const client = await viaClient(['a'], [json([1])], '');
    const worker = await viaWorker(['a'], [json([1])], withEndpoint({ HF_TOKEN: undefined as unknown as string }));
    expect(worker.sent).toEqual(client.sent);
    expect(worker.sent[0]!.headers).toEqual({ 'content-type': 'application/json' });
    expect(worker.result.ok).toBe(true);
  });
});

describe('the Hugging Face fallback answer', () => {
  it('refuses an answer over the cap by its content-length, unread', async () => {
    let pulled = 0;
    const body = new ReadableStream<Uint8Array>({ pull: (c) => void (pulled++, c.enqueue(new Uint8Array(1024))) });
    const { result } = await viaWorker(['a'], [() => new Response(body, { headers: { 'content-type': 'application/json', 'content-length': String(HF_MAX_ANSWER_BYTES + 1) } })]);
    expect(result.ok).toBe(false);
    if (!result.ok) {
      expectBackendFailed(result.error);
      expect(((result.error as MeshError).cause as Error).message).toMatch(/larger than/);
    }
    expect(pulled).toBeLessThanOrEqual(1);
  });

  it('stops reading a streamed answer once it passes the cap', async () => {
    const chunk = new Uint8Array(1024 * 1024).fill(0x20);
    let sent = 0;
    let cancelled = false;
    const body = new ReadableStream<Uint8Array>({
      pull: (c) => void (sent += chunk.byteLength, c.enqueue(chunk)),
      cancel: () => void (cancelled = true),
    });
    const { result } = await viaWorker(['a'], [() => new Response(body, { headers: { 'content-type': 'application/json' } })]);
    expect(result.ok).toBe(false);
    if (!result.ok) {
      expectBackendFailed(result.error);
      expect(((result.error as MeshError).cause as Error).message).toMatch(/larger than/);
    }
    expect(cancelled).toBe(true);
    expect(sent).toBeLessThan(HF_MAX_ANSWER_BYTES + 4 * chunk.byteLength);
  });

  it('gives up at the timeout with backend_failed, as with the client', async () => {
    vi.spyOn(globalThis, 'fetch').mockImplementation(
      (_input: RequestInfo | URL, init?: RequestInit) =>
        new Promise<Response>((_resolve, reject) => init?.signal?.addEventListener('abort', () => reject(init.signal!.reason))),
    );
    const started = Date.now();
    const err = await embedOnHuggingFace(withEndpoint(), 'embed', UPSTREAM, ['a'], 'embedding', 50).catch((e: unknown) => e);
    expectBackendFailed(err);
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it('retries a 503 after a growing pause (100, 200, 300 ms...), only until the timeout', async () => {
    // Each 503 takes a moment, as over a network.
    const sent = stubFetch(() => new Promise<Response>((resolve) => setTimeout(() => resolve(json({ error: 'loading' }, 503)()), 5)));
    const started = Date.now();
    const err = await embedOnHuggingFace(withEndpoint(), 'embed', UPSTREAM, ['a'], 'embedding', 450).catch((e: unknown) => e);
    expectBackendFailed(err);
    // At once, after 100 ms and after 200 more (the third may miss the timeout on a busy machine); the next
    // pause (300 ms) outlasts it. The client, retrying at once, would send dozens.
    expect(sent.length).toBeGreaterThanOrEqual(2);
    expect(sent.length).toBeLessThanOrEqual(3);
    expect(Date.now() - started).toBeLessThan(2_000);
  });

  it('refuses numbers that are not one embedding per input, with the shape message', async () => {
    const { result } = await viaWorker(['a', 'b'], [json([[1, 2]])]);
    expect(result.ok).toBe(false);
    if (!result.ok) expectBackendFailed(result.error, /not one embedding per input/);
    const client = await viaClient(['a', 'b'], [json([[1, 2]])]);
    expect(client.result.ok).toBe(true);
  });
});

describe('when a request may fall back (the operator\'s fallback table, residency and pins)', () => {
  const models = parseCatalogue({
    embed: { meter: 'tokens', price: { input: 0.1 }, fallback: { model: UPSTREAM, price: { input: 0.2 } } },
    'embed-eu': { meter: 'tokens', price: { input: 0.1 }, fallback: { model: UPSTREAM, price: { input: 0.2 }, region: 'eu-west' } },
    classifier: { meter: 'rows', price: { output: 5 } },
  });
  const noBackend = new MeshError('no_capacity', 'none');
  const e = withEndpoint();

  it('falls back only for a model the table gives a fallback, for text, on a "no backend can serve" error', () => {
    expect(fallbackFor(e, noBackend, models.get('embed')!, ['a'], undefined)).toEqual({ model: UPSTREAM, price: { input: 0.2, output: 0 } });
    expect(fallbackFor(e, noBackend, models.get('classifier')!, ['a'], undefined)).toBeUndefined();
    expect(fallbackFor(e, noBackend, models.get('embed')!, undefined, undefined)).toBeUndefined();
    expect(fallbackFor(e, new MeshError('invalid_request', 'bad'), models.get('embed')!, ['a'], undefined)).toBeUndefined();
    expect(fallbackFor(withEndpoint({ HF_ENDPOINT_URL: '' }), noBackend, models.get('embed')!, ['a'], undefined)).toBeUndefined();
  });

  it('honours residency and pins: only a fallback that names an allowed region', () => {
    expect(fallbackFor(e, noBackend, models.get('embed')!, ['a'], new Set(['eu-west']))).toBeUndefined();
    expect(fallbackFor(e, noBackend, models.get('embed-eu')!, ['a'], new Set(['eu-west']))?.region).toBe('eu-west');
    expect(fallbackFor(e, noBackend, models.get('embed-eu')!, ['a'], new Set(['us-east']))).toBeUndefined();
  });

  it('puts the upstream model id where the endpoint URL says {model}', () => {
    expect(endpointFor(withEndpoint({ HF_ENDPOINT_URL: 'https://router.example/models/{model}/pipeline/feature-extraction' }), UPSTREAM)).toBe(
      `https://router.example/models/${UPSTREAM}/pipeline/feature-extraction`,
    );
    expect(endpointFor(e, UPSTREAM)).toBe(ENDPOINT);
  });
});
