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
