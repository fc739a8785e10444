/**
 * Links, addresses, routes, neighbours and FDB entries as typed values, and
 * the few idempotent "ensure" operations the dataplanes need.
 *
 * How it works:
 * 1) Readers ask the kernel over rtnetlink from this process (net/netlink/:
 *    no `ip` or `bridge` process) and turn its Raw* records into the typed
 *    shapes here (Link, RouteEntry, NeighEntry, FdbEntry), with the names
 *    and flag words iproute2 prints, so callers written against `ip -j`
 *    keep working; addresses are IP/Prefix values, so callers compare
 *    values, never text. Device names in results (master, vxlan dev) are
 *    resolved from ifindexes.
 * 2) `findUnderlay` (underlay.ts, re-exported) picks the underlay like
 *    flanneld: --iface, then --iface-regex, then --iface-can-reach, else the
 *    interface of --public-ip or of the default route.
 * 3) `ensureVxlan` keeps an existing device when it is compatible, otherwise
 *    says in words what differs ("flannel.1: vxlan id 2 != 1; dstport 4789 !=
 *    8472") and replaces it; then it sets MAC/MTU/ARP/up only where they
 *    differ (one RTM_NEWLINK), so an adopted device is not disturbed. IPv4
 *    and IPv6 differ only in the `local` address, which carries its family.
 * 4) `sysctl` writes /proc/sys directly (the file belongs to the network
 *    namespace of the caller), with the key checked first.
 * Everything runs in the caller's network namespace and is synchronous
 * underneath (a request is microseconds); the functions stay async for
 * their callers.
 */
import { readFile, writeFile } from "node:fs/promises";
import type { DeviceInfo } from "../dataplane/types.js";
import { TwillError } from "../errors.js";
import { parseMAC } from "../lease/mac.js";
import { formatIP, formatPrefix, ipEqual, makePrefix, parsePrefix, tryParseIP, bits, type Family, type IP, type Prefix } from "./ip.js";
import { E } from "./netlink/libc.js";
import { NetlinkError } from "./netlink/error.js";
import { checkIfName } from "./netlink/ifname.js";
import { NUD_NOARP } from "./netlink/consts.js";
import { fdbFlagNames, fdbStateName, neighStateNames } from "./netlink/neigh-codec.js";
import { isMainTable } from "./netlink/route-codec.js";
import type { RawLink } from "./netlink/link-codec.js";
import type { RawAddr } from "./netlink/addr-codec.js";
import {
  changeAddr, createVeth, createVxlan, deleteLinkRaw, dumpAddrs, dumpFdb, dumpLinks, dumpNeighs, dumpRoutes, getLinkByIndex,
  getLinkRaw, ifindexOf, setLink, type LinkChange,
} from "./netlink/rtnl.js";

export { checkIfName } from "./netlink/ifname.js";
export { routeReplace, routeDel, neighReplace, neighDel, fdbAdd, fdbDel, type RouteOptions } from "./netlink/write.js";

/** A log sink for the things an operator should read ("replacing flannel.1: ..."). */
export type LogFn = (message: string) => void;
const stderrLog: LogFn = (m) => process.stderr.write(`twill: ${m}\n`);

// ---- links ----------------------------------------------------------------

export interface VxlanInfo {
  /** VNI (0 for an external device). */
  readonly id: number;
  /** Collect-metadata mode: the VNI and remote come from each packet's tunnel key. */
  readonly external: boolean;
  readonly port: number;
  readonly local?: IP;
  /** The underlay device (`dev`), by name. */
  readonly dev?: string;
  readonly learning: boolean;
}

export interface Link {
  readonly ifindex: number;
  readonly name: string;
  readonly mtu: number;
  readonly mac: string;
  /** Kernel flags, e.g. ["BROADCAST","MULTICAST","UP","LOWER_UP","NOARP"]. */
  readonly flags: readonly string[];
  /** "vxlan", "veth", "bridge", ... (undefined for plain devices such as lo). */
  readonly kind?: string;
  readonly vxlan?: VxlanInfo;
  readonly master?: string;
}

/** Resolves ifindexes to names: from a dump when there is one, else one request each. */
type NameOf = (ifindex: number) => string | undefined;
const nameFromKernel: NameOf = (i) => (i > 0 ? getLinkByIndex(i)?.name : undefined);
const namesOf = (links: readonly RawLink[]): NameOf => {
  const m = new Map(links.map((l) => [l.ifindex, l.name]));
  return (i) => m.get(i);
};

