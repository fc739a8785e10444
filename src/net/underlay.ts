/**
 * Which interface carries the overlay, and from which address: flanneld's
 * choice (main.go's "Work out which interface to use" and
 * pkg/ipmatch LookupExtIface, pkg/ip/iface.go), over twill's own netlink.
 *
 * How it works:
 * 1) One address dump and one link dump describe every interface. An
 *    interface's *usable* addresses of a family are flannel's
 *    GetInterfaceIP4Addrs/IP6Addrs: global or link-local unicast (Go's
 *    IsGlobalUnicast/IsLinkLocalUnicast), not deprecated, ordered global
 *    before link-local, permanent before dynamic, non-temporary before
 *    temporary (a stable sort: otherwise kernel order).
 * 2) With none of --iface, --iface-regex, --iface-can-reach: the interface
 *    holding --public-ip (else --public-ipv6) when one is given, as if it
 *    were an --iface address; else the default route's interface (the
 *    first main-table default route of the stack's family; dual stack
 *    needs the IPv4 and IPv6 ones to be the same interface).
 * 3) Otherwise, in order, the first candidate that works: each --iface (a
 *    name, or an address some interface holds, matched exactly), then each
 *    --iface-regex (against each interface's usable addresses of the
 *    stack's family, interface by interface — in dual stack an IPv4 and an
 *    IPv6 address must both match —, then against interface names), then
 *    --iface-can-reach (RTM_GETROUTE, `ip route get`: the output interface,
 *    and its preferred source as the address). A candidate also fails, and
 *    the next is tried, when it lacks an address of a family the stack needs.
 * 4) Addresses not fixed by the choice (an --iface address, a regex match, a
 *    route's source) are the first usable ones. The public addresses are
 *    --public-ip/--public-ipv6 when given, else the interface's.
 * `stack` is flannel's ipStack (from the config's EnableIPv4/EnableIPv6);
 * without it (twill status, older callers) both families are filled where
 * present and none is required, the default route being IPv4's, else IPv6's.
 * Errors: ERR_IFACE saying what was tried and what interfaces exist.
 */
import { TwillError } from "../errors.js";
import { formatIP, ipEqual, tryParseIP, type Family, type IP } from "./ip.js";
import { IFA_F_DEPRECATED, IFA_F_PERMANENT, IFA_F_TEMPORARY } from "./netlink/consts.js";
import { isMainTable } from "./netlink/route-codec.js";
import { dumpAddrs, dumpLinks, dumpRoutes, routeGetRaw } from "./netlink/rtnl.js";
import { compileRE2 } from "../config/re2.js";

/** flannel's ipStack: which families the network carries. */
export type IPStack = "ipv4" | "ipv6" | "dual";

export interface UnderlayOptions {
  /** --iface: interface names or addresses, tried in order. */
  readonly iface?: readonly string[];
  /** --iface-regex (RE2): tried in order after --iface, against addresses first, then names. */
  readonly ifaceRegex?: readonly string[];
  /** --iface-can-reach: the interface `ip route get` uses for this address; tried last. */
  readonly canReach?: IP;
  /** --public-ip / --public-ipv6: the addresses peers use; alone, they also pick the interface. */
  readonly publicIP?: IP;
  readonly publicIPv6?: IP;
  /** The families the network carries; undefined = fill both where present, require neither. */
  readonly stack?: IPStack;
  /** Why each failed candidate was skipped (flannel logs these at info). */
  readonly log?: (message: string) => void;
}

export interface Underlay {
  readonly name: string;
  readonly ifindex: number;
  readonly mtu: number;
  /** The public addresses: --public-ip(v6), else the interface's. */
  readonly ipv4?: IP;
  readonly ipv6?: IP;
  /** The interface's own addresses (flannel's IfaceAddr / IfaceV6Addr; differ from ipv4/ipv6 behind NAT). */
  readonly ifaceIPv4?: IP;
  readonly ifaceIPv6?: IP;
}

interface Addr { readonly ip: IP; readonly flags: number }
interface Iface { readonly name: string; readonly ifindex: number; readonly mtu: number; readonly addrs: readonly Addr[] }
/** A chosen interface and the addresses the choice itself fixed. */
interface Found { readonly iface: Iface; readonly v4?: IP; readonly v6?: IP }

const fail = (why: string): Error => new Error(why);

// ---- Go's net.IP classification ----------------------------------------------------

const isLinkLocalUnicast = (ip: IP): boolean =>
  ip.family === 4 ? ip.bytes[0] === 169 && ip.bytes[1] === 254 : ip.bytes[0] === 0xfe && (ip.bytes[1]! & 0xc0) === 0x80;

function isGlobalUnicast(ip: IP): boolean {
  const b = ip.bytes;
  if (ip.family === 4) {
    const bcast = b.every((x) => x === 255), unspec = b.every((x) => x === 0);
    return !bcast && !unspec && b[0] !== 127 && (b[0]! & 0xf0) !== 0xe0 && !isLinkLocalUnicast(ip);
  }
  const unspec = b.every((x) => x === 0), loop = b.slice(0, 15).every((x) => x === 0) && b[15] === 1;
  return !unspec && !loop && b[0] !== 0xff && !isLinkLocalUnicast(ip);
}

