/**
 * flannel's subnet lease: the key ("10.244.1.0-24", dual stack
 * "10.244.1.0-24&fc00:0:0:1::-64") and the value (LeaseAttrs JSON) ↔ Lease.
 *
 * How it works:
 *  - Keys: flannel's MakeSubnetKey writes "<v4 ip>-<len>", and for dual stack
 *    appends "&<v6 ip>-<len>" with the v6 address in Go's net.IP.String()
 *    form (RFC 5952, what formatIP writes). With no IPv4 subnet Go writes the
 *    empty IP4Net, "0.0.0.0-0"; we read that (and a bare "<v6>-<len>") as
 *    "no IPv4 subnet", and write flannel's form.
 *  - Values are read the way Go's encoding/json reads LeaseAttrs (keys match
 *    case-insensitively, null = absent), then checked once here: a family in
 *    the key needs its public address; a vxlan lease needs valid backend
 *    data (VNI, unicast VtepMAC) for each family in its key. A lease of
 *    another backend type is still a lease (it holds its subnet), it is just
 *    not a vxlan peer, so its backend data is not required (nor kept).
 *  - Speed (100,000 leases are read at every start): the text flannel
 *    itself writes for an IPv4 lease (serializeLease's exact form, with or
 *    without "PublicIPv6":null) is recognized without JSON.parse
 *    (`canonicalLease`), and its addresses are views into shared buffers
 *    (BytePool). It accepts only text the general parser reads the same way
 *    and returns the same lease, field for field; anything else (other
 *    spacing, escapes, fields, a value the general parser rejects) goes to
 *    the general parser, which gives the one answer and the one error.
 *  - serializeLease writes what Go's json.Marshal writes: PublicIP always
 *    ("0.0.0.0" when unset), PublicIPv6 or null, then BackendType,
 *    BackendData, BackendV6Data each only when set (omitempty). Real flannel
 *    leases carry no "BackendV6Data" key for IPv4-only nodes.
 * Errors: ERR_INVALID_LEASE "Cannot parse lease <key>: <field> <value> <why>".
 */
import { TwillError, isTwillError, showValue } from "../errors.js";
import { bits, formatIP, makePrefix, toBig, tryParseIP, type Family, type IP, type Prefix } from "../net/ip.js";
import { parseMAC } from "./mac.js";
import type { Lease, VxlanLeaseData } from "./types.js";

type Json = Record<string, unknown>;

export interface LeaseSubnets {
  readonly subnet?: Prefix;
  readonly ipv6Subnet?: Prefix;
}

const show = (v: unknown) => showValue(v);

/** Go encoding/json field lookup: exact key first, else case-insensitive; null = absent. */
function field(obj: Json, name: string): unknown {
  if (Object.hasOwn(obj, name)) return obj[name] ?? undefined;
  const k = Object.keys(obj).find((x) => x.toLowerCase() === name.toLowerCase());
  return k === undefined ? undefined : obj[k] ?? undefined;
}

function keyPart(text: string, family: Family): Prefix | undefined {
  const m = /^([0-9a-fA-F.:]+)-(\d{1,3})$/.exec(text);
  const ip = m ? tryParseIP(m[1]!) : undefined;
  const len = m ? Number(m[2]) : -1;
  if (!ip || ip.family !== family || len < 1 || len > bits(family)) return undefined;
  const p = makePrefix(ip, len);
  return toBig(p.ip) === toBig(ip) ? p : undefined; // host bits must be zero
}

/**
 * Address bytes for many leases: views into shared 64 KiB buffers (one
 * Uint8Array each costs as much as the rest of a parsed lease). The bytes
 * are never written after the address is made.
 */
export class BytePool {
  private buf = new ArrayBuffer(0);
  private used = 0;
  take(n: number): Uint8Array {
    if (this.used + n > this.buf.byteLength) {
      this.buf = new ArrayBuffer(65536);
      this.used = 0;
    }
    const out = new Uint8Array(this.buf, this.used, n);
    this.used += n;
    return out;
  }
}

const pool = new BytePool();

/** An IPv4 address from its value (0 … 2^32-1). */
function ip4(v: number): IP {
  const bytes = pool.take(4);
  bytes[0] = v >>> 24;
  bytes[1] = (v >>> 16) & 255;
  bytes[2] = (v >>> 8) & 255;
  bytes[3] = v & 255;
  return { family: 4, bytes };
}

