/**
 * Per-peer statistics and the /metrics registry, without a kernel: what each
 * counter means for a peer, the series cap ("other"), node-wide totals that
 * never go down, and the exposition text of a daemon's registry fed by a
 * fake dataplane — parsed by a strict Prometheus text parser.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { COUNTERS } from "../../src/bpf/layout.js";
import {
  PEER_SERIES_LIMIT, ROLES, capPeers, peerTraffic, total,
  type DataplaneStats, type PeerEntry, type StatTable, type Sum,
} from "../../src/peerstats.js";
import { createMetrics, type StatsSource } from "../../src/metrics.js";
import { MonotonicTotals } from "../../src/metrics/totals.js";
import { StatRows } from "../../src/metrics/statrows.js";
import { parsePrometheusText, sampleValue } from "../lib/promtext.js";
import { humanBytes, table } from "../../src/status.js";

const s = (packets: number, bytes: number): Sum => ({ packets: BigInt(packets), bytes: BigInt(bytes) });
const stats = (rows: Array<[number, string, number, number]>): StatTable => {
  const t: StatTable = new Map();
  for (const [id, name, p, b] of rows) {
    if (!t.has(id)) t.set(id, new Map());
    t.get(id)!.set(name, s(p, b));
  }
  return t;
};
const peer = (i: number, kind = "vxlan"): PeerEntry => ({
  prefix: `10.${Math.floor(i / 256)}.${i % 256}.0/24`, kind, remote: `192.168.${Math.floor(i / 256)}.${i % 256}`, vtepMAC: "02:00:00:00:00:01", vni: 1, id: i,
});

test("every counter of enum twill_counter has a role; traffic counters say their path and direction", () => {
  assert.deepEqual(Object.keys(ROLES).sort(), [...COUNTERS].sort());
  const traffic = Object.entries(ROLES).filter(([, r]) => r.kind === "traffic").map(([n, r]) => `${n}:${r.kind === "traffic" ? `${r.direction}/${r.path}` : ""}`);
  assert.deepEqual(traffic.sort(), [
    "decap:rx/vxlan", "decap_stack:rx/vxlan", "delivered:rx/vxlan", "direct:tx/direct", "encap:tx/vxlan", "encap_device:tx/vxlan", "encap_fast:tx/vxlan",
    "rx_direct:rx/direct", "stack_nat:rx/peer",
  ]);
});

test("peerTraffic joins peers and counters by id, sums paths, keeps drops by reason", () => {
  const peers = [peer(1), peer(2, "direct"), { prefix: "10.244.0.0/16", kind: "cluster", vni: 0, id: 0 }, { prefix: "10.0.9.0/24", kind: "local", vni: 0, id: 0 }];
  const t = peerTraffic(peers, stats([
    [1, "encap", 10, 1000], [1, "encap_fast", 5, 500], [1, "delivered", 7, 700], [1, "decap_stack", 1, 100], [1, "stack_nat", 2, 200],
    [1, "stack_mtu", 3, 4500], [1, "drop_encap", 1, 60],
    [2, "direct", 4, 400], [2, "rx_direct", 6, 600], [2, "stack_nat", 1, 50],
    [0, "drop_unsupported", 9, 900], [77, "encap", 1, 1], // no peer, and an id no entry has
  ]));
  assert.equal(t.length, 2, "local and cluster entries are not peers");
  const [a, b] = t;
  assert.equal(a!.path, "vxlan");
  assert.deepEqual(a!.tx, { vxlan: s(15, 1500), direct: s(0, 0) });
  assert.deepEqual(a!.rx, { vxlan: s(10, 1000), direct: s(0, 0) }, "stack_nat is rx on the peer's path");
  assert.deepEqual([...a!.drops], [["mtu", s(3, 4500)], ["encap", s(1, 60)]]);
  assert.deepEqual(b!.tx, { vxlan: s(0, 0), direct: s(4, 400) });
  assert.deepEqual(b!.rx, { vxlan: s(0, 0), direct: s(7, 650) });
  assert.deepEqual(total(a!, "tx"), s(15, 1500));
});

test("capPeers keeps the busiest peers and sums the rest as \"other\"", () => {
  const peers = Array.from({ length: PEER_SERIES_LIMIT + 3 }, (_, i) => peer(i + 1));
  // Peer i sends i bytes; peers 1..3 are the quietest.
  const t = peerTraffic(peers, stats(peers.map((p) => [p.id, "encap", 1, p.id] as [number, string, number, number])));
  const c = capPeers(t);
  assert.equal(c.shown.length, PEER_SERIES_LIMIT);
  assert.equal(c.aggregated, 3);
  assert.equal(c.shown[0]!.subnet, peers[peers.length - 1]!.prefix, "busiest first");
  assert.ok(!c.shown.some((p) => [1, 2, 3].some((i) => p.subnet === peer(i).prefix)));
  assert.equal(c.other!.subnet, "other");
  assert.deepEqual(c.other!.tx.vxlan, s(3, 1 + 2 + 3));
  // Ties are broken by subnet, so every scrape picks the same peers.
  const tied = peerTraffic([peer(5), peer(4), peer(6)], new Map());
  assert.deepEqual(capPeers(tied, 2).shown.map((p) => p.subnet), [peer(4).prefix, peer(5).prefix]);
  assert.equal(capPeers(tied, 3).other, undefined);
});

test("node-wide totals never go down when a peer's counters are deleted or re-created", () => {
  const m = new MonotonicTotals();
  let t = m.update(StatRows.of([[1, "encap", 10, 100], [2, "encap", 5, 50], [0, "miss", 1, 1]]));
  assert.deepEqual(t.get("encap"), s(15, 150));
  assert.deepEqual(t.get("drop_vni"), s(0, 0), "every counter has a total");
  t = m.update(StatRows.of([[1, "encap", 12, 120], [0, "miss", 1, 1]])); // peer 2 removed
  assert.deepEqual(t.get("encap"), s(17, 170));
  t = m.update(StatRows.of([[1, "encap", 3, 30], [0, "miss", 2, 2]])); // peer 1 re-created since
  assert.deepEqual(t.get("encap"), s(20, 200));
  assert.deepEqual(t.get("miss"), s(2, 2));
});

/** A dataplane with `n` vxlan peers, peer i having sent i packets of 100 bytes. */
function fakeBpf(n: number): StatsSource & { reads: number } {
  const peers = Array.from({ length: n }, (_, i) => peer(i + 1));
  const src = {
    reads: 0,
    stats(): DataplaneStats {
      src.reads++;
      return {
        peers,
        counters: StatRows.of([...peers.map((p) => [p.id, "encap_fast", p.id, p.id * 100] as const), [1, "drop_encap", 2, 120], [0, "drop_unsupported", 4, 400]]),
        maps: [{ name: "twill_peers", entries: n + 2, capacity: 65536 }, { name: "twill_stats", entries: n + 2, capacity: 262144 }],
      };
    },
  };
  return src;
}