/** flannel's compareAddrs: global before link-local, permanent before not, non-temporary before temporary. */
function compareAddrs(a: Addr, b: Addr): number {
  const rank = (x: Addr) =>
    (isLinkLocalUnicast(x.ip) ? 4 : 0) + (x.flags & IFA_F_PERMANENT ? 0 : 2) + (x.flags & IFA_F_TEMPORARY ? 1 : 0);
  return rank(a) - rank(b);
}

/** flannel's GetInterfaceIP4Addrs / GetInterfaceIP6Addrs. */
export function usableAddrs(iface: Iface, family: Family): IP[] {
  return iface.addrs
    .filter((a) => a.ip.family === family && (isGlobalUnicast(a.ip) || isLinkLocalUnicast(a.ip)) && !(a.flags & IFA_F_DEPRECATED))
    .sort(compareAddrs) // Array.prototype.sort is stable
    .map((a) => a.ip);
}

// ---- the kernel's view -----------------------------------------------------------------

function interfaces(): Iface[] {
  const addrs = dumpAddrs();
  return dumpLinks().map((l) => ({
    name: l.name, ifindex: l.ifindex, mtu: l.mtu,
    addrs: addrs.filter((a) => a.ifindex === l.ifindex).map((a) => ({ ip: a.local, flags: a.flags })),
  }));
}

const holder = (ifaces: readonly Iface[], ip: IP): Iface | undefined => ifaces.find((i) => i.addrs.some((a) => ipEqual(a.ip, ip)));

// ---- the candidates ------------------------------------------------------------------

/** An --iface value (or a lone --public-ip/--public-ipv6): a name, or an address some interface holds. */
function byIfaceOption(ifaces: readonly Iface[], spec: string, o: UnderlayOptions): Found {
  const addr = tryParseIP(spec);
  if (!addr) {
    const iface = ifaces.find((i) => i.name === spec);
    if (!iface) throw fail(`no interface named ${spec}`);
    return { iface };
  }
  const at = holder(ifaces, addr);
  if (o.stack !== "dual") {
    if (!at) throw fail(`no interface holds ${spec}`);
    return { iface: at, ...(addr.family === 4 ? { v4: addr } : { v6: addr }) };
  }
  // Dual stack (flannel): the IPv6 side is --public-ipv6's interface, which must be the IPv4 one.
  if (addr.family === 4 && !at) throw fail(`no interface holds ${spec}`);
  if (o.publicIPv6) {
    const v6 = holder(ifaces, o.publicIPv6);
    if (!v6) throw fail(`no interface holds --public-ipv6 ${formatIP(o.publicIPv6)}`);
    if (addr.family === 6) return { iface: v6, v6: o.publicIPv6 };
    if (v6.name !== at!.name) throw fail(`the IPv6 interface ${v6.name} (of --public-ipv6) must be the IPv4 interface ${at!.name}`);
    return { iface: at!, v4: addr, v6: o.publicIPv6 };
  }
  if (!at) throw fail(`no interface holds ${spec}`);
  return { iface: at, ...(addr.family === 4 ? { v4: addr } : { v6: addr }) };
}

/** An --iface-regex: interface by interface against its usable addresses, then against names. */
function byRegex(ifaces: readonly Iface[], pattern: string, stack: IPStack | undefined): Found {
  const re = compileRE2(pattern);
  const match = (ips: readonly IP[]) => ips.find((ip) => re.test(formatIP(ip)));
  if (stack === undefined) {
    for (const f of [4, 6] as const) {
      for (const iface of ifaces) {
        const m = match(usableAddrs(iface, f));
        if (m) return { iface, ...(f === 4 ? { v4: m } : { v6: m }) };
      }
    }
  } else {
    for (const iface of ifaces) {
      const v4 = stack === "ipv6" ? undefined : usableAddrs(iface, 4);
      const v6 = stack === "ipv4" ? undefined : usableAddrs(iface, 6);
      if ((v4 && !v4.length) || (v6 && !v6.length)) continue;
      const m4 = v4 && match(v4), m6 = v6 && match(v6);
      if ((v4 && !m4) || (v6 && !m6)) continue;
      return { iface, ...(m4 ? { v4: m4 } : {}), ...(m6 ? { v6: m6 } : {}) };
    }
  }
  const iface = ifaces.find((i) => re.test(i.name));
  if (!iface) throw fail(`${JSON.stringify(pattern)} matches no interface address or name`);
  return { iface };
}

