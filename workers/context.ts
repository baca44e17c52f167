/** The Hono environment of the edge app: bindings plus per-request variables. */

import type { Env } from './env.ts';

export type AppEnv = { Bindings: Env };
