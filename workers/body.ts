/**
 * Reading an HTTP body within a byte limit, whoever sent it (a consumer, a
 * provider's heartbeat, a backend's answer, the Hugging Face endpoint): a
 * declared `content-length` above the limit is refused unread; one within it
 * frames the body, which is read in one native call; a body without one is
 * read as a stream and cancelled as soon as it passes the limit. Nothing
 * larger than the limit is ever held.
 */

/** The bytes of `message`'s body, or `undefined` when they would be more than `max` (the body is cancelled). */
export async function readWithin(message: Request | Response, max: number): Promise<Uint8Array | undefined> {
  const body = message.body;
  if (!body) return new Uint8Array();
  const declared = message.headers.get('content-length');
  if (declared !== null && /^\d+$/.test(declared)) {
    if (Number(declared) > max) {
      await body.cancel().catch(() => undefined);
      return undefined;
    }
    // HTTP framing holds the body to its declared length: reading it whole is bounded.
    return new Uint8Array(await message.arrayBuffer());
  }
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
