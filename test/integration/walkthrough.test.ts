/**
 * The README's walkthrough ("A first request and a verified receipt") on a
 * real local mesh, its commands taken from README.md itself and run as one
 * shell script, as a reader pasting them at once would: no pause between
 * the answer and the proof. Only the edge URL and the `.mesh/` folder are
 * replaced (this mesh's, on a free port in a temp folder); the OCR example,
 * which needs the reader's own image, is left out. Then the proof contract
 * of docs/api.md section 5.5 timed from outside (202 `receipt_pending` right
 * after the answer; after `retry-after`, the receipt is in the log), and the
 * request's log lines on both sides (section 2.12): the edge's and the
 * backend's JSON line for one `x-request-id`, and no key, token or input in
 * any line.
 */

import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { decodePayload, type KeyClaims, type ReceiptClaims } from '../../shared/jwt.ts';
import { ROOT, type LocalMesh } from '../../scripts/local-mesh.ts';
import { useMesh } from '../helpers/mesh.ts';

const local = useMesh({ backends: [{ id: 'sg-1', region: 'ap-southeast', provider: 'provider-sg' }] });
let mesh: LocalMesh;
let dir: string;
beforeAll(() => {
  mesh = local.mesh();
  dir = path.dirname(mesh.localJson);
});

/** The `sh` blocks of the README's walkthrough section, in order. */
async function walkthroughBlocks(): Promise<string[]> {
  const readme = await readFile(path.join(ROOT, 'README.md'), 'utf8');
  const start = readme.indexOf('\n## A first request and a verified receipt\n');
  expect(start, 'the README has its walkthrough section').toBeGreaterThan(0);
  const end = readme.indexOf('\n## ', start + 1);
  const section = readme.slice(start, end < 0 ? undefined : end);
  return [...section.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1]!);
}

/** Runs `script` in bash at the repository root; its exit code and everything it printed. */
function shell(script: string, timeoutMs = 90_000): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', ['-c', script], { cwd: ROOT, env: { ...process.env, WRANGLER_SEND_METRICS: 'false' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

/** The JSON objects among the mesh's output lines whose `msg` is `request` (the edge's lines come prefixed `[edge]`). */
function requestLines(): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const line of local.logs) {
    const at = line.indexOf('{');
    if (at < 0 || !line.includes('"msg":"request"')) continue;
    try {
      out.push(JSON.parse(line.slice(at)) as Record<string, unknown>);
    } catch {
      // Not one of ours.
    }
  }
  return out;
}

async function waitFor<T>(what: string, ms: number, probe: () => T | undefined): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe("the README's walkthrough", () => {
  it('works pasted at once: the answer, its receipt verified, its proof verified', async () => {
    const blocks = (await walkthroughBlocks()).filter((b) => !b.includes('your-scan.png'));
    expect(blocks.length).toBe(2);
    let script = blocks.join('\n');
    for (const needle of ['EDGE=http://127.0.0.1:8787', './.mesh/', '.mesh/']) expect(script, needle).toContain(needle);
    script = script
      .replaceAll('EDGE=http://127.0.0.1:8787', `EDGE=${mesh.edgeUrl}`)
      .replaceAll('./.mesh/', `${dir}/`)
      .replaceAll('.mesh/', `${dir}/`);

    const { code, out } = await shell(script);
    expect(code, out).toBe(0);
    expect(out).toMatch(/x-mesh-region: ap-southeast/i);
    // `mesh-verify receipt`, then the second `proof` (200), then `mesh-verify proof`.
    expect(out).toMatch(/ok {2}receipt \S+: embed@1 by provider provider-sg for consumer local-consumer/);
    expect(out).toMatch(/^200$/m);
    expect(out).toMatch(/ok {2}receipt \S+ is leaf \d+ of \d+ in batch \S+/);

    // The answer's log lines, the edge's and the backend's, under the one request id.
    const headers = await readFile(path.join(dir, 'headers.txt'), 'utf8');
    const requestId = /^x-request-id: (\S+)\r?$/im.exec(headers)?.[1];
    expect(requestId, headers).toMatch(/^[0-9a-f-]{36}$/);
    const receipt = decodePayload<ReceiptClaims>(/^x-mesh-receipt: (\S+)\r?$/im.exec(headers)![1]!)!;
    const [edge, backend] = await waitFor('both request lines', 10_000, () => {
      const lines = requestLines().filter((l) => l.request_id === requestId);
      const e = lines.find((l) => 'latency_ms' in l);
      const b = lines.find((l) => 'ms' in l);
      return e && b ? [e, b] : undefined;
    });
    expect(edge).toMatchObject({
      level: 'info',
      method: 'POST',
      route: '/v2/models/:model/infer',
      status: 200,
      pop: 'CGK',
      key_id: decodePayload<KeyClaims>(mesh.consumerKey)!.jti,
      sub: 'local-consumer',
      model: 'embed',
      region: 'ap-southeast',
      backend: 'sg-1',
      provider: 'provider-sg',
      attempts: 1,
      cache: 'miss',
      receipt: receipt.jti,
    });
    expect(backend).toMatchObject({ level: 'info', name: expect.stringContaining('backend sg-1'), route: '/v2/models/:model/infer', model: 'embed', status: 200 });
  });
});