test("a bpf node's /metrics: per-peer series, datapath totals, map occupancy; valid exposition text; one map read per scrape", async () => {
  const src = fakeBpf(3);
  const m = createMetrics("1.2.3", "bpf", () => src);
  await m.reconcile(async () => ({ added: 2, updated: 0, removed: 1, drift: [] }));
  await assert.rejects(m.reconcile(async () => { throw new Error("boom"); }));
  m.leases.set({ state: "peer" }, 3);
  const fams = parsePrometheusText(await m.registry.metrics());
  assert.equal(src.reads, 1, "one read of the maps serves the whole scrape");
  const v = (name: string, labels: Record<string, string> = {}) => sampleValue(fams, name, labels);
  assert.equal(v("twill_peer_stats_available"), 1);
  assert.equal(v("twill_peer_packets_total", { peer_subnet: "10.0.2.0/24", peer_ip: "192.168.0.2", path: "vxlan", direction: "tx" }), 2);
  assert.equal(v("twill_peer_bytes_total", { peer_subnet: "10.0.3.0/24", path: "vxlan", direction: "tx" }), 300);
  assert.equal(v("twill_peer_packets_total", { peer_subnet: "10.0.3.0/24", path: "vxlan", direction: "rx" }), 0, "the peer's path has series from the start");
  assert.equal(v("twill_peer_packets_total", { peer_subnet: "10.0.3.0/24", path: "direct" }), undefined, "no series for a path that never counted");
  assert.equal(v("twill_peer_drops_total", { peer_subnet: "10.0.1.0/24", reason: "encap" }), 2);
  assert.equal(v("twill_datapath_packets_total", { counter: "encap_fast" }), 6);
  assert.equal(v("twill_datapath_packets_total", { counter: "drop_unsupported" }), 4);
  assert.equal(v("twill_datapath_bytes_total", { counter: "drop_vni" }), 0);
  assert.equal(v("twill_bpf_map_entries", { map: "twill_peers" }), 5);
  assert.equal(v("twill_bpf_map_capacity", { map: "twill_stats" }), 262144);
  assert.equal(v("twill_reconcile_runs_total", { result: "ok" }), 1);
  assert.equal(v("twill_reconcile_runs_total", { result: "error" }), 1);
  assert.equal(v("twill_reconcile_duration_seconds_count"), 2, "failed reconciles are timed too");
  assert.equal(v("twill_drift_repairs_total", { kind: "added" }), 2);
  assert.equal(v("twill_drift_repairs_total", { kind: "updated" }), 0);
  assert.equal(v("twill_heap_compaction_windows_total"), 0, "the counter exists from the start");
  for (const result of ["unchanged", "patched", "diffed"]) assert.equal(v("twill_lease_relists_total", { result }), 0, `twill_lease_relists_total{result="${result}"} exists from the start`);
  assert.equal(v("twill_build_info", { version: "1.2.3", dataplane: "bpf" }), 1);
  for (const f of fams.values()) {
    assert.ok(f.help && f.help.length > 10, `${f.name} has help text`);
    if (f.name.startsWith("twill_")) {
      assert.equal(f.type === "counter", f.name.endsWith("_total"), `${f.name}: counters and only counters end in _total`);
    }
  }
  assert.equal(fams.get("twill_reconcile_duration_seconds")!.type, "histogram");
  // A second scrape reads the maps again.
  await new Promise((r) => setImmediate(r));
  await m.registry.metrics();
  assert.equal(src.reads, 2);
  m.heapCompactions.inc();
  assert.equal(sampleValue(parsePrometheusText(await m.registry.metrics()), "twill_heap_compaction_windows_total", {}), 1);
});

