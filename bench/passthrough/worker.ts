/**
 * A bare pass-through Worker, the floor bench/edge.ts measures the mesh edge
 * against: the same runtime, the same wrangler dev hop, one outbound fetch,
 * and nothing else. Method, path, query, headers and body go to `TARGET`
 * unchanged (the body streamed); the response comes back as it is, streamed.
 */

interface Env {
  /** Origin to forward to, e.g. http://127.0.0.1:9101. */
  TARGET: string;
}

export default {
  fetch(request: Request, env: Env): Promise<Response> {
    const url = new URL(request.url);
    return fetch(new Request(env.TARGET + url.pathname + url.search, request));
  },
};
