/**
 * IP addresses and prefixes, IPv4 and IPv6 through one code path.
 *
 * How it works: an address is its family plus its bytes (4 or 16, network
 * order). Arithmetic (the n-th subnet, containment, overlap) converts the
 * bytes to a bigint of `bits(family)` bits, so no function branches on the
 * family except the text parser and formatter, which use node:net.
 * Parsers take `unknown`-ish strings from the edge and throw TwillError
 * (code ERR_INVALID_IP / ERR_INVALID_PREFIX) naming the value.
 */
import { isIPv4, isIPv6 } from "node:net";
import { TwillError, showValue } from "../errors.js";

export type Family = 4 | 6;

export interface IP {
  readonly family: Family;
  /** Network byte order, length 4 or 16. */
  readonly bytes: Uint8Array;
}

export interface Prefix {
  /** The network address (host bits zero). */
  readonly ip: IP;
  readonly len: number;
}

export const bits = (f: Family): number => (f === 4 ? 32 : 128);
const nbytes = (f: Family): number => (f === 4 ? 4 : 16);

export function toBig(ip: IP): bigint {
  let v = 0n;
  for (const b of ip.bytes) v = (v << 8n) | BigInt(b);
  return v;
}

export function fromBig(family: Family, v: bigint): IP {
  const out = new Uint8Array(nbytes(family));
  for (let i = out.length - 1; i >= 0; i--) {
    out[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return { family, bytes: out };
}

function expand6(s: string): number[] {
  // node:net validated the text already; expand "::" and a trailing dotted quad.
  let text = s;
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4) {
    const b = v4[1]!.split(".").map(Number);
    text = text.slice(0, v4.index) + ((b[0]! << 8) | b[1]!).toString(16) + ":" + ((b[2]! << 8) | b[3]!).toString(16);
  }
  const [head, tail] = text.includes("::") ? text.split("::") : [text, undefined];
  const h = head ? head.split(":") : [];
  const t = tail ? tail.split(":") : [];
  const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill("0"), ...t];
  return groups.map((g) => parseInt(g, 16));
}

/** Parses a textual IPv4 or IPv6 address; undefined when it is not one. */
export function tryParseIP(s: string): IP | undefined {
  if (typeof s !== "string") return undefined;
  if (isIPv4(s)) return { family: 4, bytes: Uint8Array.from(s.split(".").map(Number)) };
  if (isIPv6(s) && !s.includes("%")) {
    const out = new Uint8Array(16);
    expand6(s).forEach((g, i) => {
      out[2 * i] = g >> 8;
      out[2 * i + 1] = g & 0xff;
    });
    return { family: 6, bytes: out };
  }
  return undefined;
}

export function parseIP(s: string, what = "address"): IP {
  const ip = tryParseIP(s);
  if (!ip) throw new TwillError("ERR_INVALID_IP", `${what} ${showValue(s)} is not an IP address`);
  return ip;
}

export function formatIP(ip: IP): string {
  const b = ip.bytes;
  if (ip.family === 4) return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
  const g: number[] = [];
  for (let i = 0; i < 16; i += 2) g.push((ip.bytes[i]! << 8) | ip.bytes[i + 1]!);
  // RFC 5952: compress the longest run (>1) of zero groups.
  let best = -1, bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen && j - i > 1) { best = i; bestLen = j - i; }
    i = j;
  }
  const hex = g.map((x) => x.toString(16));
  if (best < 0) return hex.join(":");
  return hex.slice(0, best).join(":") + "::" + hex.slice(best + bestLen).join(":");
}

export function ipEqual(a: IP, b: IP): boolean {
  if (a.family !== b.family) return false;
  const x = a.bytes, y = b.bytes;
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}

/** The byte mask of bit position `len` in byte `i` (all ones before, zero after). */
const maskByte = (i: number, len: number): number => (len >= (i + 1) * 8 ? 0xff : len <= i * 8 ? 0 : (0xff << (8 - (len - i * 8))) & 0xff);

export function maskIP(ip: IP, len: number): IP {
  const out = new Uint8Array(ip.bytes.length);
  for (let i = 0; i < out.length; i++) out[i] = ip.bytes[i]! & maskByte(i, len);
  return { family: ip.family, bytes: out };
}

/** Whether `ip` masked to `len` bits equals `net` (no allocation). */
function maskedEqual(ip: IP, len: number, net: IP): boolean {
  const a = ip.bytes, n = net.bytes;
  for (let i = 0; i < a.length; i++) if ((a[i]! & maskByte(i, len)) !== n[i]) return false;
  return true;
}

export function makePrefix(ip: IP, len: number): Prefix {
  return { ip: maskIP(ip, len), len };
}

/** Parses "a.b.c.d/n" or "x::/n". Host bits must be zero unless `loose`. */
export function parsePrefix(s: string, what = "prefix", loose = false): Prefix {
  const bad = (why: string) => new TwillError("ERR_INVALID_PREFIX", `${what} ${showValue(s)} ${why}`);
  if (typeof s !== "string") throw bad("is not a string");
  const slash = s.indexOf("/");
  if (slash < 0) throw bad("has no /length");
  const ip = tryParseIP(s.slice(0, slash));
  if (!ip) throw bad("does not start with an IP address");
  const lenText = s.slice(slash + 1);
  if (!/^\d{1,3}$/.test(lenText)) throw bad("has a bad length");
  const len = Number(lenText);
  if (len > bits(ip.family)) throw bad(`has a length over ${bits(ip.family)}`);
  const p = makePrefix(ip, len);
  if (!loose && !ipEqual(p.ip, ip)) throw bad(`has host bits set (network is ${formatPrefix(p)})`);
  return p;
}

export function formatPrefix(p: Prefix): string {
  return `${formatIP(p.ip)}/${p.len}`;
}

export function prefixContainsIP(p: Prefix, ip: IP): boolean {
  return p.ip.family === ip.family && maskedEqual(ip, p.len, p.ip);
}

/** True when `outer` contains all of `inner`. */
export function prefixContains(outer: Prefix, inner: Prefix): boolean {
  return inner.len >= outer.len && prefixContainsIP(outer, inner.ip);
}

export function prefixOverlaps(a: Prefix, b: Prefix): boolean {
  return prefixContains(a, b) || prefixContains(b, a);
}

export function prefixEqual(a: Prefix, b: Prefix): boolean {
  return a.len === b.len && ipEqual(a.ip, b.ip);
}

/** The address `n` after the network address (n = 0 is the network itself). */
export function nthIP(p: Prefix, n: bigint | number): IP {
  return fromBig(p.ip.family, toBig(p.ip) + BigInt(n));
}

/** Adds `n` subnets of length `len` to the subnet `p` (which has that length). */
export function nextSubnet(p: Prefix, n = 1n): Prefix {
  const step = 1n << BigInt(bits(p.ip.family) - p.len);
  return { ip: fromBig(p.ip.family, toBig(p.ip) + step * BigInt(n)), len: p.len };
}

export function compareIP(a: IP, b: IP): number {
  if (a.family !== b.family) return a.family - b.family;
  const x = toBig(a), y = toBig(b);
  return x < y ? -1 : x > y ? 1 : 0;
}

export function familyOfPrefix(p: Prefix): Family {
  return p.ip.family;
}
