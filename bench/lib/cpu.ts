/**
 * CPU time accounting on Linux (/proc), to tell how much of the machine a
 * benchmark's processes used and whether anything else was competing with
 * them. Every function returns NaN where /proc is not available.
 */

import { readFileSync, readdirSync } from 'node:fs';

/** USER_HZ: /proc counts CPU time in these ticks per second on Linux. */
const TICKS_PER_S = 100;

/** User + system CPU time of process `pid` so far, ms. */
export function processCpuMs(pid: number): number {
  return cpuMsOf(`/proc/${pid}/stat`);
}

/** User + system CPU time of one thread of process `pid` so far, ms (`tid` = `pid`: its main thread). */
export function threadCpuMs(pid: number, tid = pid): number {
  return cpuMsOf(`/proc/${pid}/task/${tid}/stat`);
}

/**
 * On-CPU time of one thread of process `pid` so far, ms, at nanosecond
 * resolution (/proc/<pid>/task/<tid>/schedstat, the scheduler's
 * sum_exec_runtime: user and system time alike), where /proc/.../stat counts
 * 10 ms ticks. NaN where schedstat is not available.
 */
export function threadRunMs(pid: number, tid = pid): number {
  try {
    const ns = Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ', 1)[0]);
    return Number.isFinite(ns) ? ns / 1e6 : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

/** Every thread of process `pid` now: its tid, name (`comm`) and on-CPU time so far, ms (schedstat). Empty where /proc is not available. */
export function threadsOf(pid: number): { tid: number; name: string; ms: number }[] {
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return [];
  }
  const out: { tid: number; name: string; ms: number }[] = [];
  for (const t of tids) {
    const tid = Number(t);
    try {
      const name = readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim();
      out.push({ tid, name, ms: threadRunMs(pid, tid) });
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

function cpuMsOf(file: string): number {
  try {
    const stat = readFileSync(file, 'utf8');
    // Fields after "(comm) ": state is [0], utime [11], stime [12].
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / TICKS_PER_S;
  } catch {
    return Number.NaN;
  }
}

/** CPU time all processes on the machine have used so far (every core, idle and iowait excluded), ms. */
export function machineBusyMs(): number {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!;
    const [, ...values] = line.trim().split(/\s+/);
    const n = values.map(Number);
    const total = n.slice(0, 8).reduce((a, b) => a + b, 0); // user nice system idle iowait irq softirq steal
    return ((total - n[3]! - n[4]!) * 1000) / TICKS_PER_S;
  } catch {
    return Number.NaN;
  }
}

/**
 * Waits until processes other than this one and `pids` use at most `threshold`
 * of the machine over a `sampleMs` window, or `maxMs` has passed. Returns the
 * share they used in the last window and how long it waited, ms.
 */
export async function waitForQuiet(o: { pids: readonly number[]; cores: number; threshold: number; maxMs: number; sampleMs?: number }): Promise<{ other: number; waitedMs: number }> {
  const sampleMs = o.sampleMs ?? 500;
  const started = performance.now();
  const ours = () => {
    const self = process.cpuUsage();
    return o.pids.reduce((n, pid) => n + processCpuMs(pid), 0) + (self.user + self.system) / 1000;
  };
  for (;;) {
    const machine0 = machineBusyMs();
    const ours0 = ours();
    const t0 = performance.now();
    await new Promise((r) => setTimeout(r, sampleMs));
    const other = Math.max(0, machineBusyMs() - machine0 - (ours() - ours0)) / (o.cores * (performance.now() - t0));
    const waitedMs = performance.now() - started;
    if (!(other > o.threshold) || waitedMs >= o.maxMs) return { other, waitedMs };
  }
}
