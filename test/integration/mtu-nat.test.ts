/**
 * MTU, offloads and Kubernetes Services across hosts (2 hosts, each mode):
 *
 *   h1 [p1 p2]--cni0 --flannel.1-- eth0 ==underlay (offloads off, like a wire)== eth0 --flannel.1-- cni0--[p1 p2] h2
 *   h1 iptables nat: 10.96.0.10:80 --DNAT--> h2/p1:8080   (kube-proxy's ClusterIP rule shape)
 *
 * - a 1400-byte DF ping and an 8 MB TCP transfer (sha256 compared) cross hosts;
 * - a pod whose MTU is larger than the tunnel's gets ICMP "fragmentation
 *   needed" back (never a silent drop);
 * - a ClusterIP DNAT'ed to a pod on another host works, replies reverse-NATed;
 * - without --fast-path an iptables FORWARD DROP between two pods is honoured;
 *   with it, the documented bypass holds (the fast path skips netfilter).
 */
import { test, after, before, describe } from "node:test";
import assert from "node:assert/strict";
import { TwillCluster } from "../lib/twill.js";
import { ping, tcpTransfer, startEchoServer, tcpRequest } from "../lib/traffic.js";
import { run } from "../lib/exec.js";

const CLUSTER_IP = "10.96.0.10";

async function addServiceRule(netns: string, backendIP: string): Promise<void> {
  const ipt = (...a: string[]) => run("iptables", ["-w", "5", "-t", "nat", ...a], { netns });
  await ipt("-N", "KUBE-SERVICES");
  await ipt("-N", "KUBE-SVC-TWILLTEST");
  await ipt("-N", "KUBE-SEP-TWILLTEST");
  await ipt("-N", "KUBE-MARK-MASQ");
  await ipt("-A", "KUBE-MARK-MASQ", "-j", "MARK", "--or-mark", "0x4000");
  await ipt("-I", "PREROUTING", "-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES");
  await ipt("-I", "OUTPUT", "-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES");
  await ipt("-A", "KUBE-SERVICES", "-d", `${CLUSTER_IP}/32`, "-p", "tcp", "-m", "tcp", "--dport", "80", "-j", "KUBE-SVC-TWILLTEST");
  await ipt("-A", "KUBE-SVC-TWILLTEST", "-j", "KUBE-SEP-TWILLTEST");
  await ipt("-A", "KUBE-SEP-TWILLTEST", "-s", `${backendIP}/32`, "-j", "KUBE-MARK-MASQ");
  await ipt("-A", "KUBE-SEP-TWILLTEST", "-p", "tcp", "-m", "tcp", "-j", "DNAT", "--to-destination", `${backendIP}:8080`);
}

