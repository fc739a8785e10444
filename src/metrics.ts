/**
 * Prometheus metrics (prom-client), one registry per daemon, served on the
 * healthz port at /metrics.
 *
 * How it works:
 * - Controller metrics (leases, lease events, reconciles, drift repairs,
 *   errors) are updated by the daemon as it works.
 * - Dataplane metrics (per-peer traffic and drops, node-wide datapath
 *   counters, BPF map occupancy) are read from the maps at scrape time, in
 *   the collect() of each metric, never on a timer. One read serves every
 *   metric of a scrape: every collect() awaits the same read.
 * - A scrape at 10,000 peers is ~30,000 counters to read, fold and rank.
 *   It is one chain of slices of a few ms (metrics/slices.ts) — the read
 *   (readDataplaneStatsSliced), the node-wide totals (metrics/totals.ts),
 *   the ranking of the peers (metrics/peerrows.ts), the lines of the
 *   per-peer families — so the event loop keeps answering /healthz and
 *   lease events meanwhile. The data is compact (counters in typed arrays,
 *   peers decoded only when named: metrics/statrows.ts), so a scrape leaves
 *   little for V8's old-generation collector, whose pauses no slicing
 *   bounds. The per-peer families (2,000 series each at the cap) are
 *   written by twill, not by prom-client (metrics/exposition.ts: the same
 *   text, without a label hash per series).
 * - The kernel dataplane keeps no per-peer counters: it exports
 *   twill_peer_stats_available 0 and no twill_peer_* or twill_bpf_* series,
 *   rather than invented numbers.
 * - BPF counters only grow, but a peer's entry that is deleted and
 *   re-created starts again from 0: per-peer series then reset, which
 *   rate() handles. Node-wide totals are kept monotonic (MonotonicTotals).
 *
 * Cardinality is bounded: per-peer series exist for at most
 * PEER_SERIES_LIMIT (500) peers, the busiest by bytes; the rest are summed
 * under peer_subnet="other", peer_ip="other". Per peer that is 4 traffic
 * series (tx/rx on its path; the other path only once it has counted) per
 * metric, plus one drop series per reason seen. Every other label is a
 * closed set: counter names, map names, lease states, event types, repair
 * kinds, error codes.
 */
import client from "prom-client";
import { errorCode } from "./errors.js";
import { Family, Registry, Samples } from "./metrics/exposition.js";
import { peerRowsSteps } from "./metrics/peerrows.js";
import { breather, runSliced, type Breathe } from "./metrics/slices.js";
import { MonotonicTotals } from "./metrics/totals.js";
import { DIRECTIONS, OTHER, PATHS, PEER_SERIES_LIMIT, type CappedPeers, type DataplaneStats } from "./peerstats.js";
import type { SyncResult } from "./dataplane/types.js";

/** What the metrics read the dataplane through: `stats` is absent when it has no counters (kernel). */
export interface StatsSource {
  stats?(): DataplaneStats | undefined | Promise<DataplaneStats | undefined>;
  /** bpf: the VXLAN encapsulation in use, and why it is the device's when BPF's was asked for. */
  encapMode?(): { mode: "bpf" | "device"; reason: string };
}

const num = (v: bigint): number => Number(v);
/** How often the event-loop delay histogram samples (see createMetrics). */
export const EVENT_LOOP_SAMPLE_MS = 5000;

