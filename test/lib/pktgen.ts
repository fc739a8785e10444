/**
 * A small packet builder and parser for packet-level tests of the tc
 * programs (run through BPF_PROG_TEST_RUN, see src/bpf/testrun.ts).
 *
 * How it works:
 * 1) Builders nest the way headers do, innermost last:
 *      eth({ dst, src }, ipv4({ src, dst }, udp({ sport, dport }, payload)))
 *    An L4 builder returns an `L4` (protocol number plus a function of the
 *    IP source and destination), so the IP builder can fill in the TCP/UDP/
 *    ICMPv6 checksum over the pseudo-header; an IP builder returns the IP
 *    packet's bytes with a correct header checksum. Every field a test may
 *    want wrong (IHL, checksum, flags, lengths) can be overridden.
 * 2) vxlanFrame() wraps an inner Ethernet frame the way a flannel peer does:
 *    outer Ethernet / IPv4 (or IPv6) / UDP 8472 / VXLAN (flags 0x08, VNI).
 * 3) Parsers read the same layouts back (parseFrame, decodeVxlan) and say
 *    whether checksums hold (ipv4HeaderChecksumOk, l4ChecksumOk), so a test
 *    asserts on fields, not on offsets.
 *
 * Addresses are text ("10.244.1.2", "fd00::1") or bytes; MACs are text.
 */
import { parseIP } from "../../src/net/ip.js";
import { macToBytes, bytesToMAC } from "../../src/lease/mac.js";

export const ETH_P_IP = 0x0800;
export const ETH_P_IPV6 = 0x86dd;
export const ETH_P_ARP = 0x0806;
export const IPPROTO_HOPOPTS = 0;
export const IPPROTO_ICMP = 1;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export const IPPROTO_ROUTING = 43;
export const IPPROTO_FRAGMENT = 44;
export const IPPROTO_ICMPV6 = 58;
export const IPPROTO_NONE = 59;
export const IPPROTO_DSTOPTS = 60;
export const VXLAN_PORT = 8472;
export const ETH_HLEN = 14;
/** Outer Ethernet + IPv4 + UDP + VXLAN: what encapsulation adds in front of the inner frame. */
export const VXLAN_V4_OVERHEAD = 50;

type Addr = string | Uint8Array;
const addr = (a: Addr): Buffer => Buffer.from(typeof a === "string" ? parseIP(a).bytes : a);

/* ---- checksums ---- */

