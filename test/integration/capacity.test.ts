/**
 * More peers than --peer-capacity on a first start, which streams its
 * entries to the maps while it encodes them (bpfimage.ts, 5): every peer
 * that fits is programmed, and every one that does not is named in one
 * ERR_CAPACITY error (the daemon logs and counts it, and retries those
 * peers) — none silently dropped, whichever streamed batch hit the limit.
 * When peers go, the next reconcile programs exactly the wanted set.
 *
 * One namespace (a veth pair as the underlay), the bpf dataplane driven by
 * test/lib/bpf-capacity-driver.ts with a peers map of 2,500 entries (two
 * of them ours: our subnet and the cluster network), twill_remotes too.
 */
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { randomPrefix } from "../lib/cluster.js";
import { onCleanup, run } from "../lib/exec.js";
import { ROOT } from "../lib/twill.js";

const ns = randomPrefix("tcap");
const pinDir = `/sys/fs/bpf/${ns}`;
const cleanup = () => {
  try {
    rmSync(pinDir, { recursive: true, force: true });
  } catch {
    /* gone */
  }
};
onCleanup(() => {
  cleanup();
  void run("ip", ["netns", "del", ns], { allowFail: true });
});
after(async () => {
  await run("ip", ["link", "del", "flannel.1"], { netns: ns, allowFail: true });
  await run("ip", ["netns", "del", ns], { allowFail: true });
  cleanup();
});

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);
const subnet = (i: number) => `10.${i >> 8}.${i & 255}.0/24`;

interface Round { ok: boolean; code?: string; message?: string; named?: string[]; vxlan: string[]; remotes: number; fatal?: string }

test("a first start past --peer-capacity programs what fits and names every peer that does not; a later reconcile programs exactly the wanted set", async () => {
  await run("ip", ["netns", "add", ns]);
  await run("ip", ["-batch", "-"], { netns: ns, input: ["link set lo up", "link add eth0 type veth peer name eth1", "addr add 192.168.50.11/24 dev eth0", "link set eth1 up", "link set eth0 up"].join("\n") + "\n" });
  const input = { pinDir, objectPath: join(ROOT, "build", "bpf", "twill.o"), capacity: 2500, rounds: [range(1, 3000), range(1, 2400), range(101, 2598)] };
  const out = await run("node", [join(ROOT, "dist", "test", "lib", "bpf-capacity-driver.js"), JSON.stringify(input)], { netns: ns, timeoutMs: 120_000, allowFail: true });
  const rounds = out.stdout.trim().split("\n").filter(Boolean).map((l) => JSON.parse(l) as Round);
  assert.equal(rounds.length, 3, `driver output: ${out.stdout}\n${out.stderr}`);
  const [first, second, third] = rounds as [Round, Round, Round];

  // 3,000 wanted, 2,498 fit: the other 502 are named, none lost, none twice.
  assert.equal(first.ok, false);
  assert.equal(first.code, "ERR_CAPACITY", first.message);
  assert.match(first.message!, /502 of 3000 peers not programmed .*twill_peers is full \(capacity 2500 entries, --peer-capacity\)/);
  assert.equal(first.vxlan.length, 2498);
  assert.equal(first.named!.length, 502);
  const programmed = new Set(first.vxlan), named = new Set(first.named);
  for (const s of named) assert.ok(!programmed.has(s), `${s} named and programmed`);
  assert.deepEqual(new Set([...programmed, ...named]), new Set(range(1, 3000).map(subnet)));

  // 600 go: the 2,400 left are programmed, and only they (and their addresses in twill_remotes).
  assert.equal(second.ok, true, second.message);
  assert.deepEqual(new Set(second.vxlan), new Set(range(1, 2400).map(subnet)));
  assert.equal(second.remotes, 2400);

  // Another 2,498 (exactly what fits): all in, the 100 that went are gone.
  assert.equal(third.ok, true, third.message);
  assert.deepEqual(new Set(third.vxlan), new Set(range(101, 2598).map(subnet)));
  assert.equal(third.remotes, 2498);
});
