/**
 * `twill status`: what a running node has programmed, next to what the
 * leases say, and every difference between the two (drift).
 *
 * How it works:
 * 1) The desired set is computed exactly as the daemon does: the leases from
 *    the lease source, through leasesToPeers, with the node's own lease left
 *    out. The own lease is the one holding the subnet in the node's subnet
 *    file (else the LOCAL entry of the maps, else the vxlan device address).
 * 2) The dataplane is found by what exists on the node: pinned maps under
 *    --bpf-pin-dir mean bpf, a regular (not collect-metadata) flannel.<VNI>
 *    device means kernel.
 * 3) bpf: the entries of twill_peers are compared with the desired peers by
 *    subnet; the own subnet (LOCAL) and the network (CLUSTER) entries and the
 *    device's MAC are checked too. Per-peer counters come from twill_stats
 *    (peerstats.ts). kernel: per desired peer, flannel's three entries
 *    (permanent neighbour, FDB entry, onlink route; a route via the peer for
 *    a direct one) are checked; routes, permanent neighbours and FDB entries
 *    inside the cluster network that no lease backs are stale.
 * 4) Each peer gets a state: ok, missing (the lease has no entry), stale (an
 *    entry no lease backs) or changed (the entry differs; the detail says
 *    how). formatStatus prints a table for people; the same NodeStatus is
 *    the --json output.
 * Nothing is written: status only reads the leases, maps and kernel tables.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { TwillError } from "./errors.js";
import type { NetConfig, Lease } from "./lease/types.js";
import type { ListResult } from "./lease/source.js";
import { leasesToPeers, type OwnLease } from "./peers.js";
import type { Peer } from "./dataplane/types.js";
import { readSubnetFile } from "./subnetfile.js";
import {
  compareIP, formatIP, formatPrefix, ipEqual, makePrefix, parsePrefix, prefixContains, prefixContainsIP, prefixEqual, prefixOverlaps,
  type Family, type IP, type Prefix,
} from "./net/ip.js";
import { findUnderlay, getAddrs, getLink, listFdb, listNeighs, listRoutes, type FdbEntry, type NeighEntry, type RouteEntry, type UnderlayOptions } from "./net/link.js";
import { openPinnedMaps } from "./bpf/loader.js";
import { peerTraffic, readPeerEntries, readStatTable, total, type PeerEntry, type Path, type StatTable } from "./peerstats.js";
import type { dumpBpfState } from "./dataplane/bpf.js";

export type PeerState = "ok" | "missing" | "stale" | "changed";

export interface Traffic { readonly packets: number; readonly bytes: number }

export interface StatusPeer {
  readonly subnet: string;
  readonly publicIP?: string;
  readonly vtepMAC?: string;
  readonly path?: Path;
  /** The lease backing it (absent for stale entries). */
  readonly lease?: string;
  readonly state: PeerState;
  /** What differs, for changed entries. */
  readonly detail?: string;
  /** Counted by the dataplane over both paths; absent without per-peer counters (kernel) and for missing entries. */
  readonly tx?: Traffic;
  readonly rx?: Traffic;
}

export interface Drift {
  readonly kind: "missing" | "stale" | "changed";
  /** A subnet, or what else drifted (the device, the own lease). */
  readonly subject: string;
  readonly detail: string;
}

export interface NodeStatus {
  readonly dataplane: "bpf" | "kernel";
  readonly pinDir?: string;
  readonly devices: readonly string[];
  readonly lease?: {
    readonly key: string; readonly subnet?: string; readonly ipv6Subnet?: string;
    readonly publicIP?: string; readonly publicIPv6?: string; readonly vtepMAC?: string; readonly ipv6VtepMAC?: string;
  };
  readonly network: { readonly network?: string; readonly ipv6Network?: string; readonly vni: number; readonly port: number; readonly directRouting: boolean };
  readonly statsAvailable: boolean;
  readonly peers: readonly StatusPeer[];
  readonly rejected: readonly { readonly key: string; readonly code: string; readonly reason: string }[];
  readonly drift: readonly Drift[];
}

export interface StatusOptions {
  readonly source: { readConfig(): Promise<NetConfig>; list(): Promise<ListResult> };
  readonly subnetFile: string;
  readonly pinDir: string;
  /** The underlay flags, for DirectRouting's "same segment" rule. */
  readonly underlay: UnderlayOptions;
}

