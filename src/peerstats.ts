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
 *    `twill status` all read through them. Maps are read by batch dumps
 *    (BpfMap.dump: 4,096 entries per syscall), decoded in place;
 *    readDataplaneStatsSliced gives a scrape the same result in slices of a
 *    few ms, so the event loop is never held for the whole read.
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
import { COUNTERS, PeerKind, STAT_KEY, decodeLpmKey, decodePeer, sumStats, type CounterName } from "./bpf/layout.js";
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
  const out: PeerEntry[] = [];
  m.dump((keys, values, count) => {
    for (let i = 0; i < count; i++) out.push(peerEntry(keys, values, i, m.keySize, m.lookupSize));
  });
  return out;
}

/** Entry i of a dump chunk of twill_peers, decoded. */
function peerEntry(keys: Buffer, values: Buffer, i: number, ks: number, vs: number): PeerEntry {
  const p = decodePeer(values.subarray(i * vs, (i + 1) * vs));
  return {
    prefix: formatPrefix(decodeLpmKey(keys.subarray(i * ks, (i + 1) * ks))), kind: KINDS[p.kind] ?? String(p.kind),
    ...(p.remote ? { remote: formatIP(p.remote) } : {}), ...(p.vtepMAC ? { vtepMAC: p.vtepMAC } : {}), vni: p.vni, id: p.id,
  };
}

/** Counters by peer id, then counter name ("counter_<n>" for a number this build does not know). */
export type StatTable = Map<number, Map<string, Sum>>;

/** Folds one dump chunk of twill_stats into `out` (keys and per-CPU values read in place, no Buffer per entry). */
function addStatChunk(out: StatTable, keys: Buffer, values: Buffer, count: number, ks: number, vs: number, ncpu: number): void {
  for (let i = 0; i < count; i++) {
    const peerId = keys.readUInt32LE(i * ks + STAT_PEER_ID);
    const counter = keys.readUInt32LE(i * ks + STAT_COUNTER);
    const name = COUNTERS[counter] ?? `counter_${counter}`;
    let byName = out.get(peerId);
    if (!byName) out.set(peerId, (byName = new Map()));
    byName.set(name, sumStats(values.subarray(i * vs, (i + 1) * vs), ncpu));
  }
}
const STAT_PEER_ID = STAT_KEY.fields.find((f) => f.name === "peer_id")!.offset;
const STAT_COUNTER = STAT_KEY.fields.find((f) => f.name === "counter")!.offset;

