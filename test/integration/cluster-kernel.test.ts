/**
 * The kernel dataplane (flannel's vxlan backend, the A side): 3 hosts
 * programmed like stock flannel, with its per-peer kernel state.
 *
 *   h1, h2, h3 kernel: flannel.1 (vxlan id 1) + neigh/FDB/route per peer
 *
 * The mixed cluster (a kernel host with bpf hosts, the wire compatibility
 * proof) is in bpf-encap.test.ts.
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
