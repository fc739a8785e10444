/**
 * rtnetlink requests: dumps and gets of links, addresses, routes,
 * neighbours and FDB entries, and the link/address writes, on the process's
 * request socket (socket.ts) in the caller's network namespace.
 *
 * How it works: each function builds one request with the codecs, runs it
 * synchronously (microseconds; a dump of thousands of entries is a few
 * milliseconds) and decodes the answer into Raw* values. Dumps ask for the
 * whole table and filter here (by ifindex, family, main table): simple, and
 * independent of the kernel's strict-check rules. Failures are NetlinkErrors
 * whose command reads like the iproute2 command ("link set dev flannel.1 mtu
 * 1450 up: ..."). A missing device is ENODEV with iproute2's words,
 * 'Cannot find device "x"', so isNotFound() holds.
 */
import { attr, str, u32 } from "./attrs.js";
import {
  AF_BRIDGE, AF_UNSPEC, IFF_NOARP, IFF_UP, IFLA_ADDRESS, IFLA_EXT_MASK, IFLA_IFNAME, IFLA_MTU, NLM_F_CREATE, NLM_F_EXCL,
  RTEXT_FILTER_SKIP_STATS, RTM_DELADDR, RTM_DELLINK, RTM_GETADDR, RTM_GETLINK, RTM_GETNEIGH, RTM_GETROUTE, RTM_NEWADDR,
  RTM_NEWLINK, RTM_NEWNEIGH, RTM_NEWROUTE, RT_TABLE_MAIN, RTN_BLACKHOLE,
} from "./consts.js";
import { addrRequest, afOf, decodeAddr, encodeIfaddr, type RawAddr } from "./addr-codec.js";
import { NetlinkError } from "./error.js";
import { checkIfName } from "./ifname.js";
import { E, strerror } from "./libc.js";
import { decodeLink, encodeIfinfo, vethAttrs, vxlanAttrs, type RawLink, type VxlanCreate } from "./link-codec.js";
import { decodeNeigh, encodeNdmsg, type RawNeigh } from "./neigh-codec.js";
import { blackholeRequest, decodeRoute, encodeRtmsg, routeGetRequest, type RawRoute } from "./route-codec.js";
import { kernelError, rtnl } from "./socket.js";
import { formatIP, formatPrefix, type Family, type IP, type Prefix } from "../ip.js";
import { macToBytes } from "../../lease/mac.js";

const skipStats = u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);

export function noDevice(name: string, what: string): NetlinkError {
  return new NetlinkError(what, `Cannot find device "${name}"`, undefined, E.ENODEV);
}

// ---- links -------------------------------------------------------------------------

export function dumpLinks(): RawLink[] {
  return rtnl().dump(RTM_GETLINK, encodeIfinfo(), [skipStats], "link show")
    .filter((m) => m.type === RTM_NEWLINK)
    .map(decodeLink)
    .filter((l): l is RawLink => l !== undefined);
}

/**
 * One RTM_GETLINK; undefined when there is no such device (ENODEV). A
 * missing device is an answer, not an error: nothing is thrown or built for
 * it (the pod bridge is looked up before the CNI plugin has made it).
 */
function getLinkWith(header: Uint8Array, attrs: readonly Buffer[], what: string): RawLink | undefined {
  const r = rtnl().tryRequest(RTM_GETLINK, 0, header, attrs, what);
  if ("errno" in r) {
    if (r.errno === E.ENODEV) return undefined;
    throw kernelError(what, r);
  }
  for (const m of r.replies) {
    if (m.type !== RTM_NEWLINK) continue;
    const l = decodeLink(m);
    if (l) return l;
  }
  return undefined;
}

/** The link named `name`, or undefined when there is none. */
export function getLinkRaw(name: string): RawLink | undefined {
  checkIfName(name);
  return getLinkWith(encodeIfinfo(), [str(IFLA_IFNAME, name), skipStats], `link show dev ${name}`);
}

export function getLinkByIndex(ifindex: number): RawLink | undefined {
  return getLinkWith(encodeIfinfo(ifindex), [skipStats], `link show index ${ifindex}`);
}

/** The ifindex of `name`; throws ENODEV 'Cannot find device "name"' (naming `what`). */
export function ifindexOf(name: string, what = `link show dev ${name}`): number {
  const l = getLinkRaw(name);
  if (!l) throw noDevice(name, what);
  return l.ifindex;
}

export function describeVxlan(v: VxlanCreate, devName: string): string {
  const local = v.local ? ` local ${formatIP(v.local)}` : "";
  const id = v.external ? " external" : ` id ${v.vni}`;
  return `link add ${v.name} type vxlan${id}${local} dev ${devName} dstport ${v.port}${v.learning ? "" : " nolearning"}`;
}

/** `ip link add NAME type vxlan ...` (fails with EEXIST when the name is taken). */
export function createVxlan(v: VxlanCreate, devName: string): void {
  checkIfName(v.name, "vxlan device name");
  rtnl().request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, encodeIfinfo(), vxlanAttrs(v), describeVxlan(v, devName));
}

/** `ip link add NAME type veth peer name PEER` (fails with EEXIST when a name is taken). */
export function createVeth(name: string, peer: string): void {
  checkIfName(name, "veth name");
  checkIfName(peer, "veth peer name");
  rtnl().request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, encodeIfinfo(), vethAttrs(name, peer), `link add ${name} type veth peer name ${peer}`);
}

export interface LinkChange {
  readonly mtu?: number;
  readonly mac?: string;
  readonly up?: boolean;
  /** true = `arp off` (IFF_NOARP set). */
  readonly noarp?: boolean;
}

