/**
 * VXLAN encapsulation and decapsulation in the tc programs (--encap bpf, the
 * default) over an IPv4 underlay, against twill nodes, a stock-flannel-like
 * kernel node, the vxlan driver (--encap device), and a stranger.
 *
 *   h1 [p1]                                                        [p1] h2
 *    │ veth ◀ from_pod (--fast-path: encap here, counter encap_fast)    │
 *   cni0 ── flannel.1 ◀ to_overlay (encap here, counter encap)       cni0
 *             (external vxlan device: fallback and GRO)                 │
 *   eth0 192.168.50.11 ═════ <prefix>ul br0 ═════ eth0 192.168.50.12 ◀ underlay tc ingress:
 *                               │                  known peer: strip the outer headers (decap),
 *            <prefix>x9 eth0 192.168.50.99         then into the pod (delivered) or to the
 *            (stranger: no lease, no daemon)       stack as flannel.1's; else rx_unknown/rx_fallback
 *
 * 1) Per mode (default, --fast-path) and per underlay (MTU 1400 with every
 *    offload off, like a wire; MTU 1500 with veth's default offloads, GRO
 *    on): 20 MB TCP both ways arrive intact (sha256), the BPF counters
 *    carried them (encap/encap_fast at the sender, decap/delivered at the
 *    receiver, at least the bytes sent and at least one count per wire packet
 *    where nothing merges), the vxlan driver carried ~nothing (encap_device,
 *    decap_stack, rx_fallback ~0), and tcpdump -T vxlan on the underlay
 *    decodes the packets: config VNI, UDP dst port 8472, inner MACs = the
 *    VTEP MACs of the leases, outer addresses = the hosts' underlay IPs.
 * 2) A stranger's crafted VXLAN (config VNI, port 8472, inner dst MAC = the
 *    victim's VTEP MAC, inner source = a pod of a real peer) is not
 *    decapsulated or delivered by BPF: rx_unknown moves once per packet,
 *    decap and delivered do not. The kernel's vxlan device still takes it
 *    and the stack delivers it, as with stock flannel (see the test).
 * 3) Mixed clusters: a kernel node (flannel's vxlan) with bpf nodes, and
 *    --encap device nodes with a bpf node: ping and TCP every way, counters.
 * 4) iptables FORWARD DROP between two pods is honoured in default mode with
 *    the rule on the sending node and with it on the receiving node.
 * Failures print the state a person would look at (links, routes, maps,
 * counters, daemon logs).
 */
import { test, after, before, describe } from "node:test";
import assert from "node:assert/strict";
import { DEFAULT_NET_CONFIG, TwillCluster, type BpfState, type NodeOptions, type TwillNode } from "../lib/twill.js";
import { ping, tcpConnect, tcpTransfer, type TransferResult } from "../lib/traffic.js";
import { run, runJson } from "../lib/exec.js";
import { countPackets } from "../lib/capture.js";
import { cidrNetwork, type Pod } from "../lib/cluster.js";
import { getLinkMAC } from "../lib/linkmac.js";
import { delta, deltaSum, moved, peerId, type Count } from "../lib/counters.js";
import { withDiagnostics } from "../lib/diagnostics.js";
import { addStranger, captureVxlan, leaseVtepMAC, sendUdp, vxlanEchoRequest, type VxlanRecord } from "../lib/vxlan.js";

const MB20 = 20 * 1024 * 1024;
const PORT = 8472;
/** GSO packets carry at most 64 KB: whatever merges, a counter moves at least this often per byte. */
const MAX_SKB = 65536;

async function rxPackets(netns: string, dev: string): Promise<number> {
  const [l] = await runJson<Array<{ stats64: { rx: { packets: number } } }>>("ip", ["-j", "-s", "link", "show", "dev", dev], { netns });
  return l!.stats64.rx.packets;
}

const fmt = (c: Count): string => `${c.packets} pkts/${c.bytes} B`;
/** "~0": at most `share` of `of` packets, and never more than a handful when `of` is small. */
const nearZero = (c: Count, of: number, share = 0.01): boolean => c.packets <= Math.max(3, Math.ceil(of * share));

function vxlanDevice(vni: number): string {
  return `flannel.${vni}`;
}

interface Side { tc: TwillCluster; node: TwillNode; pod: Pod }

/**
 * A TCP transfer (20 MB unless told) from `from` to `to`, with every bpf
 * node's maps read before and after (indexed like tc.nodes; kernel nodes
 * have none); checks the bytes and their sha256, returns the snapshots.
 */
