/**
 * Waiting for a quiet machine before a timed phase: until processes outside
 * the bench's own process groups use at most a share of the machine over
 * 300 ms, bounded per wait and over the whole run, so a busy machine delays a
 * bench a little and is then flagged rather than waited for forever.
 */

import os from 'node:os';
import { machineBusyMs } from './cpu.ts';
import { groupCpuMs } from './processes.ts';

export interface QuietOptions {
  /** Others' share of the machine (0..1) above which it is not quiet. */
  noisyShare: number;
  /** Longest one wait, ms; the run as a whole waits at most 6 times this. */
  waitMs: number;
  log: (line: string) => void;
}

/** A waiter with its run's budget: `await quiet('phase', [pid, ...])` before each timed phase. */
export function quietGate(options: QuietOptions): (what: string, groups: readonly (number | undefined)[]) => Promise<void> {
  const cores = os.availableParallelism();
  let budgetMs = 6 * options.waitMs;
  return async (what, groups) => {
    const ours = () => {
      const g = groupCpuMs();
      const self = process.cpuUsage();
      return groups.reduce<number>((n, pid) => n + (pid === undefined ? 0 : (g.get(pid)?.all ?? 0)), 0) + (self.user + self.system) / 1000;
    };
    const started = performance.now();
    const limitMs = () => Math.min(options.waitMs, budgetMs);
    let said = false;
    for (;;) {
      const machine0 = machineBusyMs();
      const ours0 = ours();
      const t0 = performance.now();
      await new Promise((r) => setTimeout(r, 300));
      const other = Math.max(0, machineBusyMs() - machine0 - (ours() - ours0)) / (cores * (performance.now() - t0));
      const waited = performance.now() - started;
      if (!(other > options.noisyShare)) break;
      if (waited >= limitMs()) {
        options.log(`${what}: other processes still use ${(other * 100).toFixed(0)}% of the CPU after ${(waited / 1000).toFixed(0)} s; measuring anyway (flagged)`);
        break;
      }
      if (!said) options.log(`${what}: other processes use ${(other * 100).toFixed(0)}% of the CPU; waiting up to ${(limitMs() / 1000).toFixed(0)} s`);
      said = true;
    }
    budgetMs = Math.max(0, budgetMs - (performance.now() - started - 300));
  };
}