/** `ip link set dev NAME [address MAC] [mtu N] [arp on|off] [up|down]`, one request. */
export function setLink(name: string, change: LinkChange): void {
  checkIfName(name);
  const words: string[] = [];
  const attrs: Buffer[] = [str(IFLA_IFNAME, name)];
  let flags = 0, mask = 0;
  if (change.mac !== undefined) {
    attrs.push(attr(IFLA_ADDRESS, macToBytes(change.mac)));
    words.push("address", change.mac.toLowerCase());
  }
  if (change.mtu !== undefined) {
    attrs.push(u32(IFLA_MTU, change.mtu));
    words.push("mtu", String(change.mtu));
  }
  if (change.noarp !== undefined) {
    mask |= IFF_NOARP;
    if (change.noarp) flags |= IFF_NOARP;
    words.push("arp", change.noarp ? "off" : "on");
  }
  if (change.up !== undefined) {
    mask |= IFF_UP;
    if (change.up) flags |= IFF_UP;
    words.push(change.up ? "up" : "down");
  }
  const what = `link set dev ${name} ${words.join(" ")}`;
  try {
    rtnl().request(RTM_NEWLINK, 0, encodeIfinfo(0, flags, mask), attrs, what);
  } catch (e) {
    throw e instanceof NetlinkError && e.errno === E.ENODEV ? noDevice(name, what) : e;
  }
}

/** `ip link del dev NAME`. */
export function deleteLinkRaw(name: string): void {
  checkIfName(name);
  const what = `link del dev ${name}`;
  try {
    rtnl().request(RTM_DELLINK, 0, encodeIfinfo(), [str(IFLA_IFNAME, name)], what);
  } catch (e) {
    throw e instanceof NetlinkError && e.errno === E.ENODEV ? noDevice(name, what) : e;
  }
}

// ---- addresses ---------------------------------------------------------------------

/** Addresses of both families (or one), in the kernel's order. */
export function dumpAddrs(family?: Family): RawAddr[] {
  const af = family === undefined ? AF_UNSPEC : afOf(family);
  return rtnl().dump(RTM_GETADDR, encodeIfaddr(af, 0, 0), [], "addr show")
    .filter((m) => m.type === RTM_NEWADDR)
    .map(decodeAddr)
    .filter((a): a is RawAddr => a !== undefined);
}

/** `ip addr add|del IP/LEN dev NAME [nodad]`. */
export function changeAddr(action: "add" | "del", ip: IP, len: number, dev: string, nodad: boolean): void {
  const what = `addr ${action} ${formatIP(ip)}/${len} dev ${dev}${nodad && action === "add" ? " nodad" : ""}`;
  const r = addrRequest(ip, len, ifindexOf(dev, what), nodad && action === "add");
  rtnl().request(action === "add" ? RTM_NEWADDR : RTM_DELADDR, action === "add" ? NLM_F_CREATE | NLM_F_EXCL : 0, r.header, r.attrs, what);
}

// ---- routes, neighbours, FDB -------------------------------------------------------

export function dumpRoutes(family: Family): RawRoute[] {
  const header = encodeRtmsg({ family: afOf(family), dstLen: 0, table: 0, protocol: 0, scope: 0, type: 0, flags: 0 });
  return rtnl().dump(RTM_GETROUTE, header, [], `-${family} route show`)
    .filter((m) => m.type === RTM_NEWROUTE)
    .map(decodeRoute)
    .filter((r): r is RawRoute => r !== undefined);
}

/** `ip route get ADDR`: the route the kernel would take, or throws (e.g. ENETUNREACH). */
export function routeGetRaw(addr: IP): RawRoute | undefined {
  const r = routeGetRequest(addr);
  return rtnl().request(RTM_GETROUTE, 0, r.header, r.attrs, `route get ${formatIP(addr)}`)
    .filter((m) => m.type === RTM_NEWROUTE)
    .map(decodeRoute)
    .find((x) => x !== undefined);
}

/**
 * The main-table blackhole routes of `family` (`ip route show type blackhole`),
 * and `ip route add blackhole DST` (NLM_F_CREATE|NLM_F_EXCL, as flannel's
 * netlink.RouteAdd: EEXIST when any route to DST with metric 0 is there).
 */
export function dumpBlackholes(family: Family): RawRoute[] {
  return dumpRoutes(family).filter((r) => r.type === RTN_BLACKHOLE && r.table === RT_TABLE_MAIN);
}

export function addBlackhole(dst: Prefix): void {
  const r = blackholeRequest(dst);
  rtnl().request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, r.header, r.attrs, `route add blackhole ${formatPrefix(dst)}`);
}

export function dumpNeighs(family: Family): RawNeigh[] {
  return rtnl().dump(RTM_GETNEIGH, encodeNdmsg(afOf(family), 0, 0, 0), [], `-${family} neigh show`)
    .filter((m) => m.type === RTM_NEWNEIGH)
    .map(decodeNeigh)
    .filter((n): n is RawNeigh => n !== undefined);
}

/** Every FDB entry (AF_BRIDGE neighbours) of every device. */
export function dumpFdb(): RawNeigh[] {
  return rtnl().dump(RTM_GETNEIGH, encodeNdmsg(AF_BRIDGE, 0, 0, 0), [], "fdb show")
    .filter((m) => m.type === RTM_NEWNEIGH)
    .map(decodeNeigh)
    .filter((n): n is RawNeigh => n !== undefined);
}

export { strerror };