/** The device names twill and flannel use for a VNI. */
const deviceNames = (c: NetConfig): { v4: string; v6: string } => ({ v4: `flannel.${c.backend.vni}`, v6: `flannel-v6.${c.backend.vni}` });

/** One programmed remote subnet, as read from the maps or the kernel. */
interface Actual {
  readonly prefix: Prefix;
  readonly path: Path;
  readonly publicIP?: IP;
  readonly vtepMAC?: string;
  readonly vni?: number;
  /** Kernel: flannel's entries of this peer that are absent or wrong. */
  readonly problems: readonly string[];
  /** Kernel: none of the peer's entries exist. */
  readonly absent?: boolean;
}

const sortKey = (a: { prefix: Prefix }, b: { prefix: Prefix }): number =>
  a.prefix.ip.family - b.prefix.ip.family || compareIP(a.prefix.ip, b.prefix.ip) || a.prefix.len - b.prefix.len;

const describeLease = (p: Peer): string =>
  `PublicIP ${formatIP(p.publicIP)}${p.direct ? ", direct" : `, VtepMAC ${p.vtepMAC}`}`;

/**
 * Compares desired peers with what is programmed, by subnet. `where` names
 * the place in the messages ("twill_peers", "flannel.1").
 */
export function comparePeers(
  desired: readonly { peer: Peer; lease: string }[], actual: readonly Actual[], where: string,
): { rows: Array<StatusPeer & { prefix: Prefix }>; drift: Drift[] } {
  const rows: Array<StatusPeer & { prefix: Prefix }> = [];
  const drift: Drift[] = [];
  const have = new Map(actual.map((a) => [formatPrefix(a.prefix), a]));
  const wanted = new Set<string>();
  for (const { peer: p, lease } of desired) {
    const key = formatPrefix(p.subnet);
    wanted.add(key);
    const a = have.get(key);
    const path: Path = p.direct ? "direct" : "vxlan";
    if (!a || a.absent) {
      rows.push({ prefix: p.subnet, subnet: key, publicIP: formatIP(p.publicIP), ...(p.direct ? {} : { vtepMAC: p.vtepMAC }), path, lease, state: "missing" });
      drift.push({ kind: "missing", subject: key, detail: `lease ${lease} (${describeLease(p)}) has no entry in ${where}` });
      continue;
    }
    const diffs: string[] = [];
    if (a.path !== path) diffs.push(`path is ${a.path}, the lease makes it ${path}`);
    if (!a.publicIP || !ipEqual(a.publicIP, p.publicIP)) diffs.push(`public IP is ${a.publicIP ? formatIP(a.publicIP) : "unknown"}, the lease says ${formatIP(p.publicIP)}`);
    if (!p.direct && a.path === "vxlan" && a.vtepMAC !== p.vtepMAC) diffs.push(`VTEP MAC is ${a.vtepMAC ?? "unknown"}, the lease says ${p.vtepMAC}`);
    if (a.vni !== undefined && !p.direct && a.vni !== p.vni) diffs.push(`VNI is ${a.vni}, the lease says ${p.vni}`);
    diffs.push(...a.problems);
    const state: PeerState = diffs.length ? "changed" : "ok";
    rows.push({
      prefix: p.subnet, subnet: key, ...(a.publicIP ? { publicIP: formatIP(a.publicIP) } : {}), ...(a.vtepMAC ? { vtepMAC: a.vtepMAC } : {}),
      path: a.path, lease, state, ...(diffs.length ? { detail: diffs.join("; ") } : {}),
    });
    if (diffs.length) drift.push({ kind: "changed", subject: key, detail: `${where}: ${diffs.join("; ")}` });
  }
  for (const a of actual) {
    const key = formatPrefix(a.prefix);
    if (wanted.has(key) || a.absent) continue;
    rows.push({
      prefix: a.prefix, subnet: key, ...(a.publicIP ? { publicIP: formatIP(a.publicIP) } : {}), ...(a.vtepMAC ? { vtepMAC: a.vtepMAC } : {}),
      path: a.path, state: "stale",
    });
    const to = a.publicIP ? ` (to ${formatIP(a.publicIP)}${a.vtepMAC ? `, VTEP MAC ${a.vtepMAC}` : ""})` : "";
    drift.push({ kind: "stale", subject: key, detail: `${where} has an entry${to} that no lease backs` });
  }
  rows.sort(sortKey);
  return { rows, drift };
}

