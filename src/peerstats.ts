/**
 * Per-peer statistics of the bpf dataplane: reading them from the maps,
 * saying what each counter means for a peer, and bounding the series.
 *
 * How it works:
 * 1) The tc programs count every packet once per hook in `twill_stats`, a
 *    per-CPU hash keyed by {peer id, enum twill_counter}; the peer id is the
 *    one in that peer's `twill_peers` value (0: no peer, e.g. a miss).
 *    readPeerEntries/readStatTable decode the two maps (counters summed over
 *    CPUs, as BigInts); dumpBpfState (`twill maps`) and `twill status` read
 *    through them. Maps are read by batch dumps (BpfMap.dump: 4,096 entries
 *    per syscall), decoded in place.
 * 2) A /metrics scrape reads through readDataplaneStatsSliced instead: in
 *    slices of a few ms (the event loop is never held for the whole read),
 *    and compactly — counters as typed arrays (StatRows), peers as views
 *    that decode a field when it is first read (a scrape names ~500 peers
 *    of 10,000, and ranks the rest by numbers).
 * 3) ROLES says what each counter is for a peer: traffic in a direction on a
 *    path (vxlan or direct), or a packet the eBPF dataplane did not forward,
 *    with a reason. `Record<CounterName, ...>` makes a counter added to
 *    shared.h fail to compile until it is classified here.
 * 4) trafficOf() says what a peer's counters are: one PeerTraffic per remote
 *    subnet. rankSteps() orders peers by bytes (both directions; ties by
 *    subnet) so that the PEER_SERIES_LIMIT busiest have series of their own
 *    and the rest are summed into one "other" row (capPeers here;
 *    metrics/peerrows.ts at scrape time): a cluster of any size exports a
 *    bounded number of series.
 */
import type { BpfMap } from "./bpf/map.js";
import { TwillError } from "./errors.js";
import { numPossibleCpus } from "./bpf/libbpf.js";
import { COUNTERS, LPM_KEY, PEER, PeerKind, STAT_KEY, decodePeer, lpmKeyText, sumStats, type CounterName } from "./bpf/layout.js";
import { formatIP } from "./net/ip.js";
import { breather, runAtOnce, sortSteps, type Breathe, type Steps } from "./metrics/slices.js";
import { StatRows } from "./metrics/statrows.js";

export type Path = "vxlan" | "direct";
export type Direction = "tx" | "rx";
export const PATHS: readonly Path[] = ["vxlan", "direct"];
export const DIRECTIONS: readonly Direction[] = ["tx", "rx"];

/** Packets and bytes of one counter, summed over CPUs. */
export interface Sum { readonly packets: bigint; readonly bytes: bigint }
export const ZERO: Sum = { packets: 0n, bytes: 0n };
export const add = (a: Sum, b: Sum): Sum => (a === ZERO ? b : b === ZERO ? a : { packets: a.packets + b.packets, bytes: a.bytes + b.bytes });

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
    const ks = m.keySize, vs = m.lookupSize;
    for (let i = 0; i < count; i++) out.push(peerEntry(keys.subarray(i * ks, (i + 1) * ks), values.subarray(i * vs, (i + 1) * vs)));
  });
  return out;
}

/** One entry of twill_peers, decoded. */
function peerEntry(key: Buffer, value: Buffer): PeerEntry {
  const p = decodePeer(value);
  return {
    prefix: lpmKeyText(key), kind: KINDS[p.kind] ?? String(p.kind),
    ...(p.remote ? { remote: formatIP(p.remote) } : {}), ...(p.vtepMAC ? { vtepMAC: p.vtepMAC } : {}), vni: p.vni, id: p.id,
  };
}

const fieldOffset = (s: typeof PEER, name: string): number => s.fields.find((f) => f.name === name)!.offset;
const PEER_KIND = fieldOffset(PEER, "kind"), PEER_ID = fieldOffset(PEER, "id"), PEER_VNI = fieldOffset(PEER, "vni");

/**
 * Entry i of a twill_peers dump chunk (keys and values packed back to
 * back): kind, id and vni read at once, the prefix and the rest decoded
 * when first asked.
 */
class PeerView implements PeerEntry {
  readonly kind: string;
  readonly id: number;
  readonly vni: number;
  private decodedPrefix?: string;
  private decoded?: PeerEntry;

  constructor(private readonly keys: Buffer, private readonly values: Buffer, private readonly i: number) {
    const v = i * PEER.size;
    const kind = values[v + PEER_KIND]!;
    this.kind = KINDS[kind] ?? String(kind);
    this.id = values.readUInt32LE(v + PEER_ID);
    this.vni = values.readUInt32LE(v + PEER_VNI);
  }