async function transfer(tc: TwillCluster, from: Pod, to: Pod, bytes = MB20): Promise<{ t: TransferResult; before: BpfState[]; after: BpfState[] }> {
  const bpfNodes = tc.nodes.filter((n) => (n.opts.dataplane ?? "bpf") === "bpf");
  const before = await Promise.all(bpfNodes.map((n) => tc.maps(n)));
  const t = await tcpTransfer(from.netns, to.netns, to.ip, bytes, { timeoutMs: 120_000 });
  const after = await Promise.all(bpfNodes.map((n) => tc.maps(n)));
  assert.equal(t.bytes, bytes, `${from.host.name}/${from.name} -> ${to.host.name}/${to.name}: ${t.bytes} of ${bytes} bytes arrived`);
  assert.equal(t.receivedSha256, t.sentSha256, `${from.host.name}/${from.name} -> ${to.host.name}/${to.name}: the data arrived corrupted`);
  const out = { t, before: [] as BpfState[], after: [] as BpfState[] };
  for (const n of tc.nodes) {
    const i = bpfNodes.indexOf(n);
    out.before.push(i < 0 ? (undefined as unknown as BpfState) : before[i]!);
    out.after.push(i < 0 ? (undefined as unknown as BpfState) : after[i]!);
  }
  return out;
}

/**
 * Asserts, on a capture taken on `from`'s underlay device, that `from` sent
 * VXLAN to `to` exactly as a flannel peer expects.
 */
function assertWireFormat(records: VxlanRecord[], from: Side, to: Side, vni: number, raw: string): void {
  const fromMAC = leaseVtepMAC(from.tc, from.node);
  const toMAC = leaseVtepMAC(to.tc, to.node);
  const mine = records.filter((r) => r.outerSrc === from.node.host.underlayIP && r.inner.includes(`${from.pod.ip} > ${to.pod.ip}`));
  assert.ok(mine.length >= 3, `the capture shows ${mine.length} VXLAN packets ${from.pod.ip} -> ${to.pod.ip} from ${from.node.host.underlayIP}:\n${raw.slice(0, 3000)}`);
  for (const r of mine) {
    const what = `${from.node.host.name} -> ${to.node.host.name}: ${JSON.stringify(r)}`;
    assert.equal(r.outerDst, to.node.host.underlayIP, `outer destination: ${what}`);
    assert.equal(r.dstPort, PORT, `UDP destination port: ${what}`);
    assert.equal(r.flags, "0x08", `VXLAN flags (I): ${what}`);
    assert.equal(r.vni, vni, `VNI: ${what}`);
    assert.equal(r.innerDstMAC, toMAC, `inner destination MAC must be the peer's VTEP MAC from its lease: ${what}`);
    assert.equal(r.innerSrcMAC, fromMAC, `inner source MAC must be our VTEP MAC: ${what}`);
    assert.equal(r.innerType, "IPv4", what);
    // a hash of the inner flow in the kernel's default ip_local_port_range, as the vxlan driver picks it
    assert.ok(r.srcPort >= 32768 && r.srcPort <= 60999, `outer UDP source port ${r.srcPort}: ${what}`);
  }
}

// ---------------------------------------------------------------------------
// 1) twill ↔ twill, per mode and underlay

const MODES = [
  { name: "default", fastPath: false, sent: "encap", received: "decap" },
  { name: "--fast-path", fastPath: true, sent: "encap_fast", received: "delivered" },
] as const;
const UNDERLAYS = [
  { name: "MTU 1400 underlay, every offload off", mtu: 1400, offloads: false },
  { name: "MTU 1500 underlay, default offloads (GRO on)", mtu: 1500, offloads: true },
] as const;