// ---- bpf --------------------------------------------------------------------

/** The remote peers of twill_peers as Actuals, and drift of the node's own entries. */
export function bpfActual(entries: readonly PeerEntry[], own: readonly Prefix[], networks: readonly Prefix[]): { actual: Actual[]; drift: Drift[] } {
  const actual: Actual[] = [];
  const drift: Drift[] = [];
  const parse = (s: string) => parsePrefix(s, "map entry", true);
  for (const e of entries) {
    const prefix = parse(e.prefix);
    if (e.kind === "vxlan" || e.kind === "direct") {
      const ip = e.remote ? parsePrefix(`${e.remote}/${e.remote.includes(":") ? 128 : 32}`, "remote", true).ip : undefined;
      actual.push({ prefix, path: e.kind, ...(ip ? { publicIP: ip } : {}), ...(e.vtepMAC ? { vtepMAC: e.vtepMAC } : {}), ...(e.kind === "vxlan" ? { vni: e.vni } : {}), problems: [] });
    } else if (e.kind === "local" && !own.some((o) => prefixEqual(o, prefix))) {
      drift.push({ kind: "stale", subject: e.prefix, detail: "twill_peers marks it as our own subnet (LOCAL), but our lease is another one" });
    } else if (e.kind === "cluster" && !networks.some((n) => prefixEqual(n, prefix))) {
      drift.push({ kind: "stale", subject: e.prefix, detail: "twill_peers marks it as the cluster network (CLUSTER), but the network config says otherwise" });
    } else if (e.kind !== "local" && e.kind !== "cluster") {
      drift.push({ kind: "stale", subject: e.prefix, detail: `twill_peers has an entry of unknown kind ${e.kind}` });
    }
  }
  for (const o of own) {
    if (!entries.some((e) => e.kind === "local" && prefixEqual(parse(e.prefix), o))) {
      drift.push({ kind: "missing", subject: formatPrefix(o), detail: "twill_peers has no LOCAL entry for our own subnet" });
    }
  }
  for (const n of networks) {
    if (!entries.some((e) => e.kind === "cluster" && prefixEqual(parse(e.prefix), n))) {
      drift.push({ kind: "missing", subject: formatPrefix(n), detail: "twill_peers has no CLUSTER entry for the cluster network" });
    }
  }
  return { actual, drift };
}

// ---- kernel -------------------------------------------------------------------

/** flannel's kernel tables of one family: the vxlan device's and the underlay's. */
export interface KernelTables {
  readonly family: Family;
  readonly device: string;
  readonly underlay?: string;
  readonly network: Prefix;
  readonly own: Prefix;
  readonly routes: readonly RouteEntry[];
  readonly underlayRoutes: readonly RouteEntry[];
  readonly neighs: readonly NeighEntry[];
  readonly fdb: readonly FdbEntry[];
}

/**
 * flannel's entries of the desired peers of one family, as Actuals (with
 * what is absent or wrong), plus stale routes (as Actuals) and stale
 * neighbours and FDB entries (as drift).
 */
