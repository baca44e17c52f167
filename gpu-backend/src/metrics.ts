/**
 * Prometheus metrics (GET /metrics) under Triton's names where Triton has one,
 * so existing dashboards read them: per model and version, request successes
 * and failures (by error code), inference and execution counts, cumulative
 * request / queue / compute durations in microseconds, and a histogram of
 * the batch size (rows) of each execution. Gauges for the queue,
 * the requests in flight and model readiness are read when scraped; an info
 * gauge carries the execution provider in use. Each backend has its own
 * registry, so several can live in one process (tests, the local mesh).
 */

import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Capacity, ExecutionProvider } from '../../shared/heartbeat.ts';
import type { ModelState } from './serving/repository.ts';

export interface MetricsSources {
  backendId: string;
  providerId: string;
  region: string;
  executionProvider: () => ExecutionProvider;
  capacity: () => Capacity;
  models: () => { name: string; version: string; state: ModelState; loadMs: number; p50Ms: number }[];
}

export interface RequestTiming {
  /** Whole request in the backend, ms. */
  totalMs: number;
  queueMs: number;
  computeMs: number;
  /** Rows inferred for this request. */
  rows: number;
}

const US_PER_MS = 1000;

export class Metrics {
  readonly registry = new Registry();
  readonly #success: Counter<'model' | 'version'>;
  readonly #failure: Counter<'model' | 'version' | 'reason'>;
  readonly #inferences: Counter<'model' | 'version'>;
  readonly #executions: Counter<'model' | 'version'>;
  readonly #batchSize: Histogram<'model' | 'version'>;
  readonly #requestUs: Counter<'model' | 'version'>;
  readonly #queueUs: Counter<'model' | 'version'>;
  readonly #computeUs: Counter<'model' | 'version'>;
  readonly #tokensRejected: Counter<'code'>;

  constructor(sources: MetricsSources) {
    const registers = [this.registry];
    const perModel = ['model', 'version'] as const;
    this.#success = new Counter({ name: 'nv_inference_request_success', help: 'Successful inference requests.', labelNames: perModel, registers });
    this.#failure = new Counter({
      name: 'nv_inference_request_failure',
      help: 'Failed inference requests, by error code.',
      labelNames: [...perModel, 'reason'],
      registers,
    });
    this.#inferences = new Counter({ name: 'nv_inference_count', help: 'Inferences performed (a batch of n rows counts n).', labelNames: perModel, registers });
    this.#executions = new Counter({ name: 'nv_inference_exec_count', help: 'Model executions (dynamic batches) run.', labelNames: perModel, registers });
    this.#batchSize = new Histogram({
      name: 'nv_inference_batch_size',
      help: 'Rows in each model execution (dynamic batch).',
      labelNames: perModel,
      buckets: [1, 2, 4, 8, 16, 32, 64, 128],
      registers,
    });
    this.#requestUs = new Counter({
      name: 'nv_inference_request_duration_us',
      help: 'Cumulative end-to-end inference request time in the backend, microseconds.',
      labelNames: perModel,
      registers,
    });
    this.#queueUs = new Counter({
      name: 'nv_inference_queue_duration_us',
      help: 'Cumulative time requests waited in the queue (dynamic batching and slots), microseconds.',
      labelNames: perModel,
      registers,
    });
    this.#computeUs = new Counter({
      name: 'nv_inference_compute_infer_duration_us',
      help: 'Cumulative time requests spent in model execution, microseconds.',
      labelNames: perModel,
      registers,
    });
    this.#tokensRejected = new Counter({
      name: 'mesh_dispatch_rejected_total',
      help: 'Requests refused for a missing or invalid dispatch token.',
      labelNames: ['code'],
      registers,
    });

    new Gauge({
      name: 'mesh_backend_info',
      help: 'This backend: the labels carry its ids, region and the execution provider in use.',
      labelNames: ['backend', 'provider', 'region', 'execution_provider'],
      registers,
      collect() {
        this.reset();
        this.set(
          { backend: sources.backendId, provider: sources.providerId, region: sources.region, execution_provider: sources.executionProvider() },
          1,
        );
      },
    });
    new Gauge({
      name: 'mesh_backend_slots',
      help: 'Execution slots.',
      registers,
      collect() {
        this.set(sources.capacity().slots);
      },
    });
    new Gauge({
      name: 'mesh_backend_requests_in_flight',
      help: 'Inference requests running now.',
      registers,
      collect() {
        this.set(sources.capacity().inFlight);
      },
    });
    new Gauge({
      name: 'nv_inference_pending_request_count',
      help: 'Inference requests admitted and waiting to run.',
      registers,
      collect() {
        this.set(sources.capacity().queued);
      },
    });
    const modelGauge = (name: string, help: string, value: (m: ReturnType<MetricsSources['models']>[number]) => number) =>
      new Gauge({
        name,
        help,
        labelNames: perModel,
        registers,
        collect() {
          this.reset();
          for (const m of sources.models()) this.set({ model: m.name, version: m.version }, value(m));
        },
      });
    modelGauge('mesh_model_ready', '1 when the model is loaded and warm.', (m) => (m.state === 'READY' ? 1 : 0));
    modelGauge('mesh_model_load_duration_ms', 'Time the last load took (session and warm-up), ms.', (m) => m.loadMs);
    modelGauge('mesh_model_service_p50_ms', 'Rolling median model execution time, ms.', (m) => m.p50Ms);
  }

  success(model: string, version: string, timing: RequestTiming): void {
    const labels = { model, version };
    this.#success.inc(labels);
    this.#inferences.inc(labels, timing.rows);
    this.#requestUs.inc(labels, Math.round(timing.totalMs * US_PER_MS));
    this.#queueUs.inc(labels, Math.round(timing.queueMs * US_PER_MS));
    this.#computeUs.inc(labels, Math.round(timing.computeMs * US_PER_MS));
  }

  failure(model: string, version: string, reason: string): void {
    this.#failure.inc({ model, version, reason });
  }

  /** One model execution of `rows` rows (a dynamic batch). */
  execution(model: string, version: string, rows: number): void {
    this.#executions.inc({ model, version });
    this.#batchSize.observe({ model, version }, rows);
  }

  tokenRejected(code: string): void {
    this.#tokensRejected.inc({ code });
  }

  /** The Prometheus text exposition and its content type. */
  async render(): Promise<{ body: string; contentType: string }> {
    return { body: await this.registry.metrics(), contentType: this.registry.contentType };
  }
}
