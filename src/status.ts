/**
 * `twill status`: what a running node has programmed, next to what the
 * leases say, and every difference between the two (drift).
 *
 * How it works:
 * 1) The desired set is computed exactly as the daemon does: the leases from
 *    the lease source, through leasesToPeers, with the node's own lease left
 *    out; as on the daemon's re-list, leases the node holds now (bpf: their
 *    subnet's entry names their public IP) keep a contested subnet or
 *    address (the kernel dataplane: key order). The own lease is found with the daemon's rule (findOwnLease): it
 *    holds the subnet in the node's subnet file (else the LOCAL entry of the
 *    maps, else the vxlan device address) and names this node's public IP.
 * 2) The dataplane is found by what exists on the node: pinned maps under
 *    --bpf-pin-dir mean bpf, a regular (not collect-metadata) flannel.<VNI>
 *    device means kernel.
 * 3) The drift is what the daemon's reconcile would repair, computed by the
 *    same function: diffBpf (dataplane/bpfdiff.ts: twill_peers with its
 *    LOCAL and CLUSTER entries, twill_remotes) or diffKernel
 *    (dataplane/kerneldiff.ts: flannel's neighbour, FDB entry and route per
 *    peer, and stale ones). The device's MAC is checked against our lease.
 *    Per-peer counters come from twill_stats (peerstats.ts).
 * 4) Each peer gets a state from the drift of its subnet: ok, missing,
 *    stale or changed (the detail says how). formatStatus prints a table
 *    for people; the same NodeStatus is the --json output.
 * Nothing is written: status only reads the leases, maps and kernel tables.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { TwillError } from "./errors.js";
import type { NetConfig, Lease } from "./lease/types.js";
import type { ListResult } from "./lease/source.js";
import { findOwnLease, leasesToPeers, type OwnLease } from "./peers.js";
import { bpfImage, diffBpf, type BpfObserved } from "./dataplane/bpfdiff.js";
import { diffKernel, type KernelTables } from "./dataplane/kerneldiff.js";
import { observeKernel } from "./dataplane/kernel.js";
import { deviceDrift, type Drift } from "./dataplane/drift.js";
import { deviceNames, type Peer } from "./dataplane/types.js";
import { readSubnetFile } from "./subnetfile.js";
import {
  compareIP, formatIP, formatPrefix, makePrefix, parsePrefix, prefixContainsIP, type Family, type IP, type Prefix,
} from "./net/ip.js";
import { findUnderlay, getAddrs, getLink, type UnderlayOptions } from "./net/link.js";
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

export type { Drift } from "./dataplane/drift.js";

export interface NodeStatus {
  readonly dataplane: "bpf" | "kernel";
  /** Why the node runs kernel under --dataplane auto (no CAP_BPF, no bpffs); absent otherwise. */
  readonly dataplaneReason?: string;
  readonly pinDir?: string;
  readonly devices: readonly string[];
  readonly lease?: {
    readonly key: string; readonly subnet?: string; readonly ipv6Subnet?: string;
    readonly publicIP?: string; readonly publicIPv6?: string; readonly vtepMAC?: string; readonly ipv6VtepMAC?: string;
  };
  readonly network: { readonly network?: string; readonly ipv6Network?: string; readonly backend: "vxlan" | "host-gw"; readonly vni?: number; readonly port?: number; readonly directRouting?: boolean };
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
  /** --dataplane: which dataplane to expect when nothing on the node says (the kernel one with its device gone). */
  readonly dataplane?: "auto" | "bpf" | "kernel";
  /** Why bpf cannot run here (dataplane/choose.ts), "" when it can: --dataplane auto then runs kernel, and status says so. */
  readonly dataplaneReason?: string;
  /** --allow-link-local-public-ip, as the daemon has it: the same leases are rejected. */
  readonly allowLinkLocalPublicIP?: boolean;
}


const sortKey = (a: { prefix: Prefix }, b: { prefix: Prefix }): number =>
  a.prefix.ip.family - b.prefix.ip.family || compareIP(a.prefix.ip, b.prefix.ip) || a.prefix.len - b.prefix.len;