export function kernelActual(t: KernelTables, desired: readonly Peer[]): { actual: Actual[]; drift: Drift[] } {
  const inScope = (r: RouteEntry) => prefixContains(t.network, r.dst) && !prefixOverlaps(r.dst, t.own) && r.protocol !== "kernel";
  const routes = [...t.routes.filter(inScope), ...t.underlayRoutes.filter((r) => inScope(r) && r.gateway !== undefined)];
  const neighAt = (ip: IP) => t.neighs.find((n) => ipEqual(n.dst, ip));
  const fdbOf = (mac: string) => t.fdb.filter((f) => f.mac === mac && f.dst !== undefined && f.flags.includes("self"));
  const actual: Actual[] = [];
  const drift: Drift[] = [];
  const usedNeigh = new Set<string>();
  const usedFdb = new Set<string>();
  const mine = desired.filter((p) => p.subnet.ip.family === t.family);

  for (const p of mine) {
    const rs = routes.filter((r) => prefixEqual(r.dst, p.subnet));
    const problems: string[] = [];
    if (p.direct) {
      const ok = rs.find((r) => r.dev === t.underlay && r.gateway && ipEqual(r.gateway, p.publicIP));
      if (!ok) {
        if (rs.length === 0) { actual.push({ prefix: p.subnet, path: "direct", problems: [], absent: true }); continue; }
        problems.push(`no route ${formatPrefix(p.subnet)} via ${formatIP(p.publicIP)} dev ${t.underlay ?? "?"} (found: ${rs.map(routeText).join(", ")})`);
      }
      const r = ok ?? rs[0]!;
      actual.push({ prefix: p.subnet, path: r.dev === t.device ? "vxlan" : "direct", ...(r.gateway ? { publicIP: r.gateway } : {}), problems });
      continue;
    }
    const gw = p.subnet.ip;
    const n = neighAt(gw);
    const mac = n?.lladdr;
    if (n) usedNeigh.add(formatIP(n.dst));
    const wantFdb = fdbOf(p.vtepMAC).find((f) => ipEqual(f.dst!, p.publicIP));
    const anyFdb = mac ? fdbOf(mac)[0] : undefined;
    for (const f of [wantFdb, anyFdb]) if (f) usedFdb.add(`${f.mac} ${formatIP(f.dst!)}`);
    const route = rs.find((r) => r.dev === t.device);
    if (!route && !n && !wantFdb) {
      const other = rs[0];
      if (!other) { actual.push({ prefix: p.subnet, path: "vxlan", problems: [], absent: true }); continue; }
    }
    if (!n) problems.push(`no neighbour ${formatIP(gw)} on ${t.device}`);
    else if (!n.state.includes("PERMANENT")) problems.push(`neighbour ${formatIP(gw)} is ${n.state.join(",")}, not PERMANENT`);
    if (!wantFdb) problems.push(`no FDB entry ${p.vtepMAC} dst ${formatIP(p.publicIP)} on ${t.device}`);
    else if (wantFdb.state !== "permanent") problems.push(`FDB entry ${p.vtepMAC} is ${wantFdb.state || "learned"}, not permanent`);
    if (!route) problems.push(`no route ${formatPrefix(p.subnet)} dev ${t.device}${rs.length ? ` (found: ${rs.map(routeText).join(", ")})` : ""}`);
    else if (!route.gateway || !ipEqual(route.gateway, gw)) problems.push(`route ${formatPrefix(p.subnet)} goes via ${route.gateway ? formatIP(route.gateway) : "no gateway"}, flannel uses ${formatIP(gw)}`);
    else if (!route.flags.includes("onlink")) problems.push(`route ${formatPrefix(p.subnet)} is not onlink`);
    // What the peer resolves to: the neighbour's MAC, and the FDB entry of that MAC.
    const seenMAC = mac ?? (wantFdb ? p.vtepMAC : undefined);
    const seenIP = (mac ? anyFdb?.dst : undefined) ?? wantFdb?.dst;
    // The MAC and IP checks of comparePeers already say it when they differ.
    const own = problems.filter((x) => !(mac && mac !== p.vtepMAC && x.startsWith("no FDB entry")));
    actual.push({ prefix: p.subnet, path: "vxlan", ...(seenIP ? { publicIP: seenIP } : {}), ...(seenMAC ? { vtepMAC: seenMAC } : {}), problems: own });
  }

  const desiredKeys = new Set(mine.map((p) => formatPrefix(p.subnet)));
  for (const r of routes) {
    const key = formatPrefix(r.dst);
    if (desiredKeys.has(key) || actual.some((a) => prefixEqual(a.prefix, r.dst) && !a.absent)) continue;
    if (r.dev === t.device) {
      const n = r.gateway ? neighAt(r.gateway) : undefined;
      if (n) usedNeigh.add(formatIP(n.dst));
      const f = n?.lladdr ? fdbOf(n.lladdr)[0] : undefined;
      if (f) usedFdb.add(`${f.mac} ${formatIP(f.dst!)}`);
      actual.push({ prefix: r.dst, path: "vxlan", ...(f?.dst ? { publicIP: f.dst } : {}), ...(n?.lladdr ? { vtepMAC: n.lladdr } : {}), problems: [] });
    } else {
      actual.push({ prefix: r.dst, path: "direct", ...(r.gateway ? { publicIP: r.gateway } : {}), problems: [] });
    }
  }
  for (const n of t.neighs) {
    if (!n.state.includes("PERMANENT") || !prefixContainsIP(t.network, n.dst) || usedNeigh.has(formatIP(n.dst))) continue;
    drift.push({ kind: "stale", subject: formatPrefix(makePrefix(n.dst, t.own.len)), detail: `neighbour ${formatIP(n.dst)} lladdr ${n.lladdr ?? "?"} on ${t.device} belongs to no lease` });
  }
  const wantedFdb = new Set(mine.filter((p) => !p.direct).map((p) => `${p.vtepMAC} ${formatIP(p.publicIP)}`));
  for (const f of t.fdb) {
    if (!f.dst || !f.flags.includes("self") || f.mac === "00:00:00:00:00:00") continue;
    const k = `${f.mac} ${formatIP(f.dst)}`;
    if (wantedFdb.has(k) || usedFdb.has(k)) continue;
    drift.push({ kind: "stale", subject: `fdb ${f.mac}`, detail: `FDB entry ${f.mac} dst ${formatIP(f.dst)} on ${t.device} belongs to no lease` });
  }
  return { actual, drift };
}

