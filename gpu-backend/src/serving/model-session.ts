/**
 * The session interface a loaded model runs through, in a file of its own so
 * that the factory (sessions.ts), the worker-thread pool (session-pool.ts)
 * and the repository share it without importing one another.
 */

import type * as ort from 'onnxruntime-node';

/** What the repository uses of a session: an `ort.InferenceSession`, or its instances on worker threads. */
export interface ModelSession {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  run(feeds: ort.InferenceSession.FeedsType, fetches: readonly string[]): Promise<ort.InferenceSession.ReturnType>;
  release(): Promise<void>;
  /** Why the session can run no more (every inference thread died), once that is so; absent or undefined while it can. */
  readonly failure?: string | undefined;
}

/** Opens `instances` sessions of a model as one `ModelSession`; a stand-in in tests. */
export type CreateSession = (modelPath: string, options: ort.InferenceSession.SessionOptions, instances: number) => Promise<ModelSession>;