/** The Internet checksum (RFC 1071) of the concatenation of `parts` (an odd length is padded with a zero byte). */
export function inetChecksum(...parts: Buffer[]): number {
  const b = Buffer.concat(parts);
  let s = 0;
  for (let i = 0; i < b.length; i += 2) s += i + 1 < b.length ? b.readUInt16BE(i) : b[i]! << 8;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

function pseudoHeader(src: Buffer, dst: Buffer, proto: number, len: number): Buffer {
  if (src.length === 4) {
    const p = Buffer.alloc(12);
    src.copy(p, 0); dst.copy(p, 4); p[9] = proto; p.writeUInt16BE(len, 10);
    return p;
  }
  const p = Buffer.alloc(40);
  src.copy(p, 0); dst.copy(p, 16); p.writeUInt32BE(len, 32); p[39] = proto;
  return p;
}

/* ---- L4 ---- */

/** An L4 header and payload whose checksum depends on the IP addresses around it. */
export interface L4 {
  readonly proto: number;
  bytes(src: Buffer, dst: Buffer): Buffer;
}

/** Raw bytes as the IP payload with protocol `proto` (fragments, unknown protocols). */
export const raw = (proto: number, bytes: Buffer): L4 => ({ proto, bytes: () => Buffer.from(bytes) });

export interface TcpOpts {
  sport: number; dport: number; seq?: number; ack?: number;
  /** TCP flags byte; default ACK (0x10). SYN 0x02, FIN 0x01, RST 0x04, PSH 0x08. */
  flags?: number; window?: number;
  /** Overrides the computed checksum. */
  checksum?: number;
}
export function tcp(o: TcpOpts, payload: Buffer = Buffer.alloc(0)): L4 {
  return {
    proto: IPPROTO_TCP,
    bytes(src, dst) {
      const h = Buffer.alloc(20);
      h.writeUInt16BE(o.sport, 0); h.writeUInt16BE(o.dport, 2);
      h.writeUInt32BE(o.seq ?? 1, 4); h.writeUInt32BE(o.ack ?? 0, 8);
      h[12] = 5 << 4; h[13] = o.flags ?? 0x10; h.writeUInt16BE(o.window ?? 65535, 14);
      const seg = Buffer.concat([h, payload]);
      seg.writeUInt16BE(o.checksum ?? inetChecksum(pseudoHeader(src, dst, IPPROTO_TCP, seg.length), seg), 16);
      return seg;
    },
  };
}

export interface UdpOpts {
  sport: number; dport: number;
  /** Overrides the computed checksum (0 = none, allowed over IPv4). */
  checksum?: number;
  /** Overrides the length field. */
  length?: number;
}
export function udp(o: UdpOpts, payload: Buffer = Buffer.alloc(0)): L4 {
  return {
    proto: IPPROTO_UDP,
    bytes(src, dst) {
      const h = Buffer.alloc(8);
      h.writeUInt16BE(o.sport, 0); h.writeUInt16BE(o.dport, 2);
      h.writeUInt16BE(o.length ?? 8 + payload.length, 4);
      const dgram = Buffer.concat([h, payload]);
      let c = o.checksum ?? inetChecksum(pseudoHeader(src, dst, IPPROTO_UDP, dgram.length), dgram);
      if (o.checksum === undefined && c === 0) c = 0xffff;
      dgram.writeUInt16BE(c, 6);
      return dgram;
    },
  };
}

export interface IcmpOpts {
  type: number; code?: number;
  /** The 4 bytes after the checksum: id/seq for echo, unused or MTU for errors. */
  rest?: number;
}
/** ICMPv4 (no pseudo-header). */
export function icmp4(o: IcmpOpts, payload: Buffer = Buffer.alloc(0)): L4 {
  return {
    proto: IPPROTO_ICMP,
    bytes() {
      const h = Buffer.alloc(8);
      h[0] = o.type; h[1] = o.code ?? 0; h.writeUInt32BE((o.rest ?? 0) >>> 0, 4);
      const m = Buffer.concat([h, payload]);
      m.writeUInt16BE(inetChecksum(m), 2);
      return m;
    },
  };
}
/** ICMPv6 (checksum over the IPv6 pseudo-header). */
export function icmp6(o: IcmpOpts, payload: Buffer = Buffer.alloc(0)): L4 {
  return {
    proto: IPPROTO_ICMPV6,
    bytes(src, dst) {
      const h = Buffer.alloc(8);
      h[0] = o.type; h[1] = o.code ?? 0; h.writeUInt32BE((o.rest ?? 0) >>> 0, 4);
      const m = Buffer.concat([h, payload]);
      m.writeUInt16BE(inetChecksum(pseudoHeader(src, dst, IPPROTO_ICMPV6, m.length), m), 2);
      return m;
    },
  };
}
export const echoRequest4 = (id: number, seq: number, data = Buffer.alloc(16, 0xab)): L4 => icmp4({ type: 8, rest: (id << 16) | seq }, data);
export const echoRequest6 = (id: number, seq: number, data = Buffer.alloc(16, 0xab)): L4 => icmp6({ type: 128, rest: (id << 16) | seq }, data);
/** ICMP "fragmentation needed" (3/4) quoting `original` (an IPv4 packet, cut to 28 bytes). */
export const fragNeeded4 = (mtu: number, original: Buffer): L4 => icmp4({ type: 3, code: 4, rest: mtu }, original.subarray(0, 28));
/** ICMPv6 "packet too big" (2) quoting `original`. */
export const packetTooBig6 = (mtu: number, original: Buffer): L4 => icmp6({ type: 2, rest: mtu }, original.subarray(0, 1232));
/** ICMP "time exceeded" (11/0) quoting `original`. */
export const timeExceeded4 = (original: Buffer): L4 => icmp4({ type: 11 }, original.subarray(0, 28));

/* ---- IPv4 ---- */

export interface Ipv4Opts {
  src: Addr; dst: Addr;
  ttl?: number;
  /** The whole TOS byte (DSCP << 2 | ECN). */
  tos?: number;
  id?: number;
  df?: boolean;
  /** More fragments. */
  mf?: boolean;
  /** Fragment offset in bytes (a multiple of 8). */
  fragOffset?: number;
  /** IP options (padded to a multiple of 4 bytes). */
  options?: Buffer;
  /** Overrides the IHL (words) written into the header; the header is still built from `options`. */
  ihl?: number;
  /** Overrides the total length field. */
  totalLength?: number;
  /** Overrides the header checksum. */
  checksum?: number;
  /** Overrides the protocol field (default: the L4's). */
  proto?: number;
}

export function ipv4(o: Ipv4Opts, l4: L4): Buffer {
  const src = addr(o.src), dst = addr(o.dst);
  const opts = o.options ? Buffer.concat([o.options, Buffer.alloc((4 - (o.options.length % 4)) % 4)]) : Buffer.alloc(0);
  const h = Buffer.alloc(20 + opts.length);
  const payload = l4.bytes(src, dst);
  h[0] = 0x40 | (o.ihl ?? h.length / 4);
  h[1] = o.tos ?? 0;
  h.writeUInt16BE(o.totalLength ?? h.length + payload.length, 2);
  h.writeUInt16BE(o.id ?? 0x1234, 4);
  h.writeUInt16BE((o.df ? 0x4000 : 0) | (o.mf ? 0x2000 : 0) | ((o.fragOffset ?? 0) >> 3), 6);
  h[8] = o.ttl ?? 64;
  h[9] = o.proto ?? l4.proto;
  src.copy(h, 12); dst.copy(h, 16);
  opts.copy(h, 20);
  h.writeUInt16BE(o.checksum ?? inetChecksum(h), 10);
  return Buffer.concat([h, payload]);
}

/* ---- IPv6 and its extension headers ---- */

/** An IPv6 extension header: its type (the next-header value announcing it) and body. */
export interface Ext { readonly type: number; body(next: number): Buffer }

function tlvExt(type: number, options: Buffer): Ext {
  return {
    type,
    body(next) {
      const len = Math.ceil((2 + options.length) / 8) * 8;
      const b = Buffer.alloc(len);
      b[0] = next; b[1] = len / 8 - 1;
      options.copy(b, 2);
      if (len - 2 - options.length > 0) {
        // PadN over the rest (Pad1 when one byte is left)
        const padAt = 2 + options.length, padLen = len - padAt;
        if (padLen === 1) b[padAt] = 0; else { b[padAt] = 1; b[padAt + 1] = padLen - 2; }
      }
      return b;
    },
  };
}
/** Hop-by-hop options (default: a Router Alert option). */
export const hopByHop = (options = Buffer.from([5, 2, 0, 0])): Ext => tlvExt(IPPROTO_HOPOPTS, options);
/** Destination options (default: padding only). */
export const destOpts = (options = Buffer.alloc(0)): Ext => tlvExt(IPPROTO_DSTOPTS, options);
/** A routing header of `routingType` (default 4, segment routing) listing `segments`. */
export function routing(segments: Addr[], segmentsLeft = segments.length, routingType = 4): Ext {
  return {
    type: IPPROTO_ROUTING,
    body(next) {
      const b = Buffer.alloc(8 + 16 * segments.length);
      b[0] = next; b[1] = 2 * segments.length; b[2] = routingType; b[3] = segmentsLeft;
      if (routingType === 4) b[4] = Math.max(0, segments.length - 1);
      segments.forEach((s, i) => addr(s).copy(b, 8 + 16 * i));
      return b;
    },
  };
}
/** A fragment header: `offset` in bytes (multiple of 8), `more` fragments, identification. */
export function fragment(offset: number, more: boolean, id = 0xabcd): Ext {
  return {
    type: IPPROTO_FRAGMENT,
    body(next) {
      const b = Buffer.alloc(8);
      b[0] = next;
      b.writeUInt16BE((offset & ~7) | (more ? 1 : 0), 2);
      b.writeUInt32BE(id, 4);
      return b;
    },
  };
}

export interface Ipv6Opts {
  src: Addr; dst: Addr;
  hopLimit?: number;
  /** Traffic class (DSCP << 2 | ECN). */
  tclass?: number;
  flowLabel?: number;
  ext?: Ext[];
  /** Overrides the payload length field. */
  payloadLength?: number;
}

export function ipv6(o: Ipv6Opts, l4: L4): Buffer {
  const src = addr(o.src), dst = addr(o.dst);
  const ext = o.ext ?? [];
  const payload = l4.bytes(src, dst);
  const bodies = ext.map((e, i) => e.body(i + 1 < ext.length ? ext[i + 1]!.type : l4.proto));
  const h = Buffer.alloc(40);
  const tc = o.tclass ?? 0;
  h.writeUInt32BE(((6 << 28) | (tc << 20) | ((o.flowLabel ?? 0) & 0xfffff)) >>> 0, 0);
  const plen = bodies.reduce((n, b) => n + b.length, 0) + payload.length;
  h.writeUInt16BE(o.payloadLength ?? plen, 4);
  h[6] = ext.length ? ext[0]!.type : l4.proto;
  h[7] = o.hopLimit ?? 64;
  src.copy(h, 8); dst.copy(h, 24);
  return Buffer.concat([h, ...bodies, payload]);
}

/* ---- Ethernet, VXLAN ---- */

export interface EthOpts { dst: string; src: string; type?: number }

/** An Ethernet frame; the type defaults from the first nibble of `l3` (4 → IPv4, 6 → IPv6). */
export function eth(o: EthOpts, l3: Buffer): Buffer {
  const h = Buffer.alloc(ETH_HLEN);
  Buffer.from(macToBytes(o.dst)).copy(h, 0);
  Buffer.from(macToBytes(o.src)).copy(h, 6);
  h.writeUInt16BE(o.type ?? (l3.length && l3[0]! >> 4 === 6 ? ETH_P_IPV6 : ETH_P_IP), 12);
  return Buffer.concat([h, l3]);
}

/** The 8-byte VXLAN header: flags (0x08 = VNI valid) and a 24-bit VNI. */
export function vxlanHeader(vni: number, flags = 0x08): Buffer {
  const b = Buffer.alloc(8);
  b[0] = flags;
  b.writeUInt32BE((vni << 8) >>> 0, 4);
  return b;
}

export interface VxlanOpts {
  /** Outer MACs. */
  dstMac: string; srcMac: string;
  /** Outer (underlay) addresses: both IPv4 or both IPv6. */
  src: Addr; dst: Addr;
  vni: number;
  flags?: number;
  sport?: number;
  dport?: number;
  ttl?: number;
  /** Outer UDP checksum; default 0 (none) over IPv4, computed over IPv6. */
  udpChecksum?: number;
  /** More outer IPv4 fields (fragments, IHL, options). */
  ip?: Partial<Ipv4Opts>;
}

/** A VXLAN packet as a flannel peer sends it: outer Ethernet/IP/UDP/VXLAN around `inner` (an Ethernet frame). */
export function vxlanFrame(o: VxlanOpts, inner: Buffer): Buffer {
  const v6 = addr(o.src).length === 16;
  const payload = Buffer.concat([vxlanHeader(o.vni, o.flags), inner]);
  const u = udp({ sport: o.sport ?? 40000, dport: o.dport ?? VXLAN_PORT, ...(o.udpChecksum !== undefined || !v6 ? { checksum: o.udpChecksum ?? 0 } : {}) }, payload);
  const l3 = v6 ? ipv6({ src: o.src, dst: o.dst, hopLimit: o.ttl ?? 64 }, u) : ipv4({ src: o.src, dst: o.dst, ttl: o.ttl ?? 64, ...o.ip }, u);
  return eth({ dst: o.dstMac, src: o.srcMac }, l3);
}

/** The first `n` bytes of a packet (a truncated capture of it). */
export const truncate = (b: Buffer, n: number): Buffer => Buffer.from(b.subarray(0, n));

/* ---- parsers ---- */

export interface EthHeader { dst: string; src: string; type: number }
export function parseEth(b: Buffer, at = 0): EthHeader {
  if (b.length < at + ETH_HLEN) throw new Error(`Cannot parse Ethernet: ${b.length - at} bytes`);
  return { dst: bytesToMAC(b.subarray(at, at + 6)), src: bytesToMAC(b.subarray(at + 6, at + 12)), type: b.readUInt16BE(at + 12) };
}

export interface Ipv4Header {
  ihl: number; tos: number; totalLength: number; id: number; df: boolean; mf: boolean; fragOffset: number;
  ttl: number; proto: number; checksum: number; src: string; dst: string;
  /** Header length in bytes (ihl * 4). */
  hlen: number;
  checksumOk: boolean;
}
const ip4text = (b: Buffer) => Array.from(b).join(".");
export function parseIpv4(b: Buffer, at: number): Ipv4Header {
  if (b.length < at + 20) throw new Error(`Cannot parse IPv4: ${b.length - at} bytes`);
  const ihl = b[at]! & 0x0f;
  const frag = b.readUInt16BE(at + 6);
  return {
    ihl, tos: b[at + 1]!, totalLength: b.readUInt16BE(at + 2), id: b.readUInt16BE(at + 4),
    df: !!(frag & 0x4000), mf: !!(frag & 0x2000), fragOffset: (frag & 0x1fff) * 8,
    ttl: b[at + 8]!, proto: b[at + 9]!, checksum: b.readUInt16BE(at + 10),
    src: ip4text(b.subarray(at + 12, at + 16)), dst: ip4text(b.subarray(at + 16, at + 20)),
    hlen: ihl * 4,
    checksumOk: ipv4HeaderChecksumOk(b, at),
  };
}
/** True when the IPv4 header at `at` sums to 0xffff (its checksum is right). */
export function ipv4HeaderChecksumOk(b: Buffer, at: number): boolean {
  const hlen = (b[at]! & 0x0f) * 4;
  if (hlen < 20 || b.length < at + hlen) return false;
  return inetChecksum(b.subarray(at, at + hlen)) === 0;
}

export interface Ipv6Header { tclass: number; flowLabel: number; payloadLength: number; next: number; hopLimit: number; src: string; dst: string }
const ip6text = (b: Buffer) => Array.from({ length: 8 }, (_, i) => b.readUInt16BE(2 * i).toString(16)).join(":");
export function parseIpv6(b: Buffer, at: number): Ipv6Header {
  if (b.length < at + 40) throw new Error(`Cannot parse IPv6: ${b.length - at} bytes`);
  const w = b.readUInt32BE(at);
  return {
    tclass: (w >>> 20) & 0xff, flowLabel: w & 0xfffff, payloadLength: b.readUInt16BE(at + 4),
    next: b[at + 6]!, hopLimit: b[at + 7]!,
    src: ip6text(b.subarray(at + 8, at + 24)), dst: ip6text(b.subarray(at + 24, at + 40)),
  };
}

export interface UdpHeader { sport: number; dport: number; length: number; checksum: number }
export function parseUdp(b: Buffer, at: number): UdpHeader {
  if (b.length < at + 8) throw new Error(`Cannot parse UDP: ${b.length - at} bytes`);
  return { sport: b.readUInt16BE(at), dport: b.readUInt16BE(at + 2), length: b.readUInt16BE(at + 4), checksum: b.readUInt16BE(at + 6) };
}

/**
 * True when the TCP/UDP/ICMP(v6) checksum of the IP packet at `at` (IPv4
 * without fragments, or IPv6 without extension headers) is right; a UDP
 * checksum of 0 over IPv4 counts as right (none).
 */
export function l4ChecksumOk(b: Buffer, at: number): boolean {
  const v = b[at]! >> 4;
  let src: Buffer, dst: Buffer, proto: number, l4: Buffer;
  if (v === 4) {
    const h = parseIpv4(b, at);
    src = b.subarray(at + 12, at + 16); dst = b.subarray(at + 16, at + 20); proto = h.proto;
    l4 = b.subarray(at + h.hlen, at + h.totalLength);
  } else {
    const h = parseIpv6(b, at);
    src = b.subarray(at + 8, at + 24); dst = b.subarray(at + 24, at + 40); proto = h.next;
    l4 = b.subarray(at + 40, at + 40 + h.payloadLength);
  }
  if (proto === IPPROTO_UDP && v === 4 && l4.readUInt16BE(6) === 0) return true;
  if (proto === IPPROTO_ICMP) return inetChecksum(l4) === 0;
  return inetChecksum(pseudoHeader(src, dst, proto, l4.length), l4) === 0;
}

export interface Decoded {
  eth: EthHeader;
  ipv4?: Ipv4Header;
  ipv6?: Ipv6Header;
  /** Offset of the IP header. */
  l3: number;
  /** Offset of the L4 header. */
  l4: number;
}
/** Ethernet then IPv4 or IPv6 (no extension headers walked). */
export function parseFrame(b: Buffer): Decoded {
  const e = parseEth(b);
  if (e.type === ETH_P_IP) {
    const h = parseIpv4(b, ETH_HLEN);
    return { eth: e, ipv4: h, l3: ETH_HLEN, l4: ETH_HLEN + h.hlen };
  }
  if (e.type === ETH_P_IPV6) return { eth: e, ipv6: parseIpv6(b, ETH_HLEN), l3: ETH_HLEN, l4: ETH_HLEN + 40 };
  return { eth: e, l3: ETH_HLEN, l4: ETH_HLEN };
}

export interface VxlanDecoded {
  outer: Decoded;
  udp: UdpHeader;
  /** VXLAN flags byte and VNI. */
  flags: number;
  vni: number;
  /** The 3 reserved bytes after the flags and the one after the VNI, as one number each. */
  reserved1: number;
  reserved2: number;
  /** The inner Ethernet frame. */
  inner: Buffer;
}
/** Decodes an outer Ethernet/IP/UDP/VXLAN packet; throws when it is not one. */
export function decodeVxlan(b: Buffer): VxlanDecoded {
  const outer = parseFrame(b);
  const proto = outer.ipv4?.proto ?? outer.ipv6?.next;
  if (proto !== IPPROTO_UDP) throw new Error(`Cannot decode VXLAN: outer protocol ${proto}, not UDP`);
  const u = parseUdp(b, outer.l4);
  const v = outer.l4 + 8;
  if (b.length < v + 8 + ETH_HLEN) throw new Error(`Cannot decode VXLAN: ${b.length} bytes`);
  return {
    outer, udp: u, flags: b[v]!, vni: b.readUInt32BE(v + 4) >>> 8,
    reserved1: b.readUIntBE(v + 1, 3), reserved2: b[v + 7]!,
    inner: Buffer.from(b.subarray(v + 8)),
  };
}