const routeText = (r: RouteEntry): string => `${formatPrefix(r.dst)}${r.gateway ? ` via ${formatIP(r.gateway)}` : ""} dev ${r.dev ?? "?"}`;

// ---- reading a node ---------------------------------------------------------------

const familyOf = (c: NetConfig): Array<{ family: Family; network: Prefix }> =>
  [c.enableIPv4 && c.network ? { family: 4 as const, network: c.network } : undefined, c.enableIPv6 && c.ipv6Network ? { family: 6 as const, network: c.ipv6Network } : undefined]
    .filter((x): x is { family: Family; network: Prefix } => x !== undefined);

/** Finds which lease is ours; undefined subnets when nothing says. */
async function ownSubnets(o: StatusOptions, c: NetConfig, bpfEntries: readonly PeerEntry[] | undefined): Promise<{ v4?: Prefix; v6?: Prefix; from: string }> {
  const sf = await readSubnetFile(o.subnetFile);
  if (sf && (sf.subnet || sf.ipv6Subnet)) {
    return { ...(sf.subnet ? { v4: sf.subnet } : {}), ...(sf.ipv6Subnet ? { v6: sf.ipv6Subnet } : {}), from: `the subnet file ${o.subnetFile}` };
  }
  const local = (bpfEntries ?? []).filter((e) => e.kind === "local").map((e) => parsePrefix(e.prefix, "map entry", true));
  if (local.length) {
    const v4 = local.find((p) => p.ip.family === 4), v6 = local.find((p) => p.ip.family === 6);
    return { ...(v4 ? { v4 } : {}), ...(v6 ? { v6 } : {}), from: "the LOCAL entries of twill_peers" };
  }
  const dev = deviceNames(c);
  const out: { v4?: Prefix; v6?: Prefix; from: string } = { from: "the vxlan device's address" };
  for (const { family, network } of familyOf(c)) {
    const a = (await getAddrs(family === 4 ? dev.v4 : dev.v6).catch(() => [])).find((x) => x.family === family && x.scope !== "link" && prefixContainsIP(network, x.local));
    if (a) out[family === 4 ? "v4" : "v6"] = makePrefix(a.local, family === 4 ? c.subnetLen : c.ipv6SubnetLen);
  }
  return out;
}

async function readDirect(o: StatusOptions, c: NetConfig): Promise<(ip: IP) => boolean> {
  if (!c.backend.directRouting) return () => false;
  // The daemon's rule: a peer is direct when its public IP is on one of the underlay's own subnets.
  const u = await findUnderlay(o.underlay);
  const onLink = (await getAddrs(u.name)).filter((a) => a.scope !== "link").map((a) => makePrefix(a.local, a.prefixLen));
  return (ip: IP) => onLink.some((p) => prefixContainsIP(p, ip));
}