export function readStatTable(m: BpfMap): StatTable {
  const ncpu = numPossibleCpus();
  const out: StatTable = new Map();
  m.dump((keys, values, count) => addStatChunk(out, keys, values, count, m.keySize, m.lookupSize, ncpu));
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

/** Reads peers, counters and map occupancy from a set of open maps (synchronously: `twill maps`, `twill status`). */
export function readDataplaneStats(maps: Record<string, BpfMap>): DataplaneStats {
  const all = Object.values(maps);
  const peersMap = all.find((m) => m.name === "twill_peers");
  const statsMap = all.find((m) => m.name === "twill_stats");
  const peers = peersMap ? readPeerEntries(peersMap) : [];
  const counters = statsMap ? readStatTable(statsMap) : new Map();
  return { peers, counters, maps: usage(all, peersMap, peers.length, statsMap, counters) };
}

function usage(all: BpfMap[], peersMap: BpfMap | undefined, peers: number, statsMap: BpfMap | undefined, counters: StatTable): MapUsage[] {
  const statEntries = [...counters.values()].reduce((n, c) => n + c.size, 0);
  return all.map((m) => ({
    name: m.name,
    entries: m === peersMap ? peers : m === statsMap ? statEntries : m.count(),
    capacity: m.maxEntries,
  }));
}

/** The longest the sliced readers hold the event loop before they yield. */
const SLICE_MS = 4;

/** Yields to the event loop (setImmediate) once SLICE_MS have passed since the last yield. */
export function breather(): () => Promise<void> {
  let since = performance.now();
  return async () => {
    if (performance.now() - since < SLICE_MS) return;
    await new Promise<void>((r) => setImmediate(r));
    since = performance.now();
  };
}

/**
 * readDataplaneStats for a scrape: the same result, but the event loop is
 * never held for long (a /metrics scrape at 10,000 peers must not stall
 * lease events). The peers trie is dumped in one go (a trie's batch token
 * is a key: dumped across yields, a deleted key would restart the walk),
 * then decoded in slices; twill_stats (a hash: its token is a bucket) is
 * dumped and decoded one batch per slice.
 */
export async function readDataplaneStatsSliced(maps: Record<string, BpfMap>): Promise<DataplaneStats> {
  const all = Object.values(maps);
  const peersMap = all.find((m) => m.name === "twill_peers");
  const statsMap = all.find((m) => m.name === "twill_stats");
  const breathe = breather();
  const peers: PeerEntry[] = [];
  if (peersMap) {
    const chunks: Array<{ keys: Buffer; values: Buffer; count: number }> = [];
    peersMap.dump((keys, values, count) => chunks.push({ keys: Buffer.from(keys.subarray(0, count * peersMap.keySize)), values: Buffer.from(values.subarray(0, count * peersMap.lookupSize)), count }));
    for (const c of chunks) {
      for (let i = 0; i < c.count; i++) {
        if ((i & 255) === 0) await breathe();
        peers.push(peerEntry(c.keys, c.values, i, peersMap.keySize, peersMap.lookupSize));
      }
    }
  }
  const counters: StatTable = new Map();
  if (statsMap) {
    const ncpu = numPossibleCpus();
    const chunks: Array<{ keys: Buffer; values: Buffer; count: number }> = [];
    await statsMap.dumpSliced(async (keys, values, count) => {
      chunks.push({ keys: Buffer.from(keys.subarray(0, count * statsMap.keySize)), values: Buffer.from(values.subarray(0, count * statsMap.lookupSize)), count });
      await breathe();
    });
    for (const c of chunks) {
      for (let i = 0; i < c.count; i += 512) {
        await breathe();
        const n = Math.min(512, c.count - i);
        addStatChunk(counters, c.keys.subarray(i * statsMap.keySize), c.values.subarray(i * statsMap.lookupSize), n, statsMap.keySize, statsMap.lookupSize, ncpu);
      }
    }
  }
  await breathe();
  return { peers, counters, maps: usage(all, peersMap, peers.length, statsMap, counters) };
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
  for (const p of peers) joinPeer(p, counters, out);
  return out;
}

/** peerTraffic, yielding to the event loop every few ms (`breathe`, see breather()). */
export async function peerTrafficSliced(peers: readonly PeerEntry[], counters: StatTable, breathe: () => Promise<void>): Promise<PeerTraffic[]> {
  const out: PeerTraffic[] = [];
  for (let i = 0; i < peers.length; i++) {
    if ((i & 127) === 0) await breathe();
    joinPeer(peers[i]!, counters, out);
  }
  return out;
}

function joinPeer(p: PeerEntry, counters: StatTable, out: PeerTraffic[]): void {
  {
    if (p.kind !== "vxlan" && p.kind !== "direct") return;
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
  // Each peer's bytes computed once, not in the comparator (10,000 peers: 280,000 calls).
  // As numbers: exact to 2^53 bytes (8 PiB), and only the order matters here.
  const keyed = list.map((t) => ({ t, bytes: Number(t.tx.vxlan.bytes + t.tx.direct.bytes + t.rx.vxlan.bytes + t.rx.direct.bytes) }));
  const bySubnet = (a: { t: PeerTraffic }, b: { t: PeerTraffic }) => (a.t.subnet < b.t.subnet ? -1 : a.t.subnet > b.t.subnet ? 1 : 0);
  // Numbers first (cheap); names only among equal bytes, and only where the
  // cut falls and above it (most peers idle at 0 bytes would otherwise all be
  // compared by name).
  keyed.sort((a, b) => b.bytes - a.bytes);
  const cut = keyed.length > limit ? keyed[limit - 1]!.bytes : -1;
  let i = 0;
  while (i < keyed.length) {
    let j = i + 1;
    while (j < keyed.length && keyed[j]!.bytes === keyed[i]!.bytes) j++;
    if (j - i > 1 && keyed[i]!.bytes >= cut) {
      const run = keyed.slice(i, j).sort(bySubnet);
      for (let k = 0; k < run.length; k++) keyed[i + k] = run[k]!;
    }
    if (keyed[i]!.bytes < cut) break;
    i = j;
  }
  const sorted = keyed.map((k) => k.t);
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
  private last: StatTable = new Map();
  private retired = new Map<string, Sum>();

  /** Folds in a fresh read of the map; returns the totals by counter name. */
  update(counters: StatTable): Map<string, Sum> {
    let out!: Map<string, Sum>;
    // Without a breather the generator never waits: one synchronous pass.
    for (const step of this.steps(counters, (m) => (out = m))) void step;
    return out;
  }

  /** update(), yielding to the event loop every few ms (`breathe`, see breather()). */
  async updateSliced(counters: StatTable, breathe: () => Promise<void>): Promise<Map<string, Sum>> {
    let out!: Map<string, Sum>;
    for (const step of this.steps(counters, (m) => (out = m))) {
      void step;
      await breathe();
    }
    return out;
  }

  /** The work of update(), in steps of 128 peers. */
  private *steps(counters: StatTable, done: (totals: Map<string, Sum>) => void): Generator<void> {
    let n = 0;
    for (const [id, prevByName] of this.last) {
      if ((++n & 127) === 0) yield;
      const curByName = counters.get(id);
      for (const [name, prev] of prevByName) {
        const cur = curByName?.get(name);
        // Gone, or deleted and re-created since the last read: what it had counted stays counted.
        if (!cur || cur.packets < prev.packets || cur.bytes < prev.bytes) this.retired.set(name, add(this.retired.get(name) ?? ZERO, prev));
      }
    }
    this.last = counters;
    const totals = new Map<string, Sum>(COUNTERS.map((c) => [c, this.retired.get(c) ?? ZERO]));
    for (const [name, s] of this.retired) if (!totals.has(name)) totals.set(name, s);
    // Summed as bigints per name, then one Sum each (not one Sum object per entry).
    const packets = new Map<string, bigint>(), bytes = new Map<string, bigint>();
    for (const byName of counters.values()) {
      if ((++n & 127) === 0) yield;
      for (const [name, s] of byName) {
        packets.set(name, (packets.get(name) ?? 0n) + s.packets);
        bytes.set(name, (bytes.get(name) ?? 0n) + s.bytes);
      }
    }
    for (const [name, p] of packets) {
      const t = totals.get(name) ?? ZERO;
      totals.set(name, { packets: t.packets + p, bytes: t.bytes + bytes.get(name)! });
    }
    done(totals);
  }
}
