/**
 * ByteIndex (src/dataplane/byteindex.ts) against a Map of the same keys:
 * random adds and removes over a small key space (so tombstones are reused
 * and the table rehashes many times), every key looked up after each step;
 * keys go in by add() and by findOrAdd() (the first start's one-probe insert).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { ByteIndex } from "../../src/dataplane/byteindex.js";

test("ByteIndex finds exactly the keys a Map holds, through removes, reuse and rehashes", () => {
  const size = 24;
  let arena = Buffer.alloc(0);
  const index = new ByteIndex(size, () => arena);
  const model = new Map<string, number>();
  const free: number[] = [];
  let top = 0;
  let seed = 12345;
  const rand = (n: number) => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) % n);
  const keyOf = (k: number) => {
    const b = Buffer.alloc(size);
    b.writeUInt32LE(k, 4);
    b[23] = k & 7;
    return b;
  };
  for (let step = 0; step < 20_000; step++) {
    const k = rand(3000);
    const key = keyOf(k), hex = key.toString("hex");
    const have = model.get(hex);
    assert.equal(index.find(key, 0), have ?? -1, `step ${step}: key ${k}`);
    if (have === undefined) {
      const slot = free.pop() ?? top++;
      if (arena.length < (slot + 1) * size) {
        const next = Buffer.alloc(Math.max(64, slot * 2) * size);
        arena.copy(next);
        arena = next;
      }
      key.copy(arena, slot * size);
      // Both ways in: add() after a miss, and findOrAdd() (one probe), which must miss here too.
      if (rand(2) === 0) index.add(slot);
      else assert.equal(index.findOrAdd(key, 0, slot), -1, `step ${step}: findOrAdd of a new key ${k}`);
      model.set(hex, slot);
    } else if (rand(3) === 0) {
      // findOrAdd of a key that is there returns its slot and adds nothing.
      assert.equal(index.findOrAdd(key, 0, top + 1000), have);
    } else if (rand(2) === 0) {
      index.remove(have);
      model.delete(hex);
      free.push(have);
    }
    assert.equal(index.count, model.size);
  }
  for (let k = 0; k < 3000; k++) {
    const key = keyOf(k);
    assert.equal(index.find(key, 0), model.get(key.toString("hex")) ?? -1);
  }
  // A key looked up where it lies in another buffer (a dump), at an offset.
  const [hex, slot] = [...model][0]!;
  const dump = Buffer.concat([Buffer.alloc(7), Buffer.from(hex, "hex")]);
  assert.equal(index.find(dump, 7), slot);
});
