/** The backend's environment: defaults, and an error naming the variable for every bad value. */

import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../gpu-backend/src/config.ts';
import { generateProviderKey, type ProviderJwk } from '../../gpu-backend/src/mesh/provider-key.ts';

let key: ProviderJwk;
let dir: string;

beforeAll(async () => {
  key = (await generateProviderKey('k1')).privateJwk;
  dir = await mkdtemp(path.join(tmpdir(), 'mesh-config-'));
});
afterAll(() => rm(dir, { recursive: true, force: true }));

const base = () => ({
  BACKEND_ID: 'b-1',
  PROVIDER_ID: 'p-1',
  PROVIDER_KEY: JSON.stringify(key),
  REGION: 'ap-southeast',
  EDGE_URL: 'http://127.0.0.1:8787',
});

function variableOf(env: Record<string, string | undefined>): string {
  try {
    loadConfig(env);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    const e = err as ConfigError;
    expect(e.message.startsWith(e.variable)).toBe(true);
    return e.variable;
  }
  return '(no error)';
}

describe('loadConfig', () => {
  it('fills the defaults', () => {
    const c = loadConfig(base());
    expect(c).toMatchObject({
      backendId: 'b-1',
      providerId: 'p-1',
      host: '127.0.0.1',
      port: 9101,
      publicUrl: 'http://127.0.0.1:9101',
      region: 'ap-southeast',
      lat: 1.35,
      lon: 103.82,
      edgeUrl: 'http://127.0.0.1:8787',
      meshIssuer: 'http://127.0.0.1:8787',
      models: undefined,
      executionProviders: ['cuda', 'cpu'],
      cudaDeviceId: 0,
      heartbeatIntervalMs: 2000,
      maxBodyBytes: 8 * 1024 * 1024,
      intraOpThreads: undefined,
      inferenceThread: 'auto',
    });
    expect(c.modelRepository).toBe(path.resolve('gpu-backend/models'));
    expect(c.providerKey.kid).toBe('k1');
  });

  it('reads every variable', async () => {
    const file = path.join(dir, 'key.json');
    await writeFile(file, JSON.stringify(key));
    const { PROVIDER_KEY: _, ...env } = base();
    const c = loadConfig({
      ...env,
      PROVIDER_KEY_FILE: file,
      HOST: '0.0.0.0',
      PORT: '9200',
      PUBLIC_URL: 'https://gpu.example.com/',
      LAT: '1.29',
      LON: '103.85',
      MESH_ISSUER: 'https://mesh.example.com',
      MODEL_REPOSITORY: dir,
      MODELS: 'embed, classifier',
      EXECUTION_PROVIDERS: 'cpu',
      CUDA_DEVICE_ID: '1',
      HEARTBEAT_INTERVAL_MS: '500',
      MAX_BODY_BYTES: '1048576',
      INTRA_OP_THREADS: '4',
      INFERENCE_THREAD: 'Worker',
      HTTP_THREADS: '4',
    });
    expect(c).toMatchObject({
      host: '0.0.0.0',
      port: 9200,
      publicUrl: 'https://gpu.example.com',
      lat: 1.29,
      lon: 103.85,
      meshIssuer: 'https://mesh.example.com',
      modelRepository: dir,
      models: ['embed', 'classifier'],
      executionProviders: ['cpu'],
      cudaDeviceId: 1,
      heartbeatIntervalMs: 500,
      maxBodyBytes: 1048576,
      intraOpThreads: 4,
      inferenceThread: 'worker',
      httpThreads: 4,
    });
  });

  it('reads HTTP_THREADS as auto (the default) or a count, 0 meaning the main thread serves HTTP', () => {
    expect(loadConfig(base()).httpThreads).toBe('auto');
    expect(loadConfig({ ...base(), HTTP_THREADS: 'AUTO' }).httpThreads).toBe('auto');
    expect(loadConfig({ ...base(), HTTP_THREADS: '0' }).httpThreads).toBe(0);
    expect(loadConfig({ ...base(), HTTP_THREADS: '8' }).httpThreads).toBe(8);
  });

  it('always keeps cpu as the last fallback', () => {
    expect(loadConfig({ ...base(), EXECUTION_PROVIDERS: 'cuda' }).executionProviders).toEqual(['cuda', 'cpu']);
    expect(loadConfig({ ...base(), EXECUTION_PROVIDERS: 'cpu,cuda' }).executionProviders).toEqual(['cuda', 'cpu']);
    expect(loadConfig({ ...base(), EXECUTION_PROVIDERS: 'WebGPU' }).executionProviders).toEqual(['webgpu', 'cpu']);
    expect(loadConfig({ ...base(), EXECUTION_PROVIDERS: 'cpu,webgpu,cuda' }).executionProviders).toEqual(['webgpu', 'cuda', 'cpu']);
  });

  const bad: [string, Record<string, string | undefined>, string][] = [
    ['no BACKEND_ID', { BACKEND_ID: undefined }, 'BACKEND_ID'],
    ['a BACKEND_ID with spaces', { BACKEND_ID: 'my backend' }, 'BACKEND_ID'],
    ['no PROVIDER_ID', { PROVIDER_ID: '' }, 'PROVIDER_ID'],
    ['no provider key at all', { PROVIDER_KEY: undefined }, 'PROVIDER_KEY'],
    ['a provider key that is not JSON', { PROVIDER_KEY: '{oops' }, 'PROVIDER_KEY'],
    ['a public-only provider key', { PROVIDER_KEY: '{"kty":"OKP","crv":"Ed25519","x":"abc","kid":"k"}' }, 'PROVIDER_KEY'],
    ['an RSA provider key', { PROVIDER_KEY: '{"kty":"RSA","n":"abc","e":"AQAB","d":"x","kid":"k"}' }, 'PROVIDER_KEY'],
    ['both PROVIDER_KEY and PROVIDER_KEY_FILE', { PROVIDER_KEY_FILE: '/tmp/x.json' }, 'PROVIDER_KEY'],
    ['an unreadable PROVIDER_KEY_FILE', { PROVIDER_KEY: undefined, PROVIDER_KEY_FILE: '/nonexistent/key.json' }, 'PROVIDER_KEY_FILE'],
    ['a PORT that is not a number', { PORT: 'http' }, 'PORT'],
    ['a PORT out of range', { PORT: '70000' }, 'PORT'],
    ['an unknown REGION', { REGION: 'mars-north' }, 'REGION'],
    ['no REGION', { REGION: undefined }, 'REGION'],
    ['LAT out of range', { LAT: '91' }, 'LAT'],
    ['LON not a number', { LON: 'east' }, 'LON'],
    ['no EDGE_URL', { EDGE_URL: undefined }, 'EDGE_URL'],
    ['an EDGE_URL that is not http', { EDGE_URL: 'ftp://edge' }, 'EDGE_URL'],
    ['a relative PUBLIC_URL', { PUBLIC_URL: '/backend' }, 'PUBLIC_URL'],
    ['an unknown execution provider', { EXECUTION_PROVIDERS: 'cuda,tpu' }, 'EXECUTION_PROVIDERS'],
    ['a negative CUDA_DEVICE_ID', { CUDA_DEVICE_ID: '-1' }, 'CUDA_DEVICE_ID'],
    ['a zero HEARTBEAT_INTERVAL_MS', { HEARTBEAT_INTERVAL_MS: '0' }, 'HEARTBEAT_INTERVAL_MS'],
    ['a fractional MAX_BODY_BYTES', { MAX_BODY_BYTES: '1.5' }, 'MAX_BODY_BYTES'],
    ['zero INTRA_OP_THREADS', { INTRA_OP_THREADS: '0' }, 'INTRA_OP_THREADS'],
    ['an unknown INFERENCE_THREAD', { INFERENCE_THREAD: 'gpu' }, 'INFERENCE_THREAD'],
    ['a negative HTTP_THREADS', { HTTP_THREADS: '-1' }, 'HTTP_THREADS'],
    ['HTTP_THREADS that is not a count', { HTTP_THREADS: 'many' }, 'HTTP_THREADS'],
    ['too many HTTP_THREADS', { HTTP_THREADS: '65' }, 'HTTP_THREADS'],
    ['a bad model name in MODELS', { MODELS: 'embed,../etc' }, 'MODELS'],
  ];
  for (const [name, change, variable] of bad) {
    it(`names ${variable} for ${name}`, () => {
      expect(variableOf({ ...base(), ...change })).toBe(variable);
    });
  }
});