/**
 * The value of the dotted quad text[from, to), or -1 when it is not one as
 * node:net's isIPv4 (tryParseIP) reads it: four parts 0-255, no leading zeros.
 */
function quad(text: string, from: number, to: number): number {
  let v = 0, part = 0, digits = 0, dots = 0;
  for (let i = from; i < to; i++) {
    const c = text.charCodeAt(i);
    if (c >= 48 && c <= 57) {
      if (digits === 1 && part === 0) return -1; // a leading zero
      part = part * 10 + c - 48;
      digits++;
      if (part > 255) return -1;
    } else if (c === 46 && digits > 0 && dots < 3) {
      v = v * 256 + part;
      part = digits = 0;
      dots++;
    } else {
      return -1;
    }
  }
  return dots === 3 && digits > 0 ? v * 256 + part : -1;
}

/**
 * An IPv4-only key ("10.244.1.0-24") that keyPart would accept, as
 * address × 64 + length (no allocation); -1 for any other key (the general
 * parser decides).
 */
function v4Key(key: string): number {
  const dash = key.indexOf("-");
  const digits = key.length - dash - 1;
  if (dash < 0 || digits < 1 || digits > 3) return -1;
  const v = quad(key, 0, dash);
  if (v < 0) return -1;
  let len = 0;
  for (let i = dash + 1; i < key.length; i++) {
    const c = key.charCodeAt(i);
    if (c < 48 || c > 57) return -1;
    len = len * 10 + c - 48;
  }
  if (len < 1 || len > 32 || v % 2 ** (32 - len) !== 0) return -1; // host bits must be zero
  return v * 64 + len;
}

function v4KeySubnet(key: string): Prefix | undefined {
  const k = v4Key(key);
  return k < 0 ? undefined : { ip: ip4(Math.floor(k / 64)), len: k % 64 };
}

/**
 * Whether the subnet of an IPv4-only key ("10.244.1.0-24") shares an
 * address with lo…hi (IPv4 addresses as numbers; lo > hi: none), without parsing it into
 * a lease; undefined when `key` is any other key (dual stack, IPv6, not a
 * key): parseLeaseKey says.
 */
export function v4KeyOverlaps(key: string, lo: number, hi: number): boolean | undefined {
  const k = v4Key(key);
  if (k < 0) return undefined;
  const from = Math.floor(k / 64);
  return lo <= hi && from <= hi && lo <= from + 2 ** (32 - (k % 64)) - 1; // lo > hi: an empty range
}

/** Parses a lease key; throws ERR_INVALID_LEASE. */
export function parseLeaseKey(key: string): LeaseSubnets {
  const fast = typeof key === "string" ? v4KeySubnet(key) : undefined;
  if (fast) return { subnet: fast };
  const parts = typeof key === "string" ? key.split("&") : [];
  let v4: Prefix | undefined, v6: Prefix | undefined;
  if (parts.length === 1) {
    v4 = keyPart(parts[0]!, 4);
    v6 = v4 ? undefined : keyPart(parts[0]!, 6);
  } else if (parts.length === 2) {
    v4 = parts[0] === "0.0.0.0-0" ? undefined : keyPart(parts[0]!, 4);
    v6 = keyPart(parts[1]!, 6);
    if (!v6 || (!v4 && parts[0] !== "0.0.0.0-0")) v4 = v6 = undefined;
  }
  if (!v4 && !v6) {
    throw new TwillError("ERR_INVALID_LEASE", `Cannot parse lease key ${show(key)}: want "10.244.1.0-24" or "10.244.1.0-24&fc00:0:0:1::-64"`);
  }
  return { ...(v4 && { subnet: v4 }), ...(v6 && { ipv6Subnet: v6 }) };
}

/** flannel's MakeSubnetKey. */
export function formatLeaseKey(subnet?: Prefix, ipv6Subnet?: Prefix): string {
  const part = (p: Prefix) => `${formatIP(p.ip)}-${p.len}`;
  if (!subnet && !ipv6Subnet) throw new TwillError("ERR_INVALID_LEASE", "a lease key needs an IPv4 or an IPv6 subnet");
  const v4 = subnet ? part(subnet) : "0.0.0.0-0";
  return ipv6Subnet ? `${v4}&${part(ipv6Subnet)}` : v4;
}