  get prefix(): string {
    return (this.decodedPrefix ??= lpmKeyText(this.keys, this.i * LPM_KEY.size));
  }

  get remote(): string | undefined {
    return this.full().remote;
  }

  get vtepMAC(): string | undefined {
    return this.full().vtepMAC;
  }

  private key(): Buffer {
    return this.keys.subarray(this.i * LPM_KEY.size, (this.i + 1) * LPM_KEY.size);
  }

  private full(): PeerEntry {
    return (this.decoded ??= peerEntry(this.key(), this.values.subarray(this.i * PEER.size, (this.i + 1) * PEER.size)));
  }
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

/** twill_stats by peer and counter, summed over CPUs as BigInts (exact at any size: `twill status`, tests). */
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
  /** Every entry of twill_peers (local and cluster ones included). */
  readonly peers: readonly PeerEntry[];
  readonly counters: StatRows;
  readonly maps: readonly MapUsage[];
}

/** About the longest one batch syscall of a dump takes (4,096 entries of twill_stats: 2-3 ms): a slice leaves room for it. */
const BATCH_SYSCALL_MS = 3;

/**
 * Peers, counters and map occupancy for a scrape, the event loop never held
 * for long (a /metrics scrape at 10,000 peers must not stall lease events).
 * Every map is read with BpfMap.dumpSliced, one batch syscall per slice —
 * except the peers trie, which BpfMap.dumpAsync reads in one syscall on
 * libuv's thread pool (a trie's batch token is a key: dumped across
 * yields, a deleted key would restart the walk; ~6 ms at 10,000 peers
 * that the event loop no longer waits for). The PeerViews read the dump's bytes;
 * twill_stats is decoded into StatRows; the other maps are only counted.
 * `breathe` (default: a fresh breather()) decides when to yield.
 */
