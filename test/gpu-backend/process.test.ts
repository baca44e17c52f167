/**
 * The backend as a process (`node gpu-backend/src/main.ts`), the way the
 * local-mesh launcher starts it: it generates the demo models into a missing
 * repository, prints its ready line, heartbeats to the edge, serves, and on
 * SIGTERM sends `ready: false`, drains and exits 0, after the requests in
 * flight (running and queued) have all been answered. Also the keygen command.
 */

import { copyFile, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateDemoModels } from '../../gpu-backend/src/demo-models/generate.ts';
import { checkProviderJwk, generateProviderKey } from '../../gpu-backend/src/mesh/provider-key.ts';
import { dispatchToken, type MeshKey } from './helpers.ts';
import { fakeEdge, run, until, type FakeEdge } from './process-helpers.ts';

let dir: string;
let edge: FakeEdge;
let edgeUrl: string;
let mesh: MeshKey;
let beats: FakeEdge['beats'];

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'mesh-process-'));
  edge = await fakeEdge();
  ({ url: edgeUrl, mesh, beats } = edge);
});
afterAll(async () => {
  await edge?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('main.ts', () => {
  it('generates models, says it is ready, heartbeats, serves, and drains on SIGTERM', async () => {
    const { privateJwk } = await generateProviderKey('proc-key');
    const repoDir = path.join(dir, 'models');
    const p = run('gpu-backend/src/main.ts', [], {
      BACKEND_ID: 'proc-1',
      PROVIDER_ID: 'prov-1',
      PROVIDER_KEY: JSON.stringify(privateJwk),
      REGION: 'us-east',
      EDGE_URL: edgeUrl,
      PORT: '0',
      MODEL_REPOSITORY: repoDir,
      MODELS: 'classifier,embed',
      HEARTBEAT_INTERVAL_MS: '200',
    });
    try {
      const url = await until(
        () => /backend proc-1 ready: classifier, embed warm on (cpu|cuda), listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(p.output())?.[2],
        'the ready line',
        p.output,
      );
      expect(p.output()).toMatch(/writing the shipped models/);
      expect((await stat(path.join(repoDir, 'embed', '1', 'model.onnx'))).size).toBeGreaterThan(0);
      expect((await stat(path.join(repoDir, 'ocr-rec', '1', 'model.onnx'))).size).toBeGreaterThan(0);

      const ready = await fetch(`${url}/v2/health/ready`);
      expect(ready.status).toBe(200);
      await until(() => (beats.some((b) => b.ready) ? true : undefined), 'a ready heartbeat', p.output);
      expect(beats.find((b) => b.ready)).toMatchObject({ url, executionProvider: 'cpu' });

      p.child.kill('SIGTERM');
      expect(await p.exit).toBe(0);
      expect(beats.at(-1)!.ready).toBe(false);
      expect(p.output()).toMatch(/SIGTERM: draining/);
    } finally {
      if (p.child.exitCode === null) p.child.kill('SIGKILL');
    }
  });

  it.each([
    ['main', '0'],
    ['worker', '0'],
    ['main', '2'],
  ])('on SIGTERM answers every request it holds before it exits 0, and takes no new one (runs on the %s thread, HTTP_THREADS=%s)', async (thread, httpThreads) => {
    // The embed model again, with a long batching delay: requests sit queued in the backend until SIGTERM.
    const repoDir = path.join(dir, `slow-models-${thread}-${httpThreads}`);
    await generateDemoModels(repoDir);
    const embed = JSON.parse(await readFile(path.join(repoDir, 'embed', 'config.json'), 'utf8')) as Record<string, unknown>;
    await mkdir(path.join(repoDir, 'slow', '1'), { recursive: true });
    await copyFile(path.join(repoDir, 'embed', '1', 'model.onnx'), path.join(repoDir, 'slow', '1', 'model.onnx'));
    await writeFile(
      path.join(repoDir, 'slow', 'config.json'),
      JSON.stringify({ ...embed, name: 'slow', dynamic_batching: { max_queue_delay_microseconds: 600_000 } }),
    );
    const { privateJwk } = await generateProviderKey('proc-key-2');
    const p = run('gpu-backend/src/main.ts', [], {
      BACKEND_ID: 'proc-2',
      PROVIDER_ID: 'prov-1',
      PROVIDER_KEY: JSON.stringify(privateJwk),
      REGION: 'us-east',
      EDGE_URL: edgeUrl,
      PORT: '0',
      MODEL_REPOSITORY: repoDir,
      MODELS: 'slow',
      EXECUTION_PROVIDERS: 'cpu',
      INFERENCE_THREAD: thread,
      HTTP_THREADS: httpThreads,
      HEARTBEAT_INTERVAL_MS: '200',
    });
    try {
      const url = await until(() => /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(p.output())?.[1], 'the ready line', p.output);
      expect(p.output()).toContain(thread === 'main' ? 'cpu (main thread)' : 'cpu (1 worker thread(s))');
      expect(p.output()).toContain(httpThreads === '0' ? '(HTTP on the main thread)' : `(${httpThreads} HTTP threads)`);
      // Four requests of 4 x 128 tokens: 16 rows, under max_batch_size, so they wait the 0.6 s delay, then run as one batch.
      const infer = async (i: number) => {
        const ids = Array.from({ length: 4 * 128 }, (_, j) => 1 + ((i * 7919 + j * 31) % 8000));
        const body = JSON.stringify({ inputs: [{ name: 'input_ids', datatype: 'INT64', shape: [4, 128], data: ids }] });
        const token = await dispatchToken({ model: 'slow', body, key: mesh, claims: { iss: edgeUrl, aud: 'proc-2' } });
        return fetch(`${url}/v2/models/slow/infer`, { method: 'POST', headers: { authorization: `Bearer ${token}` }, body });
      };
      const held = [0, 1, 2, 3].map(infer);
      let metrics = '';
      await until(
        () => (/^nv_inference_pending_request_count 4$/m.test(metrics) ? true : undefined),
        'four requests queued in the backend',
        p.output,
        5000,
        async () => {
          metrics = await (await fetch(`${url}/metrics`)).text();
        },
      );
      p.child.kill('SIGTERM');
      await until(() => (/SIGTERM: draining/.test(p.output()) ? true : undefined), 'the drain', p.output);
      const late = await infer(4).then((r) => r.status, () => 'refused');
      expect([503, 'refused']).toContain(late);

      for (const res of await Promise.all(held)) {
        expect(res.status).toBe(200);
        expect(res.headers.get('x-provider-attestation')).toBeTruthy();
        const json = (await res.json()) as { outputs: { shape: number[] }[] };
        expect(json.outputs[0]!.shape).toEqual([4, 256]);
      }
      expect(await p.exit).toBe(0);
      expect(p.output()).not.toMatch(/still in flight/);
      expect(p.output()).toMatch(/stopped/);
    } finally {
      if (p.child.exitCode === null) p.child.kill('SIGKILL');
    }
  });

  it('exits 1 with the variable named when the configuration is bad', async () => {
    const p = run('gpu-backend/src/main.ts', [], { BACKEND_ID: 'x', PROVIDER_ID: 'y', PROVIDER_KEY: '', PROVIDER_KEY_FILE: '', REGION: 'eu-west', EDGE_URL: edgeUrl });
    expect(await p.exit).toBe(1);
    expect(p.output()).toMatch(/configuration error: PROVIDER_KEY or PROVIDER_KEY_FILE is required/);
  });
});

describe('keygen.ts', () => {
  it('writes the private JWK with mode 0600 and prints the public JWK', async () => {
    const out = path.join(dir, 'provider-key.json');
    const p = run('gpu-backend/src/keygen.ts', ['--out', out, '--kid', 'prov-2026'], {});
    expect(await p.exit).toBe(0);
    const priv = checkProviderJwk(JSON.parse(await readFile(out, 'utf8')));
    expect(priv).toMatchObject({ kty: 'OKP', crv: 'Ed25519', kid: 'prov-2026', alg: 'EdDSA' });
    expect((await stat(out)).mode & 0o777).toBe(0o600);
    const pub = JSON.parse(p.output().split('\n').find((l) => l.startsWith('{'))!) as Record<string, unknown>;
    expect(pub).toEqual({ kty: 'OKP', crv: 'Ed25519', x: priv.x, kid: 'prov-2026', alg: 'EdDSA', use: 'sig' });

    const again = run('gpu-backend/src/keygen.ts', ['--out', out], {});
    expect(await again.exit).toBe(1); // never overwrites a private key
  });
});
