/**
 * `npm run bench:tensors`: what moving a tensor costs, by size and wire
 * format. An Identity model (FP32 [1, n] -> the same, no work) is served by one
 * backend of a local mesh, so serialisation is all there is; each payload
 * size (FP32 bytes: 1 KB .. 4 MB) goes as plain JSON and as the binary tensor
 * extension (answered in the same format: `binary_data_output`), through
 * (i) the backend alone (a dispatch token, as the edge signs it),
 * (ii) the edge (consumer key, `x-mesh-verify: none`) and (iii) bench:edge's
 * bare pass-through Worker (bench/passthrough/, the local runtime's floor for
 * moving the same bytes), and the CPU each side spends per request is read
 * from /proc: the backend process, and the Worker's process group (wrangler
 * dev: workerd and wrangler's node). A script, not a test: it prints ratios
 * from one run, never absolute times as pass/fail. Method and figures:
 * docs/benchmarks.md.
 *
 * Phases alternate formats and paths (ABBA over rounds) so that this VM's
 * drift lands on both formats alike.
 *
 * Env: BENCH_TENSOR_SIZES (1KB,16KB,256KB,1MB,4MB), BENCH_TENSOR_PATHS
 * (backend,edge,passthrough), BENCH_ROUNDS (2), BENCH_SECONDS (2.5 per phase, at least),
 * BENCH_MIN_REQUESTS (6 per phase, at least), BENCH_CONCURRENCY (1),
 * BENCH_PRIME_SECONDS (1 per path and format), BENCH_QUIET_WAIT_SECONDS (10;
 * 0: never wait for a quiet CPU), BENCH_TENSOR_FORMATS (json,binary),
 * BENCH_BACKEND_ENV (JSON of extra backend env, e.g. NODE_OPTIONS for a CPU
 * profile). Results also go to bench/results/tensors.json.
 */

import { mkdir, writeFile } from 'node:fs/promises';
import type { IncomingHttpHeaders } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { importJWK, type CryptoKey } from 'jose';
import { DataType, encodeModel, node, valueInfo } from '../gpu-backend/src/demo-models/onnx.ts';
import { sha256Hex } from '../receipts/hash.ts';
import { ROOT, startMesh, type LocalMesh } from '../scripts/local-mesh.ts';
import { machineBusyMs, processCpuMs } from './lib/cpu.ts';
import { benchWranglerConfigs } from './lib/edge-config.ts';
import { startPassthrough, startSettlementApart } from './lib/side-workers.ts';
import { envList, envNumber } from './lib/env.ts';
import { closedLoop, quantile, median } from './lib/load.ts';
import { answerOutputs, formatBytes, linearFit, parseByteSize, seededFloats, tensorRequest, type BodyFormat, type TensorRequest } from './lib/payload.ts';
import { groupCpuMs, wranglerGroup, type WranglerDev } from './lib/processes.ts';
import { signDispatchTokens } from './lib/tokens.ts';
import { writeResults } from './lib/results.ts';
import { machineLine, openScratch } from './lib/scratch.ts';
import { quietGate } from './lib/quiet.ts';

const MODEL = 'identity';
const BACKEND = { id: 'fra-1', region: 'eu-west', provider: 'provider-fra' };
const COLO = 'FRA';
/** Binary at least this many times cheaper than JSON per MB, on each side. */
const GOAL_BINARY_VS_JSON = 5;
/** The edge's cost per MB at most this share of the backend's. */
const GOAL_EDGE_VS_BACKEND = 0.2;