/** --iface-can-reach: `ip route get ADDR`'s device, and its source address. */
function byRoute(ifaces: readonly Iface[], dst: IP): Found {
  let r;
  try {
    r = routeGetRaw(dst);
  } catch (e) {
    throw fail(`no route to ${formatIP(dst)} (${(e as Error).message})`);
  }
  const iface = r && r.oif > 0 ? ifaces.find((i) => i.ifindex === r.oif) : undefined;
  if (!iface) throw fail(`the route to ${formatIP(dst)} has no interface`);
  const src = r!.prefsrc;
  return { iface, ...(src?.family === 4 ? { v4: src } : src ? { v6: src } : {}) };
}

/** flannel's GetDefaultGatewayInterface: the first main-table default route's device. */
function defaultRouteIface(ifaces: readonly Iface[], family: Family): Iface {
  const r = dumpRoutes(family).find((x) => isMainTable(x) && x.dst.len === 0);
  if (!r) throw fail(`no IPv${family} default route`);
  const iface = r.oif > 0 ? ifaces.find((i) => i.ifindex === r.oif) : undefined;
  if (!iface) throw fail(`the IPv${family} default route has no interface`);
  return iface;
}

function byDefaultRoute(ifaces: readonly Iface[], stack: IPStack | undefined): Found {
  if (stack === "ipv4") return { iface: defaultRouteIface(ifaces, 4) };
  if (stack === "ipv6") return { iface: defaultRouteIface(ifaces, 6) };
  if (stack === "dual") {
    const v4 = defaultRouteIface(ifaces, 4), v6 = defaultRouteIface(ifaces, 6);
    if (v4.name !== v6.name) throw fail(`the IPv6 default route's interface ${v6.name} must be the IPv4 one, ${v4.name}`);
    return { iface: v4 };
  }
  try {
    return { iface: defaultRouteIface(ifaces, 4) };
  } catch {
    return { iface: defaultRouteIface(ifaces, 6) };
  }
}

/** The addresses the choice left open, and the stack's requirements (a failed requirement fails the candidate). */
function complete(f: Found, o: UnderlayOptions): Underlay {
  const v4 = f.v4 ?? usableAddrs(f.iface, 4)[0];
  const v6 = f.v6 ?? usableAddrs(f.iface, 6)[0];
  if (o.stack !== "ipv6" && o.stack !== undefined && !v4) throw fail(`interface ${f.iface.name} has no usable IPv4 address`);
  if (o.stack !== "ipv4" && o.stack !== undefined && !v6) throw fail(`interface ${f.iface.name} has no usable IPv6 address`);
  if (f.iface.mtu <= 0) throw fail(`interface ${f.iface.name} reports MTU ${f.iface.mtu}`);
  const ipv4 = o.publicIP ?? v4, ipv6 = o.publicIPv6 ?? v6;
  return {
    name: f.iface.name, ifindex: f.iface.ifindex, mtu: f.iface.mtu,
    ...(ipv4 ? { ipv4 } : {}), ...(ipv6 ? { ipv6 } : {}),
    ...(v4 ? { ifaceIPv4: v4 } : {}), ...(v6 ? { ifaceIPv6: v6 } : {}),
  };
}

/** Finds the underlay interface and its public addresses, the way flanneld does. */
export async function findUnderlay(o: UnderlayOptions = {}): Promise<Underlay> {
  const ifaces = interfaces();
  const candidates: { what: string; find: () => Found }[] = [];
  const explicit = (o.iface?.length ?? 0) > 0 || (o.ifaceRegex?.length ?? 0) > 0 || o.canReach !== undefined;
  if (!explicit) {
    const pub = o.publicIP ?? o.publicIPv6;
    if (pub) candidates.push({ what: `the interface holding --public-ip${pub.family === 6 ? "v6" : ""} ${formatIP(pub)}`, find: () => byIfaceOption(ifaces, formatIP(pub), o) });
    else candidates.push({ what: "the default route", find: () => byDefaultRoute(ifaces, o.stack) });
  } else {
    for (const spec of o.iface ?? []) candidates.push({ what: `--iface ${spec}`, find: () => byIfaceOption(ifaces, spec, o) });
    for (const p of o.ifaceRegex ?? []) candidates.push({ what: `--iface-regex ${p}`, find: () => byRegex(ifaces, p, o.stack) });
    if (o.canReach) candidates.push({ what: `--iface-can-reach ${formatIP(o.canReach)}`, find: () => byRoute(ifaces, o.canReach!) });
  }
  const why: string[] = [];
  for (const c of candidates) {
    try {
      return complete(c.find(), o);
    } catch (e) {
      if (e instanceof TwillError) throw e; // a bad regex: the flag is wrong, not the interface
      why.push(`${c.what}: ${(e as Error).message}`);
      o.log?.(`could not use ${c.what}: ${(e as Error).message}`);
    }
  }
  const tried = candidates.map((c) => c.what).join(", then ");
  const names = ifaces.map((i) => `${i.name}[${i.addrs.map((a) => formatIP(a.ip)).join(" ")}]`).join(", ");
  throw new TwillError("ERR_IFACE", `no underlay interface matches ${tried} (${why.join("; ")}; interfaces: ${names})`);
}
