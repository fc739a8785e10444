/**
 * Files in the lease directory that are not leases, under a running daemon:
 *
 *   h1 [p1] bpf          h2 [p1] bpf           lease dir: /tmp/<fiXXXX>/leases/subnets/*
 *   eth0 192.168.50.11   eth0 192.168.50.12
 *
 *   subnets/10.244.156.0-24   a FIFO (mkfifo), then
 *   subnets/10.244.157.0-24   a symlink to a readable lease file outside, then
 *   subnets/10.244.158.0-24   an honest lease of a third node (192.168.50.13)
 *
 * - the honest lease is programmed into h1's map within 1 s of being
 *   written, after the FIFO and the symlink (which once froze lease handling);
 * - the FIFO and the symlink are logged ("lease rejected", ERR_LEASE_FILE,
 *   naming the file and its kind), counted (twill_lease_errors_total), listed
 *   by `twill status`, and never reach the map; /healthz still says ok;
 * - traffic between the two hosts' pods still flows.
 * The cluster's names start with a per-run "fi" prefix; destroy() removes them.
 */
import { test, after, before, describe } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { TwillCluster, TWILL, type TwillNode } from "../lib/twill.js";
import { randomPrefix } from "../../bench/lib/cluster.js";
import { run } from "../lib/exec.js";
import type { NodeStatus } from "../../src/status.js";

/** Polls `cond` every 20 ms; returns the ms it took, or throws after `limitMs`. */
async function within(limitMs: number, what: string, cond: () => Promise<boolean>): Promise<number> {
  const t0 = performance.now();
  for (;;) {
    if (await cond()) return performance.now() - t0;
    if (performance.now() - t0 > limitMs) throw new Error(`${what}: not within ${limitMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const lease = (ip: string, mac: string) => JSON.stringify({ PublicIP: ip, PublicIPv6: null, BackendType: "vxlan", BackendData: { VNI: 1, VtepMAC: mac } });

describe("a FIFO and a symlink in the lease directory (h1, h2 bpf)", () => {
  let tc: TwillCluster;
  before(async () => {
    tc = await TwillCluster.create({ prefix: randomPrefix("fi"), hosts: 2, podsPerHost: 1, nodes: [{ dataplane: "bpf" }, { dataplane: "bpf" }], reconcileSeconds: 10 });
  });
  after(async () => tc && (await tc.destroy()));

  test("are reported and skipped; an honest lease written after them is programmed within 1 s", async () => {
    const n1 = tc.nodes[0] as TwillNode;
    const sub = join(tc.leaseDir, "subnets");
    const errorsBefore = await tc.metric(n1, "twill_lease_errors_total", { code: "ERR_LEASE_FILE" });
    execFileSync("mkfifo", [join(sub, "10.244.156.0-24")]);
    const outside = join(tc.leaseDir, "outside-lease");
    writeFileSync(outside, lease("192.168.50.14", "02:00:00:00:01:57"));
    symlinkSync(outside, join(sub, "10.244.157.0-24"));
    await new Promise((r) => setTimeout(r, 200)); // the daemon has seen them (debounce 20 ms)
    const peersBefore = await tc.metric(n1, "twill_leases", { state: "peer" });
    writeFileSync(join(sub, "10.244.158.0-24"), lease("192.168.50.13", "02:00:00:00:01:58"));
    // Timed by /metrics (an HTTP GET; `twill maps` spawns a process per poll), then checked in the map.
    const ms = await within(1000, "the honest lease taken", async () => (await tc.metric(n1, "twill_leases", { state: "peer" })) > peersBefore);
    await within(1000, "the honest lease in h1's map", async () => (await tc.maps(n1)).peers.some((p) => p.prefix === "10.244.158.0/24"));
    console.log(`honest lease taken ${ms.toFixed(0)} ms after it was written (after a FIFO and a symlink)`);
    const m = await tc.maps(n1);
    assert.ok(!m.peers.some((p) => p.prefix === "10.244.156.0/24" || p.prefix === "10.244.157.0/24"), "a FIFO or symlink reached the map");
    await within(3000, "errors counted", async () => (await tc.metric(n1, "twill_lease_errors_total", { code: "ERR_LEASE_FILE" })) >= errorsBefore + 2);
    assert.equal((await tc.http(n1, "/healthz")).trim(), "ok");
    const rejected = tc.log(n1).split("\n").filter((l) => l.includes('"msg":"lease rejected"') && l.includes("ERR_LEASE_FILE"));
    assert.ok(rejected.some((l) => l.includes('"key":"10.244.156.0-24"') && l.includes("is a FIFO")), `no log line for the FIFO:\n${rejected.join("\n")}`);
    assert.ok(rejected.some((l) => l.includes('"key":"10.244.157.0-24"') && l.includes("is a symlink")), `no log line for the symlink:\n${rejected.join("\n")}`);
    const r = await run(process.execPath, [TWILL, "status", "--json", ...tc.args(n1).slice(1)], { netns: n1.host.netns, allowFail: true });
    const s = JSON.parse(r.stdout) as NodeStatus;
    for (const [key, kind] of [["10.244.156.0-24", "FIFO"], ["10.244.157.0-24", "symlink"]]) {
      assert.ok(s.rejected.some((x) => x.key === key && x.code === "ERR_LEASE_FILE" && x.reason.includes(`is a ${kind}`)), `twill status: ${JSON.stringify(s.rejected)}`);
    }
    assert.deepEqual(await tc.allPairs(), []);
  });
});
