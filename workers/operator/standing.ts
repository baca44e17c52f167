/**
 * What the operator registry keeps about providers under verification
 * (docs/api.md section 6.3): each one's standing, the index of fraud proofs
 * and the events that changed a standing. Types only, so that pure modules
 * (sampling, scoring, tests outside workerd) can name them.
 */

/** A provider's standing under verification (docs/api.md section 6.3). */
export interface ProviderStanding {
  id: string;
  addedAt: number;
  /** Proven frauds since admission or the last clearing. */
  strikes: number;
  lastProvenAt: number | null;
  /** Set when strikes reached the threshold: no traffic until the operator clears it. */
  quarantinedAt: number | null;
  /** The operator's sampling rate for this provider (0..1); null: the mesh's policy. */
  sampleRate: number | null;
}

/** What the registry keeps of a fraud proof (the proof itself is served from R2). */
export interface DisputeSummary {
  id: string;
  kind: 'mismatch' | 'signature';
  verdict: 'proven' | 'unresolved';
  accused: string | null;
  providers: string[];
  model: string;
  withheld: string[];
  createdAt: number;
}

/** A change of a provider's standing, in the order they happened. */
export interface ProviderEvent {
  seq: number;
  provider: string;
  kind: 'proven' | 'quarantined' | 'cleared';
  at: number;
  dispute: string | null;
}