for (const mode of ["bpf", "bpf --fast-path", "kernel"] as const) {
  describe(`MTU and Services, ${mode}`, () => {
    let tc: TwillCluster;
    before(async () => {
      const node = { dataplane: mode === "kernel" ? "kernel" as const : "bpf" as const, fastPath: mode === "bpf --fast-path" };
      tc = await TwillCluster.create({ hosts: 2, podsPerHost: 2, nodes: [node, node] });
      await tc.cluster.setUnderlayOffloads(false);
    });
    after(async () => tc && (await tc.destroy()));

    test("1400-byte DF ping and an 8 MB TCP transfer cross hosts intact", async () => {
      const a = tc.nodes[0]!.host.pods[0]!, b = tc.nodes[1]!.host.pods[0]!;
      const p = await ping(a.netns, b.ip, { count: 5, size: 1400, df: true });
      assert.equal(p.received, 5, p.raw);
      for (const [x, y] of [[a, b], [b, a]] as const) {
        const t = await tcpTransfer(x.netns, y.netns, y.ip, 8 * 1024 * 1024);
        assert.equal(t.bytes, 8 * 1024 * 1024);
        assert.equal(t.receivedSha256, t.sentSha256);
      }
    });

    test("a packet too big for the tunnel gets ICMP fragmentation needed", async () => {
      const a = tc.nodes[0]!.host.pods[1]!, b = tc.nodes[1]!.host.pods[1]!;
      // The pod and its veth at 1500, the tunnel at 1450: the host must say so.
      await run("ip", ["link", "set", "eth0", "mtu", "1500"], { netns: a.netns });
      await run("ip", ["link", "set", a.veth!, "mtu", "1500"], { netns: a.host.netns });
      const p = await ping(a.netns, b.ip, { count: 2, size: 1472, df: true, waitS: 1 });
      assert.equal(p.received, 0);
      assert.equal(p.fragNeededMtu, 1450, p.raw);
      const ok = await ping(a.netns, b.ip, { count: 2, size: 1400, df: true });
      assert.equal(ok.received, 2, ok.raw);
    });

    test("a ClusterIP DNAT'ed to a pod on another host works, replies reverse-NATed", async () => {
      const client = tc.nodes[0]!.host.pods[0]!, backend = tc.nodes[1]!.host.pods[0]!;
      await addServiceRule(client.host.netns, backend.ip);
      const srv = await startEchoServer(backend.netns, 8080);
      try {
        for (let i = 0; i < 3; i++) {
          const reply = await tcpRequest(client.netns, CLUSTER_IP, 80, `svc ${i}`);
          assert.equal(reply, `svc ${i}`);
        }
        assert.ok(srv.peers().every((p) => p.peer === client.ip), JSON.stringify(srv.peers()));
      } finally {
        await srv.stop();
      }
      if (mode !== "kernel") {
        const m = await tc.maps(tc.nodes[0]!);
        if (mode === "bpf --fast-path") assert.ok(tc.counter(m, "stack_nat") > 0, "NAT'ed replies were not left to the stack");
      }
    });

    test("DNAT on the receiving host (a hostPort-style rule) reached by a remote pod: replies reverse-NATed", async () => {
      // h2: 10.244.<h2>.250:80 (an unused address of h2's pod subnet, so h1
      // routes it over the overlay) --DNAT--> h2/p2:8081. The request reaches
      // the pod through h2's stack; with the fast path, the pod's replies
      // must not take from_pod's shortcut past conntrack's reverse NAT.
      const client = tc.nodes[0]!.host.pods[1]!, backend = tc.nodes[1]!.host.pods[1]!;
      const vip = backend.ip.replace(/\.\d+$/, ".250");
      const rule = ["-d", `${vip}/32`, "-p", "tcp", "--dport", "80", "-j", "DNAT", "--to-destination", `${backend.ip}:8081`];
      await run("iptables", ["-w", "5", "-t", "nat", "-I", "PREROUTING", ...rule], { netns: backend.host.netns });
      const srv = await startEchoServer(backend.netns, 8081);
      try {
        for (let i = 0; i < 3; i++) assert.equal(await tcpRequest(client.netns, vip, 80, `dnat ${i}`), `dnat ${i}`);
        assert.ok(srv.peers().every((p) => p.peer === client.ip), JSON.stringify(srv.peers()));
      } finally {
        await srv.stop();
        await run("iptables", ["-w", "5", "-t", "nat", "-D", "PREROUTING", ...rule], { netns: backend.host.netns });
      }
      if (mode === "bpf --fast-path") {
        const m = await tc.maps(tc.nodes[1]!);
        assert.ok(tc.counter(m, "stack_nat") > 0, "h2's pod's replies were not left to the stack");
      }
    });

    test(mode === "bpf --fast-path" ? "the fast path bypasses an iptables FORWARD DROP (documented)" : "an iptables FORWARD DROP between two pods is honoured", async () => {
      const a = tc.nodes[0]!.host.pods[0]!, b = tc.nodes[1]!.host.pods[0]!;
      const rule = ["-s", `${a.ip}/32`, "-d", `${b.ip}/32`, "-j", "DROP"];
      await run("iptables", ["-w", "5", "-I", "FORWARD", ...rule], { netns: a.host.netns });
      try {
        const p = await ping(a.netns, b.ip, { count: 3, waitS: 1 });
        assert.equal(p.received, mode === "bpf --fast-path" ? 3 : 0, p.raw);
      } finally {
        await run("iptables", ["-w", "5", "-D", "FORWARD", ...rule], { netns: a.host.netns });
      }
      assert.equal((await ping(a.netns, b.ip, { count: 2 })).received, 2);
    });
  });
}
