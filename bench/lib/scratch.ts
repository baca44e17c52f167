/**
 * A bench run's scratch: its temporary folder and what it started, stopped in
 * the order given when the run ends or on Ctrl-C (exit 130), the folder
 * deleted last; and the line that says which machine ran it.
 */

import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

/** Stops one thing the bench started (undefined: it never started). */
export type Stopper = () => Promise<unknown> | undefined;

export interface Scratch {
  /** The temporary folder. */
  dir: string;
  /** Runs the stoppers in order (an error in one does not keep the others from running) and deletes the folder; once. */
  close(): Promise<void>;
}

/**
 * A fresh temporary folder named `prefix...`; `stoppers` are called at
 * `close()`, or on SIGINT before the process exits 130. They read the bench's
 * variables when called, so they may name what is started later.
 *
 * @example
 * const scratch = await openScratch('mesh-bench-edge-', log, [() => passthrough?.stop(), () => mesh?.stop()]);
 * try { ... } finally { await scratch.close(); }
 */
export async function openScratch(prefix: string, log: (line: string) => void, stoppers: readonly Stopper[]): Promise<Scratch> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= (async () => {
      for (const stop of stoppers) await Promise.resolve(stop()).catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    })());
  process.once('SIGINT', () => {
    log('interrupted: stopping');
    void close().finally(() => process.exit(130));
  });
  return { dir, close };
}

/** The CPUs and Node that run the bench, for its first log line (`extra` appended). */
export function machineLine(extra = ''): string {
  return `${os.cpus().length} CPU(s) (${os.cpus()[0]?.model ?? '?'}), node ${process.version}${extra}`;
}
