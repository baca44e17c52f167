/**
 * The isolate's side of its PoP's service book in workerd, with its real
 * Cache API (Miniflare's): two exchanges stand for two isolates of one data
 * centre. The last test serves an inference through the app, its backend a
 * FAKE answering in-process (fake-backends.ts): a GPU backend cannot run
 * inside workerd.
 */

import { env } from 'cloudflare:workers';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { isolateServiceExchange, ServiceExchange } from '../../../workers/inference/service-exchange.ts';
import { isolateRouting, SERVICE_DECAY_MS } from '../../../workers/routing/isolate.ts';
import { LatencyBook } from '../../../workers/routing/latency.ts';
import { POP_BOOK_EXCHANGE_MS, PopBook } from '../../../workers/routing/pop-book.ts';
import { callWith, keyFor } from '../helpers.ts';
import { fakeBackends } from './fake-backends.ts';

afterEach(() => vi.restoreAllMocks());

const scoring = () => new LatencyBook({ histogram: false, ewma: { decayMs: SERVICE_DECAY_MS, fastUp: false } });
const keyOf = (pop: string) => `https://service-book.mesh.invalid/${pop}`;
const stored = async (pop: string) => {
  const found = await (await caches.open('mesh-routing')).match(keyOf(pop));
  return found ? PopBook.parse(await found.text()) : undefined;
};

describe('the service exchange', () => {
  it('gives an isolate what another isolate of its data centre measured, and then only what changed', async () => {
    const pop = 'XA1';
    const a = new ServiceExchange();
    const b = new ServiceExchange();
    const [bookA, bookB] = [scoring(), scoring()];
    a.note('b1', 'embed', 20, 1_000);
    a.note('b1', 'embed', 40, 1_100);
    expect(await a.exchange(pop, bookA, 1_200)).toBe(1);
    expect(a.outbox.size).toBe(0);
    // b never called b1: it scores it by what a measured, as of a's last sample.
    expect(await b.exchange(pop, bookB, 1_300)).toBe(1);
    expect(bookB.get('b1', 'embed')!.ewma.value(1_100)).toBe(30);
    // b's own sample reaches a at a's next exchange; b1, unchanged since a's last, is not given again.
    b.note('b2', 'ocr', 60, 2_000);
    expect(await b.exchange(pop, bookB, 2_300)).toBe(1);
    bookA.observe('b1', 'embed', 90, 2_350);
    const before = bookA.get('b1', 'embed')!.ewma.value(2_350);
    expect(await a.exchange(pop, bookA, 2_400)).toBe(1);
    expect(bookA.get('b2', 'ocr')!.ewma.value(2_000)).toBe(60);
    expect(bookA.get('b1', 'embed')!.ewma.value(2_350)).toBe(before);
    expect((await stored(pop))!.size).toBe(2);
  });

  it('runs at most once an interval, and one at a time', async () => {
    const pop = 'XA2';
    const x = new ServiceExchange();
    const book = scoring();
    x.note('b1', 'embed', 10, 0);
    const first = x.exchange(pop, book, 10_000);
    expect(x.due(10_000 + POP_BOOK_EXCHANGE_MS)).toBe(false);
    expect(await x.exchange(pop, book, 10_000 + POP_BOOK_EXCHANGE_MS)).toBeUndefined();
    expect(await first).toBe(1);
    expect(x.due(10_000 + POP_BOOK_EXCHANGE_MS - 1)).toBe(false);
    expect(x.due(10_000 + POP_BOOK_EXCHANGE_MS)).toBe(true);
  });

  it('starts a book again when the stored one does not read back', async () => {
    const pop = 'XA3';
    await (await caches.open('mesh-routing')).put(keyOf(pop), new Response('{"v":1,"entries":', { headers: { 'cache-control': 'max-age=60' } }));
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
    const x = new ServiceExchange();
    const book = scoring();
    x.note('b1', 'embed', 12, 500);
    expect(await x.exchange(pop, book, 1_000)).toBe(1);
    expect(warn).toHaveBeenCalledWith(expect.stringContaining('does not read back'));
    expect((await stored(pop))!.mean('b1', 'embed')).toBe(12);
  });

  it('never rejects when the cache fails, and leaves the isolate\'s own book as it was', async () => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
    const x = new ServiceExchange({ open: () => Promise.reject(new Error('no cache here')) });
    const book = scoring();
    book.observe('b1', 'embed', 10, 0);
    x.note('b1', 'embed', 10, 0);
    expect(await x.exchange('XA4', book, 1_000)).toBeUndefined();
    expect(warn).toHaveBeenCalledWith(expect.stringContaining('no cache here'));
    expect(book.get('b1', 'embed')!.ewma.value(0)).toBe(10);
    expect(x.due(1_000 + POP_BOOK_EXCHANGE_MS)).toBe(true);
  });

  it('gives, after a failed exchange, what changed since the last one that read the book', async () => {
    vi.spyOn(console, 'warn').mockImplementation(() => {});
    const pop = 'XA5';
    let failing = false;
    const x = new ServiceExchange({ open: () => (failing ? Promise.reject(new Error('down')) : caches.open('mesh-routing')) });
    const other = new ServiceExchange();
    const book = scoring();
    expect(await x.exchange(pop, book, 1_000)).toBe(0);
    other.note('b9', 'embed', 7, 1_400);
    expect(await other.exchange(pop, scoring(), 1_500)).toBe(1);
    failing = true;
    expect(await x.exchange(pop, book, 2_000)).toBeUndefined();
    failing = false;
    expect(await x.exchange(pop, book, 3_000)).toBe(1);
    expect(book.get('b9', 'embed')!.ewma.value(1_400)).toBe(7);
  });

  it('puts the service time of an answer the app served in its data centre\'s book, after the response', async () => {
    await fakeBackends(['book-a']);
    while (!isolateServiceExchange.due()) await scheduler.wait(50);
    const res = await callWith(env, '/v2/models/embed/infer', {
      method: 'POST',
      token: await keyFor('consumer', 'book-consumer'),
      headers: { 'x-mesh-dev-colo': 'FRA', 'x-mesh-verify': 'none', 'cache-control': 'no-store' },
      body: JSON.stringify({ inputs: [{ name: 'text', shape: [1], datatype: 'BYTES', data: ['a service time for the book'] }] }),
    });
    expect(res.status, await res.text()).toBe(200);
    expect(res.headers.get('x-mesh-backend')).toBe('book-a');
    // The runtime gave no colo: the data centre is 'unknown', whatever PoP the header simulates.
    const book = await stored('unknown');
    expect(book?.mean('book-a', 'embed')).toBe(1);
    expect(isolateRouting.latency.get('book-a', 'embed')!.ewma.value(Date.now())).toBeCloseTo(1, 6);
  });
});
