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
 *   metric of a scrape: every collect() awaits the same read. A dataplane
 *   may read asynchronously (readDataplaneStatsSliced), so that a scrape at
 *   10,000 peers holds the event loop for milliseconds at a time, not for
 *   the whole read.
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
import {
  DIRECTIONS, MonotonicTotals, OTHER, PATHS, PEER_SERIES_LIMIT, breather, capPeers, peerTrafficSliced,
  type DataplaneStats, type PeerTraffic,
} from "./peerstats.js";
import type { SyncResult } from "./dataplane/types.js";

/** What the metrics read the dataplane through: `stats` is absent when it has no counters (kernel). */
export interface StatsSource {
  stats?(): DataplaneStats | undefined | Promise<DataplaneStats | undefined>;
  /** bpf: the VXLAN encapsulation in use, and why it is the device's when BPF's was asked for. */
  encapMode?(): { mode: "bpf" | "device"; reason: string };
}

const num = (v: bigint): number => Number(v);

export function createMetrics(version: string, dataplane: string, source: () => StatsSource | undefined = () => undefined) {
  const registry = new client.Registry();
  const registers = [registry];
  client.collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 1000 });

  const buildInfo = new client.Gauge({
    name: "twill_build_info", help: "twill build information: always 1; the labels say what runs.",
    labelNames: ["version", "dataplane", "node_version"], registers,
  });
  buildInfo.set({ version, dataplane, node_version: process.version }, 1);

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
  let peersNow: { shown: PeerTraffic[]; other?: PeerTraffic; aggregated: number } = { shown: [], aggregated: 0 };
  const fresh = async (): Promise<DataplaneStats | undefined> => {
    try {
      const s = await source()?.stats?.();
      if (!s) {
        peersNow = { shown: [], aggregated: 0 };
        return undefined;
      }
      // In slices of a few ms: 10,000 peers are ~30,000 counters to fold.
      const breathe = breather();
      totalsNow = await totals.updateSliced(s.counters, breathe);
      peersNow = capPeers(await peerTrafficSliced(s.peers, s.counters, breathe), PEER_SERIES_LIMIT);
      return s;
    } catch (e) {
      peersNow = { shown: [], aggregated: 0 };
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
  // Each metric read at scrape time sets its series and is formatted in a
  // turn of the event loop of its own (prom-client formats a metric as soon
  // as its collect() resolves): the per-peer metrics are thousands of
  // series each, and all at once they would hold the loop for tens of ms.
  let turns: Promise<void> = Promise.resolve();
  const ownTurn = (): Promise<void> => (turns = turns.then(() => new Promise<void>((r) => setImmediate(r))));
  const readInTurn = async (): Promise<DataplaneStats | undefined> => {
    const s = await read();
    // A few peers format in microseconds: only a big node pays the turns.
    if (peersNow.shown.length > 100) await ownTurn();
    return s;
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
  const peerLabels = ["peer_subnet", "peer_ip", "path", "direction"];
  const capNote = `At most ${PEER_SERIES_LIMIT} peers by name (the busiest by bytes); the rest are summed as peer_subnet="${OTHER}", peer_ip="${OTHER}".`;
  const eachPeerSeries = (set: (labels: Record<string, string>, packets: bigint, bytes: bigint) => void): void => {
    const rows = [...peersNow.shown, ...(peersNow.other ? [peersNow.other] : [])];
    for (const p of rows) {
      for (const path of PATHS) for (const direction of DIRECTIONS) {
        const s = p[direction][path];
        // The path a peer is programmed for always has series; the other one once it has counted.
        if (path !== p.path && s.packets === 0n && p.path !== undefined) continue;
        set({ peer_subnet: p.subnet, peer_ip: p.publicIP, path, direction }, s.packets, s.bytes);
      }
    }
  };
  new client.Counter({
    name: "twill_peer_packets_total",
    help: `Packets sent to (direction="tx") or received from (direction="rx") one remote subnet, by path: vxlan (encapsulated) or direct (DirectRouting). ${capNote}`,
    labelNames: peerLabels, registers: bpfRegisters,
    async collect() {
      await readInTurn();
      this.reset();
      eachPeerSeries((l, packets) => this.inc(l, num(packets)));
    },
  });
  new client.Counter({
    name: "twill_peer_bytes_total",
    help: `Bytes (IP packet length, inner packet for vxlan) sent to or received from one remote subnet, by path and direction; see twill_peer_packets_total. ${capNote}`,
    labelNames: peerLabels, registers: bpfRegisters,
    async collect() {
      await readInTurn();
      this.reset();
      eachPeerSeries((l, _p, bytes) => this.inc(l, num(bytes)));
    },
  });
  new client.Counter({
    name: "twill_peer_drops_total",
    help: "Packets to or from one remote subnet that the eBPF dataplane did not forward, by reason: mtu (too big for the path: handed to the host stack, which sends ICMP fragmentation-needed, or dropped), ttl (expiring: to the stack for ICMP time-exceeded), encap (setting the tunnel key failed), no_config (node config not loaded). A reason appears once it has counted. " + capNote,
    labelNames: ["peer_subnet", "reason"], registers: bpfRegisters,
    async collect() {
      await readInTurn();
      this.reset();
      for (const p of [...peersNow.shown, ...(peersNow.other ? [peersNow.other] : [])]) {
        for (const [reason, s] of p.drops) this.inc({ peer_subnet: p.subnet, reason }, num(s.packets));
      }
    },
  });
  new client.Gauge({
    name: "twill_peer_stats_aggregated_peers",
    help: `Peers whose traffic is summed under peer_subnet="${OTHER}" because more than ${PEER_SERIES_LIMIT} peers exist.`,
    registers: bpfRegisters,
    async collect() {
      const s = await readInTurn();
      this.reset();
      if (s) this.set(peersNow.aggregated);
    },
  });
  const datapath = (unit: "packets" | "bytes") => new client.Counter({
    name: `twill_datapath_${unit}_total`,
    help: `${unit === "packets" ? "Packets" : "Bytes"} seen by the tc programs on this node, summed over all peers (and none), by counter: what happened to them (enum twill_counter in bpf/shared.h: encap, encap_fast, direct, delivered, decap_stack, rx_direct, miss, stack_*, drop_*).`,
    labelNames: ["counter"], registers: bpfRegisters,
    async collect() {
      const s = await readInTurn();
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
      const s = await readInTurn();
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
    leaseErrors: new client.Counter({
      name: "twill_lease_errors_total", help: "Leases rejected (bad or conflicting), by error code; each bad lease version counts once.",
      labelNames: ["code"], registers,
    }),
    errors,
    reconciles,
    reconcileSeconds,
    repairs,
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
