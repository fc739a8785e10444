/**
 * The TypeScript mirror of bpf/shared.h: struct layouts and their codecs.
 *
 * How it works: each struct is described once here as a StructSpec (field
 * name, byte offset, byte size); the encoders/decoders below read and write
 * Buffers at exactly those offsets. test/unit/layout.test.ts compares every
 * StructSpec and the COUNTERS list with the BTF of the compiled object
 * (bpftool btf dump -j), so a change to shared.h that is not made here fails
 * the tests instead of silently corrupting map entries. Integers are host
 * byte order (little-endian x86_64/arm64); addresses are network order.
 */
import { bits, formatPrefix, type Family, type IP, type Prefix, makePrefix } from "../net/ip.js";
import { macToBytes, bytesToMAC } from "../lease/mac.js";

export interface FieldSpec { readonly name: string; readonly offset: number; readonly size: number }
export interface StructSpec { readonly name: string; readonly size: number; readonly fields: readonly FieldSpec[] }

const f = (name: string, offset: number, size: number): FieldSpec => ({ name, offset, size });

export const LPM_KEY: StructSpec = {
  name: "twill_lpm_key", size: 24,
  fields: [f("prefixlen", 0, 4), f("family", 4, 4), f("addr", 8, 16)],
};
export const PEER: StructSpec = {
  name: "twill_peer", size: 32,
  fields: [f("remote", 0, 16), f("vtep_mac", 16, 6), f("kind", 22, 1), f("remote_family", 23, 1), f("vni", 24, 4), f("id", 28, 4)],
};
export const FAMILY_CONFIG: StructSpec = {
  name: "twill_family_config", size: 32,
  fields: [f("vxlan_ifindex", 0, 4), f("vtep_mac", 4, 6), f("pad", 10, 2), f("local_ip", 12, 16), f("underlay_ifindex", 28, 4)],
};
export const CONFIG: StructSpec = {
  name: "twill_config", size: 84,
  fields: [f("flags", 0, 4), f("vni", 4, 4), f("bridge_ifindex", 8, 4), f("bridge_mac", 12, 6), f("pad", 18, 2), f("fam", 20, 64)],
};
export const EP_KEY: StructSpec = { name: "twill_ep_key", size: 20, fields: [f("family", 0, 4), f("addr", 4, 16)] };
export const EP: StructSpec = { name: "twill_ep", size: 12, fields: [f("ifindex", 0, 4), f("mac", 4, 6), f("pad", 10, 2)] };
export const REMOTE: StructSpec = { name: "twill_remote", size: 8, fields: [f("peer_id", 0, 4), f("flags", 4, 4)] };
export const FLOW_KEY: StructSpec = {
  name: "twill_flow_key", size: 44,
  fields: [f("family", 0, 4), f("proto", 4, 1), f("pad", 5, 1), f("sport", 6, 2), f("dport", 8, 2), f("pad2", 10, 2), f("saddr", 12, 16), f("daddr", 28, 16)],
};
export const STAT: StructSpec = { name: "twill_stat", size: 16, fields: [f("packets", 0, 8), f("bytes", 8, 8)] };
export const STAT_KEY: StructSpec = { name: "twill_stat_key", size: 8, fields: [f("peer_id", 0, 4), f("counter", 4, 4)] };

export const STRUCTS: readonly StructSpec[] = [LPM_KEY, PEER, FAMILY_CONFIG, CONFIG, EP_KEY, EP, REMOTE, FLOW_KEY, STAT, STAT_KEY];

/** enum twill_counter, in order (index = value). */
export const COUNTERS = [
  "encap", "encap_fast", "direct", "delivered", "decap_stack", "rx_direct", "miss", "stack_mtu", "stack_nat", "stack_ttl",
  "drop_no_lease", "drop_vni", "drop_no_tunnel", "drop_encap", "drop_no_config", "drop_unsupported",
  "encap_device", "decap", "rx_unknown", "rx_fallback", "to_pod",
] as const;
export type CounterName = (typeof COUNTERS)[number];

