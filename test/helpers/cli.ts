/** Runs one of the project's command-line programs as a process, on the Node running the tests, and collects what it printed. */

import { spawn } from 'node:child_process';

export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface CliOptions {
  /** Written to its standard input, then closed (default: nothing). */
  stdin?: string;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Killed after this long (default 20 s). */
  timeoutMs?: number;
}

/** Runs `node <script> ...args` and resolves when it exits, with its exit code and output. */
export function runCli(script: string, args: readonly string[], options: CliOptions = {}): Promise<CliRun> {
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, [script, ...args], {
      stdio: ['pipe', 'pipe', 'pipe'],
      timeout: options.timeoutMs ?? 20_000,
      ...(options.cwd ? { cwd: options.cwd } : {}),
      ...(options.env ? { env: options.env } : {}),
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', fail);
    child.on('close', (code) => done({ code, stdout, stderr }));
    child.stdin.end(options.stdin ?? '');
  });
}
