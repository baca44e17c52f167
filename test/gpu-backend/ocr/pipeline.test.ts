/**
 * The `ocr` pipeline served by a real backend (ONNX Runtime on the CPU):
 * loading it loads its detector and recognizer; a rendered PNG sent in the
 * binary tensor extension reads back as its lines, metered as one request;
 * bad images and bad tensors get 400s naming the problem; unloading the
 * pipeline leaves its step models serving; behind HTTP workers the pipeline
 * runs on the workers and only its steps on the main thread.
 */

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeBinaryBody, encodeBytesElements } from '../../../shared/binary.ts';
import { installOcrModels } from '../../../gpu-backend/src/ocr/models.ts';
import { encodePng, renderText } from '../../helpers/text-image.ts';
import { HttpPool } from '../../../gpu-backend/src/http/http-pool.ts';
import { dispatchToken, errorCode, harness, type Harness } from '../helpers.ts';
import { fakeEdge, type FakeEdge } from '../process-helpers.ts';

let h: Harness;
let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'mesh-ocr-'));
  await installOcrModels(dir);
  h = await harness({ repo: dir, env: { MODELS: 'ocr', MAX_BODY_BYTES: String(1 << 20) } });
});
afterAll(async () => {
  await h?.backend.repository.close();
  await rm(dir, { recursive: true, force: true });
});

function imageRequest(image: Uint8Array, extra: Record<string, unknown> = {}) {
  const data = encodeBytesElements([image]);
  const { body, headerLength } = encodeBinaryBody(
    { inputs: [{ name: 'image', shape: [1], datatype: 'BYTES', parameters: { binary_data_size: data.byteLength } }], ...extra },
    [data],
  );
  return { raw: body, headers: { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(headerLength) } };
}

interface Answer {
  outputs: { name: string; shape: number[]; data: (string | number)[] }[];
}

describe('the ocr pipeline on a backend', () => {
  it('loads its detector and recognizer with it, and heartbeats all three warm', () => {
    expect(h.backend.repository.state('ocr')).toBe('READY');
    expect(h.backend.repository.state('ocr-det')).toBe('READY');
    expect(h.backend.repository.state('ocr-rec')).toBe('READY');
    const models = h.backend.repository.heartbeatModels().map((m) => [m.name, m.warm]);
    expect(models).toEqual([
      ['ocr', true],
      ['ocr-det', true],
      ['ocr-rec', true],
    ]);
  });

  it('reads a PNG in the binary extension: text, scores and boxes in reading order, one request of units', async () => {
    const image = renderText(['EDGE MESH', '2026']);
    const res = await h.post('/v2/models/ocr/infer', undefined, imageRequest(encodePng(image)));
    expect(res.status).toBe(200);
    const answer = (await res.json()) as Answer;
    const out = Object.fromEntries(answer.outputs.map((o) => [o.name, o]));
    expect(out.text!.data).toEqual(['EDGE MESH', '2026']);
    expect(out.score!.shape).toEqual([2]);
    for (const s of out.score!.data as number[]) expect(s).toBeGreaterThan(0.5);
    expect(out.box!.shape).toEqual([2, 4]);
    const [x0, y0, x1, y1] = out.box!.data as number[];
    expect(x0).toBeGreaterThanOrEqual(0);
    expect(x1).toBeLessThanOrEqual(image.width);
    expect(y1).toBeGreaterThan(y0!);
    const claims = JSON.parse(Buffer.from(res.headers.get('x-provider-attestation')!.split('.')[1]!, 'base64url').toString()) as { units: unknown };
    expect(claims.units).toEqual({ input: 1, output: 1 });
  });

  it('answers only the outputs asked for', async () => {
    const res = await h.post('/v2/models/ocr/infer', undefined, imageRequest(encodePng(renderText(['HELLO WORLD'])), { outputs: [{ name: 'text' }] }));
    expect(res.status).toBe(200);
    const answer = (await res.json()) as Answer;
    expect(answer.outputs.map((o) => [o.name, o.data])).toEqual([['text', ['HELLO WORLD']]]);
  });

  it('refuses what is not an image, a text that is not a data URL, a second image and an unknown input with 400s', async () => {
    const notImage = await h.post('/v2/models/ocr/infer', undefined, imageRequest(new TextEncoder().encode('GIF89a')));
    expect(notImage.status).toBe(400);
    expect(await errorCode(notImage)).toBe('invalid_image');

    const text = await h.post('/v2/models/ocr/infer', { inputs: [{ name: 'image', shape: [1], datatype: 'BYTES', data: ['hello'] }] });
    expect(text.status).toBe(400);
    expect(((await text.json()) as { error: { code: string; message: string } }).error.message).toContain('data:image/png;base64');

    const two = await h.post('/v2/models/ocr/infer', { inputs: [{ name: 'image', shape: [2], datatype: 'BYTES', data: ['a', 'b'] }] });
    expect(two.status).toBe(400);
    expect(await errorCode(two)).toBe('shape_mismatch');

    const unknown = await h.post('/v2/models/ocr/infer', { inputs: [{ name: 'pixels', shape: [1], datatype: 'FP32', data: [0] }] });
    expect(unknown.status).toBe(400);
    expect(await errorCode(unknown)).toBe('unknown_input');
  });

  it('unloads alone: its step models keep serving', async () => {
    await h.backend.repository.unload('ocr');
    expect(h.backend.repository.state('ocr')).toBe('UNAVAILABLE');
    expect(h.backend.repository.state('ocr-det')).toBe('READY');
    const res = await h.post('/v2/models/ocr/infer', undefined, imageRequest(encodePng(renderText(['OK']))));
    expect(res.status).toBe(503);
    await h.backend.repository.load('ocr');
    const again = await h.post('/v2/models/ocr/infer', undefined, imageRequest(encodePng(renderText(['OK']))));
    expect(again.status).toBe(200);
  });
});