const SIZES = envList('BENCH_TENSOR_SIZES', '1KB,16KB,256KB,1MB,4MB').map(parseByteSize);
for (const s of SIZES) if (s % 4 !== 0) throw new Error(`BENCH_TENSOR_SIZES: ${s} bytes is not a whole number of FP32 elements`);
const PATH_IDS = ['backend', 'edge', 'passthrough'] as const;
const PATHS = envList('BENCH_TENSOR_PATHS', PATH_IDS.join(',')).map((p) => {
  if (!(PATH_IDS as readonly string[]).includes(p)) throw new Error(`BENCH_TENSOR_PATHS must list some of ${PATH_IDS.join(', ')}, got ${JSON.stringify(p)}`);
  return p as (typeof PATH_IDS)[number];
});
const FORMATS: readonly BodyFormat[] = envList('BENCH_TENSOR_FORMATS', 'json,binary').map((f) => {
  if (f !== 'json' && f !== 'binary') throw new Error(`BENCH_TENSOR_FORMATS must list json and/or binary, got ${JSON.stringify(f)}`);
  return f;
});
/** Extra environment for the backend (JSON), e.g. {"NODE_OPTIONS":"--cpu-prof --cpu-prof-dir=/tmp/prof"}. */
const BACKEND_ENV = process.env.BENCH_BACKEND_ENV ? (JSON.parse(process.env.BENCH_BACKEND_ENV) as Record<string, string>) : {};
const ROUNDS = envNumber('BENCH_ROUNDS', 2, 1, 10);
const SECONDS = envNumber('BENCH_SECONDS', 2.5, 0.2, 30);
const MIN_REQUESTS = envNumber('BENCH_MIN_REQUESTS', 6, 1, 10_000);
const CONCURRENCY = envNumber('BENCH_CONCURRENCY', 1, 1, 16);
const PRIME_SECONDS = envNumber('BENCH_PRIME_SECONDS', 1, 0, 30);
/** A phase runs at most this long, however slow its requests. */
const MAX_PHASE_SECONDS = 30;
/** Requests a phase's token pool may hold at most (dispatch tokens are signed before the phase). */
const MAX_TOKENS = 30_000;
const CORES = os.availableParallelism();
const NOISY_OTHER_CPU = 0.05;
const QUIET_WAIT_MS = envNumber('BENCH_QUIET_WAIT_SECONDS', 10, 0, 600) * 1000;
const quiet = quietGate({ noisyShare: NOISY_OTHER_CPU, waitMs: QUIET_WAIT_MS, log: (line) => log(line) });

type PathId = (typeof PATH_IDS)[number];
/** The paths through a Worker (a wrangler dev process group whose CPU is the runtime's). */
const viaWorker = (p: PathId) => p !== 'backend';
const LABEL: Record<PathId, string> = {
  backend: '(i) the backend alone (dispatch token)',
  edge: '(ii) through the edge (consumer key, x-mesh-verify: none)',
  passthrough: '(iii) through the bare pass-through Worker (dispatch token; body and answer streamed)',
};

interface Phase {
  bytes: number;
  path: PathId;
  format: BodyFormat;
  round: number;
  requests: number;
  elapsedMs: number;
  reqPerS: number;
  p50Ms: number;
  wireRequestBytes: number;
  /** CPU ms over the phase: the backend process, the path's Worker (its wrangler dev process group, and its workerd alone), this load generator. */
  cpuMs: { backend: number; runtime: number; workerd: number; loadgen: number };
  otherCpu: number;
  errors: Record<string, number>;
  errorSamples: string[];
}

interface Cell {
  bytes: number;
  path: PathId;
  format: BodyFormat;
  requests: number;
  reqPerS: number;
  p50Ms: number;
  wireRequestBytes: number;
  wireAnswerBytes: number;
  /** CPU ms per request over every round of the cell (total CPU / total requests). */
  cpuMsPerReq: { backend: number; runtime: number; workerd: number; loadgen: number };
  /** Payload MB (FP32 bytes, 2^20) per CPU second of each side. */
  mbPerCpuS: { backend: number; runtime: number };
  errors: number;
}

const log = (line: string) => console.log(`[bench] ${line}`);

