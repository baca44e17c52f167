import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, ROOT } from '../../scripts/local-mesh.ts';

const SCRIPT = path.join(ROOT, 'scripts', 'wrangler-dev-no-inspector.ts');
const PASSTHROUGH = path.join(ROOT, 'bench', 'passthrough', 'wrangler.toml');

function run(args: string[]): ChildProcess {
  return spawn(process.execPath, [SCRIPT, ...args], {
    cwd: ROOT,
    env: { ...process.env, WRANGLER_SEND_METRICS: 'false', X_LOCAL_OBSERVABILITY: 'false', X_LOCAL_EXPLORER: 'false' },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
}

function exited(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null; output: string }> {
  let output = '';
  child.stdout!.on('data', (d) => (output += d));
  child.stderr!.on('data', (d) => (output += d));
  return new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal, output })));
}

describe('wrangler dev without its inspector', () => {
  it.each([
    [['--config', PASSTHROUGH, '--port', '8787'], /expected the one command "dev"/],
    [['dev', '--port', '8787'], /--config is required/],
    [['dev', '--config', PASSTHROUGH, '--port', 'eighty'], /--port must be a port number/],
    [['dev', '--config', PASSTHROUGH, '--port', '8787', '--var', 'NOVALUE'], /--var takes KEY:VALUE/],
    [['dev', '--config', PASSTHROUGH, '--port', '8787', '--log-level', 'loud'], /--log-level must be one of/],
  ])('refuses %j with a sentence and the usage, exit 2', async (args, message) => {
    const { code, output } = await exited(run(args));
    expect(code).toBe(2);
    expect(output).toMatch(message);
    expect(output).toMatch(/usage: node scripts\/wrangler-dev-no-inspector.ts dev/);
  });

  describe('serving a Worker', () => {
    let target: Server;
    let child: ChildProcess;
    let done: ReturnType<typeof exited>;
    let state: string;
    let url: string;

    beforeAll(async () => {
      target = createServer((req, res) => res.end(`target saw ${req.url}`));
      await new Promise<void>((resolve) => target.listen(0, '127.0.0.1', resolve));
      const targetUrl = `http://127.0.0.1:${(target.address() as { port: number }).port}`;
      state = await mkdtemp(path.join(os.tmpdir(), 'mesh-no-inspector-'));
      const port = await freePort();
      url = `http://127.0.0.1:${port}`;
      child = run(['dev', '--config', PASSTHROUGH, '--port', String(port), '--persist-to', state, '--log-level', 'warn', '--var', `TARGET:${targetUrl}`]);
      done = exited(child);
      const deadline = Date.now() + 50_000;
      for (;;) {
        if (child.exitCode !== null) throw new Error(`exited early: ${(await done).output}`);
        const ok = await fetch(`${url}/ready`).then((r) => r.ok, () => false);
        if (ok) break;
        if (Date.now() > deadline) throw new Error('not ready within 50 s');
        await new Promise((r) => setTimeout(r, 250));
      }
    });

    afterAll(async () => {
      if (child?.exitCode === null) process.kill(-child.pid!, 'SIGKILL');
      await new Promise((resolve) => target?.close(resolve));
      await rm(state, { recursive: true, force: true });
    });

    it('runs the Worker with the vars given (the pass-through forwards to its TARGET)', async () => {
      const answer = await fetch(`${url}/v2/health/ready?x=1`);
      expect(answer.status).toBe(200);
      expect(await answer.text()).toBe('target saw /v2/health/ready?x=1');
    });

    it('stops the Worker and exits on SIGTERM', async () => {
      child.kill('SIGTERM');
      const { code, signal } = await done;
      // wrangler's handler tears the Worker down and exits 128 + 15, as the CLI does.
      expect({ code, signal }).toEqual({ code: 143, signal: null });
      await expect(fetch(`${url}/v2/health/ready`)).rejects.toThrow(); // workerd went with it
    });
  });
});
