/**
 * RTM_*ROUTE messages: struct rtmsg plus RTA_* attributes.
 *
 * How it works: `decodeRoute` reads a route of the main table (or of the
 * table a `route get` answered from) into destination prefix, gateway,
 * output ifindex, protocol name and flag names as iproute2 prints them
 * ("onlink", "linkdown", ...). `routeRequest` builds RTM_NEWROUTE /
 * RTM_DELROUTE like `ip route replace|del DST [via GW] dev DEV [onlink]`:
 * main table, protocol boot, scope universe with a gateway (link without),
 * RTNH_F_ONLINK in rtm_flags for `onlink`. `routeGetRequest` is `ip route
 * get ADDR` (its answer carries the preferred source, RTA_PREFSRC).
 * `blackholeRequest` is `ip route add blackhole DST`.
 */
import { bytes, getU32, parseAttrs, u32 } from "./attrs.js";
import {
  AF_INET, RT_SCOPE_LINK, RT_SCOPE_NOWHERE, RT_SCOPE_UNIVERSE, RT_TABLE_MAIN, RT_TABLE_UNSPEC, RTA_DST, RTA_GATEWAY, RTA_OIF,
  RTA_PREFSRC, RTA_PRIORITY, RTA_TABLE, RTM_FLAG_NAMES, RTMSG_LEN, RTN_BLACKHOLE, RTN_UNICAST, RTNH_F_ONLINK, RTPROT_BOOT, RTPROT_NAMES,
} from "./consts.js";
import type { Message } from "./message.js";
import { afOf, ipFrom } from "./addr-codec.js";
import { bits, makePrefix, type IP, type Prefix } from "../ip.js";

export interface RawRoute {
  readonly family: number;
  readonly dst: Prefix;
  readonly gateway?: IP;
  /** RTA_PREFSRC: the source address the kernel picks (`ip route get` prints it as `src`). */
  readonly prefsrc?: IP;
  /** Output ifindex, 0 when none (multipath, blackhole). */
  readonly oif: number;
  readonly table: number;
  /** RTN_* (1 = unicast). */
  readonly type: number;
  readonly protocol: string;
  readonly scope: number;
  readonly flags: readonly string[];
  readonly metric?: number;
}

export function decodeRoute(m: Message): RawRoute | undefined {
  const b = m.body;
  if (b.length < RTMSG_LEN) return undefined;
  const family = b[0]!;
  const fam = family === AF_INET ? 4 : 6;
  const a = parseAttrs(b, RTMSG_LEN);
  const dstIP = ipFrom(a.get(RTA_DST), family) ?? (b[1] === 0 ? { family: fam, bytes: new Uint8Array(fam === 4 ? 4 : 16) } as IP : undefined);
  if (!dstIP || b[1]! > bits(fam)) return undefined;
  const gateway = ipFrom(a.get(RTA_GATEWAY), family);
  const prefsrc = ipFrom(a.get(RTA_PREFSRC), family);
  const rtFlags = b.readUInt32LE(8);
  const proto = b[5]!;
  const metric = getU32(a, RTA_PRIORITY);
  return {
    family,
    dst: makePrefix(dstIP, b[1]!),
    oif: getU32(a, RTA_OIF) ?? 0,
    table: getU32(a, RTA_TABLE) ?? b[4]!,
    type: b[7]!,
    protocol: RTPROT_NAMES.get(proto) ?? String(proto),
    scope: b[6]!,
    flags: RTM_FLAG_NAMES.filter(([bit]) => rtFlags & bit).map(([, n]) => n),
    ...(gateway ? { gateway } : {}),
    ...(prefsrc ? { prefsrc } : {}),
    ...(metric !== undefined ? { metric } : {}),
  };
}

export function encodeRtmsg(o: { family: number; dstLen: number; table: number; protocol: number; scope: number; type: number; flags: number }): Buffer {
  const h = Buffer.alloc(RTMSG_LEN);
  h[0] = o.family;
  h[1] = o.dstLen;
  h[4] = o.table;
  h[5] = o.protocol;
  h[6] = o.scope;
  h[7] = o.type;
  h.writeUInt32LE(o.flags >>> 0, 8);
  return h;
}

export interface RouteSpec {
  readonly dst: Prefix;
  readonly via?: IP;
  readonly oif: number;
  readonly onlink?: boolean;
}

export function routeRequest(r: RouteSpec, del: boolean): { header: Buffer; attrs: Buffer[] } {
  const header = encodeRtmsg({
    family: afOf(r.dst.ip.family), dstLen: r.dst.len, table: RT_TABLE_MAIN,
    // iproute2: del leaves protocol, type and scope open (NOWHERE = any); add picks boot and the scope from the gateway.
    protocol: del ? 0 : RTPROT_BOOT,
    scope: del ? RT_SCOPE_NOWHERE : r.via ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK,
    type: del ? 0 : RTN_UNICAST,
    flags: r.onlink ? RTNH_F_ONLINK : 0,
  });
  const attrs = [bytes(RTA_DST, r.dst.ip.bytes)];
  if (r.via) attrs.push(bytes(RTA_GATEWAY, r.via.bytes));
  attrs.push(u32(RTA_OIF, r.oif));
  return { header, attrs };
}

/** `ip route add blackhole DST` (main table, proto boot, scope universe, type blackhole, no device). */
export function blackholeRequest(dst: Prefix): { header: Buffer; attrs: Buffer[] } {
  const header = encodeRtmsg({
    family: afOf(dst.ip.family), dstLen: dst.len, table: RT_TABLE_MAIN, protocol: RTPROT_BOOT,
    scope: RT_SCOPE_UNIVERSE, type: RTN_BLACKHOLE, flags: 0,
  });
  return { header, attrs: [bytes(RTA_DST, dst.ip.bytes)] };
}

/** `ip route get ADDR`: the route the kernel would use. */
export function routeGetRequest(addr: IP): { header: Buffer; attrs: Buffer[] } {
  const header = encodeRtmsg({ family: afOf(addr.family), dstLen: bits(addr.family), table: RT_TABLE_UNSPEC, protocol: 0, scope: 0, type: 0, flags: 0 });
  return { header, attrs: [bytes(RTA_DST, addr.bytes)] };
}

/** Main-table routes are what `ip route show` lists (the local table is separate). */
export const isMainTable = (r: RawRoute): boolean => r.table === RT_TABLE_MAIN;
export { RTA_TABLE };
