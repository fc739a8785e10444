/**
 * metrics/gate.ts: /metrics requests share collections, never overlap, start
 * at most one per interval, and are refused beyond the slots.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { ScrapeGate } from "../../src/metrics/gate.js";

test("requests arriving together share one collection; beyond the slots, enter() refuses", async () => {
  let n = 0;
  const gate = new ScrapeGate(async () => `scrape ${++n}`, 3, 50);
  const a = gate.enter(), b = gate.enter(), c = gate.enter();
  assert.equal(gate.enter(), undefined, "a 4th request in flight is refused");
  assert.deepEqual(await Promise.all([a, b, c]), ["scrape 1", "scrape 1", "scrape 1"]);
  assert.equal(gate.busy, 0);
});

test("every answer comes from a collection begun after the request; one per interval at most; no overlap", async () => {
  const starts: number[] = [];
  let running = 0, overlap = false;
  const gate = new ScrapeGate(async () => {
    starts.push(performance.now());
    if (running++) overlap = true;
    await new Promise((r) => setTimeout(r, 20));
    running--;
    return String(starts.length);
  }, 4, 200);
  const first = gate.enter()!;
  await new Promise((r) => setTimeout(r, 5)); // the first collection is running
  const asked = performance.now();
  const second = gate.enter()!; // must not get the running one's result
  assert.equal(await first, "1");
  assert.equal(await second, "2");
  assert.ok(starts[1]! >= asked, "the second collection began after the request");
  assert.ok(starts[1]! - starts[0]! >= 195, `collections ${starts[1]! - starts[0]!} ms apart (interval 200)`);
  assert.equal(overlap, false);
});

test("a failed collection rejects its requests and frees the slots", async () => {
  const gate = new ScrapeGate(async () => { throw new Error("boom"); }, 1, 0);
  await assert.rejects(gate.enter()!, /boom/);
  assert.equal(gate.busy, 0);
  await assert.rejects(gate.enter()!, /boom/, "a slot is free again");
});
