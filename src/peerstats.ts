/**
 * Per-peer statistics of the bpf dataplane: reading them from the maps,
 * saying what each counter means for a peer, and bounding the series.
 *
 * How it works:
 * 1) The tc programs count every packet once per hook in `twill_stats`, a
 *    per-CPU hash keyed by {peer id, enum twill_counter}; the peer id is the
 *    one in that peer's `twill_peers` value (0: no peer, e.g. a miss).
 *    readPeerEntries/readStatTable decode the two maps (counters summed over
 *    CPUs); dumpBpfState (`twill maps`), BpfDataplane.stats() (/metrics) and
 *    `twill status` all read through them.
 * 2) ROLES says what each counter is for a peer: traffic in a direction on a
 *    path (vxlan or direct), or a packet the eBPF dataplane did not forward,
 *    with a reason. `Record<CounterName, ...>` makes a counter added to
 *    shared.h fail to compile until it is classified here.
 * 3) peerTraffic() joins peers and counters by id: one PeerTraffic per
 *    remote subnet. capPeers() keeps the PEER_SERIES_LIMIT busiest peers (by
 *    bytes, both directions) and sums the rest into one "other" row, so a
 *    cluster of any size exports a bounded number of series.
 * 4) The controller deletes the counters of a peer that is gone, so a plain
 *    sum over the map would go down. MonotonicTotals keeps the last value of
 *    every (peer id, counter) and adds a vanished one to a retired sum, so
 *    the node-wide totals only ever grow (as a Prometheus counter must).
 */
import type { BpfMap } from "./bpf/map.js";
import { numPossibleCpus } from "./bpf/libbpf.js";
import { COUNTERS, PeerKind, decodeLpmKey, decodePeer, decodeStatKey, sumStats, type CounterName } from "./bpf/layout.js";
import { formatIP, formatPrefix } from "./net/ip.js";

export type Path = "vxlan" | "direct";
export type Direction = "tx" | "rx";
export const PATHS: readonly Path[] = ["vxlan", "direct"];
export const DIRECTIONS: readonly Direction[] = ["tx", "rx"];

/** Packets and bytes of one counter, summed over CPUs. */
export interface Sum { readonly packets: bigint; readonly bytes: bigint }
const ZERO: Sum = { packets: 0n, bytes: 0n };
const add = (a: Sum, b: Sum): Sum => ({ packets: a.packets + b.packets, bytes: a.bytes + b.bytes });

/** Most peers exported with their own labels; the rest are summed as peer_subnet="other". */
export const PEER_SERIES_LIMIT = 500;
export const OTHER = "other";

/** One entry of twill_peers, decoded for people and for joining with the counters. */
export interface PeerEntry {
  readonly prefix: string;
  /** "vxlan", "direct", "local" (our subnet), "cluster" (the network), or the number of an unknown kind. */
  readonly kind: string;
  readonly remote?: string;
  readonly vtepMAC?: string;
  readonly vni: number;
  readonly id: number;
}

const KINDS: Record<number, string> = { [PeerKind.Vxlan]: "vxlan", [PeerKind.Direct]: "direct", [PeerKind.Local]: "local", [PeerKind.Cluster]: "cluster" };

export function readPeerEntries(m: BpfMap): PeerEntry[] {
  return m.entries().map(([k, v]) => {
    const p = decodePeer(v);
    return {
      prefix: formatPrefix(decodeLpmKey(k)), kind: KINDS[p.kind] ?? String(p.kind),
      ...(p.remote ? { remote: formatIP(p.remote) } : {}), ...(p.vtepMAC ? { vtepMAC: p.vtepMAC } : {}), vni: p.vni, id: p.id,
    };
  });
}

/** Counters by peer id, then counter name ("counter_<n>" for a number this build does not know). */
export type StatTable = Map<number, Map<string, Sum>>;

