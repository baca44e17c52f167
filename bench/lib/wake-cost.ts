/**
 * What a message between two threads costs on this machine, on each side,
 * when the receiver is asleep against when it is awake. On a VM a post that
 * wakes a sleeping thread pays for the virtual interrupt, and the woken
 * thread for being scheduled in: the backend's main thread wakes or is woken
 * several times a batch, so this calibrates bench:main-thread's figures.
 * Both sides' CPU is read with process.threadCpuUsage.
 */

import { Worker } from 'node:worker_threads';

export interface WakeCost {
  /** The poster's CPU per post, us: to a sleeping thread, and back-to-back to an awake one. */
  postAsleepUs: number;
  postAwakeUs: number;
  /** The receiver's CPU per message it is woken for, us (its handler does nothing). */
  wokenUs: number;
}

const RECEIVER = `
const { parentPort } = require('node:worker_threads');
let cpu = 0, n = 0, last;
parentPort.on('message', (m) => {
  if (m === 'report') { parentPort.postMessage({ cpu, n }); cpu = 0; n = 0; return; }
  const now = process.threadCpuUsage();
  if (last && m.asleep) { cpu += now.user + now.system - last.user - last.system; n++; }
  last = now;
});
`;

const GAP_MS = 2;

/** About 1.5 s: `asleep` posts GAP_MS apart, then as many back-to-back ones. */
export async function measureWakeCost(posts = 500): Promise<WakeCost> {
  const worker = new Worker(RECEIVER, { eval: true });
  const report = () =>
    new Promise<{ cpu: number; n: number }>((resolve) => {
      worker.once('message', resolve);
      worker.postMessage('report');
    });
  try {
    await new Promise((resolve) => setTimeout(resolve, 100));
    let asleep = 0;
    for (let i = 0; i < posts; i++) {
      await new Promise((resolve) => setTimeout(resolve, GAP_MS));
      const c0 = process.threadCpuUsage();
      worker.postMessage({ asleep: true, i });
      const c = process.threadCpuUsage(c0);
      asleep += c.user + c.system;
    }
    const woken = await report();
    let awake = 0;
    const c0 = process.threadCpuUsage();
    for (let i = 0; i < posts; i++) worker.postMessage({ asleep: false, i });
    const c = process.threadCpuUsage(c0);
    awake = c.user + c.system;
    await report();
    // The receiver's first timed message has no "before": n is posts - 1.
    return { postAsleepUs: asleep / posts, postAwakeUs: awake / posts, wokenUs: woken.n > 0 ? woken.cpu / woken.n : Number.NaN };
  } finally {
    await worker.terminate();
  }
}
