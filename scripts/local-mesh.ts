/**
 * The local mesh (docs/api.md section 1): the edge Worker in workerd through
 * `wrangler dev`, and one GPU backend process per region, each a provider of
 * its own with a key generated at start and admitted through the admin API.
 * `npm start` runs it; the integration tests and benchmarks start the same
 * mesh on free ports and stop backends to inject faults.
 *
 * Every key here is a LOCAL-DEV key generated at start and kept under .mesh/
 * (gitignored); none is a secret worth anything outside this machine.
 */

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import path from 'node:path';
import { importJWK, type JWK } from 'jose';
import { prepareRepository } from '../gpu-backend/src/models.ts';
import { generateEd25519, issueKey } from '../shared/keys.ts';
import { regionById } from '../shared/regions.ts';

export const ROOT = path.resolve(import.meta.dirname, '..');
const BIN = path.join(ROOT, 'node_modules', '.bin');

export interface BackendSpec {
  id: string;
  region: string;
  provider: string;
  /** The models it loads at start (its MODELS); default the mesh's `models`. */
  models?: readonly string[];
}

/** The demo models: what backends load unless told otherwise (tests stay light). */
export const DEMO_MODEL_NAMES = ['embed', 'classifier'] as const;
/** Every model `npm start` serves: the demo models and the OCR pipeline with its two models. */
export const ALL_MODEL_NAMES = [...DEMO_MODEL_NAMES, 'ocr-det', 'ocr-rec', 'ocr'] as const;

/** The three providers of docs/api.md section 1. */
export const DEFAULT_BACKENDS: readonly BackendSpec[] = [
  { id: 'sg-1', region: 'ap-southeast', provider: 'provider-sg' },
  { id: 'fra-1', region: 'eu-west', provider: 'provider-fra' },
  { id: 'iad-1', region: 'us-east', provider: 'provider-iad' },
];

export interface MeshOptions {
  /** Edge port; 0 picks a free one. Default MESH_PORT or 8787. */
  port?: number;
  /** First backend port; 0 picks free ones. Default BACKEND_PORT_BASE or 9101. */
  backendPortBase?: number;
  backends?: readonly BackendSpec[];
  /** Where keys, state and local.json go. Default .mesh/ in the repository. */
  dir?: string;
  /** Where child output and progress lines go. Default: stdout with a prefix. */
  log?: (line: string) => void;
  /** Extra env for backends (e.g. HEARTBEAT_INTERVAL_MS); its MODELS wins over `models`. */
  backendEnv?: Record<string, string>;
  /** The models every backend loads at start, unless its spec names its own. Default DEMO_MODEL_NAMES. */
  models?: readonly string[];
  /** Extra Worker vars (e.g. BACKEND_TTL_SECONDS). */
  edgeVars?: Record<string, string>;
  /** Give up if the mesh is not ready after this long. Default 120 s. */
  readyTimeoutMs?: number;
  /**
   * The edge's wrangler config, when not the repository's wrangler.toml
   * (bench:edge runs one without queue consumers). Its `main` must be absolute.
   */
  wranglerConfig?: string;
  /**
   * false: the edge without wrangler's DevTools inspector on its isolate
   * (scripts/wrangler-dev-no-inspector.ts; bench:edge), which otherwise
   * serializes every console line into the DevTools protocol on the Worker's
   * thread. Default true (`npm start`, bench/profile-edge.ts).
   */
  inspector?: boolean;
  /**
   * The URL a backend announces in its heartbeats (its PUBLIC_URL), from its
   * spec and the port it listens on; e.g. a fault proxy's in front of it.
   * Default: the backend's own `http://127.0.0.1:<port>`.
   */
  publicUrl?: (spec: BackendSpec, port: number) => string | Promise<string>;
}

