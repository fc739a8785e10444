/**
 * DirectRouting across two L2 segments joined by a router:
 *
 *   h1 192.168.50.11 ─┐                         ┌─ h3 192.168.51.13
 *   h2 192.168.50.12 ─┴─ br0 ── rt ── br1 ──────┘
 *      (segment 0: direct)       (segment 1: VXLAN across the router)
 *
 * With "DirectRouting": true, h1 and h2 reach each other's pods without
 * encapsulation (no UDP 8472 on the wire between them, the pod packets are
 * seen bare), while h3 is reached over VXLAN. All pairs work both ways, in
 * bpf mode with and without the fast path, and mixed with a kernel node.
 */
import { test, after, before, describe } from "node:test";
import assert from "node:assert/strict";
import { TwillCluster, type NodeOptions } from "../lib/twill.js";
import { ping } from "../lib/traffic.js";
import { countPackets } from "../lib/capture.js";

const netConfig = { Network: "10.244.0.0/16", SubnetLen: 24, Backend: { Type: "vxlan", VNI: 1, Port: 8472, DirectRouting: true } };

const variants: Array<[string, NodeOptions[]]> = [
  ["bpf", [{ dataplane: "bpf" }, { dataplane: "bpf" }, { dataplane: "bpf" }]],
  ["bpf --fast-path", [{ dataplane: "bpf", fastPath: true }, { dataplane: "bpf", fastPath: true }, { dataplane: "bpf", fastPath: true }]],
  ["mixed: h2 kernel", [{ dataplane: "bpf", fastPath: true }, { dataplane: "kernel" }, { dataplane: "bpf" }]],
];

for (const [name, nodes] of variants) {
  describe(`DirectRouting, ${name}`, () => {
    let tc: TwillCluster;
    before(async () => {
      tc = await TwillCluster.create({ hosts: 3, segments: [0, 0, 1], podsPerHost: 1, netConfig, nodes });
    });
    after(async () => tc && (await tc.destroy()));

    test("all pairs reach each other both ways (ICMP and TCP)", async () => {
      const f = [...(await tc.allPairs()), ...(await tc.allPairsTcp())];
      if (f.length) assert.fail(`${f.join("\n")}\n${await tc.diagnostics()}`);
    });

    test("same segment: direct, no VXLAN on the wire; across the router: VXLAN", async () => {
      const [n1, n2, n3] = tc.nodes as [typeof tc.nodes[0], typeof tc.nodes[0], typeof tc.nodes[0]];
      const [p1, p2, p3] = [n1.host.pods[0]!, n2.host.pods[0]!, n3.host.pods[0]!];
      const bare = await countPackets(n2.host.netns, "eth0", `icmp and host ${p1.ip} and host ${p2.ip}`, async () => {
        const vx = await countPackets(n2.host.netns, "eth0", "udp port 8472", async () => {
          for (const [a, b] of [[p1, p2], [p2, p1]] as const) assert.equal((await ping(a.netns, b.ip, { count: 10 })).received, 10);
        });
        assert.equal(vx, 0, "VXLAN packets between hosts on the same segment");
      });
      assert.ok(bare >= 40, `only ${bare} bare pod packets on h2's wire (want 2 x 10 requests + replies)`);
      const vx13 = await countPackets(n1.host.netns, "eth0", `udp port 8472 and host ${n3.host.underlayIP}`, async () => {
        assert.equal((await ping(p1.netns, p3.ip, { count: 10 })).received, 10);
      });
      assert.ok(vx13 >= 20, `only ${vx13} VXLAN packets between h1 and h3`);
      if ((n1.opts.dataplane ?? "bpf") === "bpf") {
        const m = await tc.maps(n1);
        const kinds = Object.fromEntries(m.peers.map((p) => [p.prefix, p.kind]));
        assert.equal(kinds[tc.subnet(n2).replace(/\.1\//, ".0/")], "direct");
        assert.equal(kinds[tc.subnet(n3).replace(/\.1\//, ".0/")], "vxlan");
        assert.ok(tc.counter(m, "direct") > 0 && tc.counter(m, "rx_direct") > 0, JSON.stringify(m.counters));
      }
    });
  });
}
