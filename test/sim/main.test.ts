import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(import.meta.dirname, '../..');
const sim = (...args: string[]) => spawnSync(process.execPath, ['sim/main.ts', ...args], { cwd: ROOT, encoding: 'utf8', timeout: 30_000 });

describe('npm run sim, the command line', () => {
  it('answers --help with the usage and exit 0', () => {
    const r = sim('--help');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^usage: npm run sim -- \[--quick\]/);
  });

  it('refuses a bad option, count or policy with one line saying why, the usage and exit 2, before any work', () => {
    for (const [args, why] of [
      [['--bogus'], /Unknown option '--bogus'/],
      [['--requests', '1.5'], /--requests must be a positive integer/],
      [['--rate', '0'], /--rate must be a positive number/],
      [['--isolates', '0'], /--isolates must be a positive integer up to 64/],
      [['--isolates', '65'], /--isolates must be a positive integer up to 64/],
      [['--rates', '1000,0'], /--rates must be a positive number/],
      [['--rates', '1000,,2000'], /--rates must be a positive number/],
      [['--rates', Array(13).fill('1000').join(',')], /--rates takes 1 to 12 rates, got 13/],
      [['--policies', 'cloud-nearest,teleport'], /unknown policy "teleport"; policies: cloud-us-east, cloud-nearest/],
    ] as const) {
      const r = sim(...args);
      expect(r.status, args.join(' ')).toBe(2);
      expect(r.stderr).toMatch(why);
      expect(r.stderr).toContain('usage: npm run sim');
      expect(r.stderr).not.toMatch(/at .*\.ts:\d+/); // no stack trace
    }
  });
});