describe('asking for a proof right after the answer', () => {
  it('answers 202 receipt_pending with retry-after, and after retry-after the receipt is in the log', async () => {
    const billing = await mesh.issue('billing-walkthrough', 'billing');
    const res = await fetch(`${mesh.edgeUrl}/v2/models/embed/infer`, {
      method: 'POST',
      headers: { authorization: `Bearer ${mesh.consumerKey}`, 'content-type': 'application/json', 'x-mesh-dev-colo': 'SIN' },
      body: JSON.stringify({ inputs: [{ name: 'text', shape: [1], datatype: 'BYTES', data: ['asked for at once'] }] }),
    });
    expect(res.status).toBe(200);
    await res.arrayBuffer();
    const receipt = res.headers.get('x-mesh-receipt')!;
    const ask = () =>
      fetch(`${mesh.edgeUrl}/v1/receipts/proof`, {
        method: 'POST',
        headers: { authorization: `Bearer ${billing}`, 'content-type': 'application/json' },
        body: JSON.stringify({ receipt }),
      });

    const first = await ask();
    expect(first.status).toBe(202);
    expect(((await first.json()) as { error: { code: string } }).error.code).toBe('receipt_pending');
    const retryAfter = Number(first.headers.get('retry-after'));
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(first.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);

    await new Promise((r) => setTimeout(r, retryAfter * 1000));
    const second = await ask();
    const body = (await second.json()) as { error?: { code: string }; batch_id?: string };
    // In the log: in the open batch (404 batch_open) or, if an epoch closed meanwhile, proved.
    if (second.status === 404) expect(body.error?.code).toBe('batch_open');
    else {
      expect(second.status).toBe(200);
      expect(body.batch_id).toBeTruthy();
    }
  });

  it('never writes a key, a token or an input into a log line', async () => {
    const secret = 'a sentence that must stay out of every log';
    const res = await fetch(`${mesh.edgeUrl}/v2/models/embed/infer`, {
      method: 'POST',
      headers: { authorization: `Bearer ${mesh.consumerKey}`, 'content-type': 'application/json', 'x-mesh-dev-colo': 'SIN' },
      body: JSON.stringify({ inputs: [{ name: 'text', shape: [1], datatype: 'BYTES', data: [secret] }] }),
    });
    expect(res.status).toBe(200);
    await res.arrayBuffer();
    const id = res.headers.get('x-request-id');
    await waitFor('the request lines', 10_000, () => (requestLines().filter((l) => l.request_id === id).length >= 2 ? true : undefined));
    const all = local.logs.join('\n');
    expect(all).not.toContain(secret);
    for (const token of [mesh.consumerKey, mesh.adminToken]) expect(all).not.toContain(token.split('.')[2]!);
  });
});
