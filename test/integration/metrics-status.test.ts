/**
 * Per-peer counters on /metrics and the state CLI (`twill status`, `twill maps`):
 *
 *   h1 [p1] bpf --fast-path    h2 [p1] bpf --fast-path    h3 [p1] kernel (flannel's entries)
 *        flannel.1 (external)       flannel.1 (external)       flannel.1 (vxlan id 1)
 *        eth0 192.168.50.11         .12                        .13   (one L2 segment)
 *
 * - Traffic from h1/p1 to h2/p1 only (50 pings, a 1 MiB TCP transfer) moves
 *   h1's counters of peer h2 on path vxlan (tx and rx) by at least that
 *   much, and h2's of peer h1; the counters of peer h3 and of the direct
 *   path do not move, nor any drop.
 * - /metrics of every node parses as strict Prometheus text; the kernel node
 *   says it has no per-peer counters and exports none.
 * - `twill status` (run with the daemon's own flags) shows 2 peers, ok, no
 *   drift, exit 0, on the bpf and the kernel node. With the daemon stopped,
 *   entries broken by hand are reported (missing, changed, stale), exit 1;
 *   the restarted daemon repairs them and counts the repairs.
 */
import { test, after, before, describe } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { TwillCluster, TWILL, type TwillNode } from "../lib/twill.js";
import { run } from "../lib/exec.js";
import { cidrNetwork } from "../lib/cluster.js";
import { ping, tcpTransfer } from "../lib/traffic.js";
import { parsePrometheusText, sampleValue, type Family } from "../lib/promtext.js";
import { PeerKind, encodeLpmKey, encodePeer } from "../../src/bpf/layout.js";
import { parseIP, parsePrefix } from "../../src/net/ip.js";
import type { NodeStatus } from "../../src/status.js";

const hex = (b: Buffer): string[] => [...b].map((x) => x.toString(16).padStart(2, "0"));
/** Rows in status order: by subnet, numerically. */
const bySubnet = <T extends unknown[]>(rows: T[]): T[] => [...rows].sort((a, b) => String(a[0]).localeCompare(String(b[0]), "en", { numeric: true }));

