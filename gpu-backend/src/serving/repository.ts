/**
 * The Triton-style model repository (`<dir>/<model>/config.json`,
 * `<dir>/<model>/<version>/model.onnx`): owns each model's lifecycle
 * (UNAVAILABLE → LOADING → READY → UNLOADING), the warm-up run at load, the
 * rolling p50 service time, and the handle of each READY model
 * (model-handle.ts), which an inference resolves once by name. New requests
 * are admitted only while READY (else 503 `model_not_ready`); an unload waits
 * for every request it admitted before it releases the session.
 */

import type { Dirent } from 'node:fs';
import { readFile, readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { MeshError } from '../../../shared/errors.ts';
import { EXECUTION_PROVIDERS, type ExecutionProvider, type HeartbeatModel } from '../../../shared/heartbeat.ts';
import type { Logger } from '../log.ts';
import { ModelHandle } from './model-handle.ts';
import { PipelineHandle } from './pipeline-handle.ts';
import { openPipeline } from './pipelines.ts';
import { runStep } from './pipeline-steps.ts';
import { cpuOnly, instanceCount, parseModelConfig, type ModelConfig } from './model-config.ts';
import { MAX_PBTXT_BYTES, parsePbtxt } from './pbtxt.ts';
import type { ModelSession } from './model-session.ts';
import type { Scheduler } from './scheduler.ts';
import type { SessionFactory } from './sessions.ts';
import { RollingMedian } from './stats.ts';
import { toOrtFeeds } from './tensor-data.ts';
import { warmupFeeds } from './tensors.ts';
import { loadTokenizer } from './tokenizers.ts';

/** A READY model as an inference uses it: an ONNX model's handle, or a pipeline's (pipeline-handle.ts). */
export type Servable = ModelHandle | PipelineHandle;

/** Triton's model states, as `POST /v2/repository/index` reports them. */
export type ModelState = 'UNAVAILABLE' | 'LOADING' | 'READY' | 'UNLOADING';

interface IndexEntry {
  name: string;
  version?: string;
  state: ModelState;
  reason?: string;
}

interface Entry {
  name: string;
  state: ModelState;
  reason: string | undefined;
  config: ModelConfig | undefined;
  version: string | undefined;
  /** The current load's handle: set while READY and UNLOADING. */
  handle: Servable | undefined;
  loadMs: number;
  serviceMs: RollingMedian;
  /** Bytes of the served model.onnx: a proxy for its weights' memory. */
  memoryBytes: number | undefined;
  /** The load or unload under way; the next one waits for it. */
  transition: Promise<unknown> | undefined;
}

export interface ModelRepositoryOptions {
  dir: string;
  sessions: SessionFactory;
  /** The backend's slots and queue, shared by every model's batcher. */
  scheduler: Scheduler;
  log: Logger;
  /** Called once per model execution (metrics). */
  onExecution?: (model: ModelHandle, rows: number) => void;
  /** Monotonic milliseconds (tests may freeze it). */
  now?: () => number;
}

export class ModelRepository {
  readonly dir: string;
  readonly #sessions: SessionFactory;
  readonly #scheduler: Scheduler;
  readonly #onExecution: ((model: ModelHandle, rows: number) => void) | undefined;
  readonly #log: Logger;
  readonly #now: () => number;
  readonly #entries = new Map<string, Entry>();
  /** Models the backend is meant to serve: the start set, plus loads, minus unloads. */
  readonly #desired = new Set<string>();
  #lastScan = -Infinity;

  constructor(options: ModelRepositoryOptions) {
    this.dir = options.dir;
    this.#sessions = options.sessions;
    this.#scheduler = options.scheduler;
    this.#onExecution = options.onExecution;
    this.#log = options.log;
    this.#now = options.now ?? (() => performance.now());
  }

  /** Names of the models in the repository directory (folders with a config.json or a config.pbtxt). */
  async scan(): Promise<string[]> {
    this.#lastScan = this.#now();
    let dirents: Dirent[];
    try {
      dirents = await readdir(this.dir, { withFileTypes: true });
    } catch (err) {
      throw new Error(`Model repository ${this.dir} cannot be read: ${(err as Error).message}`, { cause: err });
    }
    const names: string[] = [];
    for (const d of dirents) {
      if (!d.isDirectory()) continue;
      const isFile = (file: string) => stat(path.join(this.dir, d.name, file)).then((s) => s.isFile(), () => false);
      const exists = (await isFile('config.json')) || (await isFile('config.pbtxt'));
      if (!exists) continue;
      names.push(d.name);
      this.#entry(d.name);
    }
    return names.sort();
  }

  /** True when the repository holds the model (rescans at most once a second for names it does not know). */
  async has(name: string): Promise<boolean> {
    if (this.#entries.has(name)) return true;
    if (this.#now() - this.#lastScan < 1000) return false;
    await this.scan().catch(() => []);
    return this.#entries.has(name);
  }

  /**
   * Loads the models the backend starts with (`names`, or every model in the
   * repository) and marks them as the ones it must serve to be ready.
   * Throws when one cannot be loaded.
   */
  async loadAll(names?: readonly string[]): Promise<Servable[]> {
    const all = await this.scan();
    const wanted = names ?? all;
    if (wanted.length === 0) throw new Error(`Model repository ${this.dir} holds no model (no <model>/config.json).`);
    const loaded: Servable[] = [];
    for (const name of wanted) loaded.push(await this.load(name));
    return loaded;
  }

  /**
   * Loads (or reloads nothing: a READY model is returned as it is) one model
   * and runs its warm-up. Throws `model_not_found` when the repository lacks it.
   */
  async load(name: string): Promise<Servable> {
    if (!(await this.has(name))) throw new MeshError('model_not_found', `Model "${name}" is not in this backend's repository.`);
    const entry = this.#entry(name);
    this.#desired.add(name);
    while (entry.transition) await entry.transition.catch(() => undefined);
    if (entry.state === 'READY' && entry.handle) return entry.handle;
    const transition = this.#doLoad(entry);
    entry.transition = transition;
    try {
      return await transition;
    } finally {
      entry.transition = undefined;
    }
  }

  /** Stops serving a model: new runs get 503, runs in flight finish, then the session is released. */
  async unload(name: string): Promise<void> {
    if (!(await this.has(name))) throw new MeshError('model_not_found', `Model "${name}" is not in this backend's repository.`);
    const entry = this.#entry(name);
    this.#desired.delete(name);
    while (entry.transition) await entry.transition.catch(() => undefined);
    if (entry.state !== 'READY') return;
    const transition = this.#doUnload(entry);
    entry.transition = transition;
    try {
      await transition;
    } finally {
      entry.transition = undefined;
    }
  }

  /** Unloads every model (shutdown). */
  async close(): Promise<void> {
    await Promise.all([...this.#entries.keys()].map((name) => this.unload(name).catch(() => undefined)));
  }

  /**
   * The READY model's handle, for one inference: one lookup by name. Throws
   * 404 `model_not_found` when the repository lacks the model (rescanning at
   * most once a second for a name it does not know) and 503
   * `model_not_ready` when it is not READY.
   */
  async resolve(name: string): Promise<Servable> {
    const entry = this.#entries.get(name) ?? ((await this.has(name)) ? this.#entries.get(name) : undefined);
    return readyHandle(name, entry);
  }

  /** The READY model's handle, or a 404/503 `MeshError`; never rescans. */
  ready(name: string): Servable {
    return readyHandle(name, this.#entries.get(name));
  }

  /** The model's READY handle, if it has one now: no rescan, no error (an HTTP worker's prepared job is checked against it). */
  current(name: string): Servable | undefined {
    const entry = this.#entries.get(name);
    return entry?.state === 'READY' ? entry.handle : undefined;
  }

  /** The READY ONNX model's handle (a pipeline's step); 503 `model_not_ready` when `name` is a pipeline. */
  readyModel(name: string): ModelHandle {
    const handle = this.ready(name);
    if (!(handle instanceof ModelHandle)) throw new MeshError('model_not_ready', `Model "${name}" is a pipeline, not an ONNX model.`);
    return handle;
  }

  /** The model's config when it is known (loaded, or read from disk), for metadata. */
  async config(name: string): Promise<{ config: ModelConfig; version: string | undefined }> {
    if (!(await this.has(name))) throw new MeshError('model_not_found', `Model "${name}" is not in this backend's repository.`);
    const entry = this.#entry(name);
    if (entry.config) return { config: entry.config, version: entry.version };
    const config = await this.#readConfig(name);
    return { config, version: await this.#latestVersion(name, config).catch(() => undefined) };
  }

  /** True when the model is known from the last scan (no disk access). */
  knows(name: string): boolean {
    return this.#entries.has(name);
  }

  /** The version last loaded (or being loaded), if any. */
  versionOf(name: string): string | undefined {
    return this.#entries.get(name)?.version;
  }

  state(name: string): ModelState {
    return this.#entries.get(name)?.state ?? 'UNAVAILABLE';
  }

  /** Every model in the repository with its state (OIP repository extension). */
  async index(): Promise<IndexEntry[]> {
    await this.scan().catch(() => []);
    return [...this.#entries.values()]
      .sort((a, b) => a.name.localeCompare(b.name))
      .map((e) => {
        const item: IndexEntry = { name: e.name, state: e.state };
        if (e.version !== undefined) item.version = e.version;
        if (e.reason !== undefined) item.reason = e.reason;
        return item;
      });
  }

  /** True when every model the backend is meant to serve is READY (warm). */
  get allReady(): boolean {
    if (this.#desired.size === 0) return false;
    for (const name of this.#desired) if (this.#entries.get(name)?.state !== 'READY') return false;
    return true;
  }

  /** Names the backend is meant to serve. */
  get desired(): string[] {
    return [...this.#desired].sort();
  }

  /** The provider sessions run on: a GPU one (`cuda`, then `webgpu`) if any model got it, else what new sessions would get. */
  get executionProvider(): ExecutionProvider {
    let any = false;
    let best: ExecutionProvider = 'cpu';
    for (const e of this.#entries.values()) {
      if (e.state !== 'READY') continue;
      any = true;
      if (e.handle) best = gpuFirst(best, e.handle.provider);
    }
    return any ? best : this.#sessions.preferred;
  }

  /** What heartbeats report per model: READY ones and the ones loading. */
  heartbeatModels(): HeartbeatModel[] {
    const out: HeartbeatModel[] = [];
    for (const e of [...this.#entries.values()].sort((a, b) => a.name.localeCompare(b.name))) {
      if (!e.config || e.version === undefined) continue;
      if (e.state !== 'READY' && e.state !== 'LOADING') continue;
      out.push({
        name: e.name,
        version: e.version,
        warm: e.state === 'READY',
        maxBatchSize: e.config.max_batch_size,
        p50Ms: Math.round(e.serviceMs.median * 1000) / 1000,
        ...(e.memoryBytes !== undefined ? { memoryBytes: e.memoryBytes } : {}),
      });
    }
    return out;
  }

  /** Models in the repository that are neither loaded nor loading: what the edge may ask this backend to load. */
  availableModels(): string[] {
    return [...this.#entries.values()]
      .filter((e) => e.state !== 'READY' && e.state !== 'LOADING')
      .map((e) => e.name)
      .sort();
  }

  /** Per-model numbers for /metrics. */
  modelStats(): { name: string; version: string; state: ModelState; loadMs: number; p50Ms: number }[] {
    return [...this.#entries.values()].map((e) => ({
      name: e.name,
      version: e.version ?? '',
      state: e.state,
      loadMs: e.loadMs,
      p50Ms: e.serviceMs.median,
    }));
  }

  /** Takes a READY model whose session failed for good out of service (UNAVAILABLE), once, and releases what is left of it. */
  #broken(entry: Entry, handle: ModelHandle, failure: string): void {
    if (entry.handle !== handle) return;
    entry.handle = undefined;
    entry.state = 'UNAVAILABLE';
    entry.reason = failure;
    // Heartbeats now say it is not warm, so the edge routes elsewhere; a load (or the edge's placement) opens it afresh.
    this.#log.error(`model ${entry.name}: ${failure}; it is unavailable until it is loaded again`);
    void handle.release().catch(() => undefined);
  }

  #entry(name: string): Entry {
    let entry = this.#entries.get(name);
    if (!entry) {
      entry = {
        name,
        state: 'UNAVAILABLE',
        reason: undefined,
        config: undefined,
        version: undefined,
        handle: undefined,
        loadMs: 0,
        serviceMs: new RollingMedian(128),
        memoryBytes: undefined,
        transition: undefined,
      };
      this.#entries.set(name, entry);
    }
    return entry;
  }

  /** The model's config: its config.json, or else its config.pbtxt (Triton's text format); both is an error. */
  async #readConfig(name: string): Promise<ModelConfig> {
    const dir = path.join(this.dir, name);
    const jsonFile = path.join(dir, 'config.json');
    const pbtxtFile = path.join(dir, 'config.pbtxt');
    const isFile = (file: string) => stat(file).then((s) => s.isFile(), () => false);
    const [hasJson, hasPbtxt] = await Promise.all([isFile(jsonFile), isFile(pbtxtFile)]);
    if (hasJson && hasPbtxt) {
      throw new Error(`${dir}: has both config.json and config.pbtxt; keep one of them (they could disagree)`);
    }
    let file: string;
    let json: unknown;
    if (hasPbtxt && !hasJson) {
      file = pbtxtFile;
      const size = (await stat(file)).size;
      if (size > MAX_PBTXT_BYTES) throw new Error(`${file}: is ${size} bytes; a config may be at most ${MAX_PBTXT_BYTES} bytes (1 MiB)`);
      json = parsePbtxt(await readFile(file, 'utf8'), file);
    } else {
      file = jsonFile;
      const text = await readFile(file, 'utf8');
      try {
        json = JSON.parse(text);
      } catch (err) {
        throw new Error(`${file}: not valid JSON (${(err as Error).message})`, { cause: err });
      }
    }
    const config = parseModelConfig(json, file);
    if (config.name !== name) throw new Error(`${file}: name "${config.name}" differs from its folder "${name}"`);
    return config;
  }

  /** The version folder to serve: the highest numbered one holding model.onnx (within a `specific` policy). */
  async #latestVersion(name: string, config: ModelConfig): Promise<string> {
    const dir = path.join(this.dir, name);
    const versions: number[] = [];
    for (const d of await readdir(dir, { withFileTypes: true })) {
      if (!d.isDirectory() || !/^[0-9]+$/.test(d.name)) continue;
      const hasModel = await stat(path.join(dir, d.name, 'model.onnx')).then((s) => s.isFile(), () => false);
      if (hasModel) versions.push(Number(d.name));
    }
    const policy = config.version_policy;
    const allowed = policy && 'specific' in policy ? versions.filter((v) => policy.specific.versions.includes(v)) : versions;
    if (allowed.length === 0) throw new Error(`${dir}: no numbered version folder with a model.onnx`);
    return String(Math.max(...allowed));
  }

  async #doLoad(entry: Entry): Promise<Servable> {
    const started = this.#now();
    entry.state = 'LOADING';
    entry.reason = undefined;
    let session: ModelSession | undefined;
    try {
      const config = await this.#readConfig(entry.name);
      if (config.platform === 'pipeline') return await this.#loadPipeline(entry, config, started);
      const version = await this.#latestVersion(entry.name, config);
      await loadTokenizer(config, path.join(this.dir, entry.name));
      entry.config = config;
      entry.version = version;
      const file = path.join(this.dir, entry.name, version, 'model.onnx');
      const opened = await this.#sessions.open(file, { cpuOnly: cpuOnly(config), instances: instanceCount(config) });
      entry.memoryBytes = (await stat(file)).size;
      session = opened.session;
      checkSessionMatchesConfig(config, session);
      // Warm-up: a session's first run pays one-time costs (memory arenas, kernel choices), so it is part of the load.
      // The second is timed: the first service time heartbeats report (`p50Ms`), which the edge ranks a backend by
      // until it has measured it (docs/api.md section 3.2).
      // Fresh feeds each run: a run on the inference thread takes its buffers.
      const outputs = config.output.map((o) => o.name);
      await session.run(toOrtFeeds(warmupFeeds(config)), outputs);
      const warmFeeds = toOrtFeeds(warmupFeeds(config));
      const warm = this.#now();
      await session.run(warmFeeds, outputs);
      entry.serviceMs.add(this.#now() - warm);
      entry.loadMs = this.#now() - started;
      const onExecution = this.#onExecution;
      const handle: ModelHandle = new ModelHandle({
        name: entry.name,
        version,
        config,
        session,
        provider: opened.provider,
        thread: opened.thread,
        loadMs: entry.loadMs,
        serviceMs: entry.serviceMs,
        scheduler: this.#scheduler,
        now: this.#now,
        ...(onExecution ? { onExecution: (rows: number) => onExecution(handle, rows) } : {}),
        onFailure: (failure) => this.#broken(entry, handle, failure),
      });
      entry.handle = handle;
      entry.state = 'READY';
      const where = handle.thread === 'worker' ? `${handle.instances} worker thread(s)` : 'main thread';
      this.#log.info(`model ${entry.name} v${version} loaded on ${opened.provider} (${where}) and warm in ${entry.loadMs.toFixed(0)} ms`);
      return handle;
    } catch (err) {
      await session?.release().catch(() => undefined);
      entry.state = 'UNAVAILABLE';
      entry.handle = undefined;
      entry.reason = err instanceof Error ? err.message : String(err);
      this.#log.warn(`model ${entry.name} failed to load: ${entry.reason}`);
      if (err instanceof MeshError) throw err;
      throw new Error(`Model "${entry.name}" failed to load: ${entry.reason}`, { cause: err });
    }
  }

  /**
   * Loads a pipeline: its step models first (they join the models the
   * backend must serve), then the pipeline's own code. Its version is its
   * highest numbered folder, "1" when it has none (it holds no weights).
   */
  async #loadPipeline(entry: Entry, config: ModelConfig, started: number): Promise<PipelineHandle> {
    const dir = path.join(this.dir, entry.name);
    const numbered = (await readdir(dir, { withFileTypes: true })).filter((d) => d.isDirectory() && /^[0-9]+$/.test(d.name)).map((d) => Number(d.name));
    const version = String(numbered.length > 0 ? Math.max(...numbered) : 1);
    const steps = new Map<string, ModelConfig>();
    const run = await openPipeline(config, {
      dir,
      modelDir: (name) => path.join(this.dir, name),
      load: async (name) => {
        if (name === entry.name) throw new Error(`Model "${entry.name}": a pipeline cannot be its own step`);
        const step = await this.load(name);
        if (!(step instanceof ModelHandle)) throw new Error(`Model "${entry.name}": its step "${name}" is a pipeline; steps must be ONNX models`);
        steps.set(name, step.config);
        return step.config;
      },
      run: (name, input) => runStep(this.readyModel(name), input),
    });
    const stepHandles = [...steps.keys()].map((s) => this.#entries.get(s)?.handle);
    entry.config = config;
    entry.version = version;
    entry.memoryBytes = undefined;
    entry.loadMs = this.#now() - started;
    const handle = new PipelineHandle({
      name: entry.name,
      version,
      config,
      run,
      steps,
      provider: stepHandles.reduce<ExecutionProvider | undefined>((best, h) => (h ? gpuFirst(best ?? 'cpu', h.provider) : best), undefined) ?? this.#sessions.preferred,
      loadMs: entry.loadMs,
      serviceMs: entry.serviceMs,
      now: this.#now,
    });
    entry.handle = handle;
    entry.state = 'READY';
    this.#log.info(`model ${entry.name} v${version} (pipeline ${String(config.parameters?.pipeline)} over ${[...steps.keys()].join(', ')}) ready in ${entry.loadMs.toFixed(0)} ms`);
    return handle;
  }

  async #doUnload(entry: Entry): Promise<void> {
    entry.state = 'UNLOADING';
    const handle = entry.handle;
    // Every admitted request (queued or running) is answered first.
    await handle?.drain();
    // Not current when its session failed meanwhile: `#broken` released it.
    const current = handle !== undefined && entry.handle === handle;
    entry.handle = undefined;
    entry.state = 'UNAVAILABLE';
    entry.reason = 'unloaded';
    if (current) await handle.release().catch((err: unknown) => this.#log.warn(`model ${entry.name}: releasing its session failed: ${String(err)}`));
    this.#log.info(`model ${entry.name} unloaded`);
  }
}

/** A config.json that names inputs or outputs the ONNX graph lacks would fail on every request: refuse it at load. */
function checkSessionMatchesConfig(config: ModelConfig, session: ModelSession): void {
  for (const t of config.input) {
    if (!session.inputNames.includes(t.name)) {
      throw new Error(`config input "${t.name}" is not an input of the ONNX graph (it has ${session.inputNames.join(', ')})`);
    }
  }
  for (const t of config.output) {
    if (!session.outputNames.includes(t.name)) {
      throw new Error(`config output "${t.name}" is not an output of the ONNX graph (it has ${session.outputNames.join(', ')})`);
    }
  }
}

function readyHandle(name: string, entry: Entry | undefined): Servable {
  if (!entry) throw new MeshError('model_not_found', `Model "${name}" is not in this backend's repository.`);
  if (entry.state !== 'READY' || !entry.handle) {
    throw new MeshError('model_not_ready', `Model "${name}" is not loaded here (state ${entry.state}).`, { retryAfter: 1 });
  }
  return entry.handle;
}

/** Of two providers, the one a heartbeat reports: CUDA over WebGPU over CPU. */
function gpuFirst(a: ExecutionProvider, b: ExecutionProvider): ExecutionProvider {
  return EXECUTION_PROVIDERS.indexOf(a) <= EXECUTION_PROVIDERS.indexOf(b) ? a : b;
}