test("more peers than the cap: the busiest by name, the rest as peer_subnet=\"other\"", async () => {
  const n = PEER_SERIES_LIMIT + 10;
  const m = createMetrics("1", "bpf", () => fakeBpf(n));
  const fams = parsePrometheusText(await m.registry.metrics());
  const tx = fams.get("twill_peer_packets_total")!.samples.filter((x) => x.labels.direction === "tx");
  assert.equal(new Set(tx.map((x) => x.labels.peer_subnet)).size, PEER_SERIES_LIMIT + 1);
  // Peers 1..10 are the quietest: 1+...+10 packets.
  assert.equal(sampleValue(fams, "twill_peer_packets_total", { peer_subnet: "other", peer_ip: "other", path: "vxlan", direction: "tx" }), 55);
  assert.equal(sampleValue(fams, "twill_peer_stats_aggregated_peers"), 10);
  assert.equal(sampleValue(fams, "twill_peer_drops_total", { peer_subnet: "other", reason: "encap" }), 2);
});

test("a scrape of 20,000 peers lets the event loop run meanwhile, and counts them all", async () => {
  const n = 20_000;
  const m = createMetrics("1", "bpf", () => fakeBpf(n));
  let ticks = 0;
  const tick = setInterval(() => ticks++, 0);
  const text = await m.registry.metrics().finally(() => clearInterval(tick));
  assert.ok(ticks >= 2, `a timer ran ${ticks} times during the scrape`);
  const fams = parsePrometheusText(text);
  // Peers 1..n-500 are summed as "other": 1 + ... + (n - 500) packets.
  const rest = n - PEER_SERIES_LIMIT;
  assert.equal(sampleValue(fams, "twill_peer_packets_total", { peer_subnet: "other", path: "vxlan", direction: "tx" }), (rest * (rest + 1)) / 2);
  assert.equal(sampleValue(fams, "twill_peer_stats_aggregated_peers"), rest);
  assert.equal(sampleValue(fams, "twill_peer_bytes_total", { peer_subnet: peer(n).prefix, path: "vxlan", direction: "tx" }), n * 100, "the busiest peer by name");
  assert.equal(fams.get("twill_peer_packets_total")!.samples.length, PEER_SERIES_LIMIT * 2 + 4, "tx and rx on vxlan for each shown peer; both paths for other");
});

