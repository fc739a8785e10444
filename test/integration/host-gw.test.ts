/**
 * flannel's host-gw backend ("Backend": {"Type": "host-gw"}), in a cluster
 * that mixes twill bpf, twill kernel and a stock-flannel-style node:
 *
 *   h1 twill bpf   h2 twill kernel   h3 twill bpf --fast-path   h4 "flannel"
 *   (all on one L2 segment, 192.168.50.0/24 [fd00:50::/64 dual stack])
 *
 * h4 runs no twill: its lease ({"BackendType":"host-gw"}, no backend data)
 * and its subnet file are written by hand, and its routes are programmed by
 * hand from the leases exactly as flannel's host-gw backend does
 * (`<subnet> via <PublicIP> dev eth0` per peer; FLANNEL_IPMASQ=true, so the
 * CNI bridge plugin does not masquerade pod traffic). All pairs reach each other
 * both ways, no VXLAN crosses the wire, the bpf nodes hold no per-peer
 * kernel state (one cluster route via twill_host, no vxlan device), the
 * kernel node holds flannel's routes, FLANNEL_MTU is the underlay's MTU, and
 * a lease whose PublicIP is not on our segment is refused by name in the
 * log and in `twill status`.
 */
import { test, after, before, describe } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { TwillCluster, TWILL, type NodeOptions, type TwillNode } from "../lib/twill.js";
import { run } from "../lib/exec.js";
import { addPod } from "../lib/cluster.js";
import { countPackets } from "../lib/capture.js";
import { waitFor } from "../lib/exec.js";

const V4 = { Network: "10.244.0.0/16", SubnetLen: 24, Backend: { Type: "host-gw" } };
const DUAL = { ...V4, EnableIPv6: true, IPv6Network: "fc00::/48", IPv6SubnetLen: 64 };
const nodes: NodeOptions[] = [{ dataplane: "bpf" }, { dataplane: "kernel" }, { dataplane: "bpf", fastPath: true }, {}];

/** The hand-made node's subnets (outside the first free ones twill nodes pick). */
const H4 = { v4: "10.244.200.0/24", v6: "fc00:0:0:c8::/64" };

interface LeaseFile { key: string; PublicIP: string; PublicIPv6: string | null; BackendType: string; BackendData?: unknown; BackendV6Data?: unknown }

function leases(tc: TwillCluster): LeaseFile[] {
  const dir = join(tc.leaseDir, "subnets");
  return readdirSync(dir).filter((k) => !k.startsWith(".")).map((key) => ({ key, ...JSON.parse(readFileSync(join(dir, key), "utf8")) }));
}

/** Programs h4 by hand as flannel's host-gw does: its lease, its subnet file, one route per peer lease. */
async function handMadeNode(tc: TwillCluster, n: TwillNode, dual: boolean): Promise<void> {
  const key = dual ? `${H4.v4.replace("/", "-")}&${H4.v6.replace("/", "-")}` : H4.v4.replace("/", "-");
  writeFileSync(join(tc.leaseDir, "subnets", key), JSON.stringify({ PublicIP: n.host.underlayIP, PublicIPv6: dual ? n.host.underlayIPv6 : null, BackendType: "host-gw" }));
  writeFileSync(n.subnetFile, [
    "FLANNEL_NETWORK=10.244.0.0/16", "FLANNEL_SUBNET=10.244.200.1/24",
    ...(dual ? ["FLANNEL_IPV6_NETWORK=fc00::/48", "FLANNEL_IPV6_SUBNET=fc00:0:0:c8::1/64"] : []),
    "FLANNEL_MTU=1500", "FLANNEL_IPMASQ=true", "",
  ].join("\n"));
  const cmds = ["sysctl -qw net.ipv4.ip_forward=1", ...(dual ? ["sysctl -qw net.ipv6.conf.all.forwarding=1"] : [])];
  for (const l of leases(tc)) {
    if (l.key === key) continue;
    const [v4, v6] = l.key.split("&").map((s) => s.replace(/-(\d+)$/, "/$1"));
    cmds.push(`ip route replace ${v4} via ${l.PublicIP} dev eth0`);
    if (dual && v6 && l.PublicIPv6) cmds.push(`ip -6 route replace ${v6} via ${l.PublicIPv6} dev eth0`);
  }
  await run("sh", ["-c", cmds.join(" && ")], { netns: n.host.netns });
}

