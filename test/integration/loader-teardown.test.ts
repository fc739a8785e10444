/**
 * The loader's refusals and `twill teardown`:
 * - a pinned map that does not match this build is refused with an error
 *   that names the map and what differs (never silently reused or replaced);
 * - a program the verifier rejects fails with the verifier's log;
 * - `twill teardown` leaves the host as it was before twill: no vxlan
 *   device, no pins, no BPF attachments, no flannel iptables chains, the
 *   same routes.
 */
import { test, after, describe } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { join } from "node:path";
import { execFileSync } from "node:child_process";
import { loadObject } from "../../src/bpf/loader.js";
import { isTwillError } from "../../src/errors.js";
import { randomPrefix } from "../lib/cluster.js";
import { onCleanup, run } from "../lib/exec.js";
import { TwillCluster, TWILL, ROOT } from "../lib/twill.js";

const OBJECT = join(ROOT, "build", "bpf", "twill.o");

describe("loader refusals", () => {
  const pin = `/sys/fs/bpf/${randomPrefix("tl")}`;
  const tmp = `/tmp/${randomPrefix("tl")}`;
  onCleanup(() => { rmSync(pin, { recursive: true, force: true }); rmSync(tmp, { recursive: true, force: true }); });
  after(() => { rmSync(pin, { recursive: true, force: true }); rmSync(tmp, { recursive: true, force: true }); });

  test("an incompatible pinned map is refused, naming the map and the difference", () => {
    mkdirSync(join(pin, "maps"), { recursive: true });
    // Another value size (a size-only difference is a resize, tested below).
    execFileSync("bpftool", ["map", "create", join(pin, "maps", "twill_peers"), "type", "lpm_trie", "key", "24", "value", "16", "entries", "1024", "name", "twill_peers", "flags", "1"]);
    assert.throws(() => loadObject(OBJECT, pin), (e: unknown) => {
      assert.ok(isTwillError(e, "ERR_BPF_PIN_INCOMPATIBLE"), String(e));
      assert.match((e as Error).message, /twill_peers .*value size 16 pinned, 32 in this build/);
      return true;
    });
    // nothing was replaced: the pin is still the old map
    const info = JSON.parse(execFileSync("bpftool", ["-j", "map", "show", "pinned", join(pin, "maps", "twill_peers")], { encoding: "utf8" }));
    assert.equal(info.max_entries, 1024);
  });

  test("a peers map of another capacity is resized with its entries; a shrink below its entries is refused", () => {
    const dir = join(pin, "resize");
    const first = loadObject(OBJECT, dir, { peerCapacity: 1024 });
    const keys = Buffer.alloc(100 * 24), vals = Buffer.alloc(100 * 32);
    for (let i = 0; i < 100; i++) {
      keys.writeUInt32LE(32 + 24, i * 24);
      keys.writeUInt32LE(4, i * 24 + 4);
      keys.set([10, 1, i, 0], i * 24 + 8);
      vals.writeUInt32LE(i + 1, i * 32 + 28); // id
    }
    first.maps.twill_peers.updateBatch(keys, vals, 100);
    const more = Buffer.alloc(24 * 1000);
    for (let i = 0; i < 1000; i++) {
      more.writeUInt32LE(32 + 24, i * 24);
      more.writeUInt32LE(4, i * 24 + 4);
      more.set([11, i & 255, i >> 8, 0], i * 24 + 8);
    }
    assert.throws(() => first.maps.twill_peers.updateBatch(more, Buffer.alloc(32 * 1000), 1000, (i) => `entry ${i}`), (e: unknown) => isTwillError(e, "ERR_CAPACITY") && /twill_peers is full \(capacity 1024 entries, --peer-capacity\)/.test((e as Error).message));
    const full = first.maps.twill_peers.count();
    assert.equal(full, 1024);
    first.close();
    assert.throws(() => loadObject(OBJECT, dir, { peerCapacity: 512 }), (e: unknown) => isTwillError(e, "ERR_CAPACITY") && /holds 1024 entries/.test((e as Error).message));
    const second = loadObject(OBJECT, dir, { peerCapacity: 4096 });
    try {
      assert.equal(second.maps.twill_peers.maxEntries, 4096);
      assert.equal(second.maps.twill_peers.count(), 1024, "every entry copied");
      assert.ok(second.migrated.some((m) => /twill_peers .*max_entries 1024 pinned, 4096 in this build: resized, 1024 entries copied/.test(m)), second.migrated.join("; "));
      const info = JSON.parse(execFileSync("bpftool", ["-j", "map", "show", "pinned", join(dir, "maps", "twill_peers")], { encoding: "utf8" }));
      assert.equal(info.max_entries, 4096, "the pin is the new map");
    } finally {
      second.close();
    }
  });

  test("a verifier rejection reports the verifier log", () => {
    mkdirSync(tmp, { recursive: true });
    const src = join(tmp, "bad.c");
    writeFileSync(src, [
      '#include "vmlinux.h"',
      "#include <bpf/bpf_helpers.h>",
      'SEC("tc") int twill_bad(struct __sk_buff *skb) { return *(int *)(long)skb->data; } /* no bounds check */',
      'char LICENSE[] SEC("license") = "GPL";',
    ].join("\n"));
    execFileSync("clang", ["-O2", "-g", "-target", "bpf", "-I", join(ROOT, "build", "bpf"), "-c", src, "-o", join(tmp, "bad.o")]);
    assert.throws(() => loadObject(join(tmp, "bad.o"), join(pin, "bad")), (e: unknown) => {
      assert.ok(isTwillError(e, "ERR_BPF_VERIFIER"), String(e));
      assert.match((e as Error).message, /invalid access to packet/);
      return true;
    });
  });
});