function toLink(r: RawLink, nameOf: NameOf): Link {
  let vxlan: VxlanInfo | undefined;
  if (r.vxlan) {
    const v = r.vxlan;
    const dev = v.link > 0 ? nameOf(v.link) : undefined;
    vxlan = { id: v.id, external: v.external, port: v.port, learning: v.learning, ...(v.local ? { local: v.local } : {}), ...(dev ? { dev } : {}) };
  }
  const master = r.master > 0 ? nameOf(r.master) : undefined;
  return {
    ifindex: r.ifindex, name: r.name, mtu: r.mtu, mac: r.mac, flags: r.flags,
    ...(r.kind ? { kind: r.kind } : {}),
    ...(vxlan ? { vxlan } : {}),
    ...(master ? { master } : {}),
  };
}

/** The link named `name` (with details), or undefined when there is none. */
export async function getLink(name: string): Promise<Link | undefined> {
  const r = getLinkRaw(name);
  return r && toLink(r, nameFromKernel);
}

export async function listLinks(): Promise<Link[]> {
  const raw = dumpLinks();
  const nameOf = namesOf(raw);
  return raw.map((r) => toLink(r, nameOf));
}

export interface BridgePort {
  readonly name: string;
  readonly ifindex: number;
  readonly kind?: string;
}

/** The ports enslaved to `bridgeName` (empty when it has none or does not exist). */
export async function bridgePorts(bridgeName: string): Promise<BridgePort[]> {
  checkIfName(bridgeName, "bridge name");
  const br = getLinkRaw(bridgeName);
  if (!br) return [];
  return dumpLinks()
    .filter((l) => l.master === br.ifindex)
    .map((l) => ({ name: l.name, ifindex: l.ifindex, ...(l.kind ? { kind: l.kind } : {}) }));
}

/** Deletes a link; best effort. True when it existed and is gone. */
export async function deleteLink(name: string): Promise<boolean> {
  checkIfName(name);
  try {
    deleteLinkRaw(name);
    return true;
  } catch {
    return false;
  }
}

// ---- addresses --------------------------------------------------------------

export interface AddrEntry {
  readonly family: Family;
  readonly local: IP;
  readonly prefixLen: number;
  /** "global", "link", "host". */
  readonly scope: string;
}

const toAddrEntry = (a: RawAddr): AddrEntry => ({ family: a.local.family, local: a.local, prefixLen: a.prefixLen, scope: a.scope });

/** The addresses on `dev` (one link lookup and the address dump: the other links are not read). */
export async function getAddrs(dev: string): Promise<AddrEntry[]> {
  const ifindex = ifindexOf(checkIfName(dev), `addr show dev ${dev}`);
  return dumpAddrs().filter((a) => a.ifindex === ifindex).map(toAddrEntry);
}

/**
 * Makes `prefixText` (e.g. "10.244.1.0/32", "fc00:0:0:1::/128") the only
 * global address of its family on `dev`; link-local addresses are kept.
 * IPv6 addresses are added with `nodad` (no duplicate detection on a tunnel).
 */
export async function ensureAddress(dev: string, prefixText: string): Promise<void> {
  checkIfName(dev);
  const want = parsePrefix(prefixText, "address", true);
  const wantIP = tryParseIP(prefixText.slice(0, prefixText.indexOf("/")))!;
  const have = (await getAddrs(dev)).filter((a) => a.family === wantIP.family && a.scope !== "link");
  const same = (a: AddrEntry) => ipEqual(a.local, wantIP) && a.prefixLen === want.len;
  for (const a of have.filter((x) => !same(x))) {
    changeAddr("del", a.local, a.prefixLen, dev, false);
  }
  if (!have.some(same)) {
    changeAddr("add", wantIP, want.len, dev, wantIP.family === 6);
  }
}

// ---- underlay discovery (underlay.ts) ------------------------------------------------

export { findUnderlay, type IPStack, type Underlay, type UnderlayOptions } from "./underlay.js";

// ---- vxlan devices --------------------------------------------------------------

