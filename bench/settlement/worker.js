// @ts-check
/**
 * The settlement bench's Worker (bench/settlement.ts drives it over HTTP, in
 * `wrangler dev`, i.e. workerd + Miniflare). It runs the edge's own code: the
 * real `SettlementLedger` Durable Object (SQLite storage; see BenchLedger
 * below), the real `signReceipt` and `signingKeys`, the real `recordReceipt`
 * and `RECEIPTS` queue binding, so every number is the production code in
 * the local runtime. It times nothing by itself but a close's split
 * (/close): workerd's clock only advances on I/O, so the bench times each
 * request from Node, and every request here does one measured thing.
 *
 * Plain JavaScript (checked with `// @ts-check` and bench/settlement/tsconfig.json
 * against the Workers types), because the root tsconfig type-checks bench/
 * with Node's types, under which the Worker code it imports does not compile.
 *
 * Receipts: every docs/api.md section 4 claim, with a real provider attestation
 * (an Ed25519 JWS signed like gpu-backend/src/mesh/attestation.ts does, by a
 * provider key generated here). A receipt's `jti` is a UUID-shaped string
 * derived bijectively from (run, index), so the bench can name the receipt of
 * any leaf without keeping them, and jtis are spread over the index as random
 * UUIDs are.
 *
 * Routes (POST unless noted; query parameters; JSON answers):
 * - GET /ready
 * - /sample?run&n: n signed receipts (for the Node-side Merkle bench)
 * - /claims?run&n: builds n receipts' claims and keeps them (not timed)
 * - /sign?n: signs the first n kept claims with signReceipt (timed by the caller)
 * - /pool?run&n: signs n receipts and keeps them (the append and send phases' input)
 * - /send?n&batch: sends n kept receipts to RECEIPTS as the edge's `recordReceipt` does, `batch` per sendBatch
 * - /append?do&callers&batch: appends every kept receipt to ledger `do`, in RPC
 *   batches of `batch`, from `callers` concurrent callers
 * - /load?do&run&from&count&callers&batch: signs receipts [from, from + count) of
 *   `run` in slices and appends each slice as /append does (not timed precisely)
 * - /close?do: `close(0)` of ledger `do`, with workerd's clock just before and
 *   after (both right after I/O, so current), then when the alarm has archived
 *   the batch (polled every 100 ms) and what the archive wrote, when
 *   (ArchiveTap); a failure is answered too, as `error`
 * - /state?do: the ledger's signed batches (`list`) and `stats`
 * - /proofs?do&run&keep, body [leaf indices]: `proof(0, jti)` for each, one after another
 * - /rpc?do&n: n `stats(0)` calls one after another (the RPC floor of /proofs)
 * - /receipt?do&id&leaf: the receipt JWT at a leaf of a closed batch
 * - /batch?do&id: the closed batch (its JWT)
 * - GET /jwks: the public keys
 * - /archive?id: the R2 archive objects of a batch and their sizes
 * - /micro?what&n[&do]: one piece of an append, n times, for the breakdown:
 *   `decode` (shared decodePayload), `leaf` (leafHash), `rpc` (append calls
 *   of 100 receipts the ledger rejects at its first check: RPC transfer, the
 *   transaction and the per-call bookkeeping, no parse, no hash, no insert);
 *   and for a close's split: `ndjson` (an archive line, as archive.ts builds
 *   it), `r2part` (n equal 8 MiB parts of one upload), `leaves` then `tree`
 *   (the ledger's chunked Merkle build over n leaf hashes kept in memory)
 * - /read?do&id&from&count: a closed batch's receipts through `receipts()`, in pages of 2000
 *
 * The ledger class bound here is `BenchLedger`: `SettlementLedger` itself,
 * unchanged, constructed with an env whose SETTLEMENT_ARCHIVE is the real
 * bucket behind a recording pass-through (ArchiveTap): every call goes
 * through as it is, and the tap notes when each completed, which splits a
 * close into signing and archiving.
 */

import { signingKeys } from '../../workers/keys.ts';
import { signReceipt } from '../../workers/inference/receipts.ts';
import { recordReceipt } from '../../workers/settlement/record.ts';
import { SettlementLedger } from '../../workers/settlement/SettlementLedger.ts';
import { decodePayload, TYP } from '../../shared/jwt.ts';
import { leafHash, merkleRoot } from '../../receipts/merkle.ts';

