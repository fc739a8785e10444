/**
 * heapcompact.ts: the verdict (free bytes of old space against what it
 * committed), the windows and their cooldown, and a command-line flag
 * winning. What compaction does to the daemon's memory is measured by the
 * bench (its soak), not asserted here: when V8 runs its full collections
 * is up to V8.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { FRAGMENTED, MIN_FREE, fragmented, heapCompactor } from "../../src/heapcompact.js";

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

test("windows: one period long, opened only when fragmented, at most one per COOLDOWN_MS", () => {
  let t = 0, space = { free: 2 * MiB, committed: 30 * MiB };
  const c = heapCompactor("", () => t, () => space);
  const flags: boolean[] = []; // (the flag really is set and cleared in this process: the last tick clears it)
  const tick = () => { flags.push(c()); t += 10_000; };
  tick(); // not fragmented
  space = { free: 12 * MiB, committed: 30 * MiB };
  tick(); // opens
  tick(); // closes, whatever the heap says
  for (let i = 0; i < 5; i++) tick(); // still fragmented, but cooling down (50 s after the close)
  tick(); // 60 s after the close: opens again
  tick();
  assert.deepEqual(flags, [false, true, false, false, false, false, false, false, true, false]);
  assert.equal(flags.filter(Boolean).length, 2);
});