export interface VxlanSpec {
  readonly name: string;
  /** VNI; ignored (and not compared) when `external`. */
  readonly vni: number;
  readonly port: number;
  readonly external: boolean;
  /** Source address of the tunnel; its family must be `family`. */
  readonly localIP?: IP;
  /** Underlay device. */
  readonly dev: string;
  readonly mtu: number;
  /** The VTEP MAC to keep across restarts; the kernel picks one when absent. */
  readonly mac?: string;
  /** Backend.Learning (flannel's device is `nolearning` unless it is set). */
  readonly learning: boolean;
  /** Set NOARP (the eBPF dataplane); false turns ARP on (flannel's device). */
  readonly arpOff: boolean;
  readonly family: Family;
}

function checkSpec(s: VxlanSpec): void {
  checkIfName(s.name, "vxlan device name");
  checkIfName(s.dev, "underlay device name");
  const bad = (what: string) => new TwillError("ERR_INVALID_CONFIG", `vxlan device ${s.name}: ${what}`);
  if (!Number.isInteger(s.vni) || s.vni < (s.external ? 0 : 1) || s.vni > 0xffffff) throw bad(`VNI ${s.vni} is not in 1..16777215`);
  if (!Number.isInteger(s.port) || s.port < 1 || s.port > 65535) throw bad(`port ${s.port} is not in 1..65535`);
  if (!Number.isInteger(s.mtu) || s.mtu < 68 || s.mtu > 65535) throw bad(`MTU ${s.mtu} is not in 68..65535`);
  if (s.localIP && s.localIP.family !== s.family) throw bad(`local ${formatIP(s.localIP)} is not IPv${s.family}`);
  if (s.mac !== undefined) parseMAC(s.mac, `vxlan device ${s.name} MAC`);
}

/** What makes `link` unusable as `spec`, in words; empty when it is compatible. */
export function vxlanDifferences(link: Link, spec: VxlanSpec): string[] {
  const v = link.vxlan;
  if (link.kind !== "vxlan" || !v) return [`kind ${link.kind ?? "none"} != vxlan`];
  const out: string[] = [];
  const onOff = (b: boolean) => (b ? "on" : "off");
  if (v.external !== spec.external) out.push(`external ${onOff(v.external)} != ${onOff(spec.external)}`);
  if (!spec.external && v.id !== spec.vni) out.push(`vxlan id ${v.id} != ${spec.vni}`);
  if (v.port !== spec.port) out.push(`dstport ${v.port} != ${spec.port}`);
  const local = (ipv: IP | undefined) => (ipv ? formatIP(ipv) : "none");
  if (spec.localIP ? !v.local || !ipEqual(v.local, spec.localIP) : v.local !== undefined) {
    out.push(`local ${local(v.local)} != ${local(spec.localIP)}`);
  }
  if (v.dev !== spec.dev) out.push(`dev ${v.dev ?? "none"} != ${spec.dev}`);
  if (v.learning !== spec.learning) out.push(`learning ${onOff(v.learning)} != ${onOff(spec.learning)}`);
  return out;
}

/** The `ip link add` arguments for `spec` (flannel's exact command for the regular form). */
export function vxlanAddArgs(spec: VxlanSpec): string[] {
  const local = spec.localIP ? ["local", formatIP(spec.localIP)] : [];
  if (spec.external) {
    return ["link", "add", spec.name, "type", "vxlan", "external", "dstport", String(spec.port), "dev", spec.dev, ...local];
  }
  return ["link", "add", spec.name, "type", "vxlan", "id", String(spec.vni), ...local, "dev", spec.dev,
    "dstport", String(spec.port), ...(spec.learning ? [] : ["nolearning"])];
}

/** Names the other vxlan devices bound to `port`, to explain "Address already in use". */
async function portUsers(spec: VxlanSpec): Promise<string> {
  const users = (await listLinks().catch(() => [] as Link[]))
    .filter((l) => l.name !== spec.name && l.vxlan?.port === spec.port)
    .map((l) => l.name);
  return users.length > 0 ? ` (UDP port ${spec.port} is used by ${users.join(", ")})` : "";
}

/**
 * Creates or adopts the vxlan device `spec.name` and brings it up with the
 * given MAC, MTU and ARP setting. Returns its name, ifindex and MAC.
 */