export async function readDataplaneStatsSliced(maps: Record<string, BpfMap>, breathe: Breathe = breather()): Promise<DataplaneStats> {
  const all = Object.values(maps);
  const peersMap = all.find((m) => m.name === "twill_peers");
  const statsMap = all.find((m) => m.name === "twill_stats");
  const peers: PeerEntry[] = [];
  if (peersMap) {
    if (peersMap.keySize !== LPM_KEY.size || peersMap.lookupSize !== PEER.size) {
      throw new TwillError("ERR_BPF_LAYOUT", `Cannot read ${peersMap.name}: its entries are ${peersMap.keySize} + ${peersMap.lookupSize} bytes, this build's ${LPM_KEY.size} + ${PEER.size}`);
    }
    // The kernel walks the trie on libuv's thread pool (one syscall: a trie's batch token is a key, which must not be deleted mid-walk).
    const { keys, values, count } = await peersMap.dumpAsync();
    for (let i = 0; i < count; i++) {
      if ((i & 1023) === 0) await breathe();
      peers.push(new PeerView(keys, values, i));
    }
  }
  const counters = new StatRows();
  if (statsMap) {
    const ncpu = numPossibleCpus();
    const ks = statsMap.keySize, vs = statsMap.lookupSize;
    // Decoded straight from the dump's buffers (reused only once chunk() resolves), ~0.2 ms per step:
    // 1,024 entries of a few CPUs' values, fewer on a machine with many.
    const step = Math.max(64, Math.min(1024, Math.floor(32768 / ncpu)));
    await statsMap.dumpSliced(async (keys, values, count) => {
      for (let i = 0; i < count; i += step) {
        await breathe();
        counters.addDump(keys.subarray(i * ks), values.subarray(i * vs), Math.min(step, count - i), ks, vs, ncpu);
      }
      await breathe(BATCH_SYSCALL_MS);
    });
  }
  const out: MapUsage[] = [];
  for (const m of all) {
    let entries = 0;
    if (m === peersMap) entries = peers.length;
    else if (m === statsMap) entries = counters.length;
    else await m.dumpSliced(async (_k, _v, n) => {
      entries += n;
      await breathe(BATCH_SYSCALL_MS);
    });
    out.push({ name: m.name, entries, capacity: m.maxEntries });
  }
  await breathe();
  return { peers, counters, maps: out };
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

export const emptyPaths = (): Record<Path, Sum> => ({ vxlan: ZERO, direct: ZERO });
/** The drops of a peer that has none (most peers): one shared, empty map. */
const NO_DROPS: ReadonlyMap<string, Sum> = new Map();

/** True for the entries of twill_peers that are remote subnets (not our own subnet or the cluster network). */
export const isRemote = (p: PeerEntry): p is PeerEntry & { kind: Path } => p.kind === "vxlan" || p.kind === "direct";

/** What the counters of one remote peer (`p`, vxlan or direct) say: its traffic by path and direction, its drops by reason. */
export function trafficOf(p: PeerEntry & { kind: Path }, counters: Iterable<readonly [string, Sum]>): PeerTraffic {
  const path = p.kind;
  const t = { tx: emptyPaths(), rx: emptyPaths() };
  let drops: Map<string, Sum> | undefined;
  for (const [name, s] of counters) {
    const r = roleOf(name);
    if (r.kind === "traffic") {
      const on = r.path === "peer" ? path : r.path;
      t[r.direction][on] = add(t[r.direction][on], s);
    } else {
      drops ??= new Map();
      drops.set(r.reason, add(drops.get(r.reason) ?? ZERO, s));
    }
  }
  return { subnet: p.prefix, publicIP: p.remote ?? "", path, ...t, drops: drops ?? NO_DROPS };
}

/** Joins the remote peers (vxlan and direct entries) with their counters. */
export function peerTraffic(peers: readonly PeerEntry[], counters: StatTable): PeerTraffic[] {
  const out: PeerTraffic[] = [];
  for (const p of peers) if (isRemote(p)) out.push(trafficOf(p, counters.get(p.id) ?? []));
  return out;
}

/** Traffic of a peer in a direction, over both paths. */
export function total(t: PeerTraffic, dir: Direction): Sum {
  return add(t[dir].vxlan, t[dir].direct);
}

/**
 * Orders peers 0..n-1 by `bytes` (descending), peers with equal bytes by
 * `subnet` — but only where it matters: among the first `limit` and where
 * the cut falls (most peers idle at 0 bytes would otherwise all be compared
 * by name). Returns the order; its first `limit` are the busiest.
 */
export function* rankSteps(bytes: Float64Array, subnet: (i: number) => string, limit: number): Steps<number[]> {
  const n = bytes.length;
  const order = Array.from({ length: n }, (_, i) => i);
  // Numbers first (cheap), names only among equal bytes.
  yield* sortSteps(order, (a, b) => bytes[b]! - bytes[a]!);
  const cut = n > limit ? bytes[order[limit - 1]!]! : -1;
  for (let i = 0; i < n && bytes[order[i]!]! >= cut;) {
    let j = i + 1;
    while (j < n && bytes[order[j]!] === bytes[order[i]!]) j++;
    if (j - i > 1) {
      // Each name once, not in the comparator; the run's positions sorted by name (no object per peer).
      const names = new Array<string>(j - i), at = new Array<number>(j - i);
      for (let r = 0; r < j - i; r++) {
        if ((r & 511) === 511) yield;
        names[r] = subnet(order[i + r]!);
        at[r] = r;
      }
      yield* sortSteps(at, (a, b) => (names[a]! < names[b]! ? -1 : names[a]! > names[b]! ? 1 : 0));
      const run = order.slice(i, j);
      for (let r = 0; r < at.length; r++) order[i + r] = run[at[r]!]!;
    }
    i = j;
  }
  return order;
}

/** The busiest peers with series of their own, and the rest summed as one row. */
export interface CappedPeers {
  readonly shown: PeerTraffic[];
  /** The peers beyond the cap, summed (subnet and public IP "other"); absent when there are none. */
  readonly other?: PeerTraffic;
  /** How many peers `other` sums. */
  readonly aggregated: number;
}

/**
 * The `limit` busiest peers (by bytes sent and received; ties by subnet)
 * and, when there are more, one row summing the rest as subnet "other".
 */
export function capPeers(list: readonly PeerTraffic[], limit = PEER_SERIES_LIMIT): CappedPeers {
  // Each peer's bytes computed once, not in the comparator (10,000 peers: 280,000 calls).
  // As numbers: exact to 2^53 bytes (8 PiB), and only the order matters here.
  const bytes = Float64Array.from(list, (t) => Number(t.tx.vxlan.bytes + t.tx.direct.bytes + t.rx.vxlan.bytes + t.rx.direct.bytes));
  const order = runAtOnce(rankSteps(bytes, (i) => list[i]!.subnet, limit));
  const shown = order.slice(0, limit).map((i) => list[i]!);
  if (list.length <= limit) return { shown, aggregated: 0 };
  const t = { tx: emptyPaths(), rx: emptyPaths() };
  const drops = new Map<string, Sum>();
  for (const i of order.slice(limit)) {
    const p = list[i]!;
    for (const dir of DIRECTIONS) for (const path of PATHS) t[dir][path] = add(t[dir][path], p[dir][path]);
    for (const [reason, s] of p.drops) drops.set(reason, add(drops.get(reason) ?? ZERO, s));
  }
  return { shown, other: { subnet: OTHER, publicIP: OTHER, ...t, drops }, aggregated: list.length - limit };
}
