/**
 * The firewall as the host has it:
 *  - "EnableNFTables": true writes flannel's nftables tables (flannel-ipv4:
 *    forward and postrtg, flannel's rules) and no iptables chain; pod →
 *    outside traffic is masqueraded; switching the node to iptables and back
 *    leaves nothing of the other mode behind;
 *  - with iptables, a host whose kube-proxy uses iptables-legacy (its
 *    KUBE-IPTABLES-HINT chain in legacy's mangle table) gets flannel's
 *    chains in legacy, not in nft, and the POSTROUTING/FORWARD jumps are
 *    appended after the rules already there (flannel's AppendUnique).
 *
 *   h1 bpf [p1]   h2 kernel [p1]     underlay 192.168.50.0/24
 */
import { test, after, before, describe } from "node:test";
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { TwillCluster, DEFAULT_NET_CONFIG, type TwillNode } from "../lib/twill.js";
import { run } from "../lib/exec.js";
import { countPackets } from "../lib/capture.js";

const sh = async (n: TwillNode, cmd: string): Promise<string> => (await run("sh", ["-c", cmd], { netns: n.host.netns, allowFail: true })).stdout;
const nftTables = (n: TwillNode) => sh(n, "nft list tables");
const flannelChains = (n: TwillNode) => sh(n, "iptables-nft-save 2>/dev/null; iptables-legacy-save 2>/dev/null; ip6tables-nft-save 2>/dev/null; ip6tables-legacy-save 2>/dev/null").then((s) => s.split("\n").filter((l) => /FLANNEL/.test(l)));

/** Pings h2's underlay address from h1's pod; returns the packets h2 saw from the pod's own address and from h1's. */
async function masqueraded(tc: TwillCluster): Promise<{ fromPod: number; fromNode: number }> {
  const [h1, h2] = tc.nodes as [TwillNode, TwillNode];
  const pod = h1.host.pods[0]!;
  let fromNode = 0;
  const fromPod = await countPackets(h2.host.netns, "eth0", `icmp and host ${pod.ip}`, async () => {
    fromNode = await countPackets(h2.host.netns, "eth0", `icmp and host ${h1.host.underlayIP}`, async () => {
      const r = await run("ping", ["-c", "5", "-i", "0.05", "-W", "2", h2.host.underlayIP], { netns: pod.netns, allowFail: true });
      assert.equal(r.code, 0, r.stdout);
    });
  });
  return { fromPod, fromNode };
}

describe("EnableNFTables: flannel's nftables tables; switching to iptables and back leaves nothing behind", () => {
  let tc: TwillCluster;
  const config = (nft: boolean) => writeFileSync(join(tc.leaseDir, "config"), JSON.stringify({ ...DEFAULT_NET_CONFIG, EnableNFTables: nft }));
  before(async () => {
    tc = await TwillCluster.create({ hosts: 2, podsPerHost: 1, netConfig: { ...DEFAULT_NET_CONFIG, EnableNFTables: true }, nodes: [{ dataplane: "bpf" }, { dataplane: "kernel" }] });
  });
  after(async () => tc && (await tc.destroy()));

  test("nftables: flannel's tables and rules, no iptables chain; pods reach each other; pod → outside is masqueraded", async () => {
    for (const n of tc.nodes) {
      const t = await sh(n, "nft list table ip flannel-ipv4");
      assert.match(t, /chain forward \{[^}]*type filter hook forward priority filter[^}]*ip saddr 10\.244\.0\.0\/16 accept\s+ip daddr 10\.244\.0\.0\/16 accept/s, t);
      assert.match(t, /chain postrtg \{[^}]*type nat hook postrouting priority srcnat[^}]*meta mark 0x00004000 return/s, t);
      assert.match(t, /ip saddr 10\.244\.0\.0\/16 ip daddr != 224\.0\.0\.0\/4 masquerade/, t);
      assert.match(await nftTables(n), /table ip6 flannel-ipv6/, "both tables, as flannel's Init makes them");
      assert.deepEqual(await flannelChains(n), [], `${n.host.name}: iptables chains in nftables mode`);
    }
    const f = await tc.allPairs();
    if (f.length) assert.fail(`${f.join("\n")}\n${await tc.diagnostics()}`);
    const m = await masqueraded(tc);
    assert.equal(m.fromPod, 0, "the pod's address left the node");
    assert.ok(m.fromNode >= 5, `only ${m.fromNode} masqueraded packets`);
  });

  test("to iptables: the nftables tables go, flannel's chains come; and back", async () => {
    const h1 = tc.nodes[0]!;
    config(false);
    await tc.stop(h1);
    await tc.start(h1);
    assert.doesNotMatch(await nftTables(h1), /flannel/, "nftables tables left after the switch to iptables");
    const chains = await flannelChains(h1);
    assert.ok(chains.some((l) => l.startsWith(":FLANNEL-POSTRTG")) && chains.some((l) => l.startsWith(":FLANNEL-FWD")), chains.join("\n"));
    const m = await masqueraded(tc);
    assert.ok(m.fromPod === 0 && m.fromNode >= 5, JSON.stringify(m));

    config(true);
    await tc.stop(h1);
    await tc.start(h1);
    assert.match(await nftTables(h1), /table ip flannel-ipv4/);
    assert.deepEqual(await flannelChains(h1), [], "iptables chains left after the switch to nftables");
    const again = await masqueraded(tc);
    assert.ok(again.fromPod === 0 && again.fromNode >= 5, JSON.stringify(again));
  });
});

