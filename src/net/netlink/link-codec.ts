/**
 * RTM_*LINK messages: struct ifinfomsg plus IFLA_* attributes, including the
 * nested IFLA_LINKINFO / IFLA_INFO_DATA of a vxlan device.
 *
 * How it works: `decodeLink` turns one RTM_NEWLINK/DELLINK message into a
 * RawLink (ifindex, name, MTU, MAC, flags as iproute2 names them, kind,
 * master ifindex, vxlan options with the underlay as an ifindex); names of
 * other links (master, vxlan dev) are resolved by the caller, who has the
 * whole dump. `encodeIfinfo` / `vxlanInfo` build requests: the vxlan
 * options are the ones `ip link add ... type vxlan` sends for twill's
 * devices (ID, LOCAL or LOCAL6, LINK, PORT in network order, LEARNING,
 * COLLECT_METADATA).
 */
import { attr, be16, getBE16, getStr, getU32, getU8, nest, parseAttrs, str, u32, u8 } from "./attrs.js";
import {
  IFF_NAMES, IFF_RUNNING, IFF_UP, IFINFOMSG_LEN, IFLA_ADDRESS, IFLA_IFNAME, IFLA_INFO_DATA, IFLA_INFO_KIND, IFLA_LINKINFO,
  IFLA_MASTER, IFLA_MTU, IFLA_VXLAN_COLLECT_METADATA, IFLA_VXLAN_ID, IFLA_VXLAN_LEARNING, IFLA_VXLAN_LINK,
  IFLA_VXLAN_LOCAL, IFLA_VXLAN_LOCAL6, IFLA_VXLAN_PORT,
} from "./consts.js";
import type { Message } from "./message.js";
import type { IP } from "../ip.js";

export interface RawVxlan {
  readonly id: number;
  readonly external: boolean;
  readonly port: number;
  readonly local?: IP;
  /** The underlay's ifindex (IFLA_VXLAN_LINK), 0 when none. */
  readonly link: number;
  readonly learning: boolean;
}

export interface RawLink {
  readonly ifindex: number;
  readonly name: string;
  readonly mtu: number;
  /** "aa:bb:..", lower case; "" when the device has none. */
  readonly mac: string;
  /** iproute2's flag names: NO-CARRIER (up, not running), then e.g. BROADCAST,MULTICAST,UP,LOWER_UP. */
  readonly flags: readonly string[];
  readonly rawFlags: number;
  readonly kind?: string;
  /** The master's ifindex, 0 when none. */
  readonly master: number;
  readonly vxlan?: RawVxlan;
}

export const formatMAC = (b: Uint8Array): string => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join(":");

export function flagNames(flags: number): string[] {
  const out = flags & IFF_UP && !(flags & IFF_RUNNING) ? ["NO-CARRIER"] : [];
  for (const [bit, name] of IFF_NAMES) if (flags & bit) out.push(name);
  return out;
}

function decodeVxlan(data: Buffer): RawVxlan {
  const a = parseAttrs(data);
  const l4 = a.get(IFLA_VXLAN_LOCAL), l6 = a.get(IFLA_VXLAN_LOCAL6);
  const local: IP | undefined =
    l4?.length === 4 && l4.readUInt32BE(0) !== 0 ? { family: 4, bytes: Uint8Array.from(l4) }
      : l6?.length === 16 && l6.some((x) => x !== 0) ? { family: 6, bytes: Uint8Array.from(l6) } : undefined;
  return {
    id: getU32(a, IFLA_VXLAN_ID) ?? 0,
    external: (getU8(a, IFLA_VXLAN_COLLECT_METADATA) ?? 0) !== 0,
    port: getBE16(a, IFLA_VXLAN_PORT) ?? 0,
    link: getU32(a, IFLA_VXLAN_LINK) ?? 0,
    learning: (getU8(a, IFLA_VXLAN_LEARNING) ?? 0) !== 0,
    ...(local ? { local } : {}),
  };
}

/** One RTM_NEWLINK/RTM_DELLINK message; undefined when it is too short or has no name. */
export function decodeLink(m: Message): RawLink | undefined {
  const b = m.body;
  if (b.length < IFINFOMSG_LEN) return undefined;
  const a = parseAttrs(b, IFINFOMSG_LEN);
  const name = getStr(a, IFLA_IFNAME);
  if (name === undefined) return undefined;
  const rawFlags = b.readUInt32LE(8);
  const info = a.get(IFLA_LINKINFO);
  const ia = info ? parseAttrs(info) : undefined;
  const kind = ia ? getStr(ia, IFLA_INFO_KIND) : undefined;
  const data = ia?.get(IFLA_INFO_DATA);
  const mac = a.get(IFLA_ADDRESS);
  return {
    ifindex: b.readInt32LE(4),
    name,
    mtu: getU32(a, IFLA_MTU) ?? 0,
    mac: mac ? formatMAC(mac) : "",
    flags: flagNames(rawFlags),
    rawFlags,
    master: getU32(a, IFLA_MASTER) ?? 0,
    ...(kind ? { kind } : {}),
    ...(kind === "vxlan" && data ? { vxlan: decodeVxlan(data) } : {}),
  };
}

/** struct ifinfomsg. */
export function encodeIfinfo(ifindex = 0, flags = 0, change = 0, family = 0): Buffer {
  const h = Buffer.alloc(IFINFOMSG_LEN);
  h.writeUInt8(family, 0);
  h.writeInt32LE(ifindex, 4);
  h.writeUInt32LE(flags >>> 0, 8);
  h.writeUInt32LE(change >>> 0, 12);
  return h;
}

export interface VxlanCreate {
  readonly name: string;
  /** VNI; omitted for an external (collect-metadata) device. */
  readonly vni?: number;
  readonly external: boolean;
  readonly port: number;
  readonly local?: IP;
  /** The underlay's ifindex. */
  readonly link: number;
  readonly learning: boolean;
}

/** VETH_INFO_PEER: the peer's ifinfomsg and attributes, inside IFLA_INFO_DATA. */
const VETH_INFO_PEER = 1;

/** The attributes of RTM_NEWLINK for `ip link add NAME type veth peer name PEER`. */
export function vethAttrs(name: string, peer: string): Buffer[] {
  const peerInfo = attr(VETH_INFO_PEER, Buffer.concat([encodeIfinfo(), str(IFLA_IFNAME, peer)]));
  return [str(IFLA_IFNAME, name), nest(IFLA_LINKINFO, [str(IFLA_INFO_KIND, "veth"), nest(IFLA_INFO_DATA, [peerInfo])])];
}

/** The attributes of RTM_NEWLINK for a vxlan device, as `ip link add NAME type vxlan ...` sends them. */
export function vxlanAttrs(v: VxlanCreate): Buffer[] {
  const data: Buffer[] = [];
  if (!v.external && v.vni !== undefined) data.push(u32(IFLA_VXLAN_ID, v.vni));
  if (v.local) data.push(attr(v.local.family === 4 ? IFLA_VXLAN_LOCAL : IFLA_VXLAN_LOCAL6, v.local.bytes));
  data.push(u32(IFLA_VXLAN_LINK, v.link));
  data.push(be16(IFLA_VXLAN_PORT, v.port));
  data.push(u8(IFLA_VXLAN_LEARNING, v.learning ? 1 : 0));
  if (v.external) data.push(u8(IFLA_VXLAN_COLLECT_METADATA, 1));
  return [str(IFLA_IFNAME, v.name), nest(IFLA_LINKINFO, [str(IFLA_INFO_KIND, "vxlan"), nest(IFLA_INFO_DATA, data)])];
}
