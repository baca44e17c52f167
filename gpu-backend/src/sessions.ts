/**
 * Opening ONNX Runtime sessions on the best execution provider that works.
 * Providers are tried in the configured order (`cuda` first by default); when
 * CUDA cannot initialise (no GPU, no driver, or onnxruntime-node's CUDA add-on
 * not installed) it says so in ONE log line, with ORT's reason, and every
 * model is served on `cpu`. The provider a session actually got is returned,
 * so heartbeats and /v2/health/ready report the truth.
 */

import * as ort from 'onnxruntime-node';
import type { ExecutionProvider } from '../../shared/heartbeat.ts';
import type { Logger } from './log.ts';

/** `ort.InferenceSession.create`, or a stand-in in tests. */
export type CreateSession = (modelPath: string, options: ort.InferenceSession.SessionOptions) => Promise<ort.InferenceSession>;

export interface OpenedSession {
  session: ort.InferenceSession;
  provider: ExecutionProvider;
}

export interface SessionFactoryOptions {
  /** In order of preference, e.g. `['cuda', 'cpu']`. */
  providers: readonly ExecutionProvider[];
  cudaDeviceId?: number;
  intraOpThreads?: number;
  log: Logger;
  create?: CreateSession;
}

const createOrtSession: CreateSession = (modelPath, options) => ort.InferenceSession.create(modelPath, options);

export class SessionFactory {
  readonly #providers: readonly ExecutionProvider[];
  readonly #cudaDeviceId: number;
  readonly #intraOpThreads: number | undefined;
  readonly #log: Logger;
  readonly #create: CreateSession;
  #cudaFailure: string | undefined;

  constructor(options: SessionFactoryOptions) {
    if (options.providers.length === 0) throw new Error('SessionFactory needs at least one execution provider.');
    this.#providers = options.providers;
    this.#cudaDeviceId = options.cudaDeviceId ?? 0;
    this.#intraOpThreads = options.intraOpThreads;
    this.#log = options.log;
    this.#create = options.create ?? createOrtSession;
    // ORT prints its own errors to stderr (e.g. the failed dlopen of the CUDA
    // add-on); every failure reaches us as an exception and is logged once by us.
    if (!options.create) ort.env.logLevel = 'fatal';
  }

  /** Why CUDA could not initialise, once it was tried and failed. */
  get cudaFailure(): string | undefined {
    return this.#cudaFailure;
  }

  /**
   * The provider new sessions get: the first configured one not known to be
   * broken. Before the first session this is a hope, after it a fact.
   */
  get preferred(): ExecutionProvider {
    return this.#providers.find((p) => !(p === 'cuda' && this.#cudaFailure !== undefined)) ?? 'cpu';
  }

  /**
   * Opens `modelPath` on the first provider that initialises (only `cpu` with
   * `cpuOnly`, a model whose instance_group is `KIND_CPU`). Throws when none does.
   */
  async open(modelPath: string, options: { cpuOnly?: boolean } = {}): Promise<OpenedSession> {
    let lastError: unknown;
    const providers: readonly ExecutionProvider[] = options.cpuOnly ? ['cpu'] : this.#providers;
    for (const provider of providers) {
      if (provider === 'cuda' && this.#cudaFailure !== undefined) continue;
      try {
        const session = await this.#create(modelPath, this.#options(provider));
        return { session, provider };
      } catch (err) {
        lastError = err;
        if (provider !== 'cuda') throw err;
        this.#cudaFailure = firstLine(err);
        const next = providers.find((p) => p !== 'cuda') ?? 'none';
        this.#log.warn(
          `CUDA execution provider could not initialise on device ${this.#cudaDeviceId}: ${this.#cudaFailure}; serving on ${next}. ` +
            '(CUDA needs an NVIDIA GPU with its driver and the CUDA build of onnxruntime-node, which its postinstall fetches.)',
        );
      }
    }
    throw lastError ?? new Error('No execution provider is configured.');
  }

  #options(provider: ExecutionProvider): ort.InferenceSession.SessionOptions {
    const executionProviders: ort.InferenceSession.ExecutionProviderConfig[] =
      provider === 'cuda' ? [{ name: 'cuda', deviceId: this.#cudaDeviceId }] : ['cpu'];
    const options: ort.InferenceSession.SessionOptions = {
      executionProviders,
      graphOptimizationLevel: 'all',
      logSeverityLevel: 3,
      // Idle intra-op threads sleep instead of spinning: the HTTP and crypto work shares the cores.
      extra: { session: { intra_op: { allow_spinning: '0' } } },
    };
    if (this.#intraOpThreads !== undefined) options.intraOpNumThreads = this.#intraOpThreads;
    return options;
  }
}

function firstLine(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  return message.split('\n')[0]!.trim() || 'unknown error';
}