export interface ParseLeaseOptions {
  /** Expiry in ms since the epoch, when the store has one. */
  readonly expiration?: number;
}

const MAC_CODES = new Array<number>(17);

/**
 * The MAC at text[at, at+17) in lower case when parseMAC would accept it
 * (six hex octets with colons, unicast, not all zeros); else undefined.
 * Checked in place; the result is a string of its own (a slice would keep
 * the whole lease text alive for as long as the lease lives).
 */
function unicastMACAt(text: string, at: number): string | undefined {
  let zero = true;
  for (let i = 0; i < 17; i++) {
    let c = text.charCodeAt(at + i);
    if (i % 3 === 2) {
      if (c !== 58) return undefined; // ":"
    } else if (c >= 48 && c <= 57) {
      if (c !== 48) zero = false;
    } else if ((c | 0x20) >= 97 && (c | 0x20) <= 102) {
      c |= 0x20; // lower case
      zero = false;
    } else {
      return undefined;
    }
    MAC_CODES[i] = c;
  }
  const low = MAC_CODES[1]!; // the first octet's low hex digit
  const multicast = (low <= 57 ? low - 48 : low - 87) & 1;
  if (multicast || zero) return undefined;
  return String.fromCharCode(...MAC_CODES);
}

const HEAD = `{"PublicIP":"`;
const NO_V6 = `,"PublicIPv6":null`;
const VXLAN = `,"BackendType":"vxlan","BackendData":{"VNI":`;
const MAC = `,"VtepMAC":"`;
const TAIL = `"}}`;

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

/**
 * An IPv4 vxlan lease in the exact text flannel writes for one
 *   {"PublicIP":"192.168.77.2"[,"PublicIPv6":null],"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"8e:d0:f8:0a:41:19"}}
 * under an IPv4-only key, read without JSON.parse: the same lease as the
 * general parser, or undefined for any other text (the general parser
 * then reads it, or says what is wrong with it).
 */
function canonicalLease(key: string, json: string, expiration: number | undefined): Lease | undefined {
  if (!json.startsWith(HEAD)) return undefined;
  const subnet = v4KeySubnet(key);
  if (!subnet) return undefined;
  let at = HEAD.length;
  const quote = json.indexOf(`"`, at);
  const ip = quote < 0 ? -1 : quad(json, at, quote);
  if (ip <= 0) return undefined; // 0.0.0.0 is "unset": the general parser says so
  at = quote + 1;
  if (json.startsWith(NO_V6, at)) at += NO_V6.length;
  if (!json.startsWith(VXLAN, at)) return undefined;
  at += VXLAN.length;
  const from = at;
  let vni = 0;
  for (; at < json.length && at - from < 9; at++) {
    const c = json.charCodeAt(at);
    if (c < 48 || c > 57) break;
    vni = vni * 10 + c - 48;
  }
  // no digits, a leading zero (not JSON), or out of range: the general parser's error
  if (at === from || (at - from > 1 && json.charCodeAt(from) === 48) || vni > 0xffffff) return undefined;
  if (!json.startsWith(MAC, at)) return undefined;
  at += MAC.length;
  if (json.length !== at + 17 + TAIL.length || !json.endsWith(TAIL)) return undefined;
  const vtepMAC = unicastMACAt(json, at);
  if (vtepMAC === undefined) return undefined;
  // parseLease's shape and property order
  const lease: Mutable<Lease> = { key, subnet, publicIP: ip4(ip), backendType: "vxlan", backendData: { vni, vtepMAC } };
  if (expiration !== undefined) lease.expiration = expiration;
  return lease;
}

