/**
 * RTM_*NEIGH messages: struct ndmsg plus NDA_* attributes, for neighbours
 * (AF_INET/AF_INET6) and for FDB entries (AF_BRIDGE).
 *
 * How it works: `decodeNeigh` reads the ifindex, state and flags from the
 * header and the address (NDA_DST: an IP for a neighbour, the remote VTEP
 * for a vxlan FDB entry) and link-layer address (NDA_LLADDR) from the
 * attributes; state and flags get the names iproute2 prints (neighbour
 * state "PERMANENT"; FDB state "permanent"/"static", flags "self"...).
 * `neighRequest` / `fdbRequest` build what `ip neigh replace|del` and
 * `bridge fdb append|replace|del ... self` send.
 */
import { bytes, parseAttrs } from "./attrs.js";
import { AF_BRIDGE, NDA_DST, NDA_LLADDR, NDMSG_LEN, NTF_NAMES, NTF_SELF, NUD_NAMES, NUD_NOARP, NUD_PERMANENT } from "./consts.js";
import type { Message } from "./message.js";
import { afOf, ipFrom } from "./addr-codec.js";
import { formatMAC } from "./link-codec.js";
import type { IP } from "../ip.js";
import { macToBytes } from "../../lease/mac.js";

export interface RawNeigh {
  readonly family: number;
  readonly ifindex: number;
  /** NDA_DST: the neighbour's IP, or a vxlan FDB entry's remote. */
  readonly dst?: IP;
  readonly lladdr?: string;
  readonly state: number;
  readonly flags: number;
}

export function decodeNeigh(m: Message): RawNeigh | undefined {
  const b = m.body;
  if (b.length < NDMSG_LEN) return undefined;
  const a = parseAttrs(b, NDMSG_LEN);
  const raw = a.get(NDA_DST);
  const dst = raw?.length === 4 ? ipFrom(raw, 2) : raw?.length === 16 ? ipFrom(raw, 10) : undefined;
  const ll = a.get(NDA_LLADDR);
  return {
    family: b[0]!,
    ifindex: b.readInt32LE(4),
    state: b.readUInt16LE(8),
    flags: b[10]!,
    ...(dst ? { dst } : {}),
    ...(ll && ll.length > 0 ? { lladdr: formatMAC(ll) } : {}),
  };
}

/** `ip neigh` state names: ["PERMANENT"], ["REACHABLE"], ... */
export const neighStateNames = (state: number): string[] => NUD_NAMES.filter(([bit]) => state & bit).map(([, n]) => n);
/** `bridge fdb` flag names: ["self"], ["self", "extern_learn"], ... */
export const fdbFlagNames = (flags: number): string[] => NTF_NAMES.filter(([bit]) => flags & bit).map(([, n]) => n);
/** `bridge fdb` state text: "permanent", "static" (NOARP), "stale", or "" (learned). */
export function fdbStateName(state: number): string {
  if (state & NUD_PERMANENT) return "permanent";
  if (state & NUD_NOARP) return "static";
  if (state & 0x04) return "stale";
  return "";
}

export function encodeNdmsg(family: number, ifindex: number, state: number, flags: number): Buffer {
  const h = Buffer.alloc(NDMSG_LEN);
  h[0] = family;
  h.writeInt32LE(ifindex, 4);
  h.writeUInt16LE(state, 8);
  h[10] = flags;
  return h;
}


/** `ip neigh replace IP lladdr MAC dev DEV nud permanent` / `ip neigh del IP dev DEV`. */
export function neighRequest(dst: IP, ifindex: number, lladdr: string | undefined): { header: Buffer; attrs: Buffer[] } {
  const attrs = [bytes(NDA_DST, dst.bytes)];
  if (lladdr !== undefined) attrs.push(bytes(NDA_LLADDR, macToBytes(lladdr)));
  return { header: encodeNdmsg(afOf(dst.family), ifindex, lladdr !== undefined ? NUD_PERMANENT : 0, 0), attrs };
}

/** `bridge fdb append|replace|del MAC dev DEV dst IP self [permanent]`. */
export function fdbRequest(mac: string, ifindex: number, dst: IP | undefined, permanent: boolean): { header: Buffer; attrs: Buffer[] } {
  const attrs = [bytes(NDA_LLADDR, macToBytes(mac))];
  if (dst) attrs.push(bytes(NDA_DST, dst.bytes));
  // `bridge fdb` makes an entry "static" (NUD_NOARP) unless told `permanent`.
  return { header: encodeNdmsg(AF_BRIDGE, ifindex, permanent ? NUD_PERMANENT : NUD_NOARP, NTF_SELF), attrs };
}