/** The archive's multipart part size (workers/settlement/archive.ts). */
const PART_BYTES = 8 * 1024 * 1024;

/**
 * What the ledger's archive writes, as seen from its bucket: when the first
 * and the last R2 call completed (workerd's clock, which advances on I/O, so
 * a time taken right after an awaited call is current), how many calls and
 * bytes. `firstIoAt` is where closing stops signing and starts writing.
 */
class ArchiveTap {
  firstIoAt = Number.NaN;
  lastIoAt = Number.NaN;
  calls = 0;
  parts = 0;
  bytes = 0;
  /** Each completed call: [what, ms since the first]. @type {[string, number][]} */
  events = [];
  /** @param {string} what */
  seen(what) {
    const now = Date.now();
    this.events.push([what, Number.isNaN(this.firstIoAt) ? 0 : now - this.firstIoAt]);
    if (Number.isNaN(this.firstIoAt)) this.firstIoAt = now;
    this.lastIoAt = now;
    this.calls++;
  }
  /** @param {unknown} value */
  count(value) {
    if (value instanceof Uint8Array) this.bytes += value.byteLength;
    else if (typeof value === 'string') this.bytes += encoder.encode(value).byteLength;
  }
}

/**
 * `bucket` with every call the archive makes passed through unchanged and
 * recorded in `tap`.
 * @param {R2Bucket} bucket @param {ArchiveTap} tap @returns {R2Bucket}
 */
function tappedBucket(bucket, tap) {
  /** @template T @param {string} what @param {Promise<T>} p @returns {Promise<T>} */
  const after = async (what, p) => {
    try {
      return await p;
    } finally {
      tap.seen(what);
    }
  };
  const tapped = {
    /** @param {string} key @param {string | Uint8Array} value @param {R2PutOptions} [options] */
    put: (key, value, options) => {
      tap.count(value);
      return after(`put ${key.split('/').pop()}`, bucket.put(key, value, options));
    },
    /** @param {string} key @param {R2MultipartOptions} [options] */
    createMultipartUpload: async (key, options) => {
      const upload = await after('createMultipartUpload', bucket.createMultipartUpload(key, options));
      return {
        key: upload.key,
        uploadId: upload.uploadId,
        /** @param {number} n @param {Uint8Array} value */
        uploadPart: (n, value) => {
          tap.count(value);
          tap.parts++;
          return after(`uploadPart ${n}`, upload.uploadPart(n, value));
        },
        /** @param {R2UploadedPart[]} parts */
        complete: (parts) => after('complete', upload.complete(parts)),
        abort: () => after('abort', upload.abort()),
      };
    },
  };
  return /** @type {R2Bucket} */ (/** @type {unknown} */ (tapped));
}

/**
 * The real SettlementLedger, constructed with an env whose archive bucket is
 * the real one behind a recording pass-through (ArchiveTap). Nothing else differs.
 */
export class BenchLedger extends SettlementLedger {
  /** @type {{ tap: ArchiveTap }} */
  #archive;

  /** @param {DurableObjectState} ctx @param {Env} env */
  constructor(ctx, env) {
    const archive = { tap: new ArchiveTap() };
    const real = env.SETTLEMENT_ARCHIVE;
    const wrapped = /** @type {Env} */ ({
      ...env,
      get SETTLEMENT_ARCHIVE() {
        return tappedBucket(real, archive.tap);
      },
    });
    super(ctx, wrapped);
    this.#archive = archive;
  }

  /** What the archive wrote since the last call, and when (see ArchiveTap); starts a new record. */
  takeArchiveTap() {
    const { firstIoAt, lastIoAt, calls, parts, bytes, events } = this.#archive.tap;
    this.#archive.tap = new ArchiveTap();
    return { firstIoAt, lastIoAt, calls, parts, bytes, events };
  }
}

/** @typedef {import('../../workers/env.ts').Env} Env */
/** @typedef {import('../../shared/jwt.ts').ReceiptClaims} ReceiptClaims */

/** The shard number every bench ledger claims (each bench ledger is its own object). */
const SHARD = 0;

const encoder = new TextEncoder();

/** @param {Env} env @param {string} name */
function ledger(env, name) {
  return /** @type {DurableObjectNamespace<BenchLedger>} */ (/** @type {unknown} */ (env.SETTLEMENT_LEDGER)).getByName(name);
}

