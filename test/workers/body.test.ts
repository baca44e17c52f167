import { describe, expect, it } from 'vitest';
import { readWithin } from '../../workers/body.ts';
import { call, keyFor } from './helpers.ts';

/** A stream of `chunks` chunks of `size` bytes that counts what was pulled and whether it was cancelled. */
function counted(chunks: number, size: number) {
  const seen = { pulled: 0, cancelled: false };
  const stream = new ReadableStream<Uint8Array>({
    pull(c) {
      if (seen.pulled === chunks) return c.close();
      seen.pulled++;
      c.enqueue(new Uint8Array(size).fill(0x20));
    },
    cancel() {
      seen.cancelled = true;
    },
  });
  return { stream, seen };
}

describe('reading a body within a limit', () => {
  it('reads a streamed body within the limit whole', async () => {
    const { stream } = counted(3, 10);
    expect((await readWithin(new Response(stream), 30))?.byteLength).toBe(30);
  });

  it('stops reading a streamed body and cancels it as soon as it passes the limit', async () => {
    const { stream, seen } = counted(1000, 1024);
    expect(await readWithin(new Response(stream), 4 * 1024)).toBeUndefined();
    expect(seen.pulled).toBeLessThanOrEqual(6);
    expect(seen.cancelled).toBe(true);
  });

  it('refuses unread a body whose content-length is over the limit, and reads one within it', async () => {
    const { stream, seen } = counted(1000, 1024);
    expect(await readWithin(new Response(stream, { headers: { 'content-length': String(1024 * 1024) } }), 4 * 1024)).toBeUndefined();
    expect(seen.pulled).toBeLessThanOrEqual(1);
    expect((await readWithin(new Response('x'.repeat(100)), 100))?.byteLength).toBe(100);
    expect(await readWithin(new Response('x'.repeat(101)), 100)).toBeUndefined();
  });

  it('gives an empty body for none', async () => {
    expect((await readWithin(new Response(null), 10))?.byteLength).toBe(0);
  });
});

describe("a consumer's request body", () => {
  it('is refused with 413 once a streamed body without content-length passes MAX_BODY_BYTES', async () => {
    const mib = 1024 * 1024;
    const { stream, seen } = counted(64, mib);
    const res = await call('/v2/models/embed/infer', { method: 'POST', token: await keyFor('consumer'), body: stream, colo: 'FRA' });
    expect(res.status).toBe(413);
    expect(await res.json()).toMatchObject({ error: { code: 'body_too_large' } });
    // The default limit is 8 MiB: what was read stops near it, never the whole 64 MiB.
    expect(seen.pulled).toBeLessThan(16);
  });
});