export const LPM_FAMILY_BITS = 32;
export const CFG_FAST_PATH = 1;
/** twill_config.flags: VXLAN written and stripped in BPF (IPv4 underlay). */
export const CFG_BPF_ENCAP = 2;

export enum PeerKind { Vxlan = 1, Direct = 2, Local = 3, Cluster = 4 }

const offsets = new WeakMap<StructSpec, Map<string, number>>();
/** A field's offset (looked up once per struct: encoders run 10,000 times per batch). */
const off = (s: StructSpec, name: string): number => {
  let m = offsets.get(s);
  if (!m) offsets.set(s, (m = new Map(s.fields.map((x) => [x.name, x.offset]))));
  const o = m.get(name);
  if (o === undefined) throw new Error(`layout: ${s.name} has no field ${name}`);
  return o;
};

function putAddr(buf: Buffer, at: number, ip: IP): void {
  buf.fill(0, at, at + 16);
  buf.set(ip.bytes, at);
}
function getAddr(buf: Buffer, at: number, family: Family): IP {
  return { family, bytes: Uint8Array.from(buf.subarray(at, at + (family === 4 ? 4 : 16))) };
}
const toFamily = (n: number): Family => (n === 6 ? 6 : 4);

/*
 * The two encoders that run once per peer (100,000 per batch) read their
 * offsets from constants taken from the StructSpecs once, and parse a MAC
 * without a regular expression: a batch's encoding then costs less than
 * the syscall that writes it.
 */
const K_PREFIXLEN = off(LPM_KEY, "prefixlen"), K_FAMILY = off(LPM_KEY, "family"), K_ADDR = off(LPM_KEY, "addr");
const P_REMOTE = off(PEER, "remote"), P_MAC = off(PEER, "vtep_mac"), P_KIND = off(PEER, "kind");
const P_RFAMILY = off(PEER, "remote_family"), P_VNI = off(PEER, "vni"), P_ID = off(PEER, "id");

const NO_BYTES = new Uint8Array(0);
/** Hex digit values by character code (-1: not a hex digit). */
const HEX = new Int8Array(128).fill(-1);
for (let c = 0; c < 10; c++) HEX[48 + c] = c;
for (let c = 0; c < 6; c++) HEX[97 + c] = HEX[65 + c] = 10 + c;
const hexAt = (s: string, i: number): number => {
  const c = s.charCodeAt(i);
  return c < 128 ? HEX[c]! : -1;
};
/** Writes "8e:d0:f8:0a:41:19" as 6 bytes at `at`; anything else goes through macToBytes (which says what is wrong). */
function putMAC(buf: Buffer, at: number, mac: string): void {
  if (mac.length === 17) {
    let bad = 0;
    for (let i = 0, c = 0; i < 6; i++, c += 3) {
      const hi = hexAt(mac, c), lo = hexAt(mac, c + 1);
      bad |= hi | lo | (i < 5 && mac.charCodeAt(c + 2) !== 58 ? -1 : 0);
      buf[at + i] = (hi << 4) | lo;
    }
    if (bad >= 0) return;
  }
  buf.set(macToBytes(mac), at);
}
/** Writes v (unsigned 32 bits) little-endian at `at`: four stores, no call (the encoders below run once per peer). */
function put32(buf: Buffer, at: number, v: number): void {
  buf[at] = v;
  buf[at + 1] = v >>> 8;
  buf[at + 2] = v >>> 16;
  buf[at + 3] = v >>> 24;
}
/** Reads an unsigned 32-bit little-endian value at `at` (put32's inverse). */
function get32(buf: Buffer, at: number): number {
  return (buf[at]! | (buf[at + 1]! << 8) | (buf[at + 2]! << 16) | (buf[at + 3]! << 24)) >>> 0;
}

/* ---- twill_lpm_key ---- */