/** murmur3's 32-bit finalizer: a bijection on 32-bit integers, well mixed. @param {number} x */
function mix(x) {
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
  return (x ^ (x >>> 16)) >>> 0;
}

/** @param {number} x */
function hex8(x) {
  return x.toString(16).padStart(8, '0');
}

/**
 * The jti of receipt `i` of `run`: UUID-shaped, unique for i < 2^32 within a
 * run (its first 8 digits are a bijection of i), spread like random UUIDs.
 * @param {number} run @param {number} i
 */
export function jtiOf(run, i) {
  const a = mix((i + Math.imul(run, 0x9e3779b1)) >>> 0);
  const b = hex8(mix(a ^ 0x68e31da4));
  const c = hex8(mix(a ^ 0xb5297a4d));
  const d = hex8(mix(a ^ 0x1b56c4e9));
  return `${hex8(a)}-${b.slice(0, 4)}-4${b.slice(5, 8)}-${'89ab'[a & 3]}${c.slice(1, 4)}-${c.slice(4, 8)}${d}`;
}

/** 64 hex digits that look like a SHA-256, derived from a seed. @param {number} seed */
function fakeSha(seed) {
  let out = '';
  let x = seed >>> 0;
  for (let k = 0; k < 8; k++) out += hex8((x = mix(x + 0x7f4a7c15 + k)));
  return out;
}

const MODELS = [
  { model: 'classifier', version: '2026-10-14.1', price: 2 },
  { model: 'embed', version: '2026-09-30.3', price: 5 },
  { model: 'llama-3.1-8b-instruct', version: 'q4-2026-08-01', price: 40 },
];
const BACKENDS = [
  { provider: 'provider-fra', backend: 'fra-1', region: 'eu-west', pop: 'FRA' },
  { provider: 'provider-fra', backend: 'fra-2', region: 'eu-west', pop: 'AMS' },
  { provider: 'provider-iad', backend: 'iad-1', region: 'us-east', pop: 'IAD' },
  { provider: 'provider-sin', backend: 'sin-1', region: 'ap-southeast', pop: 'SIN' },
];
const CONSUMERS = 200;

/** @type {Promise<string[]> | undefined} */
let attestations;

/**
 * 64 real provider attestations (docs/api.md section 3), signed the way
 * gpu-backend/src/mesh/attestation.ts signs them, by a provider key made here.
 */
function attestationPool() {
  attestations ??= (async () => {
    const pair = /** @type {CryptoKeyPair} */ (await crypto.subtle.generateKey({ name: 'Ed25519' }, false, ['sign', 'verify']));
    const b64 = (/** @type {Uint8Array} */ bytes) => {
      let s = '';
      for (const x of bytes) s += String.fromCharCode(x);
      return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
    };
    const out = [];
    for (let k = 0; k < 64; k++) {
      const be = BACKENDS[k % BACKENDS.length];
      const header = b64(encoder.encode(JSON.stringify({ alg: 'EdDSA', typ: TYP.attestation, kid: `${be?.provider}-2026-11` })));
      const claims = {
        iss: be?.provider,
        sub: be?.backend,
        iat: Math.floor(Date.now() / 1000),
        jti: crypto.randomUUID(),
        model: MODELS[k % MODELS.length]?.model,
        output_sha256: fakeSha(k * 7 + 1),
        units: { input: 16 + k, output: 4 + (k % 9) },
      };
      const input = `${header}.${b64(encoder.encode(JSON.stringify(claims)))}`;
      const sig = new Uint8Array(await crypto.subtle.sign('Ed25519', pair.privateKey, encoder.encode(input)));
      out.push(`${input}.${b64(sig)}`);
    }
    return out;
  })();
  return attestations;
}

/**
 * The claims of receipt `i` of `run`, every docs/api.md section 4 claim, as the edge builds them.
 * @param {Env} env @param {string[]} atts @param {number} run @param {number} i @param {number} iat
 * @returns {ReceiptClaims}
 */
