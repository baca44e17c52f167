/** Worker entry: the Hono app and the Durable Object classes the runtime needs to find. */

import { app } from './app.ts';
import type { Env } from './env.ts';
import { consumeDeadLetters, consumeReceipts } from './settlement/consumer.ts';

export { RegionDirectory } from './directory/RegionDirectory.ts';
export { OperatorRegistry } from './operator/OperatorRegistry.ts';
export { SettlementLedger } from './settlement/SettlementLedger.ts';
export { KeyAccount } from './account/KeyAccount.ts';

export default {
  fetch: app.fetch,
  async queue(batch, env) {
    if (batch.queue.endsWith('-dlq')) await consumeDeadLetters(batch, env);
    else await consumeReceipts(batch, env);
  },
} satisfies ExportedHandler<Env>;
