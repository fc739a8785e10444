/**
 * 1,000 peers in etcd, for correctness only (speed is `make bench`):
 *
 *   etcd in the router namespace ── h1 twill (bpf), then h1 twill (kernel)
 *
 * All 1,000 leases are programmed (map entries for bpf; flannel's three
 * kernel entries each for kernel mode); then 400 lease events of churn
 * (adds, deletes, changed VTEP MACs) leave the dataplane exactly equal to
 * what etcd holds.
 */
import { test, after, before, describe } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { TwillCluster, ROOT, type TwillNode } from "../lib/twill.js";
import { EtcdServer } from "../lib/etcd.js";
import { waitFor, run, runJson } from "../lib/exec.js";

const PREFIX = "/coreos.com/network";
const CONFIG = { Network: "10.0.0.0/8", SubnetLen: 24, Backend: { Type: "vxlan", VNI: 1 } };
const key = (i: number) => `10.${(i >> 8) & 255}.${i & 255}.0-24`;
const prefix = (i: number) => `10.${(i >> 8) & 255}.${i & 255}.0/24`;
const mac = (i: number, gen: number) => `02:${gen.toString(16).padStart(2, "0")}:00:00:${((i >> 8) & 255).toString(16).padStart(2, "0")}:${(i & 255).toString(16).padStart(2, "0")}`;
const lease = (i: number, gen = 0) => JSON.stringify({ PublicIP: `172.16.${(i >> 8) & 255}.${i & 255}`, PublicIPv6: null, BackendType: "vxlan", BackendData: { VNI: 1, VtepMAC: mac(i, gen) } });

for (const dataplane of ["bpf", "kernel"] as const) {
  describe(`1,000 peers from etcd, ${dataplane} dataplane`, () => {
    let tc: TwillCluster;
    let etcd: EtcdServer;
    const want = new Map<string, string>(); // prefix -> VTEP MAC

    async function txn(ops: object[]): Promise<void> {
      await run(process.execPath, [join(ROOT, "dist", "test", "lib", "etcd-bulk.js"), etcd.endpoint], { netns: etcd.netns, input: JSON.stringify(ops) });
    }
    async function programmed(n: TwillNode): Promise<Map<string, string>> {
      if (dataplane === "bpf") return new Map((await tc.maps(n)).peers.filter((p) => p.kind === "vxlan").map((p) => [p.prefix, p.vtepMAC!]));
      const neigh = await runJson<Array<{ dst: string; lladdr: string; state: string[] }>>("ip", ["-j", "neigh", "show", "dev", "flannel.1", "nud", "permanent"], { netns: n.host.netns });
      const routes = await runJson<Array<{ dst: string }>>("ip", ["-j", "route", "show", "dev", "flannel.1"], { netns: n.host.netns });
      const routed = new Set(routes.map((r) => r.dst));
      return new Map(neigh.map((e) => [e.dst.replace(/\.0$/, ".0/24"), e.lladdr] as [string, string]).filter(([p]) => routed.has(p)));
    }
    const same = async (n: TwillNode) => {
      const have = await programmed(n);
      return have.size === want.size && [...want].every(([p, m]) => have.get(p) === m);
    };

    before(async () => {
      tc = await TwillCluster.create({ hosts: 1, startNodes: false, nodes: [{ dataplane }], reconcileSeconds: 30 });
      etcd = await EtcdServer.start({ netns: tc.cluster.routerNetns, host: tc.nodes[0]!.host.gateway });
      await etcd.etcdctl(["put", `${PREFIX}/config`, JSON.stringify(CONFIG)]);
      const ops: object[] = [];
      for (let i = 1; i <= 1000; i++) {
        ops.push({ op: "put", key: `${PREFIX}/subnets/${key(i)}`, value: lease(i) });
        want.set(prefix(i), mac(i, 0));
      }
      await txn(ops);
      tc.sourceArgs = () => ["--etcd-endpoints", etcd.endpoint];
    });
    after(async () => {
      await tc?.destroy();
      await etcd?.destroy();
    });

    test("all 1,000 leases are programmed", async () => {
      const n = tc.nodes[0]!;
      await tc.start(n);
      await waitFor(() => same(n), { what: "1,000 peers programmed", timeoutMs: 30_000, intervalMs: 500 });
    });

    test("400 lease events of churn leave the dataplane equal to etcd", async () => {
      const n = tc.nodes[0]!;
      for (let round = 0; round < 4; round++) {
        const ops: object[] = [];
        for (let j = 0; j < 50; j++) {
          // adds far from 1001..1100: our own node took one of the first free subnets there
          const del = 1 + round * 100 + j, add = 5001 + round * 50 + j, change = 500 + round * 50 + j;
          ops.push({ op: "del", key: `${PREFIX}/subnets/${key(del)}` });
          want.delete(prefix(del));
          ops.push({ op: "put", key: `${PREFIX}/subnets/${key(add)}`, value: lease(add) });
          want.set(prefix(add), mac(add, 0));
          if (j % 2 === 0) {
            ops.push({ op: "put", key: `${PREFIX}/subnets/${key(change)}`, value: lease(change, round + 1) });
            want.set(prefix(change), mac(change, round + 1));
          }
        }
        // one transaction per round: a burst of events in one watch response
        await txn(ops);
      }
      await waitFor(() => same(n), { what: "the dataplane equal to etcd after churn", timeoutMs: 20_000, intervalMs: 300 });
      assert.equal(want.size, 1000);
    });
  });
}
