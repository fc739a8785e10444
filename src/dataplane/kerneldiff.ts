/**
 * The kernel dataplane's diff: flannel's per-peer kernel entries as they
 * are, against the peers the leases want. Used by the kernel dataplane's
 * reconcile (which applies the repair) and by `twill status` (which prints
 * the drift), so the two agree by construction.
 *
 * How it works:
 * 1) A peer is flannel's three entries on the vxlan device, added in this
 *    order so the kernel never ARPs for the gateway: neighbour (<subnet>.0
 *    → VtepMAC, permanent), FDB (VtepMAC → PublicIP, self, permanent),
 *    route (<subnet> via <subnet>.0 onlink). A direct peer is one route via
 *    its PublicIP on the underlay. `peerEntries` says what they are, as
 *    netlink ops (net/netlink/ops.ts: typed, `describe` gives the iproute2
 *    text for messages).
 * 2) `diffKernel` reads one family's tables (KernelTables, observed by the
 *    caller) and, per wanted peer, says which of its entries are absent or
 *    wrong (missing when none exists, else changed, with the reasons) and
 *    which to (re)apply. In scope are only routes inside the cluster
 *    network that are not our subnet and not kernel-made, permanent
 *    neighbours inside the network, and the device's FDB entries with a
 *    destination (never the all-zeros default entry, which is not
 *    flannel's). Anything else there that no lease backs is stale, one
 *    drift per subnet, with the deletes that sweep it: stale routes go
 *    before anything is added, other leftovers after.
 */
import {
  formatIP, formatPrefix, ipEqual, makePrefix, prefixContains, prefixContainsIP, prefixOverlaps, type Family, type IP, type Prefix,
} from "../net/ip.js";
import type { FdbEntry, NeighEntry, RouteEntry } from "../net/link.js";
import { mergeDrift, type Drift } from "./drift.js";
import type { Peer } from "./types.js";
import { describe, type NlOp } from "../net/netlink/ops.js";

export type Table = NlOp["kind"];
export const ADD_ORDER: readonly Table[] = ["neigh", "fdb", "route"];
export const DELETE_ORDER: readonly Table[] = ["route", "fdb", "neigh"];

/** The op that deletes what `op` adds. */
export function deleteOf(op: NlOp): NlOp {
  switch (op.kind) {
    case "route": return { kind: "route", action: "del", dst: op.dst, ...(op.via ? { via: op.via } : {}), dev: op.dev };
    case "neigh": return { kind: "neigh", action: "del", dst: op.dst, dev: op.dev };
    case "fdb": return { kind: "fdb", action: "del", mac: op.mac, dev: op.dev, ...(op.dst ? { dst: op.dst } : {}) };
  }
}

/** One entry of one peer. */
export interface KernelEntry { readonly peer: Peer; readonly op: NlOp }

/** flannel's gateway for a peer: the subnet's network address (10.244.2.0, fc00:0:0:2::). */
export const gatewayOf = (p: Peer): IP => p.subnet.ip;

/** A peer's entries in add order (flannel's exact entries). */
export function peerEntries(p: Peer, dev: string, iface: string): KernelEntry[] {
  if (p.direct) return [{ peer: p, op: { kind: "route", action: "replace", dst: p.subnet, via: p.publicIP, dev: iface } }];
  const gw = gatewayOf(p), mac = p.vtepMAC.toLowerCase();
  return [
    { peer: p, op: { kind: "neigh", action: "replace", dst: gw, lladdr: mac, dev } },
    { peer: p, op: { kind: "fdb", action: "replace", mac, dst: p.publicIP, dev, permanent: true } },
    { peer: p, op: { kind: "route", action: "replace", dst: p.subnet, via: gw, dev, onlink: true } },
  ];
}

/** flannel's kernel tables of one family: the vxlan device's and the underlay's. */
export interface KernelTables {
  readonly family: Family;
  readonly device: string;
  readonly underlay: string;
  readonly network: Prefix;
  /** Our own subnet (never touched). */
  readonly own: Prefix;
  readonly routes: readonly RouteEntry[];
  readonly underlayRoutes: readonly RouteEntry[];
  readonly neighs: readonly NeighEntry[];
  readonly fdb: readonly FdbEntry[];
}

