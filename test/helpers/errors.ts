/** What a call throws, as tests compare it: a `MeshError` as `status:code`, anything else as `not-a-mesh-error`, nothing as undefined. */

import { MeshError } from '../../shared/errors.ts';

export function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return err instanceof MeshError ? `${err.status}:${err.code}` : 'not-a-mesh-error';
  }
  return undefined;
}