describe("per-peer metrics and twill status (h1, h2 bpf fast path; h3 kernel)", () => {
  let tc: TwillCluster;
  let h1: TwillNode, h2: TwillNode, h3: TwillNode;
  let subnet: (n: TwillNode) => string;
  before(async () => {
    tc = await TwillCluster.create({
      hosts: 3, podsPerHost: 1,
      nodes: [{ dataplane: "bpf", fastPath: true }, { dataplane: "bpf", fastPath: true }, { dataplane: "kernel" }],
    });
    [h1, h2, h3] = tc.nodes as [TwillNode, TwillNode, TwillNode];
    subnet = (n) => cidrNetwork(tc.subnet(n));
  });
  after(async () => tc && (await tc.destroy()));

  const scrape = async (n: TwillNode): Promise<Map<string, Family>> => parsePrometheusText(await tc.http(n, "/metrics"));
  /** `twill status` with the daemon's own flags, in the node's namespace. */
  const status = async (n: TwillNode, json = true): Promise<{ code: number; out: string; s?: NodeStatus }> => {
    const r = await run(process.execPath, [TWILL, "status", ...(json ? ["--json"] : []), ...tc.args(n).slice(1)], { netns: n.host.netns, allowFail: true });
    if (r.code > 1) assert.fail(`twill status on ${n.host.name} exited ${r.code}: ${r.stderr}`);
    return { code: r.code, out: r.stdout, ...(json ? { s: JSON.parse(r.stdout) as NodeStatus } : {}) };
  };

  test("traffic h1/p1 -> h2/p1 moves exactly the counters of peer h2 on path vxlan", async () => {
    const [a, b] = [h1.host.pods[0]!, h2.host.pods[0]!];
    const peerSeries = (f: Map<string, Family>, name: string) =>
      new Map((f.get(name)?.samples ?? []).map((x) => [`${x.labels.peer_subnet} ${x.labels.path} ${x.labels.direction ?? x.labels.reason}`, x.value]));
    const before1 = await scrape(h1), before2 = await scrape(h2);
    const p = await ping(a.netns, b.ip, { count: 50, intervalMs: 10 });
    assert.equal(p.received, 50, p.raw);
    const MiB = 1024 * 1024;
    const t = await tcpTransfer(a.netns, b.netns, b.ip, MiB);
    assert.equal(t.receivedSha256, t.sentSha256);
    const after1 = await scrape(h1), after2 = await scrape(h2);

    const delta = (b0: Map<string, Family>, a0: Map<string, Family>, name: string): Map<string, number> => {
      const x = peerSeries(b0, name), y = peerSeries(a0, name);
      return new Map([...new Set([...x.keys(), ...y.keys()])].map((k) => [k, (y.get(k) ?? 0) - (x.get(k) ?? 0)]));
    };
    const pk = delta(before1, after1, "twill_peer_packets_total");
    const by = delta(before1, after1, "twill_peer_bytes_total");
    const s2 = subnet(h2), s3 = subnet(h3);
    console.log(`h1: per-peer packet deltas ${JSON.stringify(Object.fromEntries(pk))}`);
    assert.ok(pk.get(`${s2} vxlan tx`)! >= 50 + 1, `h1 -> h2 vxlan tx packets moved by ${pk.get(`${s2} vxlan tx`)}`);
    assert.ok(by.get(`${s2} vxlan tx`)! >= MiB + 50 * 84, `h1 -> h2 vxlan tx bytes moved by ${by.get(`${s2} vxlan tx`)}`);
    assert.ok(pk.get(`${s2} vxlan rx`)! >= 50 + 1, `h2 -> h1 vxlan rx packets moved by ${pk.get(`${s2} vxlan rx`)}`);
    for (const [k, v] of [...pk, ...by]) {
      if (k.startsWith(`${s2} vxlan`)) continue;
      assert.equal(v, 0, `h1: ${k} moved by ${v}; only peer h2 on vxlan should`);
    }
    assert.ok(pk.has(`${s3} vxlan tx`), "peer h3 has series (at 0 moved)");
    for (const [k, v] of delta(before1, after1, "twill_peer_drops_total")) assert.equal(v, 0, `h1 drop ${k} moved by ${v}`);
    // The per-peer series add up to the node-wide counters the programs keep.
    const dp = (f: Map<string, Family>, c: string) => sampleValue(f, "twill_datapath_packets_total", { counter: c }) ?? 0;
    const sent = dp(after1, "encap") + dp(after1, "encap_fast") - dp(before1, "encap") - dp(before1, "encap_fast");
    assert.equal(sent, pk.get(`${s2} vxlan tx`), "h1: datapath encap + encap_fast moved as much as peer h2's tx");
    // The receiving side: h2 counts peer h1.
    const s1 = subnet(h1);
    const pk2 = delta(before2, after2, "twill_peer_packets_total");
    assert.ok(pk2.get(`${s1} vxlan rx`)! >= 50 + 1, `h2: rx from h1 moved by ${pk2.get(`${s1} vxlan rx`)}`);
    assert.equal(pk2.get(`${s3} vxlan rx`) ?? 0, 0);
    assert.equal(pk2.get(`${s3} vxlan tx`) ?? 0, 0);
  });

  test("/metrics of every node is valid Prometheus text; the kernel node has no per-peer series", async () => {
    for (const n of [h1, h2]) {
      const f = await scrape(n);
      assert.equal(sampleValue(f, "twill_peer_stats_available"), 1);
      assert.equal(sampleValue(f, "twill_bpf_map_entries", { map: "twill_peers" }), 4, `${n.host.name}: 2 peers + own subnet + cluster network`);
      assert.equal(sampleValue(f, "twill_bpf_map_capacity", { map: "twill_peers" }), 131072, "--peer-capacity's default");
      assert.ok((sampleValue(f, "twill_reconcile_runs_total", { result: "ok" }) ?? 0) >= 1);
      assert.ok((sampleValue(f, "twill_reconcile_duration_seconds_count") ?? 0) >= 1);
      assert.equal(sampleValue(f, "twill_leases", { state: "peer" }), 2);
      assert.equal(sampleValue(f, "twill_leases", { state: "own" }), 1);
      assert.equal(sampleValue(f, "twill_build_info", { dataplane: "bpf" }), 1);
      assert.equal(sampleValue(f, "twill_vxlan_encap_info", { mode: "bpf", reason: "" }), 1, `${n.host.name}: VXLAN in BPF`);
      assert.equal(sampleValue(f, "twill_bpf_map_entries", { map: "twill_remotes" }), 2, `${n.host.name}: one remote per peer host`);
      assert.ok(f.get("twill_peer_packets_total")!.samples.every((x) => /^\d+\.\d+\.\d+\.\d+$/.test(x.labels.peer_ip!)), "peer_ip is the public IP");
    }
    const k = await scrape(h3);
    assert.equal(sampleValue(k, "twill_peer_stats_available"), 0);
    assert.equal(sampleValue(k, "twill_build_info", { dataplane: "kernel" }), 1);
    for (const name of ["twill_peer_packets_total", "twill_peer_bytes_total", "twill_peer_drops_total", "twill_datapath_packets_total", "twill_bpf_map_entries"]) {
      assert.equal(k.get(name)?.samples.length ?? 0, 0, `kernel node exports ${name}`);
    }
    assert.equal(sampleValue(k, "twill_leases", { state: "peer" }), 2);
  });

  test("twill status: 2 peers, ok, no drift, exit 0 (bpf with counters, kernel without); twill maps prints tables", async () => {
    const r1 = await status(h1);
    assert.equal(r1.code, 0, r1.out);
    const s = r1.s!;
    assert.equal(s.dataplane, "bpf");
    assert.equal(s.lease?.subnet, subnet(h1));
    assert.equal(s.lease?.publicIP, h1.host.underlayIP);
    assert.deepEqual(s.drift, []);
    assert.deepEqual(s.peers.map((p) => [p.subnet, p.publicIP, p.path, p.state]), bySubnet([
      [subnet(h2), h2.host.underlayIP, "vxlan", "ok"], [subnet(h3), h3.host.underlayIP, "vxlan", "ok"],
    ]));
    const maps = await tc.maps(h1);
    for (const p of s.peers) assert.equal(p.vtepMAC, maps.peers.find((e) => e.prefix === p.subnet)!.vtepMAC);
    const toH2 = s.peers.find((p) => p.subnet === subnet(h2))!;
    assert.ok(toH2.tx!.packets >= 51 && toH2.tx!.bytes >= 1024 * 1024, JSON.stringify(toH2));
    const f = await scrape(h1);
    assert.ok(toH2.tx!.packets <= sampleValue(f, "twill_peer_packets_total", { peer_subnet: subnet(h2), path: "vxlan", direction: "tx" })!, "status and /metrics read the same counters");

    const table = await status(h1, false);
    console.log(`twill status on h1:\n${table.out}`);
    assert.equal(table.code, 0);
    assert.match(table.out, /^SUBNET\s+PUBLIC IP\s+VTEP MAC\s+PATH\s+TX PKTS\s+TX BYTES\s+RX PKTS\s+RX BYTES\s+STATE$/m);
    assert.match(table.out, new RegExp(`^${subnet(h2).replace(/\./g, "\\.")}\\s+${h2.host.underlayIP.replace(/\./g, "\\.")}\\s+\\S+\\s+vxlan\\s+\\d+.*ok$`, "m"));
    assert.match(table.out, /No drift/);

    const r3 = await status(h3);
    assert.equal(r3.code, 0, r3.out);
    assert.equal(r3.s!.dataplane, "kernel");
    assert.equal(r3.s!.statsAvailable, false);
    assert.deepEqual(r3.s!.drift, []);
    assert.deepEqual(r3.s!.peers.map((p) => [p.subnet, p.publicIP, p.state, p.tx]), bySubnet([
      [subnet(h1), h1.host.underlayIP, "ok", undefined], [subnet(h2), h2.host.underlayIP, "ok", undefined],
    ]));
    const t3 = await status(h3, false);
    console.log(`twill status on h3 (kernel):\n${t3.out}`);
    assert.match(t3.out, /no per-peer counters/);

    const m = await run(process.execPath, [TWILL, "maps", "--bpf-pin-dir", h1.pinDir], { netns: h1.host.netns });
    console.log(`twill maps on h1:\n${m.stdout}`);
    assert.match(m.stdout, /^twill_peers \(4 entries\)$/m);
    assert.match(m.stdout, new RegExp(`^${subnet(h2).replace(/\./g, "\\.")}\\s+vxlan\\s+${h2.host.underlayIP.replace(/\./g, "\\.")}\\s`, "m"));
    assert.match(m.stdout, /^\S+\s+\d+\s+encap_fast\s+\d+\s+\d+$/m);
  });

  test("bpf drift by hand (daemon stopped): missing, changed and stale entries, exit 1; the restarted daemon repairs and counts them", async () => {
    await tc.stop(h1, "SIGTERM");
    const pin = join(h1.pinDir, "maps", "twill_peers");
    const maps = await tc.maps(h1);
    const e2 = maps.peers.find((e) => e.prefix === subnet(h2))!;
    await run("bpftool", ["map", "delete", "pinned", pin, "key", "hex", ...hex(encodeLpmKey(parsePrefix(subnet(h3))))]);
    const wrongMAC = "02:00:00:00:00:99";
    await run("bpftool", ["map", "update", "pinned", pin, "key", "hex", ...hex(encodeLpmKey(parsePrefix(subnet(h2)))),
      "value", "hex", ...hex(encodePeer({ kind: PeerKind.Vxlan, remote: parseIP(e2.remote!), vtepMAC: wrongMAC, vni: 1, id: e2.id }))]);
    const stale = "10.244.250.0/24";
    await run("bpftool", ["map", "update", "pinned", pin, "key", "hex", ...hex(encodeLpmKey(parsePrefix(stale))),
      "value", "hex", ...hex(encodePeer({ kind: PeerKind.Vxlan, remote: parseIP("192.168.50.99"), vtepMAC: "02:00:00:00:00:98", vni: 1, id: 999 }))]);

    const r = await status(h1);
    assert.equal(r.code, 1, r.out);
    const byState = Object.fromEntries(r.s!.peers.map((p) => [p.subnet, p.state]));
    assert.deepEqual(byState, { [subnet(h2)]: "changed", [subnet(h3)]: "missing", [stale]: "stale" });
    assert.deepEqual(r.s!.drift.map((d) => [d.kind, d.subject]).sort(), [["changed", subnet(h2)], ["missing", subnet(h3)], ["stale", stale]]);
    assert.match(r.s!.drift.find((d) => d.kind === "changed")!.detail, new RegExp(`VTEP MAC is ${wrongMAC}`));
    const t = await status(h1, false);
    console.log(`twill status on h1 with drift:\n${t.out}`);
    assert.equal(t.code, 1);
    assert.match(t.out, /DRIFT: 1 missing, 1 stale, 1 changed/);

    await tc.start(h1);
    const f = await scrape(h1);
    assert.deepEqual(["added", "updated", "removed"].map((kind) => sampleValue(f, "twill_drift_repairs_total", { kind })), [1, 1, 1]);
    const again = await status(h1);
    assert.equal(again.code, 0, again.out);
    assert.deepEqual(again.s!.peers.map((p) => p.state), ["ok", "ok"]);
  });

  test("kernel drift by hand (daemon stopped): a neighbour deleted, a stale route, exit 1; repaired after restart", async () => {
    await tc.stop(h3, "SIGTERM");
    const gw1 = subnet(h1).split("/")[0]!;
    await run("ip", ["neigh", "del", gw1, "dev", "flannel.1"], { netns: h3.host.netns });
    await run("ip", ["route", "add", "10.244.251.0/24", "via", "10.244.251.0", "dev", "flannel.1", "onlink"], { netns: h3.host.netns });
    const r = await status(h3);
    assert.equal(r.code, 1, r.out);
    assert.deepEqual(Object.fromEntries(r.s!.peers.map((p) => [p.subnet, p.state])), { [subnet(h1)]: "changed", [subnet(h2)]: "ok", "10.244.251.0/24": "stale" });
    assert.match(r.s!.drift.find((d) => d.subject === subnet(h1))!.detail, new RegExp(`no neighbour ${gw1.replace(/\./g, "\\.")}`));
    await tc.start(h3);
    const again = await status(h3);
    assert.equal(again.code, 0, again.out);
  });
});