export function readStatTable(m: BpfMap): StatTable {
  const ncpu = numPossibleCpus();
  const out: StatTable = new Map();
  for (const [k, v] of m.entries()) {
    const key = decodeStatKey(k);
    const name = COUNTERS[key.counter] ?? `counter_${key.counter}`;
    let byName = out.get(key.peerId);
    if (!byName) out.set(key.peerId, (byName = new Map()));
    byName.set(name, sumStats(v, ncpu));
  }
  return out;
}

/** How full one map is. */
export interface MapUsage { readonly name: string; readonly entries: number; readonly capacity: number }

/** What a dataplane can say about its traffic when asked (bpf only; read at scrape time). */
export interface DataplaneStats {
  readonly peers: readonly PeerEntry[];
  readonly counters: StatTable;
  readonly maps: readonly MapUsage[];
}

/** Reads peers, counters and map occupancy from a set of open maps. */
export function readDataplaneStats(maps: Record<string, BpfMap>): DataplaneStats {
  const all = Object.values(maps);
  const peersMap = all.find((m) => m.name === "twill_peers");
  const statsMap = all.find((m) => m.name === "twill_stats");
  const peers = peersMap ? readPeerEntries(peersMap) : [];
  const counters = statsMap ? readStatTable(statsMap) : new Map();
  const statEntries = [...counters.values()].reduce((n, c) => n + c.size, 0);
  const usage = all.map((m) => ({
    name: m.name,
    entries: m === peersMap ? peers.length : m === statsMap ? statEntries : m.keys().length,
    capacity: m.maxEntries,
  }));
  return { peers, counters, maps: usage };
}

/** What one counter means for the peer it is counted against. */
export type Role =
  | { readonly kind: "traffic"; readonly direction: Direction; readonly path: Path | "peer" }
  | { readonly kind: "drop"; readonly reason: string };

const tx = (path: Path): Role => ({ kind: "traffic", direction: "tx", path });
const rx = (path: Path | "peer"): Role => ({ kind: "traffic", direction: "rx", path });
const drop = (reason: string): Role => ({ kind: "drop", reason });

/**
 * Every counter of enum twill_counter (bpf/shared.h says where it is
 * counted). Each packet is counted once per hook, so a packet is traffic
 * once: tx where it leaves (vxlan device egress or pod veth), rx where it
 * arrives. A NAT'ed flow received from a peer (stack_nat) is rx on that
 * peer's path. Everything else was not forwarded by eBPF: dropped, or
 * handed to the host stack that answers with ICMP (mtu, ttl).
 */
export const ROLES: Readonly<Record<CounterName, Role>> = {
  encap: tx("vxlan"),
  encap_fast: tx("vxlan"),
  direct: tx("direct"),
  delivered: rx("vxlan"),
  decap_stack: rx("vxlan"),
  rx_direct: rx("direct"),
  stack_nat: rx("peer"),
  miss: drop("miss"),
  stack_mtu: drop("mtu"),
  stack_ttl: drop("ttl"),
  drop_no_lease: drop("no_lease"),
  drop_vni: drop("vni"),
  drop_no_tunnel: drop("no_tunnel"),
  drop_encap: drop("encap"),
  drop_no_config: drop("no_config"),
  drop_unsupported: drop("unsupported"),
  encap_device: tx("vxlan"),
  decap: rx("vxlan"),
  // Left to the kernel's vxlan device at the underlay (counted again there
  // as decap_stack or delivered, so not traffic here).
  rx_unknown: drop("unknown_sender"),
  rx_fallback: drop("fallback"),
  // Local delivery (peer 0): counted in the node-wide datapath totals only.
  to_pod: drop("to_pod"),
};

export function roleOf(counter: string): Role {
  return (ROLES as Record<string, Role>)[counter] ?? drop(counter.replace(/^(drop|stack)_/, ""));
}

/** One remote subnet's traffic, by path and direction, and what was not forwarded, by reason. */
export interface PeerTraffic {
  readonly subnet: string;
  readonly publicIP: string;
  /** The path the peer is programmed for now; undefined for the "other" row. */
  readonly path?: Path;
  readonly tx: Readonly<Record<Path, Sum>>;
  readonly rx: Readonly<Record<Path, Sum>>;
  readonly drops: ReadonlyMap<string, Sum>;
}

