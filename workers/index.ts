/** Worker entry: the Hono app and the Durable Object classes the runtime needs to find. */

import { app } from './app.ts';
import type { Env } from './env.ts';

export { RegionDirectory } from './directory/RegionDirectory.ts';
export { OperatorRegistry } from './operator/OperatorRegistry.ts';

export default {
  fetch: app.fetch,
} satisfies ExportedHandler<Env>;