test("a kernel node's /metrics says it has no per-peer counters and has no per-peer or map series", async () => {
  const m = createMetrics("1", "kernel", () => ({}));
  const fams = parsePrometheusText(await m.registry.metrics());
  assert.equal(sampleValue(fams, "twill_peer_stats_available"), 0);
  for (const name of ["twill_peer_packets_total", "twill_peer_bytes_total", "twill_peer_drops_total", "twill_datapath_packets_total", "twill_bpf_map_entries"]) {
    assert.equal(fams.get(name)?.samples.length ?? 0, 0, name);
  }
  assert.match(fams.get("twill_peer_stats_available")!.help!, /kernel/);
});

test("a failing map read is counted by code and the scrape still succeeds", async () => {
  const m = createMetrics("1", "bpf", () => ({ stats() { throw Object.assign(new Error("gone"), { code: "ERR_BPF_MAP" }); } }));
  const fams = parsePrometheusText(await m.registry.metrics());
  assert.equal(sampleValue(fams, "twill_errors_total", { code: "ERR_BPF_MAP" }), 1);
  assert.equal(fams.get("twill_peer_packets_total")?.samples.length ?? 0, 0);
});

test("the strict parser rejects what Prometheus would", () => {
  const ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 3\n";
  assert.equal(parsePrometheusText(ok).get("a_total")!.samples[0]!.value, 3);
  const bad: Array<[string, RegExp]> = [
    ["a_total 1\n", /no declared family/],
    ["# TYPE a counter\na{x=\"1} 1\n", /unterminated/],
    ["# TYPE a gauge\na{x=\"\\q\"} 1\n", /bad escape/],
    ["# TYPE a gauge\na one\n", /not a number/],
    ["# TYPE a gauge\na 1\na 2\n", /twice/],
    ["# TYPE a gauge\n# TYPE b gauge\nb 1\na 1\n", /outside its family/],
    ["# TYPE a gauge\na{1x=\"1\"} 1\n", /bad label/],
    ["# TYPE a wrong\n", /unknown type/],
    ["# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n", /cumulative/],
    ["# TYPE a gauge\na 1", /newline/],
  ];
  for (const [text, re] of bad) assert.throws(() => parsePrometheusText(text), re, JSON.stringify(text));
});

test("status tables: padded columns, human bytes", () => {
  assert.equal(table(["A", "BB"], [["xxx", "y"]]), "A    BB\nxxx  y\n");
  assert.deepEqual([humanBytes(512), humanBytes(1536), humanBytes(5 * 1024 * 1024)], ["512 B", "1.5 KiB", "5.0 MiB"]);
});
