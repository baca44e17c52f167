// Types for the few Node built-ins the edge uses through `nodejs_compat`
// (workerd implements them natively); @types/node is not loaded here because
// its globals clash with the Workers runtime types.
declare module 'node:crypto' {
  interface Hash {
    update(data: string | Uint8Array): Hash;
    digest(): Uint8Array;
    digest(encoding: 'hex' | 'base64url'): string;
  }
  export function createHash(algorithm: 'sha256'): Hash;
  export function hash(algorithm: 'sha256', data: string | Uint8Array, outputEncoding: 'buffer'): Uint8Array;
  export function hash(algorithm: 'sha256', data: string | Uint8Array, outputEncoding?: 'hex' | 'base64url'): string;
}

declare module 'node:buffer' {
  interface NodeBuffer extends Uint8Array {
    toString(encoding?: 'utf8' | 'hex' | 'base64' | 'base64url' | 'latin1'): string;
  }
  export const Buffer: {
    from(data: Uint8Array | ArrayBuffer | string, encoding?: 'utf8' | 'hex' | 'base64' | 'base64url' | 'latin1'): NodeBuffer;
    byteLength(data: string, encoding?: 'utf8'): number;
  };
}
