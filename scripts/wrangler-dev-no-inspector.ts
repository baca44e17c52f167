/**
 * `wrangler dev` without its DevTools inspector, for the benchmarks.
 *
 * The wrangler CLI always attaches an inspector to the Worker's isolate and
 * prints the Worker's console output from its `Runtime.consoleAPICalled`
 * events, so every `console.log` is also serialized into the DevTools
 * protocol on the Worker's thread: about 100-140 us a line on the build VM,
 * where the same line costs 2-10 us without it (docs/benchmarks.md, "The
 * DevTools inspector"). That is wrangler's dev tooling, not the runtime's,
 * like the local trace store the benches also turn off. wrangler's own
 * `startWorker` API can leave the inspector out (`dev.inspector: false`); its
 * console output then reaches the terminal as workerd's structured logs,
 * printed as the CLI prints them.
 *
 * A drop-in for `wrangler` in the benches' process lists: `node
 * scripts/wrangler-dev-no-inspector.ts dev <flags>`, with the subset of `wrangler dev`'s flags
 * they pass (`--config`, `--ip`, `--port`, `--env-file`, `--persist-to`,
 * `--log-level`, `--var K:V`; `--inspector-port` and
 * `--show-interactive-dev-session` are accepted and ignored). The dev
 * registry is wrangler's (`WRANGLER_REGISTRY_PATH`). SIGTERM and SIGINT stop
 * the Worker and exit, through wrangler's own handlers.
 */

import { parseArgs } from 'node:util';
import { unstable_startWorker } from 'wrangler';

const USAGE = 'usage: node scripts/wrangler-dev-no-inspector.ts dev --config F --port N [--ip A] [--env-file F] [--persist-to D] [--log-level L] [--var K:V ...]';

const LOG_LEVELS = ['debug', 'info', 'log', 'warn', 'error', 'none'] as const;
type LogLevel = (typeof LOG_LEVELS)[number];

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    config: { type: 'string' },
    ip: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string' },
    'env-file': { type: 'string' },
    'persist-to': { type: 'string' },
    'log-level': { type: 'string', default: 'log' },
    var: { type: 'string', multiple: true, default: [] },
    'inspector-port': { type: 'string' },
    'show-interactive-dev-session': { type: 'string' },
  },
});

function fail(message: string): never {
  console.error(`wrangler-dev-no-inspector: ${message}\n${USAGE}`);
  process.exit(2);
}

if (positionals.length !== 1 || positionals[0] !== 'dev') fail(`expected the one command "dev", got ${JSON.stringify(positionals)}`);
if (!values.config) fail('--config is required');
const port = Number(values.port);
if (!Number.isInteger(port) || port <= 0 || port > 65_535) fail(`--port must be a port number, got ${JSON.stringify(values.port)}`);
const logLevel = values['log-level'] as LogLevel;
if (!LOG_LEVELS.includes(logLevel)) fail(`--log-level must be one of ${LOG_LEVELS.join(', ')}`);

// As the CLI's `--var K:V` (collectPlainTextVars): the value is everything after the first colon.
const bindings: Record<string, { type: 'plain_text'; value: string }> = {};
for (const pair of values.var) {
  const at = pair.indexOf(':');
  if (at <= 0) fail(`--var takes KEY:VALUE, got ${JSON.stringify(pair)}`);
  bindings[pair.slice(0, at)] = { type: 'plain_text', value: pair.slice(at + 1) };
}

const worker = await unstable_startWorker({
  config: values.config,
  ...(values['env-file'] ? { envFiles: [values['env-file']] } : {}),
  bindings,
  dev: {
    server: { hostname: values.ip, port },
    inspector: false,
    ...(values['persist-to'] ? { persist: values['persist-to'] } : {}),
    logLevel,
    watch: false,
    ...(process.env.WRANGLER_REGISTRY_PATH ? { registry: process.env.WRANGLER_REGISTRY_PATH } : {}),
  },
});
await worker.ready;
// SIGTERM and SIGINT: wrangler's own handlers tear the Worker down and exit (143, 130), as the CLI does.