export async function ensureVxlan(spec: VxlanSpec, log: LogFn = stderrLog): Promise<DeviceInfo> {
  checkSpec(spec);
  let link = await getLink(spec.name);
  if (link) {
    const diffs = vxlanDifferences(link, spec);
    if (diffs.length > 0) {
      log(`${spec.name}: ${diffs.join("; ")}; replacing the device`);
      deleteLinkRaw(spec.name);
      link = undefined;
    }
  }
  if (!link) {
    const underlay = ifindexOf(spec.dev, vxlanAddArgs(spec).join(" "));
    await explainInUse(spec, () => createVxlan({
      name: spec.name, external: spec.external, port: spec.port, link: underlay, learning: spec.learning,
      ...(spec.external ? {} : { vni: spec.vni }), ...(spec.localIP ? { local: spec.localIP } : {}),
    }, spec.dev));
    link = await getLink(spec.name);
    if (!link) throw new TwillError("ERR_NETLINK", `${spec.name} vanished right after it was created`);
  }
  const set: LinkChange = {
    ...(spec.mac !== undefined && link.mac !== spec.mac.toLowerCase() ? { mac: spec.mac.toLowerCase() } : {}),
    ...(link.mtu !== spec.mtu ? { mtu: spec.mtu } : {}),
    ...(link.flags.includes("NOARP") !== spec.arpOff ? { noarp: spec.arpOff } : {}),
    ...(!link.flags.includes("UP") ? { up: true } : {}),
  };
  if (Object.keys(set).length > 0) {
    // The UDP socket is opened on "up": that is where a port clash shows.
    await explainInUse(spec, () => setLink(spec.name, set));
    link = (await getLink(spec.name)) ?? link;
  }
  return { name: link.name, ifindex: link.ifindex, mac: link.mac };
}

/**
 * A veth pair `name` ⇄ `peer`, both up, `name` NOARP with `mtu`: a device
 * for routes to point at whose tc egress a BPF program handles (host-gw on
 * the bpf dataplane). A `name` that is not a veth is replaced.
 */
export async function ensureHookVeth(name: string, peer: string, mtu: number, log: LogFn = stderrLog): Promise<DeviceInfo> {
  let link = await getLink(name);
  if (link && link.kind !== "veth") {
    log(`${name}: kind ${link.kind ?? "none"} != veth; replacing the device`);
    deleteLinkRaw(name);
    link = undefined;
  }
  if (!link) {
    if (await getLink(peer)) deleteLinkRaw(peer);
    createVeth(name, peer);
    link = await getLink(name);
    if (!link) throw new TwillError("ERR_NETLINK", `${name} vanished right after it was created`);
  }
  const set: LinkChange = {
    ...(link.mtu !== mtu ? { mtu } : {}),
    ...(!link.flags.includes("NOARP") ? { noarp: true } : {}),
    ...(!link.flags.includes("UP") ? { up: true } : {}),
  };
  if (Object.keys(set).length > 0) {
    setLink(name, set);
    link = (await getLink(name)) ?? link;
  }
  // The peer up too: a veth has no carrier while its peer is down.
  const p = await getLink(peer);
  if (p && !p.flags.includes("UP")) setLink(peer, { up: true, ...(p.mtu !== mtu ? { mtu } : {}) });
  return { name: link.name, ifindex: link.ifindex, mac: link.mac };
}

/**
 * Awaits `op`; an "Address already in use" becomes ERR_DEVICE_INCOMPATIBLE
 * naming the devices on the port. (An external device listens on the
 * wildcard address of both families even with `local`, so it and a regular
 * device cannot share a port.)
 */
async function explainInUse(spec: VxlanSpec, op: () => void): Promise<void> {
  try {
    op();
  } catch (e) {
    if (e instanceof NetlinkError && (e.errno === E.EADDRINUSE || /in use/i.test(e.stderr))) {
      throw new TwillError("ERR_DEVICE_INCOMPATIBLE", `${e.message}${await portUsers(spec)}`, { cause: e });
    }
    throw e;
  }
}

// ---- routes, neighbours, FDB ------------------------------------------------------

export interface RouteEntry {
  readonly dst: Prefix;
  readonly gateway?: IP;
  readonly dev?: string;
  /** "kernel", "boot", "static", ... (absent means boot, iproute2's default). */
  readonly protocol?: string;
  readonly flags: readonly string[];
}