/** Writes `identity` (FP32 [batch, n] -> Identity -> the same; max_batch_size 1, no batching, metered by elements) into `repo`. */
async function writeIdentityModel(repo: string): Promise<void> {
  const dims = ['batch', 'n'];
  const bytes = encodeModel({
    graph: {
      name: MODEL,
      nodes: [node('Identity', ['x'], ['y'])],
      initializers: [],
      inputs: [valueInfo('x', DataType.FLOAT, dims)],
      outputs: [valueInfo('y', DataType.FLOAT, dims)],
    },
    producerName: 'edge-inference-mesh bench',
  });
  const config = {
    name: MODEL,
    platform: 'onnxruntime_onnx',
    max_batch_size: 1,
    input: [{ name: 'x', data_type: 'TYPE_FP32', dims: [-1] }],
    output: [{ name: 'y', data_type: 'TYPE_FP32', dims: [-1] }],
    parameters: { metering: 'elements' },
  };
  await mkdir(path.join(repo, MODEL, '1'), { recursive: true });
  await writeFile(path.join(repo, MODEL, '1', 'model.onnx'), bytes);
  await writeFile(path.join(repo, MODEL, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
}

async function main(): Promise<void> {
  const started = performance.now();
  let mesh: LocalMesh | undefined;
  let settlement: WranglerDev | undefined;
  let passthrough: WranglerDev | undefined;
  const scratch = await openScratch('mesh-bench-tensors-', log, [() => passthrough?.stop(), () => mesh?.stop(), () => settlement?.stop()]);
  const tmp = scratch.dir;

  try {
    log(machineLine());
    // The requests of every size and format, built once (values from a fixed seed).
    const requests = new Map<string, TensorRequest>();
    const keyOf = (bytes: number, format: BodyFormat) => `${bytes}/${format}`;
    for (const bytes of SIZES) {
      const n = bytes / 4;
      const data = seededFloats(n, 0x7e5 + n);
      for (const format of FORMATS) requests.set(keyOf(bytes, format), tensorRequest({ name: 'x', shape: [1, n], data, format }));
    }
    const largest = Math.max(...[...requests.values()].map((r) => r.body.byteLength));
    // JSON of random FP32 values takes ~19 bytes an element: 4 MB of FP32 is ~20 MB of JSON, past the default
    // MAX_BODY_BYTES (8 MiB) of the edge and the backend and MAX_RESPONSE_BYTES (16 MiB) of the edge. Raised for the bench.
    const limit = String(Math.max(16 * 2 ** 20, Math.ceil((largest * 1.25) / 2 ** 20) * 2 ** 20));
    log(`sizes ${SIZES.map(formatBytes).join(', ')}; largest body ${(largest / 2 ** 20).toFixed(1)} MiB (JSON); body and answer limits raised to ${Number(limit) / 2 ** 20} MiB`);

    // As bench:edge: wrangler dev's trace store off, settlement (queue consumer, ledger) in a second wrangler dev.
    process.env.WRANGLER_REGISTRY_PATH = path.join(tmp, 'registry');
    await mkdir(process.env.WRANGLER_REGISTRY_PATH, { recursive: true });
    process.env.X_LOCAL_OBSERVABILITY = 'false';
    process.env.X_LOCAL_EXPLORER = 'false';
    const configs = await benchWranglerConfigs(ROOT, path.join(tmp, 'config'));
    const repo = path.join(tmp, 'repo');
    await writeIdentityModel(repo);
    log(`starting the local mesh (edge in wrangler dev + backend ${BACKEND.id} serving ${MODEL} from ${repo})`);
    mesh = await startMesh({
      port: 0,
      backendPortBase: 0,
      backends: [BACKEND],
      models: [MODEL],
      dir: path.join(tmp, 'mesh'),
      log: (line) => {
        if (!/^\[models\]/.test(line)) console.log(`  ${line}`);
      },
      backendEnv: { MODEL_REPOSITORY: repo, EXECUTION_PROVIDERS: 'cpu', MAX_BODY_BYTES: limit, ...BACKEND_ENV },
      edgeVars: {
        MESH_MODELS: JSON.stringify({ [MODEL]: { meter: 'elements', price: { input: 0, output: 0 } } }),
        MAX_BODY_BYTES: limit,
        MAX_RESPONSE_BYTES: limit,
      },
      wranglerConfig: configs.edge,
    });
    const backend = mesh.backends[0]!;
    const backendPid = backend.process?.pid;
    const edgeGroup = wranglerGroup(new URL(mesh.edgeUrl).port);
    if (backendPid === undefined || edgeGroup === undefined) throw new Error(`could not find the backend's pid (${backendPid}) or the edge's process group (${edgeGroup})`);
    settlement = await startSettlementApart({ config: configs.settlement, edgeUrl: mesh.edgeUrl, meshDir: path.join(tmp, 'mesh'), stateDir: path.join(tmp, 'settlement') });
    log(`mesh ready: edge ${mesh.edgeUrl} (process group ${edgeGroup}), backend ${backend.url} (pid ${backendPid}), settlement apart (process group ${settlement.pid}, nice 19)`);
    if (PATHS.includes('passthrough')) {
      passthrough = await startPassthrough(backend.url, path.join(tmp, 'passthrough'));
      log(`pass-through Worker ready: ${passthrough.url} (process group ${passthrough.pid}) -> ${backend.url}`);
    }
    const runtimeOf = (p: PathId) => (p === 'edge' ? edgeGroup : p === 'passthrough' ? passthrough!.pid : undefined);

    const key = (await importJWK(mesh.meshPrivateJwk, 'EdDSA')) as CryptoKey;
    const kid = mesh.meshPrivateJwk.kid!;
    const issuer = mesh.edgeUrl;
    const consumerKey = mesh.consumerKey;
    const urlOf = (p: PathId) => `${p === 'edge' ? mesh!.edgeUrl : p === 'passthrough' ? passthrough!.url : backend.url}/v2/models/${MODEL}/infer`;
    const headersOf = (p: PathId, r: TensorRequest) => (p === 'edge' ? { ...r.headers, 'x-mesh-dev-colo': COLO, 'x-mesh-verify': 'none' } : r.headers);
    const tokensFor = async (p: PathId, r: TensorRequest, count: number) =>
      p === 'edge'
        ? new Array<string>(count).fill(consumerKey)
        : signDispatchTokens({ key, kid, issuer, aud: BACKEND.id, model: MODEL, bodySha256: await sha256Hex(r.body), count });
    const ours = () => [edgeGroup, settlement!.pid, backendPid, ...(passthrough ? [passthrough.pid] : [])];

    if (PRIME_SECONDS > 0) {
      const primeBytes = SIZES.find((s) => s >= 16 * 1024) ?? SIZES[0]!;
      for (const p of PATHS) {
        for (const format of FORMATS) {
          const r = requests.get(keyOf(primeBytes, format))!;
          const primed = await closedLoop({ url: urlOf(p), body: r.body, headers: headersOf(p, r), tokens: await tokensFor(p, r, 3000), concurrency: CONCURRENCY, durationMs: PRIME_SECONDS * 1000, timeoutMs: 60_000 });
          log(`primed ${p} ${format} with ${primed.ok} requests of ${formatBytes(primeBytes)}${primed.ok === 0 ? `: ${primed.errorSamples[0] ?? ''}` : ''}`);
        }
      }
    }

    // What both sides spend idle (heartbeats, snapshot refreshes), for reference.
    const idle = await idleCpu(edgeGroup, backendPid, 3000);
    log(`idle: edge ${idle.edge.toFixed(1)} ms of CPU per second, backend ${idle.backend.toFixed(1)} ms/s`);

    const phases: Phase[] = [];
    const answerBytes = new Map<string, number>();
    for (const bytes of SIZES) {
      for (let round = 1; round <= ROUNDS; round++) {
        // ABBA: each path's two formats back to back, their order reversed every round.
        const order: [PathId, BodyFormat][] = PATHS.flatMap((p) => FORMATS.map((f) => [p, f] as [PathId, BodyFormat]));
        if (round % 2 === 0) order.reverse();
        for (const [p, format] of order) {
          const r = requests.get(keyOf(bytes, format))!;
          const what = `${formatBytes(bytes).padStart(6)} ${format.padEnd(6)} via ${p.padEnd(7)} round ${round}/${ROUNDS}`;
          await quiet(what, ours());
          // Warm-up: two requests, which also say how long one takes (the phase runs long enough for MIN_REQUESTS).
          const warm = await closedLoop({
            url: urlOf(p),
            body: r.body,
            headers: headersOf(p, r),
            tokens: await tokensFor(p, r, 2 * CONCURRENCY),
            concurrency: CONCURRENCY,
            durationMs: 60_000,
            timeoutMs: 60_000,
            check: (body, h) => {
              const out = checkAnswer(body, h, bytes / 4, format, p);
              answerBytes.set(`${bytes}/${format}/${p}`, out);
            },
          });
          if (warm.ok === 0 || Object.keys(warm.errors).length > 0) throw new Error(`${what}: the warm-up failed: ${JSON.stringify(warm.errors)} ${warm.errorSamples.join('; ')}`);
          const msPerReq = warm.elapsedMs / warm.ok;
          const durationMs = Math.min(MAX_PHASE_SECONDS * 1000, Math.max(SECONDS * 1000, (MIN_REQUESTS * msPerReq * 1.1) / CONCURRENCY));
          const count = Math.min(MAX_TOKENS, Math.ceil(((durationMs / msPerReq) * CONCURRENCY) * 3) + 50);
          const tokens = await tokensFor(p, r, count);
          const before = sample(runtimeOf(p), backendPid, ours());
          const result = await closedLoop({ url: urlOf(p), body: r.body, headers: headersOf(p, r), tokens, concurrency: CONCURRENCY, durationMs, timeoutMs: 60_000 });
          const after = sample(runtimeOf(p), backendPid, ours());
          const phase: Phase = {
            bytes,
            path: p,
            format,
            round,
            requests: result.ok,
            elapsedMs: result.elapsedMs,
            reqPerS: (result.ok * 1000) / result.elapsedMs,
            p50Ms: quantile(result.latenciesMs, 0.5),
            wireRequestBytes: r.body.byteLength,
            cpuMs: {
              backend: after.backend - before.backend,
              runtime: after.runtime - before.runtime,
              workerd: after.workerd - before.workerd,
              loadgen: after.loadgen - before.loadgen,
            },
            otherCpu: Math.max(0, after.machine - before.machine - (after.ours - before.ours)) / (CORES * result.elapsedMs),
            errors: result.errors,
            errorSamples: result.errorSamples,
          };
          phases.push(phase);
          const n = Math.max(1, phase.requests);
          const errors = Object.values(result.errors).reduce((a, b) => a + b, 0);
          log(
            `${what}: ${phase.requests} requests, ${phase.reqPerS.toFixed(phase.reqPerS < 10 ? 1 : 0)} req/s, p50 ${phase.p50Ms.toFixed(2)} ms; CPU ms/req: backend ${(phase.cpuMs.backend / n).toFixed(3)}` +
              (viaWorker(p) ? `, ${p} ${(phase.cpuMs.runtime / n).toFixed(3)} (workerd ${(phase.cpuMs.workerd / n).toFixed(3)})` : '') +
              `, load gen ${(phase.cpuMs.loadgen / n).toFixed(3)}` +
              (errors > 0 ? `, ${errors} ERRORS: ${result.errorSamples[0] ?? ''}` : '') +
              (phase.otherCpu > NOISY_OTHER_CPU ? ` (other processes used ${(phase.otherCpu * 100).toFixed(0)}% of the CPU)` : ''),
          );
        }
      }
    }

    const results = report(phases, answerBytes, idle, performance.now() - started);
    await writeResults('tensors.json', results, log);
  } finally {
    await scratch.close();
  }
}

/** Checks a first answer: output `y`, shape [1, n], in the request's format (and a receipt through the edge); returns its byte length. */
function checkAnswer(body: Buffer, h: IncomingHttpHeaders, n: number, format: BodyFormat, p: PathId): number {
  const [out, ...more] = answerOutputs(body, h['inference-header-content-length']);
  const size = format === 'binary' ? 4 * n : n;
  if (more.length > 0 || !out || out.name !== 'y' || out.format !== format || out.shape.join('x') !== `1x${n}` || out.size !== size) {
    throw new Error(`unexpected answer: ${JSON.stringify(out)}${more.length > 0 ? ` and ${more.length} more outputs` : ''}`);
  }
  if (p === 'edge' && typeof h['x-mesh-receipt'] !== 'string') throw new Error('the answer through the edge has no x-mesh-receipt');
  if (p !== 'edge' && typeof h['x-provider-attestation'] !== 'string') throw new Error('the answer has no x-provider-attestation');
  return body.byteLength;
}

/** CPU so far, ms: a Worker's process group (all, workerd), the backend, this process, every process of ours, the machine. */
function sample(runtimeGroup: number | undefined, backendPid: number, ourGroups: readonly number[]) {
  const groups = groupCpuMs();
  const self = process.cpuUsage();
  const loadgen = (self.user + self.system) / 1000;
  const runtime = (runtimeGroup === undefined ? undefined : groups.get(runtimeGroup)) ?? { all: Number.NaN, workerd: Number.NaN };
  return {
    runtime: runtime.all,
    workerd: runtime.workerd,
    backend: processCpuMs(backendPid),
    loadgen,
    ours: ourGroups.reduce((n, g) => n + (groups.get(g)?.all ?? 0), 0) + loadgen,
    machine: machineBusyMs(),
  };
}

/** CPU ms per second that the edge's process group and the backend spend with no request (heartbeats, snapshot refreshes). */
async function idleCpu(edgeGroup: number, backendPid: number, ms: number): Promise<{ edge: number; backend: number }> {
  const a = sample(edgeGroup, backendPid, []);
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, ms));
  const b = sample(edgeGroup, backendPid, []);
  const s = (performance.now() - t0) / 1000;
  return { edge: (b.runtime - a.runtime) / s, backend: (b.backend - a.backend) / s };
}