/** What a row shows of a programmed entry (bpf: decoded from the trie). */
interface Shown { readonly path?: Path; readonly publicIP?: string; readonly vtepMAC?: string }

/**
 * One row per wanted peer and per stale subnet, its state taken from the
 * drift of its subject; `shown` gives what is programmed where known.
 */
export function peerRows(
  desired: readonly { peer: Peer; lease: string }[], drift: readonly Drift[], shown: (subnet: string) => Shown | undefined,
): Array<StatusPeer & { prefix: Prefix }> {
  const bySubject = new Map<string, Drift>();
  for (const d of drift) if (!bySubject.has(d.subject) || d.kind !== "stale") bySubject.set(d.subject, d);
  const rows: Array<StatusPeer & { prefix: Prefix }> = [];
  const wanted = new Set<string>();
  for (const { peer: p, lease } of desired) {
    const key = formatPrefix(p.subnet);
    wanted.add(key);
    const d = bySubject.get(key);
    const state: PeerState = d && d.kind !== "stale" ? d.kind : "ok";
    const have = state === "missing" ? undefined : shown(key);
    rows.push({
      prefix: p.subnet, subnet: key, publicIP: have?.publicIP ?? formatIP(p.publicIP),
      ...(have?.vtepMAC ? { vtepMAC: have.vtepMAC } : p.direct ? {} : { vtepMAC: p.vtepMAC }),
      path: have?.path ?? (p.direct ? "direct" : "vxlan"), lease, state, ...(d && state !== "ok" ? { detail: d.detail } : {}),
    });
  }
  for (const d of drift) {
    if (d.kind !== "stale" || wanted.has(d.subject)) continue;
    const prefix = tryParsePrefix(d.subject);
    if (!prefix) continue;
    wanted.add(d.subject);
    const have = shown(d.subject);
    rows.push({ prefix, subnet: d.subject, ...(have?.publicIP ? { publicIP: have.publicIP } : {}), ...(have?.vtepMAC ? { vtepMAC: have.vtepMAC } : {}), ...(have?.path ? { path: have.path } : {}), state: "stale", detail: d.detail });
  }
  rows.sort(sortKey);
  return rows;
}

const tryParsePrefix = (s: string): Prefix | undefined => {
  try {
    return s.includes("/") ? parsePrefix(s, "subject", true) : undefined;
  } catch {
    return undefined;
  }
};

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
  const dev = deviceNames(c.backend);
  const out: { v4?: Prefix; v6?: Prefix; from: string } = { from: "the vxlan device's address" };
  for (const { family, network } of familyOf(c)) {
    const a = (await getAddrs(family === 4 ? dev.v4 : dev.v6).catch(() => [])).find((x) => x.family === family && x.scope !== "link" && prefixContainsIP(network, x.local));
    if (a) out[family === 4 ? "v4" : "v6"] = makePrefix(a.local, family === 4 ? c.subnetLen : c.ipv6SubnetLen);
  }
  return out;
}

async function readDirect(o: StatusOptions, c: NetConfig): Promise<(ip: IP) => boolean> {
  if (c.backend.type === "vxlan" && !c.backend.directRouting) return () => false;
  // The daemon's rule: a peer is direct when its public IP is on one of the underlay's own subnets.
  const u = await findUnderlay(o.underlay);
  const onLink = (await getAddrs(u.name)).filter((a) => a.scope !== "link").map((a) => makePrefix(a.local, a.prefixLen));
  return (ip: IP) => onLink.some((p) => prefixContainsIP(p, ip));
}