export function createMetrics(version: string, dataplane: string, source: () => StatsSource | undefined = () => undefined, dataplaneReason = "") {
  const registry = new Registry();
  const registers = [registry];
  // Node's event-loop delay histogram (nodejs_eventloop_lag_p50_seconds …) samples with a timer that
  // wakes the loop every `precision` ms, idle or not; one wake-up costs ~0.3 ms of CPU on a
  // paravirtualised node (measured: a 1 s timer alone was ~0.03 % of a core). Every 5 s: a few
  // samples per Prometheus scrape interval, and an idle daemon barely wakes (nodejs_eventloop_lag_seconds
  // itself is measured at each scrape).
  client.collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS });

  const buildInfo = new client.Gauge({
    name: "twill_build_info", help: "twill build information: always 1; the labels say what runs.",
    labelNames: ["version", "dataplane", "node_version"], registers,
  });
  buildInfo.set({ version, dataplane, node_version: process.version }, 1);

  new client.Gauge({
    name: "twill_dataplane_info",
    help: "The dataplane this node runs (bpf or kernel); reason says why --dataplane auto ran the kernel one (no CAP_BPF, no bpffs), empty otherwise. Always 1.",
    labelNames: ["dataplane", "reason"], registers,
  }).set({ dataplane, reason: dataplaneReason }, 1);

  new client.Gauge({
    name: "twill_vxlan_encap_info",
    help: "Who writes and strips VXLAN headers over an IPv4 underlay (bpf dataplane): mode=\"bpf\" (the tc programs) or \"device\" (the kernel's vxlan driver: --encap device, or a kernel without the helpers, then reason says which). Always 1.",
    labelNames: ["mode", "reason"], registers,
    collect() {
      this.reset();
      const e = source()?.encapMode?.();
      if (e) this.set({ mode: e.mode, reason: e.reason }, 1);
    },
  });

  // ---- the dataplane, read at scrape time ----
  const errors = new client.Counter({
    name: "twill_errors_total", help: "Errors of the controller by stable error code (ERR_*; an errno name for a raw system error), failed reads of the maps for a scrape included.",
    labelNames: ["code"], registers,
    // A failed read of this scrape is counted in this scrape.
    async collect() { await read(); },
  });
  let cached: Promise<DataplaneStats | undefined> | undefined;
  const totals = new MonotonicTotals();
  let totalsNow = new Map<string, { packets: bigint; bytes: bigint }>();
  const NO_PEERS: CappedPeers = { shown: [], aggregated: 0 };
  let peersNow = NO_PEERS;
  let samplesNow: PeerSamples | undefined;
  const fresh = async (): Promise<DataplaneStats | undefined> => {
    // One clock for the whole chain: each stage picks up the slice where the last one left it.
    const breathe = breather();
    try {
      const s = await source()?.stats?.();
      if (!s) {
        peersNow = NO_PEERS;
        samplesNow = undefined;
        return undefined;
      }
      totalsNow = await totals.updateSliced(s.counters, breathe);
      peersNow = await runSliced(peerRowsSteps(s.peers, s.counters, PEER_SERIES_LIMIT), breathe);
      samplesNow = await peerSamples(peersNow, peerFamilies, breathe);
      return s;
    } catch (e) {
      peersNow = NO_PEERS;
      samplesNow = undefined;
      errors.inc({ code: errorCode(e) });
      return undefined;
    }
  };
  // One read per scrape: every collect() of a scrape starts in the same
  // turn of the event loop and awaits the same read; the next scrape reads
  // again. Reads never overlap (MonotonicTotals must see them in order).
  const read = (): Promise<DataplaneStats | undefined> => {
    if (!cached) {
      const p = fresh();
      cached = p;
      void p.finally(() => setImmediate(() => { if (cached === p) cached = undefined; }));
    }
    return cached;
  };
  const available = (): boolean => {
    const s = source();
    return s ? typeof s.stats === "function" : dataplane === "bpf";
  };

  new client.Gauge({
    name: "twill_peer_stats_available",
    help: "1 when the dataplane keeps per-peer counters (bpf); 0 for the kernel dataplane, which has none: it then exports no per-peer (twill_peer_*), datapath (twill_datapath_*) or map (twill_bpf_map_*) series.",
    registers,
    collect() { this.set(available() ? 1 : 0); },
  });

  // Registered on bpf nodes only: a kernel node has no such numbers.
  const bpfRegisters = dataplane === "bpf" ? [registry] : [];
  const capNote = `At most ${PEER_SERIES_LIMIT} peers by name (the busiest by bytes); the rest are summed as peer_subnet="${OTHER}", peer_ip="${OTHER}".`;
  const peerFamily = (name: string, help: string, labelNames: readonly string[], pick: (s: PeerSamples) => Samples) => new Family({
    name, help, type: "counter", labelNames, registers: bpfRegisters,
    async collect() {
      await read();
      return samplesNow && pick(samplesNow);
    },
  });
  const peerFamilies: PeerFamilies = {
    packets: peerFamily(
      "twill_peer_packets_total",
      `Packets sent to (direction="tx") or received from (direction="rx") one remote subnet, by path: vxlan (encapsulated) or direct (DirectRouting). ${capNote}`,
      PEER_LABELS, (s) => s.packets,
    ),
    bytes: peerFamily(
      "twill_peer_bytes_total",
      `Bytes (IP packet length, inner packet for vxlan) sent to or received from one remote subnet, by path and direction; see twill_peer_packets_total. ${capNote}`,
      PEER_LABELS, (s) => s.bytes,
    ),
    drops: peerFamily(
      "twill_peer_drops_total",
      "Packets to or from one remote subnet that the eBPF dataplane did not forward, by reason: mtu (too big for the path: handed to the host stack, which sends ICMP fragmentation-needed, or dropped), ttl (expiring: to the stack for ICMP time-exceeded), encap (setting the tunnel key failed), no_config (node config not loaded). A reason appears once it has counted. " + capNote,
      DROP_LABELS, (s) => s.drops,
    ),
  };
  new client.Gauge({
    name: "twill_peer_stats_aggregated_peers",
    help: `Peers whose traffic is summed under peer_subnet="${OTHER}" because more than ${PEER_SERIES_LIMIT} peers exist.`,
    registers: bpfRegisters,
    async collect() {
      const s = await read();
      this.reset();
      if (s) this.set(peersNow.aggregated);
    },
  });
  const datapath = (unit: "packets" | "bytes") => new client.Counter({
    name: `twill_datapath_${unit}_total`,
    help: `${unit === "packets" ? "Packets" : "Bytes"} seen by the tc programs on this node, summed over all peers (and none), by counter: what happened to them (enum twill_counter in bpf/shared.h: encap, encap_fast, direct, delivered, decap_stack, rx_direct, miss, stack_*, drop_*).`,
    labelNames: ["counter"], registers: bpfRegisters,
    async collect() {
      const s = await read();
      this.reset();
      if (!s) return;
      for (const [counter, s] of totalsNow) this.inc({ counter }, num(s[unit]));
    },
  });
  datapath("packets");
  datapath("bytes");
  const mapGauge = (what: "entries" | "capacity", help: string) => new client.Gauge({
    name: `twill_bpf_map_${what}`, help, labelNames: ["map"], registers: bpfRegisters,
    async collect() {
      const s = await read();
      this.reset();
      for (const m of s?.maps ?? []) this.set({ map: m.name }, what === "entries" ? m.entries : m.capacity);
    },
  });
  mapGauge("entries", "Entries in each pinned BPF map (twill_peers: remote subnets plus our own subnet and the cluster network; twill_endpoints: learnt local pods; twill_stats: (peer, counter) pairs; twill_config: 1).");
  mapGauge("capacity", "Most entries each pinned BPF map can hold (max_entries).");

  // ---- the controller ----
  const reconciles = new client.Counter({
    name: "twill_reconcile_runs_total", help: "Full reconciles of the dataplane against the leases (at start, then every --reconcile-period), by result (ok, error).",
    labelNames: ["result"], registers,
  });
  const reconcileSeconds = new client.Histogram({
    name: "twill_reconcile_duration_seconds", help: "Time a full reconcile of the dataplane took, in seconds, failed ones included.",
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10], registers,
  });
  const repairs = new client.Counter({
    name: "twill_drift_repairs_total", help: "Dataplane entries a full reconcile found wrong and repaired, by kind: added (missing), updated (different from the lease), removed (no lease backs it).",
    labelNames: ["kind"], registers,
  });
  const heapCompactions = new client.Counter({
    name: "twill_heap_compaction_windows_total", help: "Windows in which V8's full collections compact its old space: opened when it is fragmented, closed once a full collection compacted it (at most one a minute; heapcompact.ts).",
    registers,
  });
  const leaseRelists = new client.Counter({
    name: "twill_lease_relists_total", help: "Full lists of the leases after the first (every 30 reconcile periods, on SIGHUP, when the source may have missed events), by result: unchanged (every lease as the events left it), patched (a few leases differed: applied as events), diffed (compared whole).",
    labelNames: ["result"], registers,
  });
  for (const result of ["unchanged", "patched", "diffed"]) leaseRelists.inc({ result }, 0);
  for (const result of ["ok", "error"]) reconciles.inc({ result }, 0);
  for (const kind of ["added", "updated", "removed"]) repairs.inc({ kind }, 0);

  return {
    registry,
    leases: new client.Gauge({
      name: "twill_leases", help: "Leases known, by state: own (1 while we hold our lease), peer (remote subnets programmed: one per lease and address family), rejected (leases that are malformed or conflict).",
      labelNames: ["state"], registers,
    }),
    leaseEvents: new client.Counter({
      name: "twill_lease_events_total", help: "Peer changes applied to the dataplane on lease events, by type: upsert (a peer added or changed), remove (a peer gone).",
      labelNames: ["type"], registers,
    }),
    leaseRelists,
    leaseErrors: new client.Counter({
      name: "twill_lease_errors_total", help: "Leases rejected (bad or conflicting), by error code; each bad lease version counts once.",
      labelNames: ["code"], registers,
    }),
    errors,
    reconciles,
    reconcileSeconds,
    repairs,
    heapCompactions,
    /** Runs one full reconcile: counts it, times it (failed ones too) and counts the repairs. */
    async reconcile(fn: () => Promise<SyncResult>): Promise<SyncResult> {
      const end = reconcileSeconds.startTimer();
      try {
        const r = await fn();
        reconciles.inc({ result: "ok" });
        for (const kind of ["added", "updated", "removed"] as const) if (r[kind]) repairs.inc({ kind }, r[kind]);
        return r;
      } catch (e) {
        reconciles.inc({ result: "error" });
        throw e;
      } finally {
        end();
      }
    },
  };
}
export type Metrics = ReturnType<typeof createMetrics>;