/** Copies an address into 16 bytes at `at`, zero-filled (a loop: no native call for 16 bytes). */
function putAddr16(buf: Buffer, at: number, b: Uint8Array): void {
  const n = b.length;
  if (n === 4) {
    // IPv4, the common case, unrolled: this runs once per peer per map, often before the JIT has optimised it.
    buf[at] = b[0]!;
    buf[at + 1] = b[1]!;
    buf[at + 2] = b[2]!;
    buf[at + 3] = b[3]!;
    put32(buf, at + 4, 0);
    put32(buf, at + 8, 0);
    put32(buf, at + 12, 0);
    return;
  }
  for (let i = 0; i < n; i++) buf[at + i] = b[i]!;
  for (let i = n; i < 16; i++) buf[at + i] = 0;
}

/** The family word (4, little-endian) at `famAt` and an IPv4 address zero-filled to 16 bytes at `addrAt`: stores only, no nested call (the keys' IPv4 case). */
function putV4FamilyAddr(buf: Buffer, famAt: number, addrAt: number, b: Uint8Array): void {
  buf[famAt] = 4;
  buf[famAt + 1] = buf[famAt + 2] = buf[famAt + 3] = 0;
  buf[addrAt] = b[0]!;
  buf[addrAt + 1] = b[1]!;
  buf[addrAt + 2] = b[2]!;
  buf[addrAt + 3] = b[3]!;
  for (let i = 4; i < 16; i++) buf[addrAt + i] = 0;
}

export function encodeLpmKey(p: Prefix, buf: Buffer = Buffer.alloc(LPM_KEY.size), at = 0): Buffer {
  const b = p.ip.bytes;
  if (b.length === 4) {
    // IPv4, flat: a first start runs this once per peer, mostly before V8 has optimised it (each nested call costs there).
    buf[at + K_PREFIXLEN] = LPM_FAMILY_BITS + p.len;
    buf[at + K_PREFIXLEN + 1] = buf[at + K_PREFIXLEN + 2] = buf[at + K_PREFIXLEN + 3] = 0;
    putV4FamilyAddr(buf, at + K_FAMILY, at + K_ADDR, b);
    return buf;
  }
  put32(buf, at + K_PREFIXLEN, LPM_FAMILY_BITS + p.len);
  put32(buf, at + K_FAMILY, p.ip.family);
  putAddr16(buf, at + K_ADDR, b);
  return buf;
}
/**
 * formatPrefix(decodeLpmKey(key at buf[at..])), the IPv4 case without the
 * objects between: one string, where decoding makes a Prefix, an IP and
 * two byte arrays (a /metrics scrape names every peer to rank ties: ~0.8
 * KiB of garbage per peer the other way).
 */
export function lpmKeyText(buf: Buffer, at = 0): string {
  if (get32(buf, at + K_FAMILY) === 6) return formatPrefix(decodeLpmKey(buf.subarray(at, at + LPM_KEY.size)));
  const len = Math.max(0, Math.min(get32(buf, at + K_PREFIXLEN) - LPM_FAMILY_BITS, 32));
  const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
  const a = at + K_ADDR;
  const v = ((buf[a]! << 24) | (buf[a + 1]! << 16) | (buf[a + 2]! << 8) | buf[a + 3]!) & mask;
  return `${(v >>> 24) & 255}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}/${len}`;
}
export function decodeLpmKey(buf: Buffer): Prefix {
  const family = toFamily(buf.readUInt32LE(off(LPM_KEY, "family")));
  const len = buf.readUInt32LE(off(LPM_KEY, "prefixlen")) - LPM_FAMILY_BITS;
  return makePrefix(getAddr(buf, off(LPM_KEY, "addr"), family), Math.max(0, Math.min(len, bits(family))));
}

/* ---- twill_peer ---- */

