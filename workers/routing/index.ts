/** The routing brain: pure strategies the edge's hot path and the world simulator share (re-exports only). */

export * from './latency.ts';
export * from './rtt.ts';
export * from './score.ts';
export * from './p2c.ts';
export * from './outliers.ts';
export * from './retry-budget.ts';
export * from './hedge.ts';
