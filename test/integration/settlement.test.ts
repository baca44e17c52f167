/**
 * Settlement on a real local mesh (docs/api.md section 5): the Worker in workerd
 * (wrangler dev, with its Queue, Durable Objects and R2 in Miniflare) and one
 * real backend. Answers' receipts reach closed batches exactly once, a
 * billing system checks a proof with the `mesh-verify` command, and each
 * closed batch is pushed, signed, to a billing webhook (a real HTTP server
 * here) that refuses the first delivery, so the retry is exercised.
 */

import { spawn } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createLocalJWKSet, jwtVerify, type JSONWebKeySet } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sha256Hex } from '../../receipts/hash.ts';
import { TYP, type WebhookClaims } from '../../shared/jwt.ts';
import { startMesh, type LocalMesh } from '../../scripts/local-mesh.ts';
import { settle } from '../helpers/settlement.ts';

const ROOT = path.resolve(import.meta.dirname, '../..');
const CLI = path.join(ROOT, 'bin/mesh-verify.ts');

interface Delivery {
  body: string;
  authorization: string | undefined;
  status: number;
}

let mesh: LocalMesh;
let dir: string;
let hook: Server;
let hookUrl: string;
const deliveries: Delivery[] = [];
const logs: string[] = [];

beforeAll(async () => {
  // The billing system's webhook: refuses the very first delivery (503), accepts the rest.
  hook = createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => (body += chunk));
    req.on('end', () => {
      const status = deliveries.length === 0 ? 503 : 204;
      deliveries.push({ body, authorization: req.headers.authorization, status });
      res.writeHead(status).end();
    });
  });
  await new Promise<void>((resolve) => hook.listen(0, '127.0.0.1', resolve));
  hookUrl = `http://127.0.0.1:${(hook.address() as AddressInfo).port}/billing/batches`;
  dir = await mkdtemp(path.join(tmpdir(), 'mesh-settle-'));
  try {
    mesh = await startMesh({
      port: 0,
      backendPortBase: 0,
      dir,
      log: (line) => logs.push(line),
      readyTimeoutMs: 90_000,
      backends: [{ id: 'fra-1', region: 'eu-west', provider: 'provider-fra' }],
      edgeVars: { SETTLEMENT_WEBHOOK_URL: hookUrl, SETTLEMENT_SHARDS: '2' },
    });
  } catch (err) {
    console.error(logs.slice(-200).join('\n'));
    throw err;
  }
});

