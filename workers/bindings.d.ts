// Ties the runtime's global `Cloudflare.Env` and `exports` types to this Worker,
// so `env` and `exports` from `cloudflare:workers` / `cloudflare:test` are typed.
import type { Env as MeshEnv } from './env.ts';

declare global {
  namespace Cloudflare {
    interface GlobalProps {
      mainModule: typeof import('./index.ts');
    }
    interface Env extends MeshEnv {}
  }
}
export {};
