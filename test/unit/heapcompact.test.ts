/**
 * heapcompact.ts: the verdict (free bytes of old space against what it
 * committed), the windows and their cooldown, and a command-line flag
 * winning. What compaction does to the daemon's memory is measured by the
 * bench (its soak), not asserted here: when V8 runs its full collections
 * is up to V8.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import v8 from "node:v8";
import { COOLDOWN_MS, FORCE_MAX_BYTES, FRAGMENTED, MIN_FREE, fragmented, heapCompactor } from "../../src/heapcompact.js";

const MiB = 1024 * 1024;

test("fragmented: at least FRAGMENTED of the committed bytes free, and at least MIN_FREE", () => {
  assert.equal(fragmented(10 * MiB, 30 * MiB), true);
  assert.equal(fragmented(FRAGMENTED * 40 * MiB, 40 * MiB), true);
  assert.equal(fragmented(FRAGMENTED * 40 * MiB - 1, 40 * MiB), false);
  assert.equal(fragmented(MIN_FREE - 1, 8 * MiB), false, "a small heap is not worth a pause");
  assert.equal(fragmented(0, 0), false);
});

test("a compaction flag on the command line wins: the compactor never changes it", () => {
  for (const given of ["--compact-on-every-full-gc", "--no-compact-on-every-full-gc", "--compact_on_every_full_gc"]) {
    const c = heapCompactor(given, () => 0, () => ({ free: 12 * MiB, committed: 30 * MiB }));
    assert.equal(c(), false, given);
    assert.equal(c(), false, given);
  }
});

test("windows: open until a full collection compacted, opened only when fragmented, at most one per COOLDOWN_MS after the close", () => {
  let t = 0, space = { free: 2 * MiB, committed: 30 * MiB };
  let full = 0, observing = 0;
  const fullCollections = () => {
    const from = full;
    observing++;
    return { count: () => full - from, stop: () => void observing-- };
  };
  const c = heapCompactor("", () => t, () => space, fullCollections);
  const flags: boolean[] = []; // (the flag really is set and cleared in this process: the window is closed at the end)
  const tick = () => { flags.push(c()); t += 10_000; };
  tick(); // not fragmented
  assert.equal(observing, 0, "nothing observed while no window is open");
  space = { free: 12 * MiB, committed: 30 * MiB };
  tick(); // opens
  assert.equal(observing, 1);
  tick(); tick(); // no full collection yet: stays open
  assert.equal(observing, 1);
  full++; // one full collection, old space still fragmented (it may have begun marking before the window): stays open
  tick();
  assert.equal(observing, 1);
  full++; // a second: closes
  tick();
  assert.equal(observing, 0, "the observer stops with the window");
  for (let i = 0; i < 5; i++) tick(); // still fragmented, but cooling down (50 s after the close)
  tick(); // 60 s after the close: opens again
  full++;
  space = { free: 1 * MiB, committed: 20 * MiB }; // the collection compacted: closes after one
  tick();
  assert.equal(observing, 0);
  tick(); // not fragmented: stays closed
  assert.deepEqual(flags, [false, true, false, false, false, false, false, false, false, false, false, true, false, false]);
});

test("after a re-list: a compacting full collection at once while old space is small, else a window (no cooldown, no fragmentation test)", () => {
  let t = 0, space = { free: 1 * MiB, committed: 30 * MiB };
  let full = 0, observing = 0, collections = 0, available = true;
  const fullCollections = () => {
    const from = full;
    observing++;
    return { count: () => full - from, stop: () => void observing-- };
  };
  const collect = () => (available ? (collections++, full++, true) : false);
  const c = heapCompactor("", () => t, () => space, fullCollections, collect);
  assert.equal(c.afterRelist(), "collected", "small old space: collected now, even unfragmented");
  assert.equal(collections, 1);
  assert.equal(observing, 0, "no window left open");
  space = { free: 12 * MiB, committed: 30 * MiB };
  t += 10_000;
  assert.equal(c(), false, "the forced collection counts as a window's close: the cooldown runs from it");
  t += COOLDOWN_MS;
  assert.equal(c(), true, "a period's window, once cooled down");
  assert.equal(observing, 1);
  assert.equal(c.afterRelist(), "collected");
  assert.equal(observing, 0, "a forced collection closes an open window: its work is done");
  space = { free: 1 * MiB, committed: FORCE_MAX_BYTES + 1 };
  assert.equal(c.afterRelist(), "window", "a big old space: no forced pause, V8's next full collection compacts");
  assert.equal(collections, 2);
  assert.equal(observing, 1);
  assert.equal(c.afterRelist(), "window", "one window at a time");
  assert.equal(observing, 1);
  full++;
  space = { free: 1 * MiB, committed: 80 * MiB };
  t += 1000;
  assert.equal(c(), false);
  assert.equal(observing, 0, "closed by the period after a full collection compacted");
  space = { free: 1 * MiB, committed: 30 * MiB };
  available = false;
  assert.equal(c.afterRelist(), "window", "no gc() to be had: a window");
  assert.equal(observing, 1);
  full++;
  assert.equal(c(), false);
  assert.equal(observing, 0);
});

test("after a re-list with a compaction flag on the command line: nothing", () => {
  let collections = 0;
  const c = heapCompactor("--no-compact-on-every-full-gc", () => 0, () => ({ free: 12 * MiB, committed: 30 * MiB }), undefined, () => (collections++, true));
  assert.equal(c.afterRelist(), "none");
  assert.equal(collections, 0);
});

test("after a re-list, for real: V8's gc() is found (exposed at run time) and the dead objects in old space are collected", () => {
  const c = heapCompactor("");
  const oldUsed = () => v8.getHeapSpaceStatistics().find((s) => s.space_name === "old_space")!.space_used_size;
  // Garbage in old space: objects that live across scavenges (promoted), then die.
  let keep: object[] = [];
  for (let i = 0; i < 300_000; i++) keep.push({ i, s: `x${i}` });
  const withGarbage = oldUsed();
  keep = [];
  assert.equal(keep.length, 0);
  assert.equal(c.afterRelist(), "collected");
  const after = oldUsed();
  assert.ok(after < withGarbage - 4 * MiB, `old space used ${after} after, ${withGarbage} with the garbage`);
});