for (const mode of MODES) {
  for (const ul of UNDERLAYS) {
    describe(`BPF encap, ${mode.name}, ${ul.name}`, () => {
      // A VNI other than 1 on one of the four clusters: the VNI must come from the config.
      const vni = mode.fastPath && ul.offloads ? 4097 : DEFAULT_NET_CONFIG.Backend.VNI;
      let tc: TwillCluster;
      const side = (i: number): Side => ({ tc, node: tc.nodes[i]!, pod: tc.nodes[i]!.host.pods[0]! });
      before(async () => {
        const node: NodeOptions = { dataplane: "bpf", fastPath: mode.fastPath };
        tc = await TwillCluster.create({
          hosts: 2, podsPerHost: 1, mtu: ul.mtu, nodes: [node, node],
          netConfig: { ...DEFAULT_NET_CONFIG, Backend: { ...DEFAULT_NET_CONFIG.Backend, VNI: vni } },
        });
        // veth does not enforce the MTU on GSO packets, and never checksums:
        // with these off it segments and checksums in software, like a wire.
        if (!ul.offloads) await tc.cluster.setUnderlayOffloads(false, ["tso", "gso", "gro", "tx", "rx"]);
      });
      after(async () => tc && (await tc.destroy()));

      test("20 MB TCP both ways arrives intact, carried by the BPF encap/decap", () => withDiagnostics(tc, async () => {
        const podMTU = ul.mtu - 50;
        for (const [s, r] of [[0, 1], [1, 0]] as const) {
          const [from, to] = [side(s), side(r)];
          const what = `${from.node.host.name} -> ${to.node.host.name}`;
          // a full-size DF packet (pod MTU) still fits the underlay once encapsulated
          const big = await ping(from.pod.netns, to.pod.ip, { count: 3, size: podMTU - 28, df: true });
          assert.equal(big.received, 3, `${what}: ${podMTU}-byte DF pings (the pod MTU) over a ${ul.mtu}-byte underlay:\n${big.raw}`);
          const rx0 = await rxPackets(to.node.host.netns, "eth0");
          const { t, before, after } = await transfer(tc, from.pod, to.pod);
          const wire = (await rxPackets(to.node.host.netns, "eth0")) - rx0;
          const [sb, sa, rb, ra] = [before[s]!, after[s]!, before[r]!, after[r]!];
          console.log(`${mode.name}, ${ul.name}, ${what}: ${Math.round(t.ms)} ms, ${wire} packets on the receiver's eth0; ` +
            `sender: ${moved(sb, sa)}; receiver: ${moved(rb, ra)}`);
          const sent = delta(sb, sa, mode.sent);
          const got = delta(rb, ra, mode.received);

          assert.ok(sent.bytes >= MB20 && sent.packets >= MB20 / MAX_SKB,
            `${what}: ${mode.sent} moved ${fmt(sent)} at the sender, less than the ${MB20} bytes sent (${moved(sb, sa)})`);
          assert.ok(got.bytes >= MB20 && got.packets >= MB20 / MAX_SKB,
            `${what}: ${mode.received} moved ${fmt(got)} at the receiver, less than the ${MB20} bytes sent (${moved(rb, ra)})`);
          if (!ul.offloads) {
            // nothing merges on this underlay: one decapsulation per wire packet, and at least one per MSS of data
            const mss = podMTU - 40;
            assert.ok(got.packets >= Math.floor(MB20 / mss), `${what}: ${mode.received} counted ${got.packets} packets for ${MB20} bytes at MSS ${mss}`);
            assert.ok(got.packets >= 0.95 * wire, `${what}: ${mode.received} counted ${got.packets} packets, the receiver's eth0 got ${wire}`);
          }
          const byDevice = delta(sb, sa, "encap_device");
          assert.ok(nearZero(byDevice, sent.packets), `${what}: the vxlan driver encapsulated ${fmt(byDevice)} (BPF: ${fmt(sent)})`);
          for (const name of ["decap_stack", "rx_fallback", "rx_unknown"]) {
            const d = delta(rb, ra, name);
            assert.ok(nearZero(d, got.packets), `${what}: ${name} moved ${fmt(d)} at the receiver (BPF: ${fmt(got)})`);
          }
          for (const [st, who] of [[sa, "sender"], [ra, "receiver"]] as const) {
            for (const name of Object.keys(st.counters).filter((c) => c.startsWith("drop_"))) {
              const d = delta(st === sa ? sb : rb, st, name);
              assert.ok(nearZero(d, sent.packets), `${what}: ${name} moved ${fmt(d)} at the ${who}`);
            }
          }
        }
      }));

      test(`tcpdump -T vxlan decodes twill's packets: VNI ${vni}, port ${PORT}, the leases' VTEP MACs, the underlay IPs`, () => withDiagnostics(tc, async () => {
        const [a, b] = [side(0), side(1)];
        // the leases publish the devices' MACs
        for (const s of [a, b]) {
          assert.equal(leaseVtepMAC(tc, s.node), await getLinkMAC(s.node.host.netns, vxlanDevice(vni)), `${s.node.host.name}: lease VtepMAC vs ${vxlanDevice(vni)}`);
        }
        const { records, raw } = await captureVxlan(a.node.host.netns, "eth0", PORT, async () => {
          const p = await ping(a.pod.netns, b.pod.ip, { count: 5, intervalMs: 20 });
          assert.equal(p.received, 5, p.raw);
        });
        assertWireFormat(records, a, b, vni, raw); // requests, sent by h1
        assertWireFormat(records, b, a, vni, raw); // replies, sent by h2
      }));

      if (ul.offloads) {
        test("VXLAN from a sender that is no known peer is not decapsulated or delivered into a pod by BPF", () => withDiagnostics(tc, async () => {
          /*
           * The stranger sits on the underlay segment with no lease. It sends
           * what a twill/flannel peer would: the config VNI to port 8472, inner
           * dst MAC = the victim's VTEP MAC, an ICMP echo request to the
           * victim's pod, spoofing a pod of the real peer h1 as the source.
           *
           * The BPF decap trusts only outer sources that are peers in its
           * map: rx_unknown moves, decap and delivered do not. It leaves the
           * packet to the kernel, and the external vxlan device (collect
           * metadata, like flannel's flannel.1 with `nolearning`) accepts
           * VXLAN from any source address: the driver decapsulates it
           * (decap_stack) and the host stack routes it to the pod through
           * cni0. That is what stock flannel does with such a packet, and what
           * twill did before the BPF encap: the underlay is trusted, and
           * filtering VXLAN from outsiders is the operator's firewall's job.
           */
          const [real, victim] = [side(0), side(1)];
          const stranger = await addStranger(tc.cluster, "x9", "192.168.50.99");
          const N = 5;
          const id = 0x7a11;
          const frame = (seq: number): Buffer => vxlanEchoRequest({
            vni, innerSrcMAC: "02:00:5e:00:00:99", innerDstMAC: leaseVtepMAC(tc, victim.node),
            innerSrc: real.pod.ip, innerDst: victim.pod.ip, id, seq,
          });
          // the path exists: the stranger reaches the victim's underlay address
          assert.equal((await ping(stranger.netns, victim.node.host.underlayIP, { count: 2 })).received, 2, "the stranger cannot reach the victim host");

          const before = await tc.maps(victim.node);
          const inPod = await countPackets(victim.pod.netns, "eth0", `icmp[icmptype] = icmp-echo and icmp[4:2] = ${id}`, async () => {
            for (let seq = 1; seq <= N; seq++) await sendUdp(stranger.netns, victim.node.host.underlayIP, PORT, frame(seq));
          });
          const after = await tc.maps(victim.node);
          console.log(`${mode.name}: stranger sent ${N} crafted VXLAN packets; ${inPod} reached the pod; victim counters: ${moved(before, after)}`);
          const unknown = delta(before, after, "rx_unknown");
          const decap = delta(before, after, "decap");
          const delivered = delta(before, after, "delivered");
          const byDriver = delta(before, after, "decap_stack");

          assert.equal(unknown.packets, N, `rx_unknown moved ${fmt(unknown)} for ${N} packets from ${stranger.ip} (${moved(before, after)}): ` +
            "each must be counted once (the underlay ingress left it to the kernel; from_overlay sees the same packet again after the driver)");
          assert.equal(decap.packets, 0, `BPF decapsulated VXLAN from the stranger ${stranger.ip} (${moved(before, after)})`);
          assert.equal(delivered.packets, 0, `BPF delivered VXLAN from the stranger ${stranger.ip} into a pod (${moved(before, after)})`);
          // What the kernel did with it: the vxlan device took it and the stack routed it to the pod
          // (from_overlay sees it after the driver, counts rx_unknown again, and never delivers it itself).
          assert.equal(byDriver.packets, 0, `decap_stack moved ${fmt(byDriver)}: counted as a peer's packet`);
          assert.equal(inPod, N, `the pod got ${inPod} of the ${N} echo requests through the kernel's vxlan device and stack`);
        }));
      }

      if (!mode.fastPath && ul.offloads) {
        for (const where of ["sending", "receiving"] as const) {
          test(`an iptables FORWARD DROP between two pods is honoured with the rule on the ${where} node`, () => withDiagnostics(tc, async () => {
            const [a, b] = [side(0), side(1)];
            const ruleNode = where === "sending" ? a.node : b.node;
            // Written the way users write them: about the overlay device, as with kernel VXLAN
            // (the decapsulated packet enters the stack as flannel.1's).
            const dir = where === "sending" ? ["-o", vxlanDevice(vni)] : ["-i", vxlanDevice(vni)];
            const rule = [...dir, "-s", `${a.pod.ip}/32`, "-d", `${b.pod.ip}/32`, "-j", "DROP"];
            const ipt = (...args: string[]) => run("iptables", ["-w", "5", ...args], { netns: ruleNode.host.netns });
            const before = await tc.maps(b.node);
            await ipt("-I", "FORWARD", ...rule);
            const blocked = await (async () => {
              try {
                const p = await ping(a.pod.netns, b.pod.ip, { count: 3, waitS: 1 });
                const c = await tcpConnect(a.pod.netns, b.pod.ip, 7, { timeoutMs: 1500 });
                const listing = (await ipt("-L", "FORWARD", "-v", "-x", "-n")).stdout;
                const line = listing.split("\n").find((l) => l.includes("DROP") && l.includes(a.pod.ip) && l.includes(b.pod.ip)) ?? "";
                return { p, c, hits: Number(line.trim().split(/\s+/)[0] ?? 0), listing };
              } finally {
                await ipt("-D", "FORWARD", ...rule);
              }
            })();
            const { p, c, hits } = blocked;
            const after = await tc.maps(b.node);
            assert.equal(p.received, 0, `pings passed a FORWARD DROP on the ${where} node:\n${p.raw}`);
            assert.equal(c.connected, false, `TCP passed a FORWARD DROP on the ${where} node`);
            assert.ok(hits >= 3, `the DROP rule on the ${where} node counted ${hits} packets:\n${blocked.listing}`);
            if (where === "receiving") {
              // the packets were decapsulated by BPF and then dropped by netfilter
              const d = delta(before, after, "decap");
              assert.ok(d.packets >= 3, `the receiver's decap moved ${fmt(d)}: the dropped packets did not come through the BPF decap (${moved(before, after)})`);
            }
            assert.equal((await ping(a.pod.netns, b.pod.ip, { count: 2 })).received, 2, "pods unreachable after the rule was removed");
          }));
        }
      }
    });
  }
}