/** Main-table routes of `family` through `dev` (`ip -4|-6 route show dev DEV`). */
export async function listRoutes(dev: string, family: Family): Promise<RouteEntry[]> {
  const oif = ifindexOf(checkIfName(dev), `-${family} route show dev ${dev}`);
  return dumpRoutes(family)
    .filter((r) => isMainTable(r) && r.oif === oif)
    .map((r) => ({
      dst: r.dst, dev, flags: r.flags,
      ...(r.gateway ? { gateway: r.gateway } : {}),
      // iproute2 leaves out "proto boot", and callers read absent as boot.
      ...(r.protocol !== "boot" ? { protocol: r.protocol } : {}),
    }));
}

export interface NeighEntry {
  readonly dst: IP;
  readonly lladdr?: string;
  /** e.g. ["PERMANENT"], ["REACHABLE"], ["NOARP"]. */
  readonly state: readonly string[];
}

/** `ip -4|-6 neigh show dev DEV`: like iproute2, entries only in NUD_NOARP are left out. */
export async function listNeighs(dev: string, family: Family): Promise<NeighEntry[]> {
  const ifindex = ifindexOf(checkIfName(dev), `-${family} neigh show dev ${dev}`);
  const out: NeighEntry[] = [];
  for (const n of dumpNeighs(family)) {
    if (n.ifindex !== ifindex || !n.dst || n.state === NUD_NOARP) continue;
    out.push({ dst: n.dst, state: n.state === 0 ? ["NONE"] : neighStateNames(n.state), ...(n.lladdr ? { lladdr: n.lladdr } : {}) });
  }
  return out;
}

export interface FdbEntry {
  readonly mac: string;
  /** The remote VTEP (vxlan devices). */
  readonly dst?: IP;
  readonly flags: readonly string[];
  /** "permanent", "static", "" (learned), ... */
  readonly state: string;
}

/** `bridge fdb show dev DEV`. */
export async function listFdb(dev: string): Promise<FdbEntry[]> {
  const ifindex = ifindexOf(checkIfName(dev), `fdb show dev ${dev}`);
  return dumpFdb()
    .filter((f) => f.ifindex === ifindex && f.lladdr !== undefined)
    .map((f) => ({ mac: f.lladdr!, flags: fdbFlagNames(f.flags), state: fdbStateName(f.state), ...(f.dst ? { dst: f.dst } : {}) }));
}

/** "10.244.1.0/32" for the /32 (v4) or /128 (v6) host prefix of an address. */
export function hostPrefix(addr: IP): string {
  return formatPrefix(makePrefix(addr, bits(addr.family)));
}

// ---- sysctl ---------------------------------------------------------------------------

const SYSCTL_PART = /^[A-Za-z0-9_.:@-]+$/;

/** "net.ipv4.ip_forward" or "net/ipv4/conf/flannel.1/rp_filter" → the /proc/sys path. */
export function sysctlPath(key: string): string {
  const parts = typeof key === "string" ? (key.includes("/") ? key.split("/") : key.split(".")) : [];
  const ok = parts.length >= 2 && parts.every((p) => SYSCTL_PART.test(p) && p !== "." && p !== "..");
  if (!ok) throw new TwillError("ERR_SYSCTL", `sysctl key ${JSON.stringify(key)} is not a key like net.ipv4.ip_forward`);
  return `/proc/sys/${parts.join("/")}`;
}

/** Writes a sysctl in the caller's network namespace. */
export async function sysctl(key: string, value: string | number): Promise<void> {
  const path = sysctlPath(key);
  const text = String(value);
  if (!/^[A-Za-z0-9 _.:-]*$/.test(text)) throw new TwillError("ERR_SYSCTL", `sysctl ${key}: bad value ${JSON.stringify(text)}`);
  // A value already set is not written again: an unprivileged container
  // (kube-flannel's NET_ADMIN + NET_RAW) sees /proc/sys read-only, and the
  // node (or an init container) may have set it already.
  const now = await readFile(path, "utf8").then((t) => t.trim().split(/\s+/).join(" "), () => undefined);
  if (now === text.trim().split(/\s+/).join(" ")) return;
  try {
    await writeFile(path, text + "\n");
  } catch (e) {
    throw new TwillError("ERR_SYSCTL", `sysctl ${key}=${text}: ${(e as Error).message}`, { cause: e });
  }
}

export async function readSysctl(key: string): Promise<string> {
  const path = sysctlPath(key);
  try {
    return (await readFile(path, "utf8")).trim();
  } catch (e) {
    throw new TwillError("ERR_SYSCTL", `sysctl ${key}: ${(e as Error).message}`, { cause: e });
  }
}