export interface PeerValue {
  readonly kind: PeerKind;
  readonly remote?: IP;
  readonly vtepMAC?: string;
  readonly vni: number;
  readonly id: number;
}
export function encodePeer(v: PeerValue, buf: Buffer = Buffer.alloc(PEER.size), at = 0): Buffer {
  return encodePeerFields(v.kind, v.remote, v.vtepMAC, v.vni, v.id, buf, at);
}
/** encodePeer without a PeerValue object (once per peer on the hot path). */
export function encodePeerFields(kind: PeerKind, remote: IP | undefined, vtepMAC: string | undefined, vni: number, id: number, buf: Buffer, at: number): Buffer {
  if (remote?.bytes.length === 4 && vtepMAC?.length === 17) {
    // A VXLAN peer on an IPv4 underlay, flat (see encodeLpmKey); a MAC that is not "xx:xx:xx:xx:xx:xx" takes the general path.
    const b = remote.bytes, r = at + P_REMOTE, m = at + P_MAC;
    buf[r] = b[0]!;
    buf[r + 1] = b[1]!;
    buf[r + 2] = b[2]!;
    buf[r + 3] = b[3]!;
    for (let i = 4; i < 16; i++) buf[r + i] = 0;
    let bad = 0;
    for (let i = 0, c = 0; i < 6; i++, c += 3) {
      const hi = vtepMAC.charCodeAt(c), lo = vtepMAC.charCodeAt(c + 1);
      const h = hi < 128 ? HEX[hi]! : -1, l = lo < 128 ? HEX[lo]! : -1;
      bad |= h | l | (i < 5 && vtepMAC.charCodeAt(c + 2) !== 58 ? -1 : 0);
      buf[m + i] = (h << 4) | l;
    }
    if (bad >= 0) {
      buf[at + P_RFAMILY] = 4;
      buf[at + P_KIND] = kind;
      buf[at + P_VNI] = vni;
      buf[at + P_VNI + 1] = vni >>> 8;
      buf[at + P_VNI + 2] = vni >>> 16;
      buf[at + P_VNI + 3] = vni >>> 24;
      buf[at + P_ID] = id;
      buf[at + P_ID + 1] = id >>> 8;
      buf[at + P_ID + 2] = id >>> 16;
      buf[at + P_ID + 3] = id >>> 24;
      return buf;
    }
  }
  putAddr16(buf, at + P_REMOTE, remote?.bytes ?? NO_BYTES);
  buf[at + P_RFAMILY] = remote?.family ?? 0;
  if (vtepMAC) putMAC(buf, at + P_MAC, vtepMAC);
  else for (let i = 0; i < 6; i++) buf[at + P_MAC + i] = 0;
  buf[at + P_KIND] = kind;
  put32(buf, at + P_VNI, vni);
  put32(buf, at + P_ID, id);
  return buf;
}
/** The peer id of the twill_peer value at `at`. */
export const peerIdAt = (buf: Buffer, at: number): number => get32(buf, at + P_ID);
/** The kind of the twill_peer value at `at`. */
export const peerKindAt = (buf: Buffer, at: number): PeerKind => buf[at + P_KIND] as PeerKind;
export function decodePeer(buf: Buffer): PeerValue {
  const fam = buf.readUInt8(off(PEER, "remote_family"));
  const mac = buf.subarray(off(PEER, "vtep_mac"), off(PEER, "vtep_mac") + 6);
  return {
    kind: buf.readUInt8(off(PEER, "kind")) as PeerKind,
    ...(fam ? { remote: getAddr(buf, off(PEER, "remote"), toFamily(fam)) } : {}),
    ...(mac.some((b) => b !== 0) ? { vtepMAC: bytesToMAC(mac) } : {}),
    vni: buf.readUInt32LE(off(PEER, "vni")),
    id: buf.readUInt32LE(off(PEER, "id")),
  };
}

/* ---- twill_config ---- */