for (const [name, netConfig] of [["IPv4", V4], ["dual stack", DUAL]] as const) {
  const dual = netConfig === DUAL;
  describe(`host-gw, ${name}: twill bpf, twill kernel, twill bpf --fast-path and a flannel-style node`, () => {
    let tc: TwillCluster;
    before(async () => {
      tc = await TwillCluster.create({ hosts: 4, ipv6: dual, netConfig, nodes, startNodes: false });
      const twills = tc.nodes.slice(0, 3);
      for (const n of twills) await tc.start(n);
      await handMadeNode(tc, tc.nodes[3]!, dual);
      for (const n of tc.nodes) await addPod(tc.cluster, n.host, "p1", n.subnetFile);
      // The twill nodes learn h4's lease from the directory's change feed.
      await waitFor(() => twills.every((n) => tc.log(n).includes("10.244.200.0/24")) || Promise.resolve(false), { timeoutMs: 10_000, intervalMs: 100, what: "h4's lease seen" }).catch(() => undefined);
    });
    after(async () => tc && (await tc.destroy()));

    test("all pairs reach each other both ways (ICMP and TCP)" + (dual ? ", IPv4 and IPv6" : ""), async () => {
      let f: string[] = [];
      await waitFor(async () => (f = await tc.allPairs()).length === 0, { timeoutMs: 10_000, intervalMs: 500, what: "all pairs" }).catch(() => undefined);
      f.push(...(await tc.allPairsTcp()));
      if (dual) {
        // The same grace as IPv4 (a pod's IPv6 address may still be in duplicate address detection on a loaded machine).
        let f6: string[] = [];
        await waitFor(async () => (f6 = await tc.allPairs({ v6: true })).length === 0, { timeoutMs: 10_000, intervalMs: 500, what: "all pairs (IPv6)" }).catch(() => undefined);
        f.push(...f6, ...(await tc.allPairsTcp({ v6: true, port: 7002 })));
      }
      if (f.length) assert.fail(`${f.join("\n")}\n${await tc.diagnostics()}`);
    });

    test("no VXLAN on the wire: the pod packets cross it bare", async () => {
      const [h1, , h3, h4] = tc.nodes as [TwillNode, TwillNode, TwillNode, TwillNode];
      const pods = [h1, h3, h4].map((n) => n.host.pods[0]!);
      const vx = await countPackets(h1.host.netns, "eth0", "udp port 8472 or udp port 4789", async () => {
        // h1 (bpf), h3 (bpf --fast-path) and h4 (flannel-style) to and from h4's pod: 5 requests and 5 replies each.
        for (const [a, b] of [[pods[0]!, pods[2]!], [pods[1]!, pods[2]!], [pods[2]!, pods[0]!]] as const) {
          const bare = await countPackets(h4.host.netns, "eth0", `icmp and host ${a.ip} and host ${b.ip}`, async () => {
            const r = await run("ping", ["-c", "5", "-i", "0.05", "-W", "2", b.ip], { netns: a.netns, allowFail: true });
            assert.equal(r.code, 0, `${a.ip} -> ${b.ip}: ${r.stdout}`);
          });
          // (tcpdump may miss the first or last packet at the capture's edges: most, not all)
          assert.ok(bare >= 6, `only ${bare} of 10 bare pod packets ${a.ip} <-> ${b.ip} on h4's wire`);
        }
      });
      assert.equal(vx, 0, "VXLAN packets on h1's wire");
    });

    test("leases are flannel's host-gw leases; FLANNEL_MTU is the underlay MTU", async () => {
      const ls = leases(tc);
      assert.equal(ls.length, 4);
      for (const l of ls) {
        assert.equal(l.BackendType, "host-gw", JSON.stringify(l));
        assert.equal(l.BackendData, undefined, JSON.stringify(l));
        assert.equal(l.BackendV6Data, undefined, JSON.stringify(l));
        if (dual) assert.match(String(l.PublicIPv6), /^fd00:50::1[1-4]$/);
      }
      for (const n of tc.nodes.slice(0, 3)) assert.match(readFileSync(n.subnetFile, "utf8"), /^FLANNEL_MTU=1500$/m, n.host.name);
    });

    test("bpf nodes: no vxlan device, one cluster route via twill_host, no per-peer route; the kernel node: flannel's routes", async () => {
      for (const n of tc.nodes.slice(0, 3)) {
        const links = (await run("ip", ["-o", "link", "show"], { netns: n.host.netns })).stdout;
        assert.doesNotMatch(links, /flannel/, `${n.host.name}: ${links}`);
        const routes = (await run("ip", ["-4", "route", "show"], { netns: n.host.netns })).stdout;
        const viaEth0 = routes.split("\n").filter((r) => /^10\.244\.\d+\.0\/24 via 192\.168\.50\.\d+ dev eth0/.test(r));
        if (n.opts.dataplane === "kernel") {
          assert.equal(viaEth0.length, 3, `${n.host.name}: one route per peer:\n${routes}`);
          assert.ok(routes.includes("10.244.200.0/24 via 192.168.50.14 dev eth0"), routes);
          assert.doesNotMatch(links, /twill_host/);
          if (dual) {
            const r6 = (await run("ip", ["-6", "route", "show"], { netns: n.host.netns })).stdout;
            assert.ok(r6.includes("fc00:0:0:c8::/64 via fd00:50::14 dev eth0"), r6);
          }
        } else {
          assert.equal(viaEth0.length, 0, `${n.host.name}: per-peer routes:\n${routes}`);
          assert.match(routes, /^10\.244\.0\.0\/16 via 10\.244\.0\.0 dev twill_host onlink/m, routes);
          const m = await tc.maps(n);
          const h4 = m.peers.find((p) => p.prefix === H4.v4);
          assert.equal(h4?.kind, "direct", JSON.stringify(m.peers));
          assert.equal(h4?.remote, "192.168.50.14");
        }
      }
    });

    test("a lease whose PublicIP is not on our segment is refused by name (log and twill status); the others stay", async () => {
      const bad = "10.244.201.0-24";
      writeFileSync(join(tc.leaseDir, "subnets", bad), JSON.stringify({ PublicIP: "192.168.99.7", PublicIPv6: null, BackendType: "host-gw" }));
      try {
        for (const n of tc.nodes.slice(0, 3)) {
          await waitFor(() => /ERR_PEER_UNREACHABLE/.test(tc.log(n)), { timeoutMs: 5000, intervalMs: 100, what: `${n.host.name} refuses ${bad}` });
          const line = tc.log(n).split("\n").find((l) => l.includes("ERR_PEER_UNREACHABLE"))!;
          assert.match(line, /192\.168\.99\.7/);
          const r = await run(process.execPath, [TWILL, "status", "--json", ...tc.args(n).slice(1)], { netns: n.host.netns, allowFail: true });
          const s = JSON.parse(r.stdout) as { rejected: { key: string; code: string; reason: string }[]; network: { backend: string } };
          assert.equal(s.network.backend, "host-gw");
          const rej = s.rejected.find((x) => x.key === bad);
          assert.equal(rej?.code, "ERR_PEER_UNREACHABLE", r.stdout);
          assert.match(rej!.reason, /192\.168\.99\.7/);
        }
        const f = await tc.allPairs();
        if (f.length) assert.fail(f.join("\n"));
      } finally {
        await run("rm", ["-f", join(tc.leaseDir, "subnets", bad)]);
      }
    });

    test("twill teardown on a bpf node removes the hook veth (both ends) and its cluster route", async () => {
      const h1 = tc.nodes[0]!;
      await tc.stop(h1);
      await run(process.execPath, [TWILL, "teardown", ...tc.args(h1).slice(1)], { netns: h1.host.netns });
      const links = (await run("ip", ["-o", "link", "show"], { netns: h1.host.netns })).stdout;
      assert.doesNotMatch(links, /twill_host|twill_net/, links);
      assert.doesNotMatch((await run("ip", ["-4", "route", "show"], { netns: h1.host.netns })).stdout, /10\.244\.0\.0\/16/);
    });
  });
}