describe("iptables as the host has it: legacy when kube-proxy's hint is in legacy; jumps appended", () => {
  let tc: TwillCluster;
  before(async () => {
    tc = await TwillCluster.create({ hosts: 2, podsPerHost: 1, nodes: [{ dataplane: "bpf" }, { dataplane: "kernel" }], startNodes: false });
    for (const n of tc.nodes) {
      // What kube-proxy (legacy mode) leaves on a node before flannel starts: its hint chain and rules of its own.
      await run("sh", ["-c", [
        "iptables-legacy -t mangle -N KUBE-IPTABLES-HINT",
        "iptables-legacy -t nat -N KUBE-POSTROUTING", "iptables-legacy -t nat -A POSTROUTING -m comment --comment kube -j KUBE-POSTROUTING",
        "iptables-legacy -t filter -N KUBE-FORWARD", "iptables-legacy -t filter -A FORWARD -m comment --comment kube -j KUBE-FORWARD",
      ].join(" && ")], { netns: n.host.netns });
      await tc.start(n);
    }
    for (const n of tc.nodes) await tc.addPod(n, "p1");
  });
  after(async () => tc && (await tc.destroy()));

  test("flannel's chains are in iptables-legacy, after the rules already there; none in nft; pods reach each other", async () => {
    for (const n of tc.nodes) {
      const legacy = await sh(n, "iptables-legacy-save");
      const post = legacy.split("\n").filter((l) => l.startsWith("-A POSTROUTING"));
      const fwd = legacy.split("\n").filter((l) => l.startsWith("-A FORWARD"));
      assert.match(post[0] ?? "", /KUBE-POSTROUTING/, legacy);
      assert.match(post[1] ?? "", /-j FLANNEL-POSTRTG/, `appended after kube-proxy's jump:\n${legacy}`);
      assert.match(fwd[0] ?? "", /KUBE-FORWARD/, legacy);
      assert.match(fwd[1] ?? "", /-j FLANNEL-FWD/, legacy);
      assert.doesNotMatch(await sh(n, "iptables-nft-save"), /FLANNEL/, "flannel's rules in the nft backend kube-proxy does not use");
      assert.match(tc.log(n), /"backend":"legacy"/);
    }
    const f = [...(await tc.allPairs()), ...(await tc.allPairsTcp())];
    if (f.length) assert.fail(`${f.join("\n")}\n${await tc.diagnostics()}`);
    const m = await masqueraded(tc);
    assert.ok(m.fromPod === 0 && m.fromNode >= 5, JSON.stringify(m));
  });
});