/** Reads the leases, the maps or kernel tables, and compares them. Throws when there is no twill dataplane here. */
export async function nodeStatus(o: StatusOptions): Promise<NodeStatus> {
  const config = await o.source.readConfig();
  const { leases, errors } = await o.source.list();
  const dev = deviceNames(config);
  const fams = familyOf(config);
  const mainDev = config.enableIPv4 ? dev.v4 : dev.v6;
  const pinned = existsSync(join(o.pinDir, "maps", "twill_peers"));
  const link = await getLink(mainDev);
  if (!pinned && !(link && link.vxlan && !link.vxlan.external)) {
    throw new TwillError("ERR_DATAPLANE", `no twill dataplane on this node: no pinned maps under ${o.pinDir} (--bpf-pin-dir) and no ${mainDev} device of the kernel dataplane; run it in the node's network namespace with the daemon's flags`);
  }
  const mode: "bpf" | "kernel" = pinned ? "bpf" : "kernel";

  let entries: PeerEntry[] | undefined;
  let counters: StatTable | undefined;
  if (mode === "bpf") {
    const maps = openPinnedMaps(o.pinDir);
    try {
      entries = readPeerEntries(maps.twill_peers);
      counters = readStatTable(maps.twill_stats);
    } finally {
      for (const m of Object.values(maps)) m.close();
    }
  }

  const drift: Drift[] = [];
  const own = await ownSubnets(o, config, entries);
  if (!own.v4 && !own.v6) throw new TwillError("ERR_LEASE_LOST", `cannot tell which lease is this node's: no subnet in ${o.subnetFile} (--subnet-file), no LOCAL map entry, no address on ${mainDev}`);
  const ownLease: Lease | undefined = leases.find((l) => (own.v4 && l.subnet && prefixEqual(l.subnet, own.v4)) || (own.v6 && l.ipv6Subnet && prefixEqual(l.ipv6Subnet, own.v6)));
  if (!ownLease) {
    drift.push({ kind: "missing", subject: "own lease", detail: `${own.from} gives ${[own.v4, own.v6].filter(Boolean).map((p) => formatPrefix(p!)).join(" and ")}, but no lease holds it` });
  }
  const ownRef: OwnLease = { key: ownLease?.key ?? "", ...(own.v4 ? { subnet: own.v4 } : {}), ...(own.v6 ? { ipv6Subnet: own.v6 } : {}) };
  const { byKey, rejected } = leasesToPeers(leases, { config, own: ownRef, direct: await readDirect(o, config), checkLength: (o.source as { kind?: string }).kind !== "kube" });
  const desired = [...byKey].flatMap(([lease, ps]) => ps.map((peer) => ({ peer, lease })));

  // The device's MAC is the VTEP MAC peers send to: it must be the one in our lease.
  const devices: string[] = [];
  for (const { family } of fams) {
    const name = mode === "bpf" ? mainDev : family === 4 ? dev.v4 : dev.v6;
    if (devices.includes(name)) continue;
    devices.push(name);
    const l = name === mainDev ? link : await getLink(name);
    const want = family === 4 ? ownLease?.backendData?.vtepMAC : ownLease?.backendV6Data?.vtepMAC;
    if (!l) drift.push({ kind: "missing", subject: name, detail: `the vxlan device ${name} does not exist` });
    else if (want && l.mac !== want) drift.push({ kind: "changed", subject: name, detail: `${name} has MAC ${l.mac}, our lease announces VtepMAC ${want}: peers send to the wrong MAC` });
  }

  let rows: Array<StatusPeer & { prefix: Prefix }>;
  if (mode === "bpf") {
    const b = bpfActual(entries!, [own.v4, own.v6].filter((p): p is Prefix => !!p), fams.map((f) => f.network));
    const c = comparePeers(desired, b.actual, "twill_peers");
    const traffic = new Map(peerTraffic(entries!, counters!).map((t) => [t.subnet, t]));
    const n = (v: bigint) => Number(v);
    // A missing entry has no counters; a programmed one without any has counted nothing yet.
    rows = c.rows.map((r) => {
      if (r.state === "missing") return r;
      const t = traffic.get(r.subnet);
      const tx = t ? total(t, "tx") : undefined, rx = t ? total(t, "rx") : undefined;
      return { ...r, tx: { packets: n(tx?.packets ?? 0n), bytes: n(tx?.bytes ?? 0n) }, rx: { packets: n(rx?.packets ?? 0n), bytes: n(rx?.bytes ?? 0n) } };
    });
    drift.push(...b.drift, ...c.drift);
  } else {
    const actual: Actual[] = [];
    for (const { family, network } of fams) {
      const ownSubnet = family === 4 ? own.v4 : own.v6;
      if (!ownSubnet) continue;
      const device = family === 4 ? dev.v4 : dev.v6;
      const l = await getLink(device);
      if (!l) continue;
      const underlay = l.vxlan?.dev;
      const [routes, neighs, fdb, underlayRoutes] = await Promise.all([
        listRoutes(device, family), listNeighs(device, family), listFdb(device), underlay ? listRoutes(underlay, family) : Promise.resolve([]),
      ]);
      const k = kernelActual({ family, device, ...(underlay ? { underlay } : {}), network, own: ownSubnet, routes, underlayRoutes, neighs, fdb }, desired.map((d) => d.peer));
      actual.push(...k.actual);
      drift.push(...k.drift);
    }
    const c = comparePeers(desired, actual, devices.join("/"));
    rows = c.rows;
    drift.push(...c.drift);
  }

  const ip = (x?: IP) => (x ? formatIP(x) : undefined);
  const pfx = (x?: Prefix) => (x ? formatPrefix(x) : undefined);
  const clean = <T extends object>(x: T): T => Object.fromEntries(Object.entries(x).filter(([, v]) => v !== undefined)) as T;
  return {
    dataplane: mode,
    ...(mode === "bpf" ? { pinDir: o.pinDir } : {}),
    devices,
    ...(ownLease ? {
      lease: clean({
        key: ownLease.key, subnet: pfx(ownLease.subnet), ipv6Subnet: pfx(ownLease.ipv6Subnet), publicIP: ip(ownLease.publicIP), publicIPv6: ip(ownLease.publicIPv6),
        vtepMAC: ownLease.backendData?.vtepMAC, ipv6VtepMAC: ownLease.backendV6Data?.vtepMAC,
      }),
    } : {}),
    network: clean({ network: pfx(config.network), ipv6Network: pfx(config.ipv6Network), vni: config.backend.vni, port: config.backend.port, directRouting: config.backend.directRouting }),
    statsAvailable: mode === "bpf",
    peers: rows.map(({ prefix: _p, ...r }) => r),
    rejected: [...rejected, ...errors.map((e) => ({ key: e.key, code: e.error.code, reason: e.error.message }))],
    drift,
  };
}

