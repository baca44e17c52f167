/**
 * Child process groups a benchmark starts (wrangler dev and its workerd):
 * starting one on free ports and waiting until it is ready, and killing every
 * one if the benchmark exits, however it exits.
 */

import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { freePorts } from '../../scripts/local-mesh.ts';

/** Groups still running; add a child when started, delete it once stopped. */
export const live = new Set<ChildProcess>();

process.on('exit', () => {
  for (const child of live) killGroup(child, 'SIGKILL');
});

/** Signals the child's whole process group (it was spawned `detached`), or the child alone if that fails. */
export function killGroup(child: ChildProcess, sig: NodeJS.Signals): void {
  try {
    process.kill(-child.pid!, sig);
  } catch {
    child.kill(sig);
  }
}

export interface Supervised {
  /** The last 8000 characters the child printed (stdout and stderr), for error messages. */
  output(): string;
  /** SIGTERM to the group, SIGKILL after `graceMs`, then SIGKILL to whatever of the group is left. */
  stop(): Promise<void>;
}

/** Tracks a detached child (a wrangler dev): its output tail, and a stop that leaves nothing behind. */
export function supervise(child: ChildProcess, graceMs: number): Supervised {
  live.add(child);
  let out = '';
  const append = (c: Buffer) => {
    out = (out + c.toString('utf8')).slice(-8000);
  };
  child.stdout?.on('data', append);
  child.stderr?.on('data', append);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return {
    output: () => out,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        killGroup(child, 'SIGTERM');
        const timer = setTimeout(() => killGroup(child, 'SIGKILL'), graceMs);
        await exited;
        clearTimeout(timer);
      }
      // workerd may outlive wrangler's node process: whatever is left of the group goes too.
      killGroup(child, 'SIGKILL');
      live.delete(child);
    },
  };
}

export interface WranglerDev {
  url: string;
  /** wrangler's pid, which leads its process group (workerd is in it). */
  pid: number;
  stop(): Promise<void>;
}

export interface WranglerDevOptions {
  /** The repository root (cwd, and where node_modules/.bin is). */
  root: string;
  /** The Worker's wrangler.toml. */
  config: string;
  /** Miniflare state (Durable Objects, R2, queues): a temp dir. */
  stateDir: string;
  envFile?: string;
  vars?: Record<string, string>;
  /** Extra environment for wrangler. */
  env?: Record<string, string>;
  /** Answers 200 once the Worker is up. */
  readyPath: string;
  readyTimeoutMs: number;
  /** SIGTERM grace before SIGKILL on stop. */
  graceMs: number;
  /** For error messages: "the pass-through Worker". */
  name: string;
  /** Run it under `nice -n <value>` (wrangler, workerd and every thread inherit it). */
  nice?: number;
  /**
   * false: without wrangler's DevTools inspector on the Worker's isolate
   * (scripts/wrangler-dev-no-inspector.ts), which otherwise serializes every
   * console line into the DevTools protocol on the Worker's thread. Default true.
   */
  inspector?: boolean;
}

/** `wrangler dev` on a free loopback port, in its own process group, resolved once `readyPath` answers 200. */
export async function startWranglerDev(o: WranglerDevOptions): Promise<WranglerDev> {
  const bin = path.join(o.root, 'node_modules', '.bin');
  const [port, inspectorPort] = await freePorts(2);
  const url = `http://127.0.0.1:${port}`;
  const command = [
    ...(o.inspector === false ? [process.execPath, path.join(o.root, 'scripts', 'wrangler-dev-no-inspector.ts')] : [path.join(bin, 'wrangler')]),
    'dev',
    '--config', o.config,
    '--ip', '127.0.0.1',
    '--port', String(port),
    '--inspector-port', String(inspectorPort),
    ...(o.envFile ? ['--env-file', o.envFile] : []),
    '--persist-to', o.stateDir,
    '--show-interactive-dev-session=false',
    '--log-level', 'warn',
    ...Object.entries(o.vars ?? {}).flatMap(([k, v]) => ['--var', `${k}:${v}`]),
  ];
  // nice execs wrangler in place: the pid (and process group) stay the same.
  const [file, ...args] = o.nice === undefined ? command : ['nice', '-n', String(o.nice), ...command];
  const child = spawn(file!, args, {
    cwd: o.root,
    env: { ...process.env, WRANGLER_SEND_METRICS: 'false', PATH: `${bin}:${process.env.PATH}`, ...o.env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  const { output, stop } = supervise(child, o.graceMs);
  const deadline = Date.now() + o.readyTimeoutMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${o.name}'s wrangler dev exited (${child.exitCode}):\n${output()}`);
    try {
      if ((await fetch(url + o.readyPath)).status === 200) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`${o.name} was not ready within ${o.readyTimeoutMs / 1000} s:\n${output()}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  return { url, pid: child.pid!, stop };
}

/** The pid of the `wrangler dev` serving `port` (it leads its own process group: local-mesh.ts starts it detached). */
export function wranglerGroup(port: string): number | undefined {
  for (const pid of pidsOnMachine()) {
    try {
      const args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      const at = args.indexOf('--port');
      if (args.some((a) => a.includes('wrangler')) && args.includes('dev') && at >= 0 && args[at + 1] === port) {
        const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
        const pgrp = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]);
        return pgrp;
      }
    } catch {
      // gone meanwhile
    }
  }
  return undefined;
}

export function pidsOnMachine(): number[] {
  try {
    return readdirSync('/proc').filter((d) => /^\d+$/.test(d)).map(Number);
  } catch {
    return [];
  }
}

/** CPU ms of every process group so far (Linux /proc): all its processes, and its workerd processes alone. */
export function groupCpuMs(): Map<number, { all: number; workerd: number }> {
  const out = new Map<number, { all: number; workerd: number }>();
  for (const pid of pidsOnMachine()) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const pgrp = Number(fields[2]);
      const ms = ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
      const g = out.get(pgrp) ?? { all: 0, workerd: 0 };
      g.all += ms;
      if (comm.startsWith('workerd')) g.workerd += ms;
      out.set(pgrp, g);
    } catch {
      // gone meanwhile
    }
  }
  return out;
}