/** Parses one stored lease (key + LeaseAttrs JSON); throws ERR_INVALID_LEASE. */
export function parseLease(key: string, json: string, opts: ParseLeaseOptions = {}): Lease {
  if (typeof key === "string" && typeof json === "string") {
    const fast = canonicalLease(key, json, opts.expiration);
    if (fast) return fast;
  }
  const { subnet, ipv6Subnet } = parseLeaseKey(key);
  const bad = (detail: string, cause?: unknown) =>
    new TwillError("ERR_INVALID_LEASE", `Cannot parse lease ${key}: ${detail}`, { cause });

  let obj: unknown;
  try {
    obj = JSON.parse(json);
  } catch (e) {
    throw bad(`malformed JSON (${(e as Error).message})`, e);
  }
  if (typeof obj !== "object" || obj === null || Array.isArray(obj)) throw bad(`the value ${show(obj)} is not a JSON object`);
  const o = obj as Json;

  const address = (name: string, family: Family, required: boolean): IP | undefined => {
    const v = field(o, name);
    const ip = typeof v === "string" ? tryParseIP(v) : undefined;
    if (v !== undefined && (!ip || ip.family !== family)) throw bad(`${name} ${show(v)} is not an IPv${family} address`);
    const set = ip && toBig(ip) !== 0n ? ip : undefined; // Go writes the zero IP for "unset"
    if (required && !set) throw bad(`${name} is ${v === undefined ? "missing" : show(v)} but the lease has an IPv${family} subnet`);
    return set;
  };

  const backendType = field(o, "BackendType") ?? "";
  if (typeof backendType !== "string") throw bad(`BackendType ${show(backendType)} is not a string`);
  const vxlan = backendType === "vxlan";
  const publicIP = address("PublicIP", 4, subnet !== undefined);
  const publicIPv6 = address("PublicIPv6", 6, ipv6Subnet !== undefined && vxlan);

  const data = (name: string, required: boolean): VxlanLeaseData | undefined => {
    const v = field(o, name);
    if (v === undefined || !vxlan) {
      if (required && vxlan) throw bad(`${name} is missing (a vxlan lease needs {"VNI":..,"VtepMAC":".."})`);
      return undefined;
    }
    if (typeof v !== "object" || Array.isArray(v)) throw bad(`${name} ${show(v)} is not a JSON object`);
    const vni = field(v as Json, "VNI");
    if (typeof vni !== "number" || !Number.isInteger(vni) || vni < 0 || vni > 0xffffff) {
      throw bad(`${name}.VNI ${vni === undefined ? "is missing" : `${show(vni)} is not an integer between 0 and 16777215`}`);
    }
    try {
      return { vni, vtepMAC: parseMAC(field(v as Json, "VtepMAC"), `${name}.VtepMAC`) };
    } catch (e) {
      throw isTwillError(e, "ERR_INVALID_MAC") ? bad(e.message, e) : e;
    }
  };
  const backendData = data("BackendData", subnet !== undefined);
  const backendV6Data = data("BackendV6Data", ipv6Subnet !== undefined);

  return {
    key,
    ...(subnet && { subnet }),
    ...(ipv6Subnet && { ipv6Subnet }),
    ...(publicIP && { publicIP }),
    ...(publicIPv6 && { publicIPv6 }),
    backendType,
    ...(backendData && { backendData }),
    ...(backendV6Data && { backendV6Data }),
    ...(opts.expiration !== undefined && { expiration: opts.expiration }),
  };
}

export function tryParseLease(key: string, json: string, opts?: ParseLeaseOptions): Lease | undefined {
  try {
    return parseLease(key, json, opts);
  } catch {
    return undefined;
  }
}

/** Go's json.Marshal string escaping (it also escapes <, >, & and U+2028/9). */
function goString(s: string): string {
  return JSON.stringify(s).replace(/[<>&\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

function dataJSON(d: VxlanLeaseData): string {
  return `{"VNI":${d.vni},"VtepMAC":${goString(d.vtepMAC.toLowerCase())}}`;
}

/** The LeaseAttrs JSON flannel writes, byte for byte. */
export function serializeLease(lease: Lease): string {
  let out = `{"PublicIP":${goString(lease.publicIP ? formatIP(lease.publicIP) : "0.0.0.0")}`;
  out += `,"PublicIPv6":${lease.publicIPv6 ? goString(formatIP(lease.publicIPv6)) : "null"}`;
  if (lease.backendType) out += `,"BackendType":${goString(lease.backendType)}`;
  if (lease.backendData) out += `,"BackendData":${dataJSON(lease.backendData)}`;
  if (lease.backendV6Data) out += `,"BackendV6Data":${dataJSON(lease.backendV6Data)}`;
  return out + "}";
}