function claimsOf(env, atts, run, i, iat) {
  const h = mix(i ^ 0x5bd1e995);
  const m = MODELS[h % MODELS.length] ?? MODELS[0];
  const be = BACKENDS[(h >>> 4) % BACKENDS.length] ?? BACKENDS[0];
  const input = 8 + (h % 900);
  const output = 1 + ((h >>> 10) % 300);
  return {
    iss: env.MESH_ISSUER,
    sub: `consumer-${String(mix(h) % CONSUMERS).padStart(4, '0')}`,
    jti: jtiOf(run, i),
    iat,
    model: /** @type {NonNullable<typeof m>} */ (m).model,
    model_version: /** @type {NonNullable<typeof m>} */ (m).version,
    provider: /** @type {NonNullable<typeof be>} */ (be).provider,
    backend: /** @type {NonNullable<typeof be>} */ (be).backend,
    region: /** @type {NonNullable<typeof be>} */ (be).region,
    pop: /** @type {NonNullable<typeof be>} */ (be).pop,
    units: { input, output },
    amount: /** @type {NonNullable<typeof m>} */ (m).price * (input + output),
    input_sha256: fakeSha(h),
    output_sha256: fakeSha(h ^ 0xffff),
    latency_ms: 3 + (h % 40),
    cache: 'miss',
    verify: (h & 15) === 0 ? 'sampled' : 'none',
    attestation: atts[h % atts.length] ?? '',
  };
}

/** Claims kept by /claims, signed by /sign. @type {ReceiptClaims[]} */
let keptClaims = [];
/** Receipts kept by /pool, used by /send and /append. @type {string[]} */
let pool = [];
let poolRun = 0;
/** Leaf hashes kept by /micro?what=leaves, 32 bytes each, for /micro?what=tree. */
let leaves = new Uint8Array(0);

/** @param {Env} env @param {number} run @param {number} from @param {number} n */
async function signRange(env, run, from, n) {
  const keys = await signingKeys(env);
  const atts = await attestationPool();
  const iat = Math.floor(Date.now() / 1000);
  /** @type {string[]} */
  const out = new Array(n);
  for (let k = 0; k < n; k++) out[k] = await signReceipt(keys, claimsOf(env, atts, run, from + k, iat));
  return out;
}

/**
 * Appends `jwts` to a ledger in RPC batches of `batch`, from `callers` concurrent callers.
 * @param {Env} env @param {string} name @param {readonly string[]} jwts @param {number} callers @param {number} batch
 */
async function appendAll(env, name, jwts, callers, batch) {
  const stub = ledger(env, name);
  const counts = { appended: 0, duplicate: 0, invalid: 0, calls: 0 };
  let next = 0;
  const caller = async () => {
    for (;;) {
      const start = next;
      if (start >= jwts.length) return;
      next = Math.min(jwts.length, start + batch);
      const outcomes = await stub.append(SHARD, jwts.slice(start, next));
      counts.calls++;
      for (const o of outcomes) {
        if (o === 'appended') counts.appended++;
        else if (o === 'duplicate') counts.duplicate++;
        else counts.invalid++;
      }
    }
  };
  await Promise.all(Array.from({ length: callers }, caller));
  return counts;
}

/** @param {unknown} value @param {number} [status] */
function json(value, status = 200) {
  return new Response(JSON.stringify(value), { status, headers: { 'content-type': 'application/json' } });
}

/** @param {URL} url @param {string} name @param {number} [fallback] */
function int(url, name, fallback) {
  const raw = url.searchParams.get(name);
  const n = raw === null ? fallback : Number(raw);
  if (n === undefined || !Number.isSafeInteger(n) || n < 0) throw new Error(`query parameter ${name} must be a non-negative integer`);
  return n;
}

/** @param {URL} url */
function doName(url) {
  const name = url.searchParams.get('do');
  if (!name) throw new Error('query parameter do (the ledger object name) is required');
  return name;
}