afterAll(async () => {
  await mesh?.stop();
  await new Promise((resolve) => hook?.close(resolve));
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function infer(i: number): Promise<{ jti: string; receipt: string }> {
  const res = await fetch(`${mesh.edgeUrl}/v2/models/embed/infer`, {
    method: 'POST',
    headers: { authorization: `Bearer ${mesh.consumerKey}`, 'content-type': 'application/json', 'x-mesh-dev-colo': 'FRA' },
    body: JSON.stringify({ inputs: [{ name: 'text', shape: [1], datatype: 'BYTES', data: [`text number ${i}`] }] }),
  });
  expect(res.status).toBe(200);
  await res.arrayBuffer();
  const receipt = res.headers.get('x-mesh-receipt')!;
  const { jti } = JSON.parse(Buffer.from(receipt.split('.')[1]!, 'base64url').toString()) as { jti: string };
  return { jti, receipt };
}

/** Runs the verifier command; its exit code and output. */
function verifyCli(args: string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

async function waitFor<T>(what: string, ms: number, probe: () => T | undefined | Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe('settlement on a running mesh', () => {
  const answered: { jti: string; receipt: string }[] = [];

  it('puts every answered request in exactly one closed batch, with totals equal to the receipts', async () => {
    for (let i = 0; i < 40; i++) answered.push(await infer(i));
    const settled = await settle(mesh.edgeUrl, mesh.adminToken, answered.map((a) => a.jti));
    for (const { jti } of answered) expect(settled.seen.get(jti), jti).toBe(1);
    expect(settled.receipts.length).toBe(answered.length);
    const charged = settled.receipts.reduce((n, r) => n + r.amount, 0);
    const paid = settled.batches.reduce((n, b) => n + Object.values(b.totals.providers).reduce((x, y) => x + y, 0), 0);
    expect(paid).toBe(charged);
    expect(settled.batches.every((b) => b.shard === 0 || b.shard === 1)).toBe(true);
  });

  it('gives an inclusion proof that `mesh-verify proof` accepts, and rejects a tampered one', async () => {
    const billing = await mesh.issue('billing-system', 'billing');
    const auth = { authorization: `Bearer ${billing}` };
    const { jti, receipt } = answered[7]!;
    const proofRes = await fetch(`${mesh.edgeUrl}/v1/receipts/${jti}/proof`, { headers: auth });
    expect(proofRes.status).toBe(200);
    const proof = (await proofRes.json()) as { batch_id: string; leaf_index: number; tree_size: number; audit_path: string[] };
    const batchRes = await fetch(`${mesh.edgeUrl}/v1/settlement/batches/${proof.batch_id}`, { headers: auth });
    const work = await mkdtemp(path.join(tmpdir(), 'mesh-verify-'));
    try {
      await writeFile(path.join(work, 'receipt.jwt'), receipt);
      await writeFile(path.join(work, 'proof.json'), JSON.stringify(proof));
      await writeFile(path.join(work, 'batch.json'), await batchRes.text());
      await writeFile(path.join(work, 'jwks.json'), await (await fetch(`${mesh.edgeUrl}/.well-known/jwks.json`)).text());
      const args = ['proof', path.join(work, 'receipt.jwt'), '--proof', path.join(work, 'proof.json'), '--batch', path.join(work, 'batch.json'), '--jwks', path.join(work, 'jwks.json')];
      const ok = await verifyCli(args);
      expect(ok.out).toMatch(/ok/i);
      expect(ok.code).toBe(0);

      const wrongIndex = { ...proof, leaf_index: proof.leaf_index ^ 1 };
      await writeFile(path.join(work, 'proof.json'), JSON.stringify(wrongIndex));
      const bad = await verifyCli(args);
      expect(bad.code).toBe(1);
      expect(bad.out).toMatch(/FAIL/);
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  });

  it('pushes each closed batch to the billing webhook, signed, retrying after a refusal', async () => {
    const billing = await mesh.issue('billing-system', 'billing');
    const listed = (await (await fetch(`${mesh.edgeUrl}/v1/settlement/batches?limit=1000`, { headers: { authorization: `Bearer ${billing}` } })).json()) as {
      batches: { id: string }[];
    };
    const ids = listed.batches.map((b) => b.id);
    expect(ids.length).toBeGreaterThan(0);
    // The first delivery was refused; the ledger's alarm retries it after about a second.
    const accepted = await waitFor('every batch delivered', 30_000, () => {
      const ok = new Set(deliveries.filter((d) => d.status === 204).map((d) => (JSON.parse(d.body) as { id: string }).id));
      return ids.every((id) => ok.has(id)) ? ok : undefined;
    });
    expect(accepted.size).toBeGreaterThanOrEqual(ids.length);
    expect(deliveries[0]!.status).toBe(503);
    const refusedId = (JSON.parse(deliveries[0]!.body) as { id: string }).id;
    expect(deliveries.filter((d) => (JSON.parse(d.body) as { id: string }).id === refusedId).length).toBeGreaterThanOrEqual(2);

    const jwks = createLocalJWKSet((await (await fetch(`${mesh.edgeUrl}/.well-known/jwks.json`)).json()) as JSONWebKeySet);
    for (const d of deliveries) {
      const token = /^Bearer (.+)$/.exec(d.authorization ?? '')?.[1];
      expect(token).toBeDefined();
      const { payload } = await jwtVerify<WebhookClaims>(token!, jwks, {
        algorithms: ['EdDSA'],
        typ: TYP.webhook,
        issuer: mesh.edgeUrl,
        audience: hookUrl,
        requiredClaims: ['exp', 'jti', 'batch_id', 'body_sha256'],
      });
      expect(payload.body_sha256).toBe(await sha256Hex(d.body));
      const body = JSON.parse(d.body) as { id: string; batch: string };
      expect(payload.batch_id).toBe(body.id);
      expect(body.batch.split('.')).toHaveLength(3);
    }
  });
});