export interface RunningBackend extends BackendSpec {
  /** Where the backend itself listens. */
  url: string;
  port: number;
  /** The URL it announces, which the edge dispatches to (`url` unless `MeshOptions.publicUrl` says otherwise). */
  publicUrl: string;
  process: ChildProcess | undefined;
  /** Stops the backend process (SIGKILL when `hard`, else SIGTERM and a drain). */
  stop(hard?: boolean): Promise<void>;
  /** Starts it again after a stop (same id, port and key). */
  start(): Promise<void>;
}

export interface LocalMesh {
  edgeUrl: string;
  consumerKey: string;
  adminToken: string;
  backends: RunningBackend[];
  /** Path of the written local.json. */
  localJson: string;
  /** The local-dev mesh private key (tests sign dispatch tokens with it). */
  meshPrivateJwk: JWK;
  /** wrangler dev's DevTools inspector for the edge (bench/profile-edge.ts); undefined when started without it. */
  inspectorUrl: string | undefined;
  /** Signs another operator key (consumer, billing, admin) with the local mesh key. */
  issue(sub: string, role: 'consumer' | 'billing' | 'admin', regions?: string[]): Promise<string>;
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return (await freePorts(1))[0]!;
}

/**
 * `n` distinct free loopback ports, all held open together until every one is
 * known: ports asked for one after another, each released before the next,
 * can come back twice (a backend then fails with EADDRINUSE on a port the
 * edge's inspector took).
 */
export async function freePorts(n: number): Promise<number[]> {
  const servers = Array.from({ length: n }, () => createServer());
  try {
    return await Promise.all(
      servers.map(
        (srv) =>
          new Promise<number>((resolve, reject) => {
            srv.once('error', reject);
            srv.listen(0, '127.0.0.1', () => resolve((srv.address() as { port: number }).port));
          }),
      ),
    );
  } finally {
    await Promise.all(servers.map((srv) => new Promise((resolve) => (srv.listening ? srv.close(resolve) : resolve(undefined)))));
  }
}

/**
 * wrangler dev cannot fetch `Request.cf` offline and prints a stack trace for
 * it each time; that is expected here, so the launcher keeps one line of it.
 * At `--log-level log` (the Worker's own lines) wrangler also prints its
 * banner, the bindings table, and a line per request that repeats the
 * Worker's JSON request line: those are dropped.
 */
const WRANGLER_CHATTER =
  /^\[edge\] (?:\s*⛅️ wrangler|─+$|⎔ |Using secrets defined in|Your Worker has access to|Binding\s+Resource|env\.\w+ |\[wrangler:info\] (?:GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS) \S+ \d{3} )/;

function quietEdge(log: (line: string) => void): (line: string) => void {
  let said = false;
  return (line) => {
    if (/ENOTFOUND workers\.cloudflare\.com|^\[edge\]\s+at /.test(line) || WRANGLER_CHATTER.test(line)) return;
    if (line.includes('Unable to fetch the `Request.cf` object')) {
      if (said) return;
      said = true;
      line = '[edge] (expected offline) wrangler cannot fetch Request.cf; the edge uses x-mesh-dev-colo or a placeholder';
    }
    log(line);
  };
}

function pipeLines(child: ChildProcess, prefix: string, log: (line: string) => void): void {
  for (const stream of [child.stdout, child.stderr]) {
    let buf = '';
    stream?.setEncoding('utf8');
    stream?.on('data', (chunk: string) => {
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).trimEnd();
        buf = buf.slice(nl + 1);
        if (line) log(prefix ? `${prefix} ${line}` : line);
      }
    });
  }
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

async function kill(child: ChildProcess | undefined, graceMs = 5000): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const done = exited(child);
  // Each child leads its own process group (detached), so its own children go too.
  const signal = (sig: NodeJS.Signals) => {
    try {
      process.kill(-child.pid!, sig);
    } catch {
      child.kill(sig);
    }
  };
  // No grace: SIGKILL alone, so a "hard" stop is a crash, not a drain.
  if (graceMs === 0) {
    signal('SIGKILL');
    await done;
    return;
  }
  signal('SIGTERM');
  const timer = setTimeout(() => signal('SIGKILL'), graceMs);
  await done;
  clearTimeout(timer);
}