// ---------------------------------------------------------------------------
// 2) Mixed clusters

describe("mixed cluster: kernel (stock flannel behaviour) + bpf + bpf --fast-path, BPF encap", () => {
  let tc: TwillCluster;
  before(async () => {
    tc = await TwillCluster.create({
      hosts: 3, podsPerHost: 2,
      nodes: [{ dataplane: "kernel" }, { dataplane: "bpf" }, { dataplane: "bpf", fastPath: true }],
    });
  });
  after(async () => tc && (await tc.destroy()));

  test("all pairs reach each other both ways (ICMP and TCP)", () => withDiagnostics(tc, async () => {
    const f = [...(await tc.allPairs()), ...(await tc.allPairsTcp())];
    assert.deepEqual(f, []);
  }));

  for (const [i, sent, received] of [[1, "encap", "decap"], [2, "encap_fast", "delivered"]] as const) {
    test(`kernel node <-> bpf node h${i + 1}: 8 MB both ways, the bpf side encapsulates and decapsulates in BPF`, () => withDiagnostics(tc, async () => {
      const k = tc.nodes[0]!, n = tc.nodes[i]!;
      const [kp, np] = [k.host.pods[0]!, n.host.pods[0]!];
      const size = 8 * 1024 * 1024;
      const kernelPeer = cidrNetwork(tc.subnet(k));
      const out = await transfer(tc, np, kp, size);
      const back = await transfer(tc, kp, np, size);
      const id = peerId(out.after[i]!, kernelPeer);
      console.log(`h${i + 1} -> kernel: ${moved(out.before[i]!, out.after[i]!, id)}; kernel -> h${i + 1}: ${moved(back.before[i]!, back.after[i]!, id)}`);
      const s = delta(out.before[i]!, out.after[i]!, sent, id);
      const r = delta(back.before[i]!, back.after[i]!, received, id);
      assert.ok(s.bytes >= size, `h${i + 1} -> kernel h1: ${sent} for peer ${kernelPeer} moved ${fmt(s)}`);
      assert.ok(r.bytes >= size, `kernel h1 -> h${i + 1}: ${received} for peer ${kernelPeer} moved ${fmt(r)}`);
      const dev = delta(out.before[i]!, out.after[i]!, "encap_device", id);
      assert.ok(nearZero(dev, s.packets), `h${i + 1} -> kernel: encap_device moved ${fmt(dev)}`);
      for (const name of ["decap_stack", "rx_fallback", "rx_unknown"]) {
        const d = delta(back.before[i]!, back.after[i]!, name);
        assert.ok(nearZero(d, r.packets), `kernel -> h${i + 1}: ${name} moved ${fmt(d)}`);
      }
    }));
  }

  test("on the wire, twill's VXLAN and the kernel's look alike (VNI, port, VTEP MACs)", () => withDiagnostics(tc, async () => {
    const side = (i: number): Side => ({ tc, node: tc.nodes[i]!, pod: tc.nodes[i]!.host.pods[0]! });
    const [k, b, f] = [side(0), side(1), side(2)];
    const { records, raw } = await captureVxlan(k.node.host.netns, "eth0", PORT, async () => {
      for (const x of [b, f]) assert.equal((await ping(x.pod.netns, k.pod.ip, { count: 4, intervalMs: 20 })).received, 4);
    });
    for (const x of [b, f]) {
      assertWireFormat(records, x, k, 1, raw); // twill's requests
      assertWireFormat(records, k, x, 1, raw); // the kernel's replies
    }
  }));
});