const PEER_LABELS = ["peer_subnet", "peer_ip", "path", "direction"] as const;
const DROP_LABELS = ["peer_subnet", "reason"] as const;

/** The per-peer families, and this scrape's samples of them. */
interface PeerFamilies<T = Family> {
  readonly packets: T;
  readonly bytes: T;
  readonly drops: T;
}
type PeerSamples = PeerFamilies<Samples>;

/**
 * The samples of the per-peer families, busiest peer first, then "other":
 * per peer, tx and rx on the path it is programmed for (even at 0), and on
 * the other path once it has counted; a drop series per reason seen.
 */
async function peerSamples(peers: CappedPeers, families: PeerFamilies, breathe: Breathe): Promise<PeerSamples> {
  const out = { packets: families.packets.samples(), bytes: families.bytes.samples(), drops: families.drops.samples() };
  const rows = peers.other ? [...peers.shown, peers.other] : peers.shown;
  for (let i = 0; i < rows.length; i++) {
    if ((i & 63) === 63) await breathe();
    const p = rows[i]!;
    for (const path of PATHS) for (const direction of DIRECTIONS) {
      const s = p[direction][path];
      if (path !== p.path && s.packets === 0n && p.path !== undefined) continue;
      const labels = [p.subnet, p.publicIP, path, direction];
      out.packets.add(labels, num(s.packets));
      out.bytes.add(labels, num(s.bytes));
    }
    for (const [reason, s] of p.drops) out.drops.add([p.subnet, reason], num(s.packets));
  }
  return out;
}
