/**
 * The Triton-style model repository (`<dir>/<model>/config.json`,
 * `<dir>/<model>/<version>/model.onnx`) and the ONNX Runtime sessions loaded
 * from it. Owns each model's lifecycle (UNAVAILABLE → LOADING → READY →
 * UNLOADING), the warm-up run at load, the rolling p50 service time, and the
 * requests holding a lease on it (queued in its batcher or running), so that
 * `unload` waits for every one of them before releasing the session: an
 * unload never drops a request it admitted. New requests are admitted only
 * while READY; during LOADING and UNLOADING they get 503 `model_not_ready`.
 */

import type { Dirent } from 'node:fs';
import { readFile, readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import type * as ort from 'onnxruntime-node';
import { MeshError } from '../../../shared/errors.ts';
import type { ExecutionProvider, HeartbeatModel } from '../../../shared/heartbeat.ts';
import type { Logger } from '../log.ts';
import { cpuOnly, instanceCount, parseModelConfig, type ModelConfig } from './model-config.ts';
import type { ModelSession, SessionFactory } from './sessions.ts';
import { RollingMedian } from './stats.ts';
import { toOrtFeeds, warmupFeeds } from './tensors.ts';

/** Triton's model states, as `POST /v2/repository/index` reports them. */
export type ModelState = 'UNAVAILABLE' | 'LOADING' | 'READY' | 'UNLOADING';

/** A model that is READY: its config, version and session. */
export interface LoadedModel {
  name: string;
  version: string;
  config: ModelConfig;
  provider: ExecutionProvider;
  /** Where its runs execute, and how many at once (instances on worker threads; 1 on the main thread). */
  thread: 'worker' | 'main';
  instances: number;
  /** Time to create the session and run the warm-up, ms. */
  loadMs: number;
}

export interface IndexEntry {
  name: string;
  version?: string;
  state: ModelState;
  reason?: string;
}

export interface RunResult {
  outputs: ort.InferenceSession.OnnxValueMapType;
  computeMs: number;
}

interface Entry {
  name: string;
  state: ModelState;
  reason: string | undefined;
  config: ModelConfig | undefined;
  version: string | undefined;
  session: ModelSession | undefined;
  provider: ExecutionProvider | undefined;
  thread: 'worker' | 'main' | undefined;
  loadMs: number;
  serviceMs: RollingMedian;
  /** Bytes of the served model.onnx: a proxy for its weights' memory. */
  memoryBytes: number | undefined;
  /** Requests admitted for this model and not yet answered (queued or running). */
  leases: number;
  /** Session runs in flight. */
  inFlight: number;
  /** Woken when `leases` and `inFlight` are both 0. */
  idle: (() => void)[];
  /** The load or unload under way; the next one waits for it. */
  transition: Promise<unknown> | undefined;
}

export interface ModelRepositoryOptions {
  dir: string;
  sessions: SessionFactory;
  log: Logger;
  /** Monotonic milliseconds (tests may freeze it). */
  now?: () => number;
}

export class ModelRepository {
  readonly dir: string;
  readonly #sessions: SessionFactory;
  readonly #log: Logger;
  readonly #now: () => number;
  readonly #entries = new Map<string, Entry>();
  /** Models the backend is meant to serve: the start set, plus loads, minus unloads. */
  readonly #desired = new Set<string>();
  #lastScan = -Infinity;

  constructor(options: ModelRepositoryOptions) {
    this.dir = options.dir;
    this.#sessions = options.sessions;
    this.#log = options.log;
    this.#now = options.now ?? (() => performance.now());
  }

  /** Names of the models in the repository directory (folders with a config.json). */
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
      const exists = await stat(path.join(this.dir, d.name, 'config.json')).then((s) => s.isFile(), () => false);
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
  async loadAll(names?: readonly string[]): Promise<LoadedModel[]> {
    const all = await this.scan();
    const wanted = names ?? all;
    if (wanted.length === 0) throw new Error(`Model repository ${this.dir} holds no model (no <model>/config.json).`);
    const loaded: LoadedModel[] = [];
    for (const name of wanted) loaded.push(await this.load(name));
    return loaded;
  }

  /**
   * Loads (or reloads nothing: a READY model is returned as it is) one model
   * and runs its warm-up. Throws `model_not_found` when the repository lacks it.
   */
  async load(name: string): Promise<LoadedModel> {
    if (!(await this.has(name))) throw new MeshError('model_not_found', `Model "${name}" is not in this backend's repository.`);
    const entry = this.#entry(name);
    this.#desired.add(name);
    while (entry.transition) await entry.transition.catch(() => undefined);
    if (entry.state === 'READY') return this.#loaded(entry);
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
   * Admits one request for the READY model until the returned function is
   * called (once it is answered): `unload` waits for every admitted request.
   * Throws like `ready()` when the model is not READY.
   */
  lease(name: string): () => void {
    this.ready(name);
    const entry = this.#entries.get(name)!;
    entry.leases++;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      entry.leases--;
      this.#wakeIfIdle(entry);
    };
  }

  /** The READY model, or a 404/503 `MeshError`. */
  ready(name: string): LoadedModel {
    const entry = this.#entries.get(name);
    if (!entry) throw new MeshError('model_not_found', `Model "${name}" is not in this backend's repository.`);
    if (entry.state !== 'READY') {
      throw new MeshError('model_not_ready', `Model "${name}" is not loaded here (state ${entry.state}).`, { retryAfter: 1 });
    }
    return this.#loaded(entry);
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

  /** The provider sessions run on: `cuda` if any model got it, else what new sessions would get. */
  get executionProvider(): ExecutionProvider {
    let any = false;
    for (const e of this.#entries.values()) {
      if (e.state !== 'READY') continue;
      any = true;
      if (e.provider === 'cuda') return 'cuda';
    }
    return any ? 'cpu' : this.#sessions.preferred;
  }

  /** Runs in flight, over all models. */
  get inFlight(): number {
    let n = 0;
    for (const e of this.#entries.values()) n += e.inFlight;
    return n;
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
  modelStats(): { name: string; version: string; state: ModelState; loadMs: number; p50Ms: number; inFlight: number }[] {
    return [...this.#entries.values()].map((e) => ({
      name: e.name,
      version: e.version ?? '',
      state: e.state,
      loadMs: e.loadMs,
      p50Ms: e.serviceMs.median,
      inFlight: e.inFlight,
    }));
  }

  /**
   * Runs the model's session once, counting the run as in flight meanwhile.
   * Runs while READY, and while UNLOADING for the requests admitted before
   * (the session is released only once they are all answered); otherwise
   * throws 503 `model_not_ready`.
   */
  async run(name: string, feeds: ort.InferenceSession.FeedsType, fetches: readonly string[]): Promise<RunResult> {
    const entry = this.#entries.get(name);
    const session = entry?.session;
    if (!entry || !session || (entry.state !== 'READY' && entry.state !== 'UNLOADING')) {
      this.ready(name);
      throw new MeshError('model_not_ready', `Model "${name}" is not loaded here.`, { retryAfter: 1 });
    }
    entry.inFlight++;
    const started = this.#now();
    try {
      const outputs = await session.run(feeds, [...fetches]);
      const computeMs = this.#now() - started;
      entry.serviceMs.add(computeMs);
      return { outputs, computeMs };
    } catch (err) {
      const failure = session.failure;
      if (failure === undefined) throw err;
      // The session is gone for good (its threads died): stop offering the model, so heartbeats say
      // it is not warm and the edge routes elsewhere; a load (or the edge's placement) opens it afresh.
      this.#broken(entry, session, failure);
      throw new MeshError('model_not_ready', `Model "${name}" stopped here (${failure}); it is no longer loaded.`, { retryAfter: 1, cause: err });
    } finally {
      entry.inFlight--;
      this.#wakeIfIdle(entry);
    }
  }

  /** Marks a READY model whose session failed for good UNAVAILABLE, once, and releases what is left of the session. */
  #broken(entry: Entry, session: ModelSession, failure: string): void {
    if (entry.session !== session) return;
    entry.session = undefined;
    entry.provider = undefined;
    entry.thread = undefined;
    entry.state = 'UNAVAILABLE';
    entry.reason = failure;
    this.#log.error(`model ${entry.name}: ${failure}; it is unavailable until it is loaded again`);
    void session.release().catch(() => undefined);
  }

  #wakeIfIdle(entry: Entry): void {
    if (entry.leases === 0 && entry.inFlight === 0) for (const wake of entry.idle.splice(0)) wake();
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
        session: undefined,
        provider: undefined,
        thread: undefined,
        loadMs: 0,
        serviceMs: new RollingMedian(128),
        memoryBytes: undefined,
        leases: 0,
        inFlight: 0,
        idle: [],
        transition: undefined,
      };
      this.#entries.set(name, entry);
    }
    return entry;
  }

  #loaded(entry: Entry): LoadedModel {
    const thread = entry.thread ?? 'main';
    return {
      name: entry.name,
      version: entry.version!,
      config: entry.config!,
      provider: entry.provider!,
      thread,
      instances: thread === 'worker' ? instanceCount(entry.config!) : 1,
      loadMs: entry.loadMs,
    };
  }

  async #readConfig(name: string): Promise<ModelConfig> {
    const file = path.join(this.dir, name, 'config.json');
    const text = await readFile(file, 'utf8');
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (err) {
      throw new Error(`${file}: not valid JSON (${(err as Error).message})`, { cause: err });
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

  async #doLoad(entry: Entry): Promise<LoadedModel> {
    const started = this.#now();
    entry.state = 'LOADING';
    entry.reason = undefined;
    let session: ModelSession | undefined;
    try {
      const config = await this.#readConfig(entry.name);
      const version = await this.#latestVersion(entry.name, config);
      entry.config = config;
      entry.version = version;
      const file = path.join(this.dir, entry.name, version, 'model.onnx');
      const opened = await this.#sessions.open(file, { cpuOnly: cpuOnly(config), instances: instanceCount(config) });
      entry.memoryBytes = (await stat(file)).size;
      session = opened.session;
      checkSessionMatchesConfig(config, session);
      const warm = this.#now();
      const warmFeeds = warmupFeeds(config);
      await session.run(toOrtFeeds(warmFeeds), config.output.map((o) => o.name));
      entry.serviceMs.add(this.#now() - warm);
      entry.session = session;
      entry.provider = opened.provider;
      entry.thread = opened.thread;
      entry.loadMs = this.#now() - started;
      entry.state = 'READY';
      const loaded = this.#loaded(entry);
      const where = loaded.thread === 'worker' ? `${loaded.instances} worker thread(s)` : 'main thread';
      this.#log.info(`model ${entry.name} v${version} loaded on ${opened.provider} (${where}) and warm in ${entry.loadMs.toFixed(0)} ms`);
      return loaded;
    } catch (err) {
      await session?.release().catch(() => undefined);
      entry.state = 'UNAVAILABLE';
      entry.session = undefined;
      entry.reason = err instanceof Error ? err.message : String(err);
      this.#log.warn(`model ${entry.name} failed to load: ${entry.reason}`);
      if (err instanceof MeshError) throw err;
      throw new Error(`Model "${entry.name}" failed to load: ${entry.reason}`, { cause: err });
    }
  }

  async #doUnload(entry: Entry): Promise<void> {
    entry.state = 'UNLOADING';
    // Every admitted request (queued or running) is answered first; checked again after each wake-up.
    while (entry.leases > 0 || entry.inFlight > 0) await new Promise<void>((resolve) => entry.idle.push(resolve));
    const session = entry.session;
    entry.session = undefined;
    entry.provider = undefined;
    entry.thread = undefined;
    entry.state = 'UNAVAILABLE';
    entry.reason = 'unloaded';
    await session?.release().catch((err: unknown) => this.#log.warn(`model ${entry.name}: releasing its session failed: ${String(err)}`));
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
