import { describe, expect, it } from 'vitest';
import { RecencyList, type Recent } from '../../../workers/routing/recency.ts';

interface Item extends Recent {
  name: string;
}
const item = (name: string): Item => ({ name, older: undefined, newer: undefined });

function drain(list: RecencyList<Item>): string[] {
  const out: string[] = [];
  for (let e = list.takeOldest(); e; e = list.takeOldest()) out.push(e.name);
  return out;
}

describe('RecencyList', () => {
  it('gives entries back least recently observed first, a touch making one the newest', () => {
    const list = new RecencyList<Item>();
    const [a, b, c] = [item('a'), item('b'), item('c')];
    for (const e of [a, b, c]) list.add(e);
    list.touch(a);
    list.touch(a); // already the newest: nothing moves
    expect(list.size).toBe(3);
    expect(drain(list)).toEqual(['b', 'c', 'a']);
    expect(list.size).toBe(0);
    expect(list.takeOldest()).toBeUndefined();
  });

  it('takes an entry out from anywhere, the oldest and the newest included', () => {
    const list = new RecencyList<Item>();
    const items = ['a', 'b', 'c', 'd'].map(item);
    for (const e of items) list.add(e);
    list.remove(items[1]!); // the middle
    list.remove(items[0]!); // the oldest
    list.remove(items[3]!); // the newest
    expect(list.size).toBe(1);
    list.add(items[0]!); // back in, as the newest
    expect(drain(list)).toEqual(['c', 'a']);
  });
});
