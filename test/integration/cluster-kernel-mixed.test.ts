/**
 * The kernel dataplane (flannel's vxlan backend, the A side), and a mixed
 * cluster: one host programmed like stock flannel, two on twill's eBPF
 * dataplane (one with --fast-path). The mixed cluster is the wire
 * compatibility proof: same VNI, port, outer format and inner MACs.
 *
 *   h1 kernel: flannel.1 (vxlan id 1) + neigh/FDB/route per peer
 *   h2 bpf:    flannel.1 (external)  + map entries
 *   h3 bpf --fast-path
 */
import { test, after, before, describe } from "node:test";
import assert from "node:assert/strict";
import { TwillCluster } from "../lib/twill.js";

describe("kernel dataplane, 3 hosts", () => {
  let tc: TwillCluster;
  before(async () => {
    tc = await TwillCluster.create({ hosts: 3, podsPerHost: 2, nodes: [0, 1, 2].map(() => ({ dataplane: "kernel" as const })) });
  });
  after(async () => tc && (await tc.destroy()));

  test("every pod reaches every pod on other hosts (ICMP and TCP)", async () => {
    const f = [...(await tc.allPairs()), ...(await tc.allPairsTcp())];
    if (f.length) assert.fail(`${f.join("\n")}\n${await tc.diagnostics()}`);
  });

  test("flannel's per-peer state: one route, one permanent neighbour and one FDB entry per remote host", async () => {
    for (const n of tc.nodes) {
      const k = await tc.kernelState(n);
      assert.deepEqual([k.routes, k.neighbours, k.fdb], [2, 2, 2], `${n.host.name}: ${JSON.stringify(k.detail)}`);
    }
  });
});

describe("mixed cluster: kernel (stock flannel behaviour) + bpf + bpf fast path", () => {
  let tc: TwillCluster;
  before(async () => {
    tc = await TwillCluster.create({
      hosts: 3, podsPerHost: 2,
      nodes: [{ dataplane: "kernel" }, { dataplane: "bpf" }, { dataplane: "bpf", fastPath: true }],
    });
  });
  after(async () => tc && (await tc.destroy()));

  test("all pairs reach each other both ways (ICMP and TCP)", async () => {
    const f = [...(await tc.allPairs()), ...(await tc.allPairsTcp())];
    if (f.length) assert.fail(`${f.join("\n")}\n${await tc.diagnostics()}`);
  });

  test("the bpf hosts encapsulated towards the kernel host and it answered", async () => {
    for (const n of tc.nodes.slice(1)) {
      const m = await tc.maps(n);
      const sent = tc.counter(m, "encap") + tc.counter(m, "encap_fast");
      // Stripped in BPF at the underlay (decap; delivered with the fast path):
      // the stock kernel peer's VXLAN is exactly what twill decapsulates.
      const got = tc.counter(m, "delivered") + tc.counter(m, "decap");
      assert.ok(sent > 0 && got > 0, `${n.host.name}: sent ${sent}, received ${got}`);
      assert.equal(tc.counter(m, "encap_device") + tc.counter(m, "decap_stack"), 0, `${n.host.name}: the vxlan driver's path was used`);
    }
  });
});