export interface FamilyConfigValue { readonly vxlanIfindex: number; readonly vtepMAC: string; readonly localIP: IP; readonly underlayIfindex: number }
export interface ConfigValue {
  readonly flags: number;
  readonly vni: number;
  readonly bridgeIfindex: number;
  readonly bridgeMAC?: string;
  /** VXLAN UDP port (host number; stored in network order). */
  readonly port: number;
  /** [IPv4, IPv6] */
  readonly fam: readonly [FamilyConfigValue | undefined, FamilyConfigValue | undefined];
}
export function encodeConfig(c: ConfigValue): Buffer {
  const buf = Buffer.alloc(CONFIG.size);
  // Bits 16-31 of flags: the VXLAN port (bpf/shared.h, TWILL_CFG_PORT_SHIFT).
  buf.writeUInt32LE(((c.flags & 0xffff) | ((c.port & 0xffff) << 16)) >>> 0, off(CONFIG, "flags"));
  buf.writeUInt32LE(c.vni >>> 0, off(CONFIG, "vni"));
  buf.writeUInt32LE(c.bridgeIfindex >>> 0, off(CONFIG, "bridge_ifindex"));
  if (c.bridgeMAC) buf.set(macToBytes(c.bridgeMAC), off(CONFIG, "bridge_mac"));
  c.fam.forEach((fc, i) => {
    if (!fc) return;
    const at = off(CONFIG, "fam") + i * FAMILY_CONFIG.size;
    buf.writeUInt32LE(fc.vxlanIfindex, at + off(FAMILY_CONFIG, "vxlan_ifindex"));
    buf.set(macToBytes(fc.vtepMAC), at + off(FAMILY_CONFIG, "vtep_mac"));
    putAddr(buf, at + off(FAMILY_CONFIG, "local_ip"), fc.localIP);
    buf.writeUInt32LE(fc.underlayIfindex, at + off(FAMILY_CONFIG, "underlay_ifindex"));
  });
  return buf;
}
export function decodeConfig(buf: Buffer): ConfigValue {
  const fam = [0, 1].map((i): FamilyConfigValue | undefined => {
    const at = off(CONFIG, "fam") + i * FAMILY_CONFIG.size;
    const ifindex = buf.readUInt32LE(at + off(FAMILY_CONFIG, "vxlan_ifindex"));
    if (!ifindex) return undefined;
    const m = off(FAMILY_CONFIG, "vtep_mac");
    return {
      vxlanIfindex: ifindex,
      vtepMAC: bytesToMAC(buf.subarray(at + m, at + m + 6)),
      localIP: getAddr(buf, at + off(FAMILY_CONFIG, "local_ip"), i === 0 ? 4 : 6),
      underlayIfindex: buf.readUInt32LE(at + off(FAMILY_CONFIG, "underlay_ifindex")),
    };
  });
  const bm = off(CONFIG, "bridge_mac");
  return {
    flags: buf.readUInt32LE(off(CONFIG, "flags")) & 0xffff,
    vni: buf.readUInt32LE(off(CONFIG, "vni")),
    bridgeIfindex: buf.readUInt32LE(off(CONFIG, "bridge_ifindex")),
    bridgeMAC: bytesToMAC(buf.subarray(bm, bm + 6)),
    port: buf.readUInt32LE(off(CONFIG, "flags")) >>> 16,
    fam: [fam[0], fam[1]],
  };
}

/* ---- twill_ep_key / twill_ep ---- */

export function encodeEpKey(ip: IP): Buffer {
  return encodeEpKeyAt(ip, Buffer.alloc(EP_KEY.size), 0);
}
const E_FAMILY = off(EP_KEY, "family"), E_ADDR = off(EP_KEY, "addr");
/** Writes the twill_ep_key of `ip` into `buf` at `at` (address zero-filled to 16 bytes). */
export function encodeEpKeyAt(ip: IP, buf: Buffer, at: number): Buffer {
  const b = ip.bytes;
  if (b.length === 4) {
    putV4FamilyAddr(buf, at + E_FAMILY, at + E_ADDR, b); // IPv4, flat (see encodeLpmKey)
    return buf;
  }
  put32(buf, at + E_FAMILY, ip.family);
  putAddr16(buf, at + E_ADDR, b);
  return buf;
}
export function decodeEpKey(buf: Buffer): IP {
  return getAddr(buf, off(EP_KEY, "addr"), toFamily(buf.readUInt32LE(off(EP_KEY, "family"))));
}
export interface EndpointValue { readonly ifindex: number; readonly mac: string }
export function decodeEp(buf: Buffer): EndpointValue {
  const m = off(EP, "mac");
  return { ifindex: buf.readUInt32LE(off(EP, "ifindex")), mac: bytesToMAC(buf.subarray(m, m + 6)) };
}

