/**
 * Opens ONNX Runtime sessions on the first configured execution provider that
 * works (`cuda` or `webgpu`, then `cpu`), saying once, with ORT's reason, when
 * a GPU provider cannot initialise, and returns the provider a session really
 * got so heartbeats and /v2/health/ready report the truth. It also decides where a model's runs
 * execute (INFERENCE_THREAD): on worker threads (session-pool.ts; every WebGPU
 * session on the one thread they share, shared-session-thread.ts) or the main thread.
 */

import { availableParallelism } from 'node:os';
import * as ort from 'onnxruntime-node';
import type { ExecutionProvider } from '../../../shared/heartbeat.ts';
import type { Logger } from '../log.ts';
import type { CreateSession, ModelSession } from './model-session.ts';
import { SessionPool } from './session-pool.ts';
import { SharedSessionThread } from './shared-session-thread.ts';

/**
 * Where `session.run` executes: `worker` on worker threads, one per model
 * instance, so the main thread serves HTTP while a batch runs; `main` on the
 * main thread, one session per model whatever its instance count; `auto`
 * (default) `worker` for GPU sessions and on CPU hosts of at least
 * `WORKER_MIN_CORES` cores, else `main`.
 */
export type InferenceThread = 'auto' | 'worker' | 'main';

/**
 * Below this many cores a CPU session stays on the main thread: on a worker
 * the model would take the cores the HTTP work needs, where on a GPU, or with
 * cores to spare, the HTTP work overlaps the run (docs/benchmarks.md).
 */
const WORKER_MIN_CORES = 4;

interface OpenedSession {
  session: ModelSession;
  provider: ExecutionProvider;
  /** Where its runs execute. */
  thread: 'worker' | 'main';
}

export interface SessionFactoryOptions {
  /** In order of preference, e.g. `['cuda', 'cpu']` or `['webgpu', 'cpu']`. */
  providers: readonly ExecutionProvider[];
  cudaDeviceId?: number;
  intraOpThreads?: number;
  /** Default `auto`. */
  thread?: InferenceThread;
  /** Cores of this host (`auto` and CPU threads on workers); default os.availableParallelism(). */
  cores?: number;
  log: Logger;
  create?: CreateSession;
}

const createOnWorkers: CreateSession = (modelPath, options, instances) => SessionPool.open(modelPath, options, instances);
const createOnMain: CreateSession = (modelPath, options) => ort.InferenceSession.create(modelPath, options);

export class SessionFactory {
  readonly #providers: readonly ExecutionProvider[];
  readonly #cudaDeviceId: number;
  readonly #intraOpThreads: number | undefined;
  readonly #log: Logger;
  readonly #create: CreateSession | undefined;
  readonly #thread: InferenceThread;
  readonly #cores: number;
  /** Why each GPU provider that was tried could not initialise. */
  readonly #failures = new Map<ExecutionProvider, string>();
  /** The thread every WebGPU session runs on, started with the first. */
  #shared: SharedSessionThread | undefined;
  readonly #onSharedThread: CreateSession = (modelPath, options) => (this.#shared ??= new SharedSessionThread()).open(modelPath, options);

  constructor(options: SessionFactoryOptions) {
    if (options.providers.length === 0) throw new Error('SessionFactory needs at least one execution provider.');
    this.#providers = options.providers;
    this.#cudaDeviceId = options.cudaDeviceId ?? 0;
    this.#intraOpThreads = options.intraOpThreads;
    this.#log = options.log;
    this.#thread = options.thread ?? 'auto';
    this.#cores = options.cores ?? availableParallelism();
    this.#create = options.create;
    // ORT prints its own errors to stderr (e.g. the failed dlopen of the CUDA
    // add-on); every failure reaches us as an exception and is logged once by us.
    if (!options.create) ort.env.logLevel = 'fatal';
  }

  /** Why CUDA could not initialise, once it was tried and failed. */
  get cudaFailure(): string | undefined {
    return this.#failures.get('cuda');
  }

  /** Why WebGPU could not initialise (e.g. no GPU adapter), once it was tried and failed. */
  get webgpuFailure(): string | undefined {
    return this.#failures.get('webgpu');
  }

  /**
   * The provider new sessions get: the first configured one not known to be
   * broken. Before the first session this is a hope, after it a fact.
   */
  get preferred(): ExecutionProvider {
    return this.#providers.find((p) => !this.#failures.has(p)) ?? 'cpu';
  }