// ---- text -------------------------------------------------------------------------

/** Columns padded to their widest cell, two spaces apart. */
export function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const w = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (r: readonly string[]) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(w[i]!))).join("  ").trimEnd();
  return [line(header), ...rows.map(line)].join("\n") + "\n";
}

/** 1536 → "1.5 KiB". */
export function humanBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return i === 0 ? `${n} B` : `${v.toFixed(1)} ${units[i]}`;
}

export function formatStatus(s: NodeStatus): string {
  const l = s.lease;
  const out: string[] = [];
  const own = l ? [l.subnet, l.ipv6Subnet].filter(Boolean).join(" + ") : "none";
  out.push(`Lease:      ${own}${l ? ` (key ${l.key})` : ""}`);
  if (l) out.push(`Public IP:  ${[l.publicIP, l.publicIPv6].filter(Boolean).join(", ")}    VTEP MAC: ${[...new Set([l.vtepMAC, l.ipv6VtepMAC].filter(Boolean))].join(", ")}`);
  out.push(`Network:    ${[s.network.network, s.network.ipv6Network].filter(Boolean).join(", ")}    VNI ${s.network.vni}, UDP ${s.network.port}${s.network.directRouting ? ", DirectRouting" : ""}`);
  out.push(`Dataplane:  ${s.dataplane} (${s.devices.join(", ")}${s.pinDir ? `; pins ${s.pinDir}` : ""})`);
  out.push("");
  const dash = (x?: string) => x ?? "-";
  const rows = s.peers.map((p) => [
    p.subnet, dash(p.publicIP), dash(p.vtepMAC), dash(p.path),
    p.tx ? String(p.tx.packets) : "-", p.tx ? humanBytes(p.tx.bytes) : "-",
    p.rx ? String(p.rx.packets) : "-", p.rx ? humanBytes(p.rx.bytes) : "-",
    p.state,
  ]);
  out.push(table(["SUBNET", "PUBLIC IP", "VTEP MAC", "PATH", "TX PKTS", "TX BYTES", "RX PKTS", "RX BYTES", "STATE"], rows).trimEnd());
  if (!s.peers.length) out.push("(no peers)");
  if (!s.statsAvailable) out.push("(the kernel dataplane keeps no per-peer counters)");
  if (s.rejected.length) {
    out.push("", `Rejected leases (${s.rejected.length}):`);
    for (const r of s.rejected) out.push(`  ${r.key}  ${r.code}  ${r.reason}`);
  }
  out.push("");
  if (!s.drift.length) {
    out.push(`No drift: the ${s.dataplane === "bpf" ? "maps match" : "kernel matches"} the leases (${s.peers.length} peers).`);
  } else {
    const count = (k: Drift["kind"]) => s.drift.filter((d) => d.kind === k).length;
    out.push(`DRIFT: ${count("missing")} missing, ${count("stale")} stale, ${count("changed")} changed`);
    out.push(table(["KIND", "WHAT", "DETAIL"], s.drift.map((d) => [d.kind, d.subject, d.detail])).replace(/^/gm, "  ").trimEnd());
  }
  return out.join("\n") + "\n";
}

