/**
 * RTM_*ADDR messages: struct ifaddrmsg plus IFA_* attributes.
 *
 * How it works: `decodeAddr` reads the family, prefix length, scope and
 * ifindex from the header and the address from IFA_LOCAL (IPv4: the
 * interface's own address; IFA_ADDRESS is the peer on point-to-point links)
 * or IFA_ADDRESS (IPv6), which is what iproute2 prints as "local".
 * `addrRequest` builds RTM_NEWADDR/RTM_DELADDR the way `ip addr add/del`
 * does (both attributes; IFA_F_NODAD in IFA_FLAGS and the header for
 * `nodad`).
 */
import { bytes, parseAttrs, u32 } from "./attrs.js";
import { AF_INET, AF_INET6, IFA_ADDRESS, IFA_F_NODAD, IFA_FLAGS, IFA_LOCAL, IFADDRMSG_LEN, SCOPE_NAMES } from "./consts.js";
import type { Message } from "./message.js";
import type { Family, IP } from "../ip.js";

export interface RawAddr {
  readonly ifindex: number;
  readonly local: IP;
  readonly prefixLen: number;
  /** "global", "link", "host", ... */
  readonly scope: string;
  /** IFA_F_* (IFA_FLAGS when the kernel sends it, else ifa_flags): permanent, deprecated, temporary, ... */
  readonly flags: number;
}

export const afOf = (f: Family): number => (f === 4 ? AF_INET : AF_INET6);

/** An IP from an address attribute of `family`'s length; undefined otherwise. */
export function ipFrom(b: Buffer | undefined, family: number): IP | undefined {
  if (family === AF_INET && b?.length === 4) return { family: 4, bytes: Uint8Array.from(b) };
  if (family === AF_INET6 && b?.length === 16) return { family: 6, bytes: Uint8Array.from(b) };
  return undefined;
}

export function decodeAddr(m: Message): RawAddr | undefined {
  const b = m.body;
  if (b.length < IFADDRMSG_LEN) return undefined;
  const family = b[0]!;
  const a = parseAttrs(b, IFADDRMSG_LEN);
  const local = ipFrom(a.get(IFA_LOCAL), family) ?? ipFrom(a.get(IFA_ADDRESS), family);
  if (!local) return undefined;
  const scope = b[3]!;
  const flags = a.get(IFA_FLAGS)?.length === 4 ? a.get(IFA_FLAGS)!.readUInt32LE(0) : b[2]!;
  return { ifindex: b.readUInt32LE(4), local, prefixLen: b[1]!, scope: SCOPE_NAMES.get(scope) ?? String(scope), flags };
}

export function encodeIfaddr(family: number, prefixLen: number, ifindex: number, flags = 0, scope = 0): Buffer {
  const h = Buffer.alloc(IFADDRMSG_LEN);
  h[0] = family;
  h[1] = prefixLen;
  h[2] = flags & 0xff;
  h[3] = scope;
  h.writeUInt32LE(ifindex, 4);
  return h;
}

/** Header and attributes of RTM_NEWADDR/RTM_DELADDR for `ip/len` on `ifindex`. */
export function addrRequest(ip: IP, len: number, ifindex: number, nodad: boolean): { header: Buffer; attrs: Buffer[] } {
  const flags = nodad ? IFA_F_NODAD : 0;
  const attrs = [bytes(IFA_LOCAL, ip.bytes), bytes(IFA_ADDRESS, ip.bytes)];
  if (nodad) attrs.push(u32(IFA_FLAGS, flags));
  return { header: encodeIfaddr(afOf(ip.family), len, ifindex, flags), attrs };
}