function report(phases: Phase[], answerBytes: Map<string, number>, idle: { edge: number; backend: number }, totalMs: number): unknown {
  const f = (v: number, digits = 2) => (Number.isFinite(v) ? v.toFixed(digits) : 'n/a');
  const MB = 2 ** 20;
  const cells: Cell[] = [];
  for (const p of PATHS) {
    for (const bytes of SIZES) {
      for (const format of FORMATS) {
        const ps = phases.filter((x) => x.path === p && x.bytes === bytes && x.format === format);
        const requests = ps.reduce((n, x) => n + x.requests, 0);
        const n = Math.max(1, requests);
        const sum = (k: keyof Phase['cpuMs']) => ps.reduce((a, x) => a + x.cpuMs[k], 0) / n;
        const cpu = { backend: sum('backend'), runtime: viaWorker(p) ? sum('runtime') : Number.NaN, workerd: viaWorker(p) ? sum('workerd') : Number.NaN, loadgen: sum('loadgen') };
        const elapsed = ps.reduce((a, x) => a + x.elapsedMs, 0);
        cells.push({
          bytes,
          path: p,
          format,
          requests,
          reqPerS: (requests * 1000) / elapsed,
          p50Ms: median(ps.map((x) => x.p50Ms)),
          wireRequestBytes: ps[0]?.wireRequestBytes ?? Number.NaN,
          wireAnswerBytes: answerBytes.get(`${bytes}/${format}/${p}`) ?? Number.NaN,
          cpuMsPerReq: cpu,
          mbPerCpuS: { backend: bytes / MB / (cpu.backend / 1000), runtime: bytes / MB / (cpu.runtime / 1000) },
          errors: ps.reduce((a, x) => a + Object.values(x.errors).reduce((m, v) => m + v, 0), 0),
        });
      }
    }
  }
  const cell = (p: PathId, bytes: number, format: BodyFormat) => cells.find((c) => c.path === p && c.bytes === bytes && c.format === format);
  /** CPU ms per payload MB beyond the fixed cost of a request: the slope of CPU per request against MB over the sizes. */
  const perMb = (p: PathId, format: BodyFormat, side: 'backend' | 'runtime' | 'workerd') =>
    linearFit(cells.filter((c) => c.path === p && c.format === format).map((c) => ({ x: c.bytes / MB, y: c.cpuMsPerReq[side] })));

  const lines: string[] = [];
  lines.push('', `Identity model (FP32 [1, n] -> the same), ${CORES} cores, concurrency ${CONCURRENCY}, ${ROUNDS} round(s) per cell; payload = the tensor's FP32 bytes (MB = 2^20); answers in the request's format`, '');
  for (const p of PATHS) {
    const w = viaWorker(p);
    const name = p === 'edge' ? 'edge' : 'Worker';
    lines.push(`${LABEL[p]}:`, '');
    lines.push(
      `| payload | format | request bytes | answer bytes | requests | req/s | p50 ms | backend CPU ms/req | ${w ? `${name} CPU ms/req (workerd) | ` : ''}backend MB/CPU-s | ${w ? `${name} MB/CPU-s | ` : ''}load gen CPU ms/req |`,
      `| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ${w ? '---: | ' : ''}---: | ${w ? '---: | ' : ''}---: |`,
    );
    for (const bytes of SIZES) {
      for (const format of FORMATS) {
        const c = cell(p, bytes, format)!;
        lines.push(
          `| ${formatBytes(bytes)} | ${format} | ${c.wireRequestBytes} | ${c.wireAnswerBytes} | ${c.requests}${c.errors > 0 ? ` (${c.errors} errors)` : ''} | ${f(c.reqPerS, c.reqPerS < 10 ? 1 : 0)} | ${f(c.p50Ms)} | ${f(c.cpuMsPerReq.backend, 3)} | ` +
            (w ? `${f(c.cpuMsPerReq.runtime, 3)} (${f(c.cpuMsPerReq.workerd, 3)}) | ` : '') +
            `${f(c.mbPerCpuS.backend, 1)} | ${w ? `${f(c.mbPerCpuS.runtime, 1)} | ` : ''}${f(c.cpuMsPerReq.loadgen, 3)} |`,
        );
      }
    }
    lines.push('');
  }

  // Goal 1: binary vs JSON per MB, each side (the backend alone; the edge and the backend behind it).
  type Side = { label: string; path: PathId; side: 'backend' | 'runtime' | 'workerd' };
  const sides: Side[] = [
    ...(PATHS.includes('backend') ? [{ label: 'backend alone, (i)', path: 'backend' as const, side: 'backend' as const }] : []),
    ...(PATHS.includes('edge')
      ? [
          { label: 'backend behind the edge, (ii)', path: 'edge' as const, side: 'backend' as const },
          { label: 'edge (workerd + wrangler), (ii)', path: 'edge' as const, side: 'runtime' as const },
          { label: 'edge, workerd alone, (ii)', path: 'edge' as const, side: 'workerd' as const },
        ]
      : []),
    ...(PATHS.includes('passthrough') ? [{ label: 'pass-through Worker (runtime floor), (iii)', path: 'passthrough' as const, side: 'runtime' as const }] : []),
  ];
  const largest = Math.max(...SIZES);
  const perMbAt = (s: Side, format: BodyFormat) => (cell(s.path, largest, format)?.cpuMsPerReq[s.side] ?? Number.NaN) / (largest / MB);
  lines.push(`CPU ms per payload MB: the slope of CPU per request against MB over the sizes (the fixed cost of a request left out), and at ${formatBytes(largest)} (whole cost / MB):`, '');
  lines.push('| side | JSON ms/MB (slope) | binary ms/MB (slope) | JSON / binary | fixed ms/req JSON, binary | at ' + formatBytes(largest) + ': JSON / binary ms/MB | ratio |', '| --- | ---: | ---: | ---: | ---: | ---: | ---: |');
  const goal1: { side: string; json: number; binary: number; ratio: number; ratioAtLargest: number; met: boolean }[] = [];
  for (const s of sides) {
    const j = perMb(s.path, 'json', s.side);
    const b = perMb(s.path, 'binary', s.side);
    const ratio = j.slope / b.slope;
    const ratioAt = perMbAt(s, 'json') / perMbAt(s, 'binary');
    goal1.push({ side: s.label, json: j.slope, binary: b.slope, ratio, ratioAtLargest: ratioAt, met: ratio >= GOAL_BINARY_VS_JSON });
    lines.push(`| ${s.label} | ${f(j.slope)} | ${f(b.slope)} | **${f(ratio, 1)}x** | ${f(j.intercept, 3)}, ${f(b.intercept, 3)} | ${f(perMbAt(s, 'json'))} / ${f(perMbAt(s, 'binary'))} | ${f(ratioAt, 1)}x |`);
  }
  lines.push('');
  const g1 = goal1.filter((g) => !g.side.includes('workerd alone') && !g.side.includes('pass-through'));
  lines.push(`goal: binary at least ${GOAL_BINARY_VS_JSON}x cheaper than JSON per MB on each side (slopes): ${g1.length === 0 ? 'not measured' : g1.every((g) => g.met) ? 'met' : `MISSED (${g1.filter((g) => !g.met).map((g) => `${g.side}: ${f(g.ratio, 1)}x`).join('; ')})`}`);

  // Goal 2: the edge's cost per MB against the backend's, on the same requests (path ii).
  const goal2: {
    format: BodyFormat;
    edge: number;
    workerd: number;
    backend: number;
    backendAlone: number;
    passthrough: number;
    ratio: number;
    ownRatio: number;
    met: boolean;
  }[] = [];
  if (PATHS.includes('edge')) {
    lines.push(
      '',
      '| format | edge ms/MB | (workerd alone) | backend behind it ms/MB | (backend alone) | pass-through Worker ms/MB | **edge / backend** | (edge - pass-through) / backend |',
      '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    );
    for (const format of FORMATS) {
      const edge = perMb('edge', format, 'runtime').slope;
      const workerd = perMb('edge', format, 'workerd').slope;
      const back = perMb('edge', format, 'backend').slope;
      const alone = PATHS.includes('backend') ? perMb('backend', format, 'backend').slope : Number.NaN;
      const floor = PATHS.includes('passthrough') ? perMb('passthrough', format, 'runtime').slope : Number.NaN;
      const ratio = edge / back;
      const ownRatio = (edge - floor) / back;
      goal2.push({ format, edge, workerd, backend: back, backendAlone: alone, passthrough: floor, ratio, ownRatio, met: ratio <= GOAL_EDGE_VS_BACKEND });
      lines.push(`| ${format} | ${f(edge)} | ${f(workerd)} | ${f(back)} | ${f(alone)} | ${f(floor)} | **${f(ratio)}** | ${f(ownRatio)} |`);
    }
    lines.push('', `goal: the edge's cost per MB at most ${GOAL_EDGE_VS_BACKEND} of the backend's: ${goal2.map((g) => `${g.format} ${f(g.ratio)} (${g.met ? 'met' : 'MISSED'})`).join(', ')}`);
  }
  lines.push(`idle CPU (no requests): edge ${f(idle.edge, 1)} ms/s, backend ${f(idle.backend, 1)} ms/s (in the figures above, not subtracted)`);
  const busiest = Math.max(...phases.map((x) => x.otherCpu));
  if (busiest > NOISY_OTHER_CPU) lines.push(`WARNING: other processes used up to ${(busiest * 100).toFixed(0)}% of the CPU during a phase; rerun on a quiet machine before trusting the ratios.`);
  lines.push(`(total ${(totalMs / 1000).toFixed(0)} s)`);
  console.log(lines.join('\n'));

  return {
    date: new Date().toISOString(),
    machine: { cores: CORES, cpu: os.cpus()[0]?.model, memoryGiB: Math.round(os.totalmem() / 2 ** 30), node: process.version, platform: `${os.platform()} ${os.arch()}` },
    settings: { model: MODEL, sizes: SIZES, paths: PATHS, rounds: ROUNDS, seconds: SECONDS, minRequests: MIN_REQUESTS, concurrency: CONCURRENCY, verify: 'none', settlement: 'apart' },
    goals: { binaryVsJson: GOAL_BINARY_VS_JSON, edgeVsBackend: GOAL_EDGE_VS_BACKEND },
    idleCpuMsPerS: idle,
    cells,
    perMb: { binaryVsJson: goal1, edgeVsBackend: goal2 },
    phases,
    noisy: { maxOtherCpu: busiest, warned: busiest > NOISY_OTHER_CPU },
  };
}


main().catch((err: unknown) => {
  console.error('[bench] failed:', err);
  process.exitCode = 1;
});