/** How often startMesh starts a backend again on another random port, when its own was taken before it listened. */
const RELAUNCHES = 3;

async function waitFor<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>, isDead?: () => string | undefined): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    const dead = isDead?.();
    if (dead) throw new Error(`${what}: ${dead}`);
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`${what}: not ready after ${timeoutMs} ms${last ? ` (${String(last)})` : ''}`);
}

/** Starts the whole local mesh and resolves when every backend is registered and warm, and the edge routes by it. */
export async function startMesh(opts: MeshOptions = {}): Promise<LocalMesh> {
  const log = opts.log ?? ((line: string) => console.log(line));
  const dir = opts.dir ?? path.join(ROOT, '.mesh');
  const specs = opts.backends ?? DEFAULT_BACKENDS;
  const readyTimeoutMs = opts.readyTimeoutMs ?? 120_000;
  const base = opts.backendPortBase ?? Number(process.env.BACKEND_PORT_BASE ?? 9101);
  // The edge's ports at random, in one go, so that no two are the same. A backend's is chosen just before it starts
  // (below): chosen here, wrangler's own sockets had seconds to take it first.
  const [inspectorPort, randomPort] = await freePorts(2);
  const port = opts.port === 0 ? randomPort! : (opts.port ?? Number(process.env.MESH_PORT ?? 8787));
  const edgeUrl = `http://127.0.0.1:${port}`;
  const children: ChildProcess[] = [];
  let stopping = false;

  const repo = path.join(ROOT, 'gpu-backend', 'models');
  await prepareRepository(repo, (line) => log(`[models] ${line}`));

  await rm(path.join(dir, 'state'), { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  const mesh = await generateEd25519(`local-dev-${Date.now().toString(36)}`);
  const envFile = path.join(dir, 'edge.env');
  await writeFile(
    envFile,
    `# LOCAL-DEV signing key, generated by npm start; not a production secret.\nMESH_SIGNING_KEYS='${JSON.stringify({ keys: [mesh.privateJwk] })}'\n`,
    { mode: 0o600 },
  );

  const vars: Record<string, string> = { MESH_DEV: '1', MESH_ISSUER: edgeUrl, ...opts.edgeVars };
  log(`[mesh] starting the edge (wrangler dev, workerd) on ${edgeUrl}`);
  const withInspector = opts.inspector !== false;
  const edge = spawn(
    withInspector ? path.join(BIN, 'wrangler') : process.execPath,
    [
      ...(withInspector ? [] : [path.join(ROOT, 'scripts', 'wrangler-dev-no-inspector.ts')]),
      'dev',
      ...(opts.wranglerConfig ? ['--config', opts.wranglerConfig] : []),
      '--ip', '127.0.0.1',
      '--port', String(port),
      '--inspector-port', String(inspectorPort),
      '--env-file', envFile,
      '--persist-to', path.join(dir, 'state'),
      '--show-interactive-dev-session=false',
      // `log`: the Worker's console.log, its per-request JSON lines among them (docs/api.md section 2.12).
      '--log-level', 'log',
      ...Object.entries(vars).flatMap(([k, v]) => ['--var', `${k}:${v}`]),
    ],
    { cwd: ROOT, env: { ...process.env, WRANGLER_SEND_METRICS: 'false', PATH: `${BIN}:${process.env.PATH}` }, stdio: ['ignore', 'pipe', 'pipe'], detached: true },
  );
  children.push(edge);
  pipeLines(edge, '[edge]', quietEdge(log));

  const stopAll = async () => {
    stopping = true;
    await Promise.all(children.map((c) => kill(c)));
  };

  try {
    await waitFor(
      'edge',
      60_000,
      async () => ((await fetch(`${edgeUrl}/v2/health/ready`)).ok ? true : undefined),
      () => (edge.exitCode !== null ? `wrangler dev exited with code ${edge.exitCode}` : undefined),
    );
    const meshKey = await importJWK(mesh.privateJwk, 'EdDSA');
    const issue = (sub: string, role: 'consumer' | 'billing' | 'admin', regions?: string[]) =>
      issueKey(meshKey, mesh.privateJwk.kid!, { issuer: edgeUrl, sub, role, ...(regions ? { regions } : {}) });
    const adminToken = await issue('local-operator', 'admin');
    const consumerKey = await issue('local-consumer', 'consumer');

    const backends: RunningBackend[] = [];
    /** Backend processes that failed to listen because their port was taken (EADDRINUSE). */
    const portTaken = new WeakSet<ChildProcess>();
    const closed = new WeakSet<ChildProcess>();
    /** How each backend starts again on another random port; how often it has. */
    const relaunch = new Map<RunningBackend, () => Promise<void>>();
    const relaunched = new Map<RunningBackend, number>();
    let relaunchFailed: unknown;
    for (const [i, spec] of specs.entries()) {
      const region = regionById(spec.region);
      if (!region) throw new Error(`backend ${spec.id}: unknown region ${spec.region}`);
      const pair = await generateEd25519(`${spec.provider}-local-dev`);
      const admitted = await fetch(`${edgeUrl}/admin/providers`, {
        method: 'POST',
        headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
        body: JSON.stringify({ id: spec.provider, publicJwk: pair.publicJwk }),
      });
      if (!admitted.ok) throw new Error(`admitting ${spec.provider} failed: ${admitted.status} ${await admitted.text()}`);
      const backendEnv = {
        ...process.env,
        PATH: `${BIN}:${process.env.PATH}`,
        BACKEND_ID: spec.id,
        PROVIDER_ID: spec.provider,
        PROVIDER_KEY: JSON.stringify(pair.privateJwk),
        HOST: '127.0.0.1',
        REGION: spec.region,
        EDGE_URL: edgeUrl,
        MESH_ISSUER: edgeUrl,
        MODEL_REPOSITORY: repo,
        EXECUTION_PROVIDERS: process.env.EXECUTION_PROVIDERS ?? 'cuda,cpu',
        HEARTBEAT_INTERVAL_MS: '1000',
        MODELS: (spec.models ?? opts.models ?? DEMO_MODEL_NAMES).join(','),
        ...opts.backendEnv,
      };
      const backend: RunningBackend = {
        ...spec,
        url: '',
        port: 0,
        publicUrl: '',
        process: undefined,
        async start() {
          const child = spawn(process.execPath, [path.join(ROOT, 'gpu-backend', 'src', 'main.ts')], {
            cwd: ROOT,
            env: { ...backendEnv, PORT: String(backend.port), PUBLIC_URL: backend.publicUrl },
            stdio: ['ignore', 'pipe', 'pipe'],
            detached: true,
          });
          children.push(child);
          backend.process = child;
          // The backend prefixes its own lines with `[backend <id>]`.
          pipeLines(child, '', (line) => {
            if (line.includes('EADDRINUSE')) portTaken.add(child);
            log(line);
          });
          child.once('exit', (code, sig) => {
            if (!stopping && backend.process === child) log(`[mesh] backend ${spec.id} exited (${sig ?? code})`);
          });
          // Exited, and its last lines read (an EADDRINUSE among them).
          child.once('close', () => closed.add(child));
        },
        async stop(hard = false) {
          const child = backend.process;
          backend.process = undefined;
          if (child) await kill(child, hard ? 0 : 10_000);
        },
      };
      /** Starts it on `bport` (its PORT and PUBLIC_URL). */
      const launch = async (bport: number) => {
        backend.port = bport;
        backend.url = `http://127.0.0.1:${bport}`;
        backend.publicUrl = opts.publicUrl ? await opts.publicUrl(spec, bport) : backend.url;
        await backend.start();
      };
      // A random port is free when chosen, not when the backend binds it after loading its models: another socket
      // (an outgoing connection's ephemeral port) may take it meanwhile. Then it starts again on another (isDead).
      relaunch.set(backend, async () => launch(await freePort()));
      await launch(base === 0 ? await freePort() : base + i);
      backends.push(backend);
    }
    log(`[mesh] ${backends.length} backends starting; waiting until each is registered and warm`);

    const isDead = () => {
      if (relaunchFailed !== undefined) return `a backend could not start again: ${String(relaunchFailed)}`;
      for (const b of backends) {
        const child = b.process;
        if (!child || !closed.has(child)) continue;
        const times = relaunched.get(b) ?? 0;
        if (base === 0 && portTaken.has(child) && times < RELAUNCHES) {
          relaunched.set(b, times + 1);
          log(`[mesh] backend ${b.id}: port ${b.port} was taken before it listened; starting it on another`);
          b.process = undefined;
          relaunch.get(b)!().catch((err: unknown) => (relaunchFailed = err));
          continue;
        }
        return `backend ${b.id} exited with code ${child.exitCode}`;
      }
      return edge.exitCode !== null ? 'wrangler dev exited' : undefined;
    };
    type Known = { id: string; region: string; ready: boolean; models: { name: string; warm: boolean }[] };
    const known = await waitFor('backends', readyTimeoutMs, async () => {
      const res = await fetch(`${edgeUrl}/admin/backends`, { headers: { authorization: `Bearer ${adminToken}` } });
      if (!res.ok) return undefined;
      const { backends: known } = (await res.json()) as { backends: Known[] };
      const warm = new Set(known.filter((b) => b.ready && b.models.length > 0 && b.models.every((m) => m.warm)).map((b) => b.id));
      return backends.every((b) => warm.has(b.id)) ? known : undefined;
    }, isDead);
    // The directories know; the edge isolate routes by its snapshot, refreshed in the background a request after it
    // is SNAPSHOT_REFRESH_MS old (workers/directory/snapshot.ts). Ready once it lists a model of every region's
    // backends as warm there (GET /v1/models pinned to the region; it lists only offered models, and a pipeline's
    // stages are not), so that a test's first request is routed as the directories say.
    const expected = new Map<string, Set<string>>();
    for (const b of known.filter((k) => backends.some((r) => r.id === k.id))) {
      const models = expected.get(b.region) ?? new Set<string>();
      for (const m of b.models) models.add(m.name);
      expected.set(b.region, models);
    }
    await waitFor('the edge\'s routing snapshot', readyTimeoutMs, async () => {
      for (const [region, models] of expected) {
        const res = await fetch(`${edgeUrl}/v1/models`, { headers: { authorization: `Bearer ${consumerKey}`, 'x-mesh-region': region } });
        if (!res.ok) throw new Error(`GET /v1/models in ${region}: ${res.status} ${await res.text()}`);
        const listed = new Set(((await res.json()) as { data: { id: string }[] }).data.map((m) => m.id));
        if (![...models].some((m) => listed.has(m))) throw new Error(`the edge lists none of ${[...models].join(', ')} as warm in ${region} yet`);
      }
      return true;
    }, isDead);

    const localJson = path.join(dir, 'local.json');
    const info = {
      edgeUrl,
      consumerKey,
      adminToken,
      jwksUrl: `${edgeUrl}/.well-known/jwks.json`,
      backends: backends.map(({ id, url, region, provider }) => ({ id, url, region, provider })),
    };
    await writeFile(localJson, JSON.stringify(info, null, 2) + '\n', { mode: 0o600 });
    return { edgeUrl, consumerKey, adminToken, backends, localJson, meshPrivateJwk: mesh.privateJwk, inspectorUrl: withInspector ? `http://127.0.0.1:${inspectorPort}` : undefined, issue, stop: stopAll };
  } catch (err) {
    await stopAll();
    throw err;
  }
}

/** True when the demo model repository exists. */
export function hasModels(): boolean {
  return existsSync(path.join(ROOT, 'gpu-backend', 'models', 'embed', 'config.json'));
}
