/**
 * Child process groups a benchmark starts (wrangler and its workerd): every
 * one is killed if the benchmark exits, however it exits.
 */

import type { ChildProcess } from 'node:child_process';

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