describe('the ocr pipeline behind HTTP workers', () => {
  let edge: FakeEdge;
  let w: Harness;
  let pool: HttpPool | undefined;
  let poolDir: string;
  beforeAll(async () => {
    poolDir = await mkdtemp(path.join(tmpdir(), 'mesh-ocr-pool-'));
    await installOcrModels(poolDir);
    edge = await fakeEdge();
    w = await harness({ repo: poolDir, env: { EDGE_URL: edge.url, MODELS: 'ocr', MAX_BODY_BYTES: String(1 << 20) } });
    pool = await HttpPool.start({ count: 2, config: w.backend.config, executor: w.backend.executor, app: w.backend.app, log: w.log });
  }, 60_000);
  afterAll(async () => {
    await pool?.terminate();
    await w?.backend.repository.close();
    await edge?.close();
    await rm(poolDir, { recursive: true, force: true });
  });

  async function read(lines: string[]): Promise<{ text: unknown; units: unknown }> {
    const { raw, headers } = imageRequest(encodePng(renderText(lines)));
    const token = await dispatchToken({ model: 'ocr', body: raw, key: edge.mesh, claims: { iss: edge.url } });
    const res = await fetch(`http://127.0.0.1:${pool!.address.port}/v2/models/ocr/infer`, { method: 'POST', headers: { ...headers, authorization: `Bearer ${token}` }, body: raw });
    expect(res.status).toBe(200);
    const answer = (await res.json()) as Answer;
    const claims = JSON.parse(Buffer.from(res.headers.get('x-provider-attestation')!.split('.')[1]!, 'base64url').toString()) as { units: unknown };
    return { text: answer.outputs.find((o) => o.name === 'text')!.data, units: claims.units };
  }

  it('runs the pipeline on the workers once they know it, its steps batched on the main thread, and an unload waits for none of them after', async () => {
    const { executor, repository } = w.backend;
    const seen: { admit: boolean; prepared: boolean; stale: boolean }[] = [];
    let steps = 0;
    const runForWorker = executor.runForWorker.bind(executor);
    const step = executor.step.bind(executor);
    executor.runForWorker = async (job) => {
      const answer = await runForWorker(job);
      seen.push({ admit: job.admit !== undefined, prepared: job.prepared !== undefined, stale: 'stale' in answer });
      return answer;
    };
    executor.step = (name, input) => {
      steps++;
      return step(name, input);
    };
    try {
      for (let i = 0; i < 6; i++) expect(await read(['HELLO WORLD', '12345'])).toEqual({ text: ['HELLO WORLD', '12345'], units: { input: 1, output: 1 } });
      // The first request on each worker ran on the main thread; the rest were only admitted there.
      expect(seen.filter((s) => s.admit).length).toBeGreaterThanOrEqual(4);
      expect(steps).toBeGreaterThanOrEqual(2 * seen.filter((s) => s.admit).length);
      await repository.unload('ocr');
      await repository.load('ocr');
      seen.length = 0;
      for (let i = 0; i < 4; i++) expect((await read(['HELLO WORLD'])).text).toEqual(['HELLO WORLD']);
      expect(seen.some((s) => s.admit && s.stale)).toBe(true);
    } finally {
      executor.runForWorker = runForWorker;
      executor.step = step;
    }
  });
});
