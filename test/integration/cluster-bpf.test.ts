/**
 * Three hosts on the eBPF dataplane, with and without --fast-path, and with
 * the tc cls_bpf attachment (the fallback for kernels without tcx):
 *
 *   h1 [p1 p2]--cni0   h2 [p1 p2]--cni0   h3 [p1 p2]--cni0
 *        flannel.1 (external)  ...           ...
 *        eth0 192.168.50.11    .12           .13   (one L2 segment)
 *
 * Every pod reaches every pod on every other host (ICMP and TCP, both
 * directions); the hosts hold no per-peer routes, neighbours or FDB
 * entries (one cluster route, at most one NOARP neighbour); the counters
 * that the mode uses move.
 */
import { test, after, before, describe } from "node:test";
import assert from "node:assert/strict";
import { TwillCluster } from "../lib/twill.js";
import { run } from "../lib/exec.js";

for (const [fastPath, attach] of [[false, "auto"], [true, "auto"], [true, "tc"]] as const) {
  describe(`bpf dataplane, 3 hosts, fast path ${fastPath ? "on" : "off"}, attach ${attach}`, () => {
    let tc: TwillCluster;
    before(async () => {
      tc = await TwillCluster.create({
        hosts: 3, podsPerHost: 2,
        nodes: [0, 1, 2].map(() => ({ dataplane: "bpf" as const, fastPath, extraArgs: ["--bpf-attach", attach] })),
      });
    });
    after(async () => tc && (await tc.destroy()));

    test("every pod reaches every pod on other hosts (ICMP and TCP, both ways)", async () => {
      const icmp = await tc.allPairs();
      const tcp = await tc.allPairsTcp();
      if (icmp.length || tcp.length) assert.fail(`${[...icmp, ...tcp].join("\n")}\n${await tc.diagnostics()}`);
    });

    test("no per-peer kernel state: one cluster route, at most one neighbour, no FDB entry", async () => {
      for (const n of tc.nodes) {
        const k = await tc.kernelState(n);
        assert.equal(k.routes, 1, `${n.host.name} routes on flannel.1`);
        assert.ok(k.neighbours <= 1, `${n.host.name} has ${k.neighbours} neighbours on flannel.1`);
        assert.equal(k.fdb, 0, `${n.host.name} FDB entries on flannel.1`);
        const m = await tc.maps(n);
        assert.equal(m.peers.filter((p) => p.kind === "vxlan").length, 2, `${n.host.name}: one map entry per remote host`);
      }
    });

    test("counters move on the path the mode uses", async () => {
      const sent = fastPath ? "encap_fast" : "encap";
      for (const n of tc.nodes) {
        const m = await tc.maps(n);
        assert.ok(tc.counter(m, sent) > 0, `${n.host.name}: ${sent} = ${tc.counter(m, sent)}`);
        // IPv4 underlay: VXLAN is written and stripped in BPF, never by the vxlan driver.
        if (fastPath) assert.ok(tc.counter(m, "delivered") > 0, `${n.host.name}: delivered`);
        else assert.ok(tc.counter(m, "decap") > 0, `${n.host.name}: decap`);
        assert.equal(tc.counter(m, "encap_device"), 0, `${n.host.name}: encap_device`);
        assert.equal(tc.counter(m, "decap_stack"), 0, `${n.host.name}: decap_stack`);
        assert.equal(tc.counter(m, "drop_vni") + tc.counter(m, "drop_encap") + tc.counter(m, "drop_no_tunnel"), 0);
      }
    });

    test(`programs are attached as ${attach === "tc" ? "tc cls_bpf filters" : "pinned tcx links"}`, async () => {
      for (const n of tc.nodes) {
        const links = Object.keys((await tc.maps(n)).ids.links);
        const filters = (await run("tc", ["filter", "show", "dev", "flannel.1", "egress"], { netns: n.host.netns })).stdout;
        if (attach === "tc") {
          assert.deepEqual(links, [], `${n.host.name} has tcx links in tc mode`);
          assert.match(filters, /handle 0x7411 twill_to_overla.*direct-action/); // names are cut to 15 characters
        } else {
          assert.ok(links.some((l) => l.startsWith("to_overlay-")) && links.some((l) => l.startsWith("from_overlay-")), links.join());
          // from_pod learns where pods are in every mode (to_pod uses it); it forwards only with the fast path
          assert.equal(links.filter((l) => l.startsWith("from_pod-")).length, 2, links.join());
          assert.equal(links.filter((l) => l.startsWith("to_pod-")).length, 1, links.join());
          assert.doesNotMatch(filters, /twill/);
        }
      }
    });

    test("host-originated traffic reaches remote pods", async () => {
      const { ping } = await import("../lib/traffic.js");
      const target = tc.nodes[1]!.host.pods[0]!;
      const r = await ping(tc.nodes[0]!.host.netns, target.ip, { count: 3 });
      assert.equal(r.received, 3, r.raw);
    });
  });
}
