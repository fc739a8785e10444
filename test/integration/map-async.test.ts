/**
 * A batch map write that waits in libuv's thread pool while V8 collects
 * still reaches the map, with its options intact (src/bpf/map.ts, 4).
 *
 * koffi keeps no reference to the Buffers it hands to C, so a Buffer held
 * only by an async call's argument list can be freed before the pool's
 * thread runs the call. Before the fix that was the batch options of every
 * updateBatchAsync: with the pool busy and a collection in between, libbpf
 * read them as garbage ("bpf_map_batch_opts has non-zero extra bytes"),
 * the batch failed with EINVAL and none of its entries were written — on a
 * first start at 100,000 peers this showed in the daemon's log. The driver
 * (test/lib/async-batch-driver.ts) makes that window on purpose, round
 * after round: a busy pool, forced collections, a real LPM trie.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { run } from "../lib/exec.js";
import { ROOT } from "../lib/twill.js";

interface Round { error?: string; entries: number; batch: boolean; log: string[] }

test("batch updates on the thread pool survive collections while they wait: every entry written, in batches, no garbage options", async () => {
  const rounds = 12, entries = 20_000;
  const out = await run("node", ["--expose-gc", join(ROOT, "dist", "test", "lib", "async-batch-driver.js"), JSON.stringify({ rounds, entries })], { timeoutMs: 120_000, allowFail: true });
  const last = out.stdout.trim().split("\n").pop() ?? "";
  const result = JSON.parse(last) as { rounds?: Round[]; fatal?: string };
  assert.equal(result.fatal, undefined, `driver failed: ${result.fatal}\n${out.stderr}`);
  assert.equal(result.rounds!.length, rounds);
  result.rounds!.forEach((r, i) => {
    assert.equal(r.error, undefined, `round ${i}: ${r.error}`);
    assert.equal(r.entries, (i + 1) * entries, `round ${i}: entries in the map`);
    assert.equal(r.batch, true, `round ${i}: the map fell back to one update per entry`);
    assert.deepEqual(r.log, [], `round ${i}: libbpf said`);
  });
});