describe("--encap device (the vxlan driver) and --encap bpf in one cluster", () => {
  let tc: TwillCluster;
  const device = ["--encap", "device"];
  before(async () => {
    tc = await TwillCluster.create({
      hosts: 3, podsPerHost: 1,
      nodes: [{ dataplane: "bpf", extraArgs: device }, { dataplane: "bpf", fastPath: true, extraArgs: device }, { dataplane: "bpf" }],
    });
  });
  after(async () => tc && (await tc.destroy()));

  test("all pairs reach each other both ways (ICMP and TCP)", () => withDiagnostics(tc, async () => {
    const f = [...(await tc.allPairs()), ...(await tc.allPairsTcp())];
    assert.deepEqual(f, []);
  }));

  test("8 MB both ways between each device node and the bpf node; device nodes use the vxlan driver only", () => withDiagnostics(tc, async () => {
    const size = 8 * 1024 * 1024;
    const bpfNode = tc.nodes[2]!;
    for (const i of [0, 1]) {
      const n = tc.nodes[i]!;
      const [np, bp] = [n.host.pods[0]!, bpfNode.host.pods[0]!];
      const out = await transfer(tc, np, bp, size);
      const back = await transfer(tc, bp, np, size);
      const what = `${n.host.name} (--encap device${n.opts.fastPath ? " --fast-path" : ""})`;
      console.log(`${what} -> h3: ${moved(out.before[i]!, out.after[i]!)} | h3: ${moved(out.before[2]!, out.after[2]!)}`);
      console.log(`h3 -> ${what}: ${moved(back.before[i]!, back.after[i]!)} | h3: ${moved(back.before[2]!, back.after[2]!)}`);
      const dev = delta(out.before[i]!, out.after[i]!, "encap_device");
      const bpfEncap = deltaSum(out.before[i]!, out.after[i]!, ["encap", "encap_fast"]);
      assert.ok(dev.bytes >= size, `${what} -> h3: encap_device moved ${fmt(dev)}`);
      assert.equal(bpfEncap.packets, 0, `${what} -> h3: BPF encapsulated ${fmt(bpfEncap)} under --encap device`);
      const bpfDecap = delta(back.before[i]!, back.after[i]!, "decap");
      const rx = deltaSum(back.before[i]!, back.after[i]!, ["decap_stack", "delivered"]);
      assert.equal(bpfDecap.packets, 0, `h3 -> ${what}: BPF decapsulated ${fmt(bpfDecap)} under --encap device`);
      assert.ok(rx.bytes >= size, `h3 -> ${what}: decap_stack + delivered moved ${fmt(rx)}`);
      if (n.opts.fastPath) {
        const d = delta(back.before[i]!, back.after[i]!, "delivered");
        assert.ok(d.bytes >= size, `h3 -> ${what}: the fast path delivered ${fmt(d)} into the pod`);
      }
      // the bpf node encapsulates towards, and decapsulates from, the device nodes in BPF
      const id = peerId(out.after[2]!, cidrNetwork(tc.subnet(n)));
      const got = delta(out.before[2]!, out.after[2]!, "decap", id);
      const sent = delta(back.before[2]!, back.after[2]!, "encap", id);
      assert.ok(got.bytes >= size, `${what} -> h3: h3's decap for that peer moved ${fmt(got)}`);
      assert.ok(sent.bytes >= size, `h3 -> ${what}: h3's encap for that peer moved ${fmt(sent)}`);
    }
  }));
});
