/**
 * Reading an HTTP body within a byte limit, whoever sent it (a consumer, a
 * provider's heartbeat, a backend's answer, the Hugging Face endpoint): a
 * declared `content-length` above the limit is refused unread, and a body
 * without one is read as a stream and cancelled as soon as it passes the limit,
 * so nothing larger than the limit is ever held.
 */

/** The bytes of `body`, or `undefined` when they would be more than `max` (the stream is cancelled). */
export async function readWithin(body: ReadableStream<Uint8Array> | null, max: number, contentLength?: string | null): Promise<Uint8Array | undefined> {
  if (contentLength != null && contentLength !== '' && Number(contentLength) > max) {
    await body?.cancel().catch(() => undefined);
    return undefined;
  }
  if (!body) return new Uint8Array();
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > max) {
      await reader.cancel().catch(() => undefined);
      return undefined;
    }
    chunks.push(value);
  }
  if (chunks.length === 1) return chunks[0]!;
  const bytes = new Uint8Array(size);
  let at = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, at);
    at += chunk.byteLength;
  }
  return bytes;
}