type BpfState = ReturnType<typeof dumpBpfState>;

const entries = (n: number): string => `${n} ${n === 1 ? "entry" : "entries"}`;

/** `twill maps` for people: one table per map, like `cilium bpf tunnel list`. */
export function formatMaps(m: BpfState): string {
  const out: string[] = [];
  const byId = new Map(m.peers.map((p) => [String(p.id), p.prefix]));
  const order: Record<string, number> = { local: 0, cluster: 1, vxlan: 2, direct: 3 };
  const peers = [...m.peers].sort((a, b) => (order[a.kind] ?? 9) - (order[b.kind] ?? 9) || a.prefix.localeCompare(b.prefix, "en", { numeric: true }));
  out.push(`twill_peers (${entries(m.peers.length)})`);
  out.push(table(["PREFIX", "KIND", "REMOTE", "VTEP MAC", "VNI", "ID"],
    peers.map((p) => [p.prefix, p.kind, p.remote ?? "-", p.vtepMAC ?? "-", p.kind === "vxlan" ? String(p.vni) : "-", p.id ? String(p.id) : "-"])));
  out.push(`twill_endpoints (${entries(m.endpoints.length)})`);
  out.push(table(["IP", "IFINDEX", "MAC"], [...m.endpoints].sort((a, b) => a.ip.localeCompare(b.ip, "en", { numeric: true })).map((e) => [e.ip, String(e.ifindex), e.mac])));
  const stats = Object.entries(m.perPeer).flatMap(([id, byName]) => Object.entries(byName).map(([name, s]) => [
    id === "0" ? "(none)" : byId.get(id) ?? `(gone, id ${id})`, id, name, s.packets, s.bytes,
  ]));
  stats.sort((a, b) => Number(a[1]) - Number(b[1]) || a[2]!.localeCompare(b[2]!));
  out.push(`twill_stats (${entries(stats.length)}, summed over CPUs)`);
  out.push(table(["PEER", "ID", "COUNTER", "PACKETS", "BYTES"], stats));
  out.push("Counters (all peers)");
  out.push(table(["COUNTER", "PACKETS", "BYTES"], Object.entries(m.counters).map(([n, s]) => [n, s.packets, s.bytes])));
  out.push("Pinned maps and links (kernel ids)");
  out.push(table(["PIN", "ID", "PROG ID", "IFINDEX"], [
    ...Object.entries(m.ids.maps).map(([n, id]) => [`maps/${n}`, String(id), "-", "-"]),
    ...Object.entries(m.ids.links).map(([n, l]) => [`links/${n}`, String(l.id), String(l.progId), String(l.ifindex)]),
  ]).trimEnd());
  return out.join("\n") + "\n";
}
