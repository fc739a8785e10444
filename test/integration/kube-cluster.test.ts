/**
 * The DaemonSet mode against a simulated API server, in a namespaced cluster:
 *
 *   fake kube-apiserver (sim/kubeapi.ts) in the router namespace, http://192.168.50.1:6443
 *   h1 twill bpf --fast-path ─┐
 *   h2 twill bpf             ─┼─ --kube-subnet-mgr --kube-api-url ... --net-config-path net-conf.json
 *   h3 twill kernel          ─┘
 *
 * Subnets come from Node.spec.podCIDR(s); each node writes flannel's
 * annotations and NetworkUnavailable=false; nodes added, changed and removed
 * on the API change forwarding; a 410 Gone forces a re-list that is
 * survived; a restarted node keeps its VTEP MAC.
 */
import { test, after, before, describe } from "node:test";
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { TwillCluster, DEFAULT_NET_CONFIG, type TwillNode } from "../lib/twill.js";
import { FakeKubeProcess } from "../lib/fakekube-main.js";
import { waitFor } from "../lib/exec.js";
import { getLinkMAC } from "../lib/linkmac.js";

const A = "flannel.alpha.coreos.com";
type Node = { metadata: { annotations?: Record<string, string> }; status: { conditions: { type: string; status: string; reason?: string }[] } };

describe("Kubernetes subnet manager against a simulated API server", () => {
  let tc: TwillCluster;
  let kube: FakeKubeProcess;
  const cidr = (i: number) => `10.244.${10 + i}.0/24`;
  const inMap = async (n: TwillNode, prefix: string, mac?: string) =>
    (await tc.maps(n)).peers.some((p) => p.prefix === prefix && p.kind === "vxlan" && (!mac || p.vtepMAC === mac));

  before(async () => {
    tc = await TwillCluster.create({ hosts: 3, startNodes: false, nodes: [{ dataplane: "bpf", fastPath: true }, { dataplane: "bpf" }, { dataplane: "kernel" }] });
    kube = await FakeKubeProcess.start(tc.cluster.routerNetns, tc.nodes[0]!.host.gateway);
    for (const [i, n] of tc.nodes.entries()) await kube.call("addNode", { name: n.host.name, podCIDR: cidr(i + 1), internalIP: n.host.underlayIP });
    const netConf = join(tc.cluster.dir, "net-conf.json");
    writeFileSync(netConf, JSON.stringify(DEFAULT_NET_CONFIG));
    tc.sourceArgs = () => ["--kube-subnet-mgr", "--kube-api-url", kube.url, "--net-config-path", netConf];
    await Promise.all(tc.nodes.map((n) => tc.start(n)));
    for (const n of tc.nodes) await tc.addPod(n, "p1");
  });
  after(async () => {
    await tc?.destroy();
    await kube?.stop();
  });

  test("subnets come from podCIDR; nodes annotate themselves and clear NetworkUnavailable", async () => {
    for (const [i, n] of tc.nodes.entries()) {
      assert.equal(tc.subnet(n), cidr(i + 1).replace(".0/", ".1/"));
      const node = await kube.call<Node>("node", n.host.name);
      const a = node.metadata.annotations ?? {};
      assert.equal(a[`${A}/kube-subnet-manager`], "true");
      assert.equal(a[`${A}/backend-type`], "vxlan");
      assert.equal(a[`${A}/public-ip`], n.host.underlayIP);
      const data = JSON.parse(a[`${A}/backend-data`]!);
      assert.equal(data.VNI, 1);
      assert.equal(data.VtepMAC, await getLinkMAC(n.host.netns, "flannel.1"));
      const c = node.status.conditions.find((x) => x.type === "NetworkUnavailable");
      assert.equal(c?.status, "False", JSON.stringify(node.status.conditions));
    }
  });

  test("all pairs reach each other (ICMP and TCP)", async () => {
    const f = [...(await tc.allPairs()), ...(await tc.allPairsTcp())];
    if (f.length) assert.fail(`${f.join("\n")}\n${await tc.diagnostics()}`);
  });

  test("nodes added, changed and removed on the API change the dataplane", async () => {
    const n1 = tc.nodes[0]!;
    const ann = (mac: string) => ({ [`${A}/kube-subnet-manager`]: "true", [`${A}/backend-type`]: "vxlan", [`${A}/backend-data`]: JSON.stringify({ VNI: 1, VtepMAC: mac }), [`${A}/public-ip`]: "192.168.50.99" });
    await kube.call("addNode", { name: "n9", podCIDR: "10.244.99.0/24", internalIP: "192.168.50.99", annotations: ann("02:00:00:00:00:99") });
    await waitFor(() => inMap(n1, "10.244.99.0/24", "02:00:00:00:00:99"), { what: "added node in h1's map", timeoutMs: 3000 });
    await kube.call("annotate", "n9", { [`${A}/backend-data`]: JSON.stringify({ VNI: 1, VtepMAC: "02:00:00:00:00:9a" }) });
    await waitFor(() => inMap(n1, "10.244.99.0/24", "02:00:00:00:00:9a"), { what: "changed VTEP MAC in h1's map", timeoutMs: 3000 });
    await kube.call("deleteNode", "n9");
    await waitFor(async () => !(await inMap(n1, "10.244.99.0/24")), { what: "removed node gone from h1's map", timeoutMs: 3000 });
  });

  test("a 410 Gone forces a re-list, and later changes still arrive", async () => {
    const n1 = tc.nodes[0]!;
    await kube.call("expireWatches");
    await kube.call("addNode", {
      name: "n8", podCIDR: "10.244.98.0/24", internalIP: "192.168.50.98",
      annotations: { [`${A}/kube-subnet-manager`]: "true", [`${A}/backend-type`]: "vxlan", [`${A}/backend-data`]: JSON.stringify({ VNI: 1, VtepMAC: "02:00:00:00:00:98" }), [`${A}/public-ip`]: "192.168.50.98" },
    });
    await waitFor(() => inMap(n1, "10.244.98.0/24"), { what: "node added after a 410 in h1's map", timeoutMs: 10_000 });
    await kube.call("deleteNode", "n8");
    await waitFor(async () => !(await inMap(n1, "10.244.98.0/24")), { what: "n8 gone", timeoutMs: 10_000 });
  });

  test("a restarted node keeps its VTEP MAC (restored from its annotation)", async () => {
    const n2 = tc.nodes[1]!;
    const before = await getLinkMAC(n2.host.netns, "flannel.1");
    await tc.stop(n2);
    await tc.start(n2);
    assert.equal(await getLinkMAC(n2.host.netns, "flannel.1"), before);
    const data = JSON.parse((await kube.call<Node>("node", "h2")).metadata.annotations![`${A}/backend-data`]!);
    assert.equal(data.VtepMAC, before);
    assert.deepEqual(await tc.allPairs(), []);
  });
});