  /**
   * Opens `modelPath` on the first provider that initialises (only `cpu` with
   * `cpuOnly`, a model whose instance_group is `KIND_CPU`), as `instances`
   * sessions on worker threads (one on the main thread with `thread: 'main'`;
   * WebGPU: one session, on the thread all WebGPU sessions share).
   * Throws when no provider works.
   */
  async open(modelPath: string, options: { cpuOnly?: boolean; instances?: number } = {}): Promise<OpenedSession> {
    let lastError: unknown;
    const providers: readonly ExecutionProvider[] = options.cpuOnly ? ['cpu'] : this.#providers;
    for (const provider of providers) {
      if (this.#failures.has(provider)) continue;
      const thread = this.threadFor(provider);
      const shared = provider === 'webgpu' && thread === 'worker';
      const instances = thread === 'main' || shared ? 1 : Math.max(1, options.instances ?? 1);
      if (shared && (options.instances ?? 1) > 1) {
        this.#log.info(`${modelPath}: ${options.instances} instances asked for, 1 serves: WebGPU sessions share one thread (one device, one run at a time).`);
      }
      const create = this.#create ?? (shared ? this.#onSharedThread : thread === 'worker' ? createOnWorkers : createOnMain);
      try {
        const session = await create(modelPath, this.#options(provider, thread, instances), instances);
        return { session, provider, thread };
      } catch (err) {
        lastError = err;
        if (provider === 'cpu') throw err;
        const why = gpuFailureReason(provider, err);
        this.#failures.set(provider, why);
        const next = providers.find((p) => !this.#failures.has(p)) ?? 'none';
        this.#log.warn(
          provider === 'cuda'
            ? `CUDA execution provider could not initialise on device ${this.#cudaDeviceId}: ${why}; serving on ${next}. ` +
                '(CUDA needs an NVIDIA GPU with its driver and the CUDA build of onnxruntime-node, which `npm run install:cuda` fetches.)'
            : `WebGPU execution provider could not initialise: ${why}; serving on ${next}. ` +
                '(WebGPU needs a GPU with a Vulkan driver and the Vulkan loader, libvulkan.so.1; onnxruntime-node bundles the rest.)',
        );
      }
    }
    throw lastError ?? new Error('No execution provider is configured.');
  }

  /** Where sessions on `provider` run, INFERENCE_THREAD resolved. */
  threadFor(provider: ExecutionProvider): 'worker' | 'main' {
    if (this.#thread !== 'auto') return this.#thread;
    return provider !== 'cpu' || this.#cores >= WORKER_MIN_CORES ? 'worker' : 'main';
  }

  #options(provider: ExecutionProvider, thread: 'worker' | 'main', instances: number): ort.InferenceSession.SessionOptions {
    const executionProviders: ort.InferenceSession.ExecutionProviderConfig[] =
      provider === 'cuda' ? [{ name: 'cuda', deviceId: this.#cudaDeviceId }] : provider === 'webgpu' ? [{ name: 'webgpu' }] : ['cpu'];
    const options: ort.InferenceSession.SessionOptions = {
      executionProviders,
      graphOptimizationLevel: 'all',
      logSeverityLevel: 3,
      // Idle intra-op threads sleep instead of spinning: the HTTP and crypto work shares the cores.
      extra: { session: { intra_op: { allow_spinning: '0' } } },
    };
    if (this.#intraOpThreads !== undefined) options.intraOpNumThreads = this.#intraOpThreads;
    // CPU instances on worker threads leave one core to the main thread's HTTP work and share the rest.
    else if (provider === 'cpu' && thread === 'worker') options.intraOpNumThreads = Math.max(1, Math.floor((this.#cores - 1) / instances));
    return options;
  }
}

function firstLine(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  return message.split('\n')[0]!.trim() || 'unknown error';
}

/**
 * ORT's reason, shortened to what a provider can act on: WebGPU's first line
 * is a source location and an assertion, its cause (e.g. "No supported
 * adapters") sits after "Failed to get a WebGPU adapter".
 */
function gpuFailureReason(provider: ExecutionProvider, err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  if (provider === 'webgpu') {
    const adapter = /Failed to get a WebGPU adapter:?\s*([^\n]*)/.exec(message);
    if (adapter) return `no WebGPU adapter (${adapter[1]!.trim() || 'none found'})`;
  }
  return firstLine(err);
}