const emptyPaths = (): Record<Path, Sum> => ({ vxlan: ZERO, direct: ZERO });

/** Joins the remote peers (vxlan and direct entries) with their counters. */
export function peerTraffic(peers: readonly PeerEntry[], counters: StatTable): PeerTraffic[] {
  const out: PeerTraffic[] = [];
  for (const p of peers) {
    if (p.kind !== "vxlan" && p.kind !== "direct") continue;
    const path: Path = p.kind;
    const t = { tx: emptyPaths(), rx: emptyPaths() };
    const drops = new Map<string, Sum>();
    for (const [name, s] of counters.get(p.id) ?? []) {
      const r = roleOf(name);
      if (r.kind === "traffic") {
        const on = r.path === "peer" ? path : r.path;
        t[r.direction][on] = add(t[r.direction][on], s);
      } else {
        drops.set(r.reason, add(drops.get(r.reason) ?? ZERO, s));
      }
    }
    out.push({ subnet: p.prefix, publicIP: p.remote ?? "", path, ...t, drops });
  }
  return out;
}

/** Traffic of a peer in a direction, over both paths. */
export function total(t: PeerTraffic, dir: Direction): Sum {
  return add(t[dir].vxlan, t[dir].direct);
}

/**
 * The `limit` busiest peers (by bytes sent and received; ties by subnet)
 * and, when there are more, one row summing the rest as subnet "other".
 */
export function capPeers(list: readonly PeerTraffic[], limit = PEER_SERIES_LIMIT): { shown: PeerTraffic[]; other?: PeerTraffic; aggregated: number } {
  const bytes = (t: PeerTraffic) => total(t, "tx").bytes + total(t, "rx").bytes;
  const sorted = [...list].sort((a, b) => {
    const d = bytes(b) - bytes(a);
    return d > 0n ? 1 : d < 0n ? -1 : a.subnet < b.subnet ? -1 : a.subnet > b.subnet ? 1 : 0;
  });
  if (sorted.length <= limit) return { shown: sorted, aggregated: 0 };
  const rest = sorted.slice(limit);
  const t = { tx: emptyPaths(), rx: emptyPaths() };
  const drops = new Map<string, Sum>();
  for (const p of rest) {
    for (const dir of DIRECTIONS) for (const path of PATHS) t[dir][path] = add(t[dir][path], p[dir][path]);
    for (const [reason, s] of p.drops) drops.set(reason, add(drops.get(reason) ?? ZERO, s));
  }
  return { shown: sorted.slice(0, limit), other: { subnet: OTHER, publicIP: OTHER, ...t, drops }, aggregated: rest.length };
}

/**
 * Node-wide totals by counter name that never go down while the process
 * lives, although the entries of removed peers are deleted from the map.
 */
export class MonotonicTotals {
  private last = new Map<string, Sum>();
  private retired = new Map<string, Sum>();

  /** Folds in a fresh read of the map; returns the totals by counter name. */
  update(counters: StatTable): Map<string, Sum> {
    const now = new Map<string, Sum>();
    for (const [id, byName] of counters) for (const [name, s] of byName) now.set(`${id}\0${name}`, s);
    for (const [key, prev] of this.last) {
      const cur = now.get(key);
      // Gone, or deleted and re-created since the last read: what it had counted stays counted.
      if (!cur || cur.packets < prev.packets || cur.bytes < prev.bytes) {
        const name = key.slice(key.indexOf("\0") + 1);
        this.retired.set(name, add(this.retired.get(name) ?? ZERO, prev));
      }
    }
    this.last = now;
    const totals = new Map<string, Sum>(COUNTERS.map((c) => [c, this.retired.get(c) ?? ZERO]));
    for (const [name, s] of this.retired) if (!totals.has(name)) totals.set(name, s);
    for (const [key, s] of now) {
      const name = key.slice(key.indexOf("\0") + 1);
      totals.set(name, add(totals.get(name) ?? ZERO, s));
    }
    return totals;
  }
}
