/** Every policy the simulator compares, in the order the report shows them. */

import { cloudPolicy } from './cloud.ts';
import { fullKnowledgePolicy } from './full-knowledge.ts';
import { meshPolicy } from './mesh.ts';
import { naivePolicy } from './naive.ts';
import type { Policy } from './policy.ts';

export const POLICY_NAMES = ['cloud-us-east', 'cloud-nearest', 'random-node', 'nearest-node', 'mesh-no-hedge', 'mesh', 'full-knowledge'] as const;
export type PolicyName = (typeof POLICY_NAMES)[number];

/** A fresh policy (policies keep per-run state). */
export function createPolicy(name: PolicyName): Policy {
  switch (name) {
    case 'cloud-us-east':
      return cloudPolicy('us-east');
    case 'cloud-nearest':
      return cloudPolicy('nearest');
    case 'random-node':
      return naivePolicy('random');
    case 'nearest-node':
      return naivePolicy('nearest');
    case 'mesh-no-hedge':
      return meshPolicy({ hedging: false });
    case 'mesh':
      return meshPolicy({ hedging: true });
    case 'full-knowledge':
      return fullKnowledgePolicy();
  }
}

export function isPolicyName(name: string): name is PolicyName {
  return (POLICY_NAMES as readonly string[]).includes(name);
}