export default {
  /** @param {Request} request @param {Env} env */
  async fetch(request, env) {
    const url = new URL(request.url);
    try {
      switch (url.pathname) {
        case '/ready':
          await signingKeys(env);
          await attestationPool();
          return json({ ok: true });
        case '/sample':
          return json(await signRange(env, int(url, 'run'), 0, int(url, 'n')));
        case '/claims': {
          const atts = await attestationPool();
          const run = int(url, 'run');
          const iat = Math.floor(Date.now() / 1000);
          keptClaims = Array.from({ length: int(url, 'n') }, (_, i) => claimsOf(env, atts, run, i, iat));
          return json({ kept: keptClaims.length });
        }
        case '/sign': {
          const n = Math.min(int(url, 'n'), keptClaims.length);
          const keys = await signingKeys(env);
          let chars = 0;
          let min = Infinity;
          let max = 0;
          for (let i = 0; i < n; i++) {
            const jwt = await signReceipt(keys, /** @type {ReceiptClaims} */ (keptClaims[i]));
            chars += jwt.length;
            if (jwt.length < min) min = jwt.length;
            if (jwt.length > max) max = jwt.length;
          }
          return json({ signed: n, meanChars: n ? chars / n : 0, minChars: n ? min : 0, maxChars: max });
        }
        case '/pool': {
          poolRun = int(url, 'run');
          pool = await signRange(env, poolRun, 0, int(url, 'n'));
          return json({ kept: pool.length, meanChars: pool.reduce((a, j) => a + j.length, 0) / Math.max(1, pool.length) });
        }
        case '/send': {
          // The queue send recordReceipt makes, timed without its FLUSH_MS wait: one RECEIPTS.sendBatch per `batch` receipts.
          const n = int(url, 'n');
          const batch = int(url, 'batch', 1);
          if (n > 0 && pool.length === 0) throw new Error('/send needs /pool first');
          for (let i = 0; i < n; i += batch) {
            const messages = [];
            for (let k = i; k < Math.min(n, i + batch); k++) messages.push({ body: { v: 1, receipt: pool[k % pool.length] }, contentType: /** @type {const} */ ('json') });
            await env.RECEIPTS.sendBatch(messages);
          }
          return json({ sent: n, batch });
        }
        case '/append':
          return json(await appendAll(env, doName(url), pool, int(url, 'callers', 4), int(url, 'batch', 100)));
        case '/load': {
          const name = doName(url);
          const run = int(url, 'run');
          const from = int(url, 'from');
          const count = int(url, 'count');
          const callers = int(url, 'callers', 4);
          const batch = int(url, 'batch', 100);
          const total = { appended: 0, duplicate: 0, invalid: 0, calls: 0 };
          const SLICE = 5000;
          for (let s = from; s < from + count; s += SLICE) {
            const jwts = await signRange(env, run, s, Math.min(SLICE, from + count - s));
            const c = await appendAll(env, name, jwts, callers, batch);
            total.appended += c.appended;
            total.duplicate += c.duplicate;
            total.invalid += c.invalid;
            total.calls += c.calls;
          }
          return json(total);
        }
        case '/close': {
          // workerd's clock stands still while code runs and moves on I/O: the
          // request just arrived, so this is now; after the awaited close, too.
          const stub = ledger(env, doName(url));
          await stub.takeArchiveTap();
          const startedAt = Date.now();
          let closed;
          let error;
          try {
            closed = await stub.close(SHARD);
          } catch (err) {
            error = err instanceof Error ? err.message : String(err);
          }
          const endedAt = Date.now();
          // close() returns once the batch is signed; the ledger's alarm archives it. Wait for that.
          let archivedAt = Number.NaN;
          const id = closed?.[0];
          for (let i = 0; id !== undefined && i < 6000; i++) {
            if ((await stub.batch(SHARD, id))?.archived) {
              archivedAt = Date.now();
              break;
            }
            await scheduler.wait(100);
          }
          return json({ closed, error, startedAt, endedAt, archivedAt, archive: await stub.takeArchiveTap() });
        }
        case '/micro': {
          const what = url.searchParams.get('what');
          const n = int(url, 'n');
          if (pool.length === 0) throw new Error('/micro needs /pool first');
          let x = 0;
          if (what === 'decode') for (let i = 0; i < n; i++) x += decodePayload(/** @type {string} */ (pool[i % pool.length]))?.amount ?? 0;
          else if (what === 'leaf') for (let i = 0; i < n; i++) x += leafHash(/** @type {string} */ (pool[i % pool.length]))[0] ?? 0;
          else if (what === 'rpc') {
            // Receipts with their dots replaced: the same bytes over RPC, refused at the ledger's first check.
            const refused = pool.slice(0, 100).map((j) => j.replaceAll('.', '_'));
            const stub = ledger(env, doName(url));
            for (let i = 0; i < n; i += 100) x += (await stub.append(SHARD, refused.slice(0, Math.min(100, n - i)))).length;
          } else if (what === 'ndjson') {
            // One archive line per receipt, built as workers/settlement/archive.ts builds it.
            for (let i = 0; i < n; i++) {
              const jwt = /** @type {string} */ (pool[i % pool.length]);
              x += encoder.encode(`${JSON.stringify({ leaf: i, jti: jtiOf(0, i), receipt: jwt })}\n`).length;
            }
          } else if (what === 'r2part') {
            // n equal 8 MiB parts of one multipart upload, completed, then deleted: Miniflare's R2 write cost.
            if (n > 0) {
              const key = `bench/r2part-${crypto.randomUUID()}`;
              const upload = await env.SETTLEMENT_ARCHIVE.createMultipartUpload(key);
              const part = new Uint8Array(PART_BYTES).fill(0x61);
              const parts = [];
              for (let i = 0; i < n; i++) parts.push(await upload.uploadPart(i + 1, part));
              x = (await upload.complete(parts)).size;
              await env.SETTLEMENT_ARCHIVE.delete(key);
            }
          } else if (what === 'leaves') {
            // Keeps n leaf hashes (of the pool's receipts, repeated) packed in one buffer, for `tree`.
            leaves = new Uint8Array(32 * n);
            for (let i = 0; i < n; i++) leaves.set(leafHash(/** @type {string} */ (pool[i % pool.length])), 32 * i);
            x = n;
          } else if (what === 'tree') {
            // The ledger's build over the kept leaf hashes: roots of 1024-leaf chunks, then their root.
            const count = leaves.length / 32;
            const chunkRoots = [];
            for (let c = 0; c < count; c += 1024) {
              const chunk = [];
              for (let i = c; i < Math.min(c + 1024, count); i++) chunk.push(leaves.subarray(32 * i, 32 * i + 32));
              chunkRoots.push(merkleRoot(chunk));
            }
            x = merkleRoot(chunkRoots)[0] ?? 0;
          } else throw new Error('what must be decode, leaf, rpc, ndjson, r2part, leaves or tree');
          return json({ n, x });
        }
        case '/state': {
          const stub = ledger(env, doName(url));
          return json({ signed: await stub.list(SHARD, '', 100), stats: await stub.stats(SHARD) });
        }
        case '/proofs': {
          const stub = ledger(env, doName(url));
          const run = int(url, 'run');
          const keep = int(url, 'keep', 0);
          const leaves = /** @type {number[]} */ (await request.json());
          const kept = [];
          let ok = 0;
          for (const leaf of leaves) {
            const proof = await stub.proof(SHARD, jtiOf(run, leaf));
            if (proof && 'audit_path' in proof && proof.leaf_index === leaf) ok++;
            if (kept.length < keep) kept.push({ leaf, jti: jtiOf(run, leaf), proof });
          }
          return json({ asked: leaves.length, ok, kept });
        }
        case '/rpc': {
          const stub = ledger(env, doName(url));
          const n = int(url, 'n');
          for (let i = 0; i < n; i++) await stub.stats(SHARD);
          return json({ calls: n });
        }
        case '/receipt': {
          const id = url.searchParams.get('id') ?? '';
          const page = await ledger(env, doName(url)).receipts(SHARD, id, int(url, 'leaf'), 1);
          return json({ receipt: page?.receipts[0] ?? null });
        }
        case '/read': {
          // A closed batch's receipts in pages of 2000, as the archive reads them, but through receipts() RPC.
          const stub = ledger(env, doName(url));
          const id = url.searchParams.get('id') ?? '';
          const end = int(url, 'from') + int(url, 'count');
          let read = 0;
          for (let from = int(url, 'from'); from < end; ) {
            const page = await stub.receipts(SHARD, id, from, Math.min(2000, end - from));
            if (!page || page.receipts.length === 0) break;
            read += page.receipts.length;
            from += page.receipts.length;
          }
          return json({ read });
        }
        case '/batch':
          return json(await ledger(env, doName(url)).batch(SHARD, url.searchParams.get('id') ?? ''));
        case '/jwks':
          return json((await signingKeys(env)).publicJwks);
        case '/archive': {
          const listed = await env.SETTLEMENT_ARCHIVE.list({ prefix: `settlement/${url.searchParams.get('id') ?? ''}/` });
          return json(listed.objects.map((o) => ({ key: o.key, size: o.size })));
        }
        default:
          return json({ error: `no route ${url.pathname}` }, 404);
      }
    } catch (err) {
      return json({ error: err instanceof Error ? `${err.message}\n${err.stack ?? ''}` : String(err) }, 500);
    }
  },
};