/** Reads the leases, the maps or kernel tables, and compares them. Throws when there is no twill dataplane here. */
export async function nodeStatus(o: StatusOptions): Promise<NodeStatus> {
  const config = await o.source.readConfig();
  const { leases, errors } = await o.source.list();
  const dev = deviceNames(config.backend);
  const fams = familyOf(config);
  const mainDev = config.enableIPv4 ? dev.v4 : dev.v6;
  const pinned = existsSync(join(o.pinDir, "maps", "twill_peers"));
  const link = await getLink(mainDev);
  // The kernel dataplane is expected when asked for, when --dataplane auto cannot run bpf here, and with host-gw (no device to find).
  const expectKernel = o.dataplane === "kernel" || (o.dataplane !== "bpf" && !!o.dataplaneReason) || config.backend.type === "host-gw";
  if (!pinned && !(link && link.vxlan && !link.vxlan.external) && !expectKernel) {
    throw new TwillError("ERR_DATAPLANE", `no twill dataplane on this node: no pinned maps under ${o.pinDir} (--bpf-pin-dir) and no ${mainDev} device of the kernel dataplane; run it in the node's network namespace with the daemon's flags`);
  }
  const mode: "bpf" | "kernel" = pinned ? "bpf" : "kernel";

  let entries: PeerEntry[] | undefined;
  let counters: StatTable | undefined;
  let observed: BpfObserved | undefined;
  if (mode === "bpf") {
    const maps = openPinnedMaps(o.pinDir);
    try {
      observed = { peers: maps.twill_peers.snapshot(), remotes: maps.twill_remotes.snapshot() };
      entries = readPeerEntries(maps.twill_peers);
      counters = readStatTable(maps.twill_stats);
    } finally {
      for (const m of Object.values(maps)) m.close();
    }
  }

  const drift: Drift[] = [];
  const own = await ownSubnets(o, config, entries);
  if (!own.v4 && !own.v6) throw new TwillError("ERR_LEASE_LOST", `cannot tell which lease is this node's: no subnet in ${o.subnetFile} (--subnet-file), no LOCAL map entry, no address on ${mainDev}`);
  const underlay = await findUnderlay(o.underlay).catch(() => undefined);
  const ownLease: Lease | undefined = findOwnLease(leases, own, underlay?.ipv4, underlay?.ipv6);
  if (!ownLease) {
    drift.push({ kind: "missing", subject: "own lease", detail: `${own.from} gives ${[own.v4, own.v6].filter(Boolean).map((p) => formatPrefix(p!)).join(" and ")}, but no lease holds it` });
  }
  const ownRef: OwnLease = { key: ownLease?.key ?? "", ...(own.v4 ? { subnet: own.v4 } : {}), ...(own.v6 ? { ipv6Subnet: own.v6 } : {}) };
  // The daemon's rules: our own public IPs (the underlay's, and our lease's) and the link-local flag included;
  // and, as a re-list does, the leases the node holds (bpf: an entry of their subnet with their public IP) keep what they hold.
  const held = entries && new Set(entries.filter((e) => e.remote).map((e) => `${e.prefix} ${e.remote}`));
  const holds = held && ((l: Lease): boolean => ([[l.subnet, l.publicIP], [l.ipv6Subnet, l.publicIPv6]] as const).some(([s, ip]) => !!s && !!ip && held.has(`${formatPrefix(s)} ${formatIP(ip)}`)));
  const { byKey, rejected } = leasesToPeers(leases, {
    config, own: ownRef, direct: await readDirect(o, config), checkLength: (o.source as { kind?: string }).kind !== "kube",
    ownPublicIPs: [underlay?.ipv4, underlay?.ipv6, ownLease?.publicIP, ownLease?.publicIPv6], allowLinkLocalPublicIP: o.allowLinkLocalPublicIP ?? false,
  }, holds);
  const desired = [...byKey].flatMap(([lease, ps]) => ps.map((peer) => ({ peer, lease })));

  // The device's MAC is the VTEP MAC peers send to: it must be the one in our lease.
  const devices: string[] = [];
  // host-gw with the kernel dataplane has no device at all (flannel's routes only).
  const hostGwKernel = config.backend.type === "host-gw" && mode !== "bpf";
  for (const { family } of hostGwKernel ? [] : fams) {
    const name = mode === "bpf" ? mainDev : family === 4 ? dev.v4 : dev.v6;
    if (devices.includes(name)) continue;
    devices.push(name);
    const l = name === mainDev ? link : await getLink(name);
    const want = family === 4 ? ownLease?.backendData?.vtepMAC : ownLease?.backendV6Data?.vtepMAC;
    drift.push(...deviceDrift(name, l, want));
  }

  let rows: Array<StatusPeer & { prefix: Prefix }>;
  const ownPrefixes = [own.v4, own.v6].filter((p): p is Prefix => !!p);
  if (mode === "bpf") {
    const image = await bpfImage({ peers: desired.map((d) => d.peer), own: ownPrefixes, networks: fams.map((f) => f.network) });
    drift.push(...(await diffBpf(image, observed!)).drift);
    const byPrefix = new Map(entries!.map((e) => [e.prefix, e]));
    const traffic = new Map(peerTraffic(entries!, counters!).map((t) => [t.subnet, t]));
    const n = (v: bigint) => Number(v);
    rows = peerRows(desired, drift, (subnet) => {
      const e = byPrefix.get(subnet);
      return e && (e.kind === "vxlan" || e.kind === "direct") ? { path: e.kind, ...(e.remote ? { publicIP: e.remote } : {}), ...(e.vtepMAC && e.kind === "vxlan" ? { vtepMAC: e.vtepMAC } : {}) } : undefined;
    }).map((r) => {
      // A missing entry has no counters; a programmed one without any has counted nothing yet.
      if (r.state === "missing") return r;
      const t = traffic.get(r.subnet);
      const tx = t ? total(t, "tx") : undefined, rx = t ? total(t, "rx") : undefined;
      return { ...r, tx: { packets: n(tx?.packets ?? 0n), bytes: n(tx?.bytes ?? 0n) }, rx: { packets: n(rx?.packets ?? 0n), bytes: n(rx?.bytes ?? 0n) } };
    });
  } else {
    for (const { family, network } of fams) {
      const ownSubnet = family === 4 ? own.v4 : own.v6;
      if (!ownSubnet) continue;
      const device = family === 4 ? dev.v4 : dev.v6;
      const l = hostGwKernel ? undefined : await getLink(device);
      const iface = l?.vxlan?.dev ?? underlay?.name ?? "";
      // Without its device, every peer of the family is missing (the reconcile re-creates it, then finds them so).
      const tables: KernelTables = l || hostGwKernel
        ? await observeKernel({ device: hostGwKernel ? "" : device, iface, network, subnet: ownSubnet }, family)
        : { family, device, underlay: iface, network, own: ownSubnet, routes: [], underlayRoutes: [], neighs: [], fdb: [] };
      drift.push(...diffKernel(tables, desired.map((d) => d.peer)).drift);
    }
    rows = peerRows(desired, drift, () => undefined);
  }

  const ip = (x?: IP) => (x ? formatIP(x) : undefined);
  const pfx = (x?: Prefix) => (x ? formatPrefix(x) : undefined);
  const clean = <T extends object>(x: T): T => Object.fromEntries(Object.entries(x).filter(([, v]) => v !== undefined)) as T;
  return {
    dataplane: mode,
    ...(mode === "kernel" && o.dataplane !== "kernel" && o.dataplaneReason ? { dataplaneReason: o.dataplaneReason } : {}),
    ...(mode === "bpf" ? { pinDir: o.pinDir } : {}),
    devices,
    ...(ownLease ? {
      lease: clean({
        key: ownLease.key, subnet: pfx(ownLease.subnet), ipv6Subnet: pfx(ownLease.ipv6Subnet), publicIP: ip(ownLease.publicIP), publicIPv6: ip(ownLease.publicIPv6),
        vtepMAC: ownLease.backendData?.vtepMAC, ipv6VtepMAC: ownLease.backendV6Data?.vtepMAC,
      }),
    } : {}),
    network: clean({
      network: pfx(config.network), ipv6Network: pfx(config.ipv6Network), backend: config.backend.type,
      ...(config.backend.type === "vxlan" ? { vni: config.backend.vni, port: config.backend.port, directRouting: config.backend.directRouting } : {}),
    }),
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
  const be = s.network.backend === "host-gw" ? "host-gw" : `VNI ${s.network.vni}, UDP ${s.network.port}${s.network.directRouting ? ", DirectRouting" : ""}`;
  out.push(`Network:    ${[s.network.network, s.network.ipv6Network].filter(Boolean).join(", ")}    ${be}`);
  out.push(`Dataplane:  ${s.dataplane} (${s.devices.join(", ") || "no device"}${s.pinDir ? `; pins ${s.pinDir}` : ""})${s.dataplaneReason ? ` — ${s.dataplaneReason}` : ""}`);
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