export interface KernelRepair {
  readonly drift: Drift[];
  /** Wanted peers with entries to (re)apply; fresh: none of its entries existed. */
  readonly work: { readonly peer: Peer; readonly entries: readonly KernelEntry[]; readonly fresh: boolean }[];
  /** Deletes of stale routes, run before anything is added. */
  readonly before: NlOp[];
  /** Deletes of leftovers (stale neighbours and FDB entries, replaced routes), run last. */
  readonly after: NlOp[];
}

const routeText = (r: RouteEntry): string => `${formatPrefix(r.dst)}${r.gateway ? ` via ${formatIP(r.gateway)}` : ""} dev ${r.dev ?? "?"}`;
const ZERO_MAC = "00:00:00:00:00:00";

function groupBy<T>(items: readonly T[], key: (t: T) => string): Map<string, T[]> {
  const m = new Map<string, T[]>();
  for (const it of items) {
    const k = key(it);
    const list = m.get(k);
    if (list) list.push(it);
    else m.set(k, [it]);
  }
  return m;
}

/** Compares one family's tables with its wanted peers; returns drift and repair. Writes nothing. */
export function diffKernel(t: KernelTables, desired: readonly Peer[]): KernelRepair {
  const inScope = (r: RouteEntry) => prefixContains(t.network, r.dst) && !prefixOverlaps(r.dst, t.own) && r.protocol !== "kernel";
  const routes = [...t.routes.filter(inScope), ...t.underlayRoutes.filter((r) => inScope(r) && r.gateway !== undefined)];
  const neighs = t.neighs.filter((n) => prefixContainsIP(t.network, n.dst));
  const fdb = t.fdb.filter((f) => f.dst !== undefined && f.flags.includes("self") && f.mac !== ZERO_MAC);
  const routesAt = groupBy(routes, (r) => formatPrefix(r.dst));
  const neighAt = new Map(neighs.map((n) => [formatIP(n.dst), n]));
  const fdbOf = groupBy(fdb, (f) => f.mac);
  const mine = desired.filter((p) => p.subnet.ip.family === t.family);
  const want = new Map(mine.map((p) => [formatPrefix(p.subnet), p]));
  const wantNeigh = new Set(mine.filter((p) => !p.direct).map((p) => formatIP(gatewayOf(p))));
  const wantFdb = new Set(mine.filter((p) => !p.direct).map((p) => `${p.vtepMAC.toLowerCase()} ${formatIP(p.publicIP)}`));
  const wantMAC = new Set(mine.filter((p) => !p.direct).map((p) => p.vtepMAC.toLowerCase()));
  const target = (p: Peer): { dev: string; gw: IP } => (p.direct ? { dev: t.underlay, gw: p.publicIP } : { dev: t.device, gw: gatewayOf(p) });
  const rightRoute = (r: RouteEntry, p: Peer) => r.dev === target(p).dev && r.gateway !== undefined && ipEqual(r.gateway, target(p).gw);

  const drift: Drift[] = [];
  const work: KernelRepair["work"] = [];
  const before: NlOp[] = [], after: NlOp[] = [];
  const routeOp = (r: RouteEntry): NlOp => ({ kind: "route", action: "del", dst: r.dst, ...(r.gateway ? { via: r.gateway } : {}), dev: r.dev ?? t.device });

  for (const [key, p] of want) {
    const rs = routesAt.get(key) ?? [];
    const problems: string[] = [];
    const needed: KernelEntry[] = [];
    const entries = peerEntries(p, t.device, t.underlay);
    let exists = rs.length > 0;
    for (const e of entries) {
      const op = e.op;
      if (op.kind === "route") {
        const ok = rs.find((r) => rightRoute(r, p));
        if (!ok) {
          problems.push(`no route ${describe(op).slice("route replace ".length)}${rs.length ? ` (found: ${rs.map(routeText).join(", ")})` : ""}`);
          needed.push(e);
        } else if (!p.direct && !ok.flags.includes("onlink")) {
          problems.push(`route ${key} is not onlink`);
          needed.push(e);
        }
        // Routes for this subnet other than the right one: leftovers (another gateway or metric).
        for (const r of rs) if (r !== ok) after.push(routeOp(r));
      } else if (op.kind === "neigh") {
        const n = neighAt.get(formatIP(op.dst));
        if (n) exists = true;
        if (!n) problems.push(`no neighbour ${formatIP(op.dst)} on ${t.device}`);
        else if (n.lladdr !== op.lladdr) problems.push(`neighbour ${formatIP(op.dst)} has MAC ${n.lladdr ?? "none"}, the lease says VTEP MAC ${op.lladdr}`);
        else if (!n.state.includes("PERMANENT")) problems.push(`neighbour ${formatIP(op.dst)} is ${n.state.join(",") || "incomplete"}, not PERMANENT`);
        if (!n || n.lladdr !== op.lladdr || !n.state.includes("PERMANENT")) needed.push(e);
      } else {
        const all = fdbOf.get(op.mac) ?? [];
        if (all.length) exists = true;
        const dst = op.dst!;
        const f = all.find((x) => ipEqual(x.dst!, dst));
        if (!f) problems.push(all.length ? `FDB entry ${op.mac} goes to ${all.map((x) => formatIP(x.dst!)).join(", ")}, the lease says PublicIP ${formatIP(dst)}` : `no FDB entry ${op.mac} dst ${formatIP(dst)} on ${t.device}`);
        else if (f.state !== "permanent") problems.push(`FDB entry ${op.mac} is ${f.state || "learned"}, not permanent`);
        if (!f || f.state !== "permanent") needed.push(e);
      }
    }
    if (!problems.length) continue;
    work.push({ peer: p, entries: needed, fresh: !exists });
    drift.push(exists
      ? { kind: "changed", subject: key, detail: `${t.device}: ${problems.join("; ")}` }
      : { kind: "missing", subject: key, detail: `no route, neighbour or FDB entry for it on ${t.device} (the lease says ${p.direct ? "direct" : "vxlan"} to ${formatIP(p.publicIP)}${p.direct ? "" : `, VTEP MAC ${p.vtepMAC}`})` });
  }

  // Stale: entries no lease backs, one drift per subnet.
  const len = t.own.len;
  const macSubnet = new Map(neighs.filter((n) => n.lladdr).map((n) => [n.lladdr!, formatPrefix(makePrefix(n.dst, len))]));
  for (const r of routes) {
    const key = formatPrefix(r.dst);
    if (want.has(key)) continue;
    before.push(routeOp(r));
    drift.push({ kind: "stale", subject: key, detail: `route ${routeText(r)} belongs to no lease` });
  }
  for (const n of neighs) {
    if (!n.state.includes("PERMANENT") || wantNeigh.has(formatIP(n.dst))) continue;
    after.push({ kind: "neigh", action: "del", dst: n.dst, dev: t.device });
    drift.push({ kind: "stale", subject: formatPrefix(makePrefix(n.dst, len)), detail: `neighbour ${formatIP(n.dst)} lladdr ${n.lladdr ?? "?"} on ${t.device} belongs to no lease` });
  }
  for (const f of fdb) {
    if (wantFdb.has(`${f.mac} ${formatIP(f.dst!)}`)) continue;
    after.push({ kind: "fdb", action: "del", mac: f.mac, dst: f.dst!, dev: t.device });
    // An FDB entry of a wanted peer's MAC with another destination is part of that peer's "changed".
    if (wantMAC.has(f.mac)) continue;
    drift.push({ kind: "stale", subject: macSubnet.get(f.mac) ?? `fdb ${f.mac}`, detail: `FDB entry ${f.mac} dst ${formatIP(f.dst!)} on ${t.device} belongs to no lease` });
  }
  // A subnet both wanted and stale cannot happen (stale entries are of unwanted subnets),
  // but a stale neighbour may share its /len subnet with a stale route: one drift.
  return { drift: mergeDrift(drift), work, before, after };
}
