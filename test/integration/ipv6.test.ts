/**
 * IPv6-only and dual-stack clusters (underlay with IPv6, fd00:50::/64):
 *
 *   h1 [p1]  h2 [p1]  h3 [p1]    pods: 10.244.x.2 and/or fc00:0:0:x::2
 *
 * flannel's IPv6 config (EnableIPv6, IPv6Network, IPv6SubnetLen), dual-stack
 * lease keys and BackendV6Data; the IPv6 overlay runs over the IPv6
 * underlay. All pairs both ways, bpf and mixed with a kernel-mode node
 * (flannel-v6.1); the bpf nodes hold no per-peer kernel state.
 */
import { test, after, before, describe } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { TwillCluster, type NodeOptions } from "../lib/twill.js";

const V6_ONLY = { EnableIPv4: false, EnableIPv6: true, IPv6Network: "fc00::/48", IPv6SubnetLen: 64, Backend: { Type: "vxlan", VNI: 1 } };
const DUAL = { Network: "10.244.0.0/16", SubnetLen: 24, EnableIPv6: true, IPv6Network: "fc00::/48", IPv6SubnetLen: 64, Backend: { Type: "vxlan", VNI: 1 } };
const bpf: NodeOptions = { dataplane: "bpf" }, fast: NodeOptions = { dataplane: "bpf", fastPath: true }, kernel: NodeOptions = { dataplane: "kernel" };

const cases: Array<[string, object, NodeOptions[]]> = [
  ["IPv6 only, bpf", V6_ONLY, [bpf, fast, fast]],
  ["IPv6 only, mixed with a kernel node", V6_ONLY, [kernel, bpf, fast]],
  ["dual stack, bpf", DUAL, [bpf, fast, fast]],
  ["dual stack, mixed with a kernel node", DUAL, [kernel, bpf, fast]],
];

for (const [name, netConfig, nodes] of cases) {
  const dual = netConfig === DUAL;
  describe(name, () => {
    let tc: TwillCluster;
    before(async () => {
      tc = await TwillCluster.create({ hosts: 3, ipv6: true, podsPerHost: 1, netConfig, nodes });
    });
    after(async () => tc && (await tc.destroy()));

    test("all pairs reach each other both ways over IPv6 (ICMP and TCP)" + (dual ? ", and over IPv4" : ""), async () => {
      const f = [...(await tc.allPairs({ v6: true })), ...(await tc.allPairsTcp({ v6: true }))];
      if (dual) f.push(...(await tc.allPairs()), ...(await tc.allPairsTcp({ port: 7002 })));
      if (f.length) assert.fail(`${f.join("\n")}\n${await tc.diagnostics()}`);
    });

    test("leases are flannel's: dual-stack keys, PublicIPv6, BackendV6Data", async () => {
      const dir = join(tc.leaseDir, "subnets");
      const keys = readdirSync(dir).filter((k) => !k.startsWith("."));
      assert.equal(keys.length, 3);
      for (const k of keys) {
        assert.match(k, dual ? /^10\.244\.\d+\.0-24&fc00:0:0:[0-9a-f]+::-64$/ : /^0\.0\.0\.0-0&fc00:0:0:[0-9a-f]+::-64$/);
        const l = JSON.parse(readFileSync(join(dir, k), "utf8"));
        assert.match(l.PublicIPv6, /^fd00:50::1[123]$/);
        assert.equal(l.BackendType, "vxlan");
        assert.match(l.BackendV6Data.VtepMAC, /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
        if (dual) assert.match(l.BackendData.VtepMAC, /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
      }
    });

    test("bpf nodes: one cluster route per family, no per-peer kernel state", async () => {
      for (const n of tc.nodes) {
        if (n.opts.dataplane === "kernel") continue;
        const dev = dual ? "flannel.1" : "flannel-v6.1";
        const { kernelStateCounts } = await import("../lib/traffic.js");
        const k = await kernelStateCounts(n.host.netns, dev);
        // the kernel's own route for the device's IPv6 address (proto kernel) is not a peer's
        const routes = k.detail.routes.filter((r) => !r.includes('"protocol":"kernel"'));
        assert.equal(routes.length, dual ? 2 : 1, `${n.host.name}: ${JSON.stringify(k.detail)}`);
        assert.ok(k.neighbours <= (dual ? 2 : 1), `${n.host.name}: ${JSON.stringify(k.detail)}`);
        assert.equal(k.fdb, 0);
        const m = await tc.maps(n);
        assert.equal(m.peers.filter((p) => p.kind === "vxlan").length, dual ? 4 : 2);
      }
    });
  });
}