describe("twill teardown", () => {
  let tc: TwillCluster | undefined;
  after(async () => tc && (await tc.destroy()));

  const snapshot = async (netns: string) => ({
    links: (await run("ip", ["-o", "link", "show"], { netns })).stdout.split("\n").map((l) => l.split(":")[1]?.trim().split("@")[0]).filter((x) => x && x !== "cni0" && !x.startsWith("veth")).sort(),
    routes: (await run("ip", ["route", "show"], { netns })).stdout.split("\n").filter((l) => l && !l.includes("dev cni0")).sort(),
    iptables: (await run("iptables-save", [], { netns })).stdout.split("\n").filter((l) => /FLANNEL|twill/i.test(l)),
  });

  for (const attach of ["auto", "tc"] as const) test(`leaves the host as it was before twill (--bpf-attach ${attach})`, async () => {
    if (tc) await tc.destroy();
    tc = await TwillCluster.create({
      hosts: 2, startNodes: false,
      nodes: [{ dataplane: "bpf", fastPath: true, extraArgs: ["--bpf-attach", attach] }, { dataplane: "kernel" }],
    });
    const before = await Promise.all(tc.nodes.map((n) => snapshot(n.host.netns)));
    await Promise.all(tc.nodes.map((n) => tc!.start(n)));
    for (const n of tc.nodes) await tc.addPod(n, "p1");
    assert.deepEqual(await tc.allPairs(), []);
    if (attach === "tc") {
      const b = (await run("tc", ["filter", "show", "dev", "cni0", "egress"], { netns: tc.nodes[0]!.host.netns })).stdout;
      assert.match(b, /twill_to_pod/, "to_pod is not on cni0's egress before the teardown");
    }
    for (const n of tc.nodes) {
      await tc.stop(n, "SIGKILL");
      await run(process.execPath, [TWILL, "teardown", "--bpf-pin-dir", n.pinDir], { netns: n.host.netns });
      const now = await snapshot(n.host.netns);
      assert.deepEqual(now, before[tc.nodes.indexOf(n)], `${n.host.name} differs after teardown`);
      assert.ok(!existsSync(n.pinDir), `${n.pinDir} still exists`);
      const veth = n.host.pods[0]!.veth!;
      const filters = (await run("tc", ["filter", "show", "dev", veth, "ingress"], { netns: n.host.netns, allowFail: true })).stdout;
      assert.doesNotMatch(filters, /twill/);
      // to_pod sits on the pod bridge's egress (a tc filter with --bpf-attach tc)
      const bridge = (await run("tc", ["filter", "show", "dev", "cni0", "egress"], { netns: n.host.netns, allowFail: true })).stdout;
      assert.doesNotMatch(bridge, /twill/, `${n.host.name}: a twill filter is left on cni0's egress`);
    }
  });
});
