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

/** Parses a lease key; throws ERR_INVALID_LEASE. */
export function parseLeaseKey(key: string): LeaseSubnets {
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

/** Parses one stored lease (key + LeaseAttrs JSON); throws ERR_INVALID_LEASE. */
export function parseLease(key: string, json: string, opts: ParseLeaseOptions = {}): Lease {
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