/* ---- twill_remote (value of twill_remotes; key: twill_ep_key) ---- */

export function encodeRemote(peerId: number, buf: Buffer = Buffer.alloc(REMOTE.size), at = 0): Buffer {
  buf.fill(0, at, at + REMOTE.size);
  buf.writeUInt32LE(peerId >>> 0, at + off(REMOTE, "peer_id"));
  return buf;
}
const R_PEER_ID = off(REMOTE, "peer_id");
/** Writes the peer id of a (zeroed) twill_remote value at `at`. */
export const setRemoteId = (buf: Buffer, at: number, peerId: number): void => put32(buf, at + R_PEER_ID, peerId);
/** The peer id of the twill_remote value at `at`. */
export const remoteIdAt = (buf: Buffer, at: number): number => get32(buf, at + R_PEER_ID);
export function decodeRemote(buf: Buffer): { peerId: number } {
  return { peerId: buf.readUInt32LE(off(REMOTE, "peer_id")) };
}

/* ---- twill_flow_key ---- */

export interface FlowKey { readonly src: IP; readonly dst: IP; readonly proto: number; readonly sport: number; readonly dport: number }
export function encodeFlowKey(k: FlowKey): Buffer {
  const buf = Buffer.alloc(FLOW_KEY.size);
  buf.writeUInt32LE(k.src.family, off(FLOW_KEY, "family"));
  buf.writeUInt8(k.proto, off(FLOW_KEY, "proto"));
  buf.writeUInt16BE(k.sport, off(FLOW_KEY, "sport"));
  buf.writeUInt16BE(k.dport, off(FLOW_KEY, "dport"));
  buf.set(k.src.bytes, off(FLOW_KEY, "saddr"));
  buf.set(k.dst.bytes, off(FLOW_KEY, "daddr"));
  return buf;
}
export function decodeFlowKey(buf: Buffer): FlowKey {
  const family = toFamily(buf.readUInt32LE(off(FLOW_KEY, "family")));
  return {
    src: getAddr(buf, off(FLOW_KEY, "saddr"), family), dst: getAddr(buf, off(FLOW_KEY, "daddr"), family),
    proto: buf.readUInt8(off(FLOW_KEY, "proto")), sport: buf.readUInt16BE(off(FLOW_KEY, "sport")), dport: buf.readUInt16BE(off(FLOW_KEY, "dport")),
  };
}

/* ---- twill_stat_key / twill_stat (per CPU) ---- */

export interface StatKey { readonly peerId: number; readonly counter: number }
/** Encodes a twill_stat_key, into `buf` when given (a caller deleting many keys reuses one). */
export function encodeStatKey(k: StatKey, buf: Buffer = Buffer.alloc(STAT_KEY.size)): Buffer {
  buf.writeUInt32LE(k.peerId, off(STAT_KEY, "peer_id"));
  buf.writeUInt32LE(k.counter, off(STAT_KEY, "counter"));
  return buf;
}
export function decodeStatKey(buf: Buffer): StatKey {
  return { peerId: buf.readUInt32LE(off(STAT_KEY, "peer_id")), counter: buf.readUInt32LE(off(STAT_KEY, "counter")) };
}

/** Sums a per-CPU array of twill_stat values (each CPU's slot 8-byte aligned). */
export function sumStats(buf: Buffer, ncpu: number): { packets: bigint; bytes: bigint } {
  let packets = 0n, bytes = 0n;
  for (let c = 0; c < ncpu; c++) {
    packets += buf.readBigUInt64LE(c * STAT.size + off(STAT, "packets"));
    bytes += buf.readBigUInt64LE(c * STAT.size + off(STAT, "bytes"));
  }
  return { packets, bytes };
}
