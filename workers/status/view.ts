/**
 * The mesh's status as `GET /v1/mesh/status` answers it (docs/api.md section
 * 2.15): regions, backends with their state, PoPs with recent latency, and
 * the last settlement batches. The status page (workers/status/page/) reads
 * exactly this; both import these types, so the page and the route cannot
 * drift apart.
 */

import type { ExecutionProvider } from '../../shared/heartbeat.ts';

/** Who asked: an operator (admin), a billing system, or one provider, who sees only its own backends and payouts. */
export interface StatusViewer {
  role: 'admin' | 'billing' | 'provider';
  /** The provider id, for a provider's key. */
  provider?: string;
}

/**
 * One backend's state, most severe first: `down` (no heartbeat for
 * DOWN_AFTER_MS, or expired and kept a while to be shown), `quarantined`
 * (its provider, by proven frauds), `ejected` (by the answering isolate's
 * outlier detection), `starting` (not ready: loading or draining), `cold`
 * (ready, no model warm), `warm`.
 */
export type BackendState = 'down' | 'quarantined' | 'ejected' | 'starting' | 'cold' | 'warm';

export const BACKEND_STATES: readonly BackendState[] = ['down', 'quarantined', 'ejected', 'starting', 'cold', 'warm'];

/** Requests answered in the window, as the edge measured them (arrival to response). */
export interface TrafficStatus {
  requests: number;
  /** Requests per second over the window. */
  rps: number;
  /** Answers with a 5xx status. */
  errors: number;
  /** Latency percentiles, ms; null with no request in the window. */
  p50Ms: number | null;
  p90Ms: number | null;
  p99Ms: number | null;
}

export interface BackendStatus {
  id: string;
  provider: string;
  region: string;
  /** Claimed coordinates (heartbeat). */
  lat: number;
  lon: number;
  state: BackendState;
  /** Proof of location (docs/api.md section 3.2) of the claimed coordinates. */
  location: 'verified' | 'unverified' | 'refuted';
  executionProvider: ExecutionProvider;
  models: { name: string; version: string; warm: boolean }[];
  capacity: { slots: number; inFlight: number; queued: number };
  /** ms since epoch of its last heartbeat. */
  lastSeen: number;
  /** The PoP that carried its last heartbeat, when known. */
  heartbeatColo?: string;
}

export interface RegionStatus {
  id: string;
  name: string;
  lat: number;
  lon: number;
  /** Backends by state, and by location verdict (the viewer's backends only). */
  backends: Record<BackendState, number> & { total: number; unverified: number; refuted: number };
  /** Summed over the region's backends routing can use (warm or cold). */
  capacity: { slots: number; inFlight: number; queued: number };
  /** Models warm on at least one of those backends, sorted. */
  warmModels: string[];
  /** Requests its backends answered in the window (a provider sees its own backends' only). */
  traffic: TrafficStatus;
}

export interface PopStatus {
  /** IATA code. */
  code: string;
  city: string;
  lat: number;
  lon: number;
  /** Requests that entered the mesh here in the window. */
  traffic: TrafficStatus;
  /**
   * Where they went: per region, the requests its backends answered, most
   * first. The rest of `traffic.requests` no backend answered (a cache hit,
   * the Hugging Face fallback, an error).
   */
  servedBy: { region: string; requests: number }[];
}

/** A closed settlement batch, newest first. */
export interface BatchStatus {
  id: string;
  shard: number;
  /** ms since epoch the batch's epoch ended. */
  closedAt: number;
  /** Receipts in the batch. */
  count: number;
  /** Micro-USD charged to consumers (absent for a provider). */
  charged?: number;
  /** Micro-USD paid to providers (for a provider: to it). */
  paid: number;
  /** Micro-USD withheld by disputes and penalties (for a provider: from it). */
  withheld: number;
  /** Disputed receipts in the batch (absent for a provider). */
  disputed?: number;
}

export interface MeshStatus {
  /** ms since epoch, the edge's clock. */
  at: number;
  /** The PoP that answered: ejections are its isolate's view. */
  pop: string;
  viewer: StatusViewer;
  /** The traffic window, seconds. */
  windowSeconds: number;
  regions: RegionStatus[];
  backends: BackendStatus[];
  /** PoPs where requests entered in the window (a provider: the requests its own backends answered). */
  pops: PopStatus[];
  batches: BatchStatus[];
  /** Sources that did not answer this time (region ids, `settlement`): their part is missing, not zero. */
  unavailable: string[];
}
