/**
 * Leases and pods changing under a running cluster (3 hosts, bpf, fast path):
 *
 *   h1 [p1]   h2 [p1]   h3 [p1]  (+ late pods)    lease dir: <tmp>/leases/subnets/*
 *
 * - a lease removed makes its subnet unreachable, and added back makes it
 *   reachable, within 1 s, with no restart;
 * - a pod created after the daemons started is reachable from other hosts
 *   within 1 s;
 * - bad input in the lease directory is logged and counted, never crashes a
 *   daemon and never reaches the maps.
 */
import { test, after, before, describe } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, renameSync, writeFileSync, existsSync } from "node:fs";
import { join } from "node:path";
import { TwillCluster } from "../lib/twill.js";
import { ping } from "../lib/traffic.js";

const reachable = async (from: string, to: string): Promise<boolean> =>
  (await ping(from, to, { count: 1, waitS: 0.3, timeoutMs: 2000 })).received === 1;

/** Polls `cond` every 20 ms; returns the ms it took, or throws after `limitMs`. */
async function within(limitMs: number, what: string, cond: () => Promise<boolean>): Promise<number> {
  const t0 = performance.now();
  for (;;) {
    if (await cond()) return performance.now() - t0;
    if (performance.now() - t0 > limitMs) throw new Error(`${what}: not within ${limitMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("leases and pods changing while running", () => {
  let tc: TwillCluster;
  before(async () => {
    tc = await TwillCluster.create({ hosts: 3, podsPerHost: 1, nodes: [0, 1, 2].map(() => ({ dataplane: "bpf" as const, fastPath: true })), reconcileSeconds: 10 });
  });
  after(async () => tc && (await tc.destroy()));

  test("a lease removed / added makes its subnet unreachable / reachable within 1 s", async () => {
    const [n1, , n3] = tc.nodes as [typeof tc.nodes[0], typeof tc.nodes[0], typeof tc.nodes[0]];
    const src = n1.host.pods[0]!.netns, dst = n3.host.pods[0]!.ip;
    assert.ok(await reachable(src, dst));
    await tc.stop(n3); // SIGTERM: h3 keeps forwarding, but no longer defends its lease
    const key = tc.subnet(n3).replace(/\.1\/(\d+)$/, ".0-$1");
    const file = join(tc.leaseDir, "subnets", key);
    assert.ok(existsSync(file), file);
    const aside = join(tc.leaseDir, `.${key}.aside`);
    renameSync(file, aside);
    const gone = await within(1000, "unreachable after the lease was removed", async () => !(await reachable(src, dst)));
    const m = await tc.maps(n1);
    assert.ok(!m.peers.some((p) => p.prefix === key.replace("-", "/")), "h1 still has a map entry for the removed lease");
    renameSync(aside, file);
    const back = await within(1000, "reachable after the lease came back", () => reachable(src, dst));
    console.log(`lease removed -> unreachable in ${gone.toFixed(0)} ms; added -> reachable in ${back.toFixed(0)} ms`);
    await tc.start(n3);
  });

  test("a pod created after the daemons started is reachable from other hosts within 1 s", async () => {
    const n2 = tc.nodes[1]!;
    const late = await tc.addPod(n2, "late");
    const from = tc.nodes[0]!.host.pods[0]!.netns;
    const ms = await within(1000, "late pod reachable", () => reachable(from, late.ip));
    console.log(`late pod reachable after ${ms.toFixed(0)} ms`);
    // the fast path picked its veth up: traffic to it is delivered by redirect
    await within(1000, "late pod's veth has the fast-path program", async () =>
      (await reachable(from, late.ip)) && (await tc.maps(n2)).endpoints.some((e) => e.ip === late.ip));
    const before = tc.counter(await tc.maps(n2), "delivered");
    assert.equal((await ping(from, late.ip, { count: 3 })).received, 3);
    assert.ok(tc.counter(await tc.maps(n2), "delivered") >= before + 3, "replies to the late pod were not delivered by the fast path");
  });

  test("bad leases are logged and counted, never crash a daemon, never reach the maps", async () => {
    const n1 = tc.nodes[0]!;
    const own = tc.subnet(n1).replace(/\.1\/(\d+)$/, ".0-$1");
    const ownFile = join(tc.leaseDir, "subnets", own);
    const ownText = readFileSync(ownFile, "utf8");
    const good = (ip: string, mac: string) => JSON.stringify({ PublicIP: ip, PublicIPv6: null, BackendType: "vxlan", BackendData: { VNI: 1, VtepMAC: mac } });
    const mapsBefore = await Promise.all(tc.nodes.map((n) => tc.maps(n)));
    const errorsBefore = await tc.metric(n1, "twill_lease_errors_total");
    const bad: Record<string, string> = {
      "10.244.250.0-24": "{ this is not json",
      "10.244.251.0-24": good("192.168.50.99", "01:00:5e:00:00:01"), // multicast MAC
      "10.244.252.0-23": good("192.168.50.98", "02:00:00:00:00:98"), // wrong length / overlaps
      [`${own.split("-")[0]}-24&fc00:0:0:1::-64`]: good("192.168.50.97", "02:00:00:00:00:97"), // our subnet, someone else's IP
    };
    for (const [k, v] of Object.entries(bad)) writeFileSync(join(tc.leaseDir, "subnets", k), v);
    // and our own lease overwritten with someone else's IP
    writeFileSync(ownFile, good("192.168.50.96", "02:00:00:00:00:96"));
    await within(3000, "errors counted", async () => (await tc.metric(n1, "twill_lease_errors_total")) >= errorsBefore + 4);
    await new Promise((r) => setTimeout(r, 500));
    for (const [i, n] of tc.nodes.entries()) {
      assert.equal(n.proc?.exitCode ?? null, null, `${n.host.name} died:\n${tc.log(n).slice(-2000)}`);
      assert.equal((await tc.http(n, "/healthz")).trim(), "ok");
      const m = await tc.maps(n);
      assert.deepEqual(m.peers.map((p) => p.prefix).sort(), mapsBefore[i]!.peers.map((p) => p.prefix).sort(), `${n.host.name}'s map changed`);
    }
    const log = tc.log(n1);
    const rejected = log.split("\n").filter((l) => l.includes('"msg":"lease rejected"'));
    for (const k of Object.keys(bad)) assert.ok(rejected.some((l) => l.includes(`"key":${JSON.stringify(k)}`)), `no log line for ${k}`);
    assert.match(log, /ERR_LEASE_CONFLICT/);
    assert.equal(readFileSync(ownFile, "utf8"), ownText, "h1 did not restore its own lease");
    const f = await tc.allPairs();
    assert.deepEqual(f, []);
  });
});
