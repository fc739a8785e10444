/**
 * flannel's network config (`<prefix>/config` in etcd, net-conf.json in
 * Kubernetes) → the typed NetConfig.
 *
 * How it works: this reproduces flannel's ParseConfig + CheckNetworkConfig.
 *  1) Read the JSON the way Go's encoding/json does: keys match
 *     case-insensitively (exact match first), `null` is the same as absent,
 *     unknown keys are ignored.
 *  2) Each family is read by the same code from a FamilySpec (the keys and
 *     the numbers that differ: 24 vs 64, /22 vs /62, ...). A family is only
 *     range-checked when enabled (EnableIPv4 defaults to true, as in
 *     flannel), but every present value must at least be well formed.
 *  3) Defaults as flannel: SubnetLen 24 (64 for v6), or network length + 2
 *     when the network is too small for that; SubnetMin = the second
 *     subnet; SubnetMax = the last subnet.
 *  4) Backend: "vxlan" (VNI 1, Port 8472 by default) or "host-gw" (no
 *     options), matched case-insensitively as flannel's backend manager
 *     does. Any other type (udp, wireguard, ipip, ipsec, alloc, extension)
 *     is refused naming it. Deviation: a config with no Backend at all is
 *     vxlan here (flannel would run udp, which twill does not implement).
 * Every failure is ERR_INVALID_CONFIG "Cannot parse network config: <field>
 * <value> <why>". Deviation: SubnetMin above SubnetMax is rejected (flannel
 * accepts it and then can allocate nothing).
 */
import { TwillError, showValue } from "../errors.js";
import type { Backend, NetConfig } from "../lease/types.js";
import {
  bits, compareIP, formatIP, formatPrefix, makePrefix, nextSubnet, prefixContainsIP, toBig, tryParseIP,
  type Family, type IP, type Prefix,
} from "../net/ip.js";

type Json = Record<string, unknown>;

const bad = (detail: string) => new TwillError("ERR_INVALID_CONFIG", `Cannot parse network config: ${detail}`);
const show = (v: unknown) => showValue(v);

/** Go encoding/json field lookup: exact key first, else case-insensitive; null = absent. */
function field(obj: Json, name: string): unknown {
  if (Object.hasOwn(obj, name)) return obj[name] ?? undefined;
  const k = Object.keys(obj).find((x) => x.toLowerCase() === name.toLowerCase());
  return k === undefined ? undefined : obj[k] ?? undefined;
}

// The readers below take a field's value and the name to show in errors.
function bool(v: unknown, name: string, dflt: boolean): boolean {
  if (v === undefined) return dflt;
  if (typeof v !== "boolean") throw bad(`${name} ${show(v)} is not true or false`);
  return v;
}

function int(v: unknown, name: string): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== "number" || !Number.isInteger(v)) throw bad(`${name} ${show(v)} is not a whole number`);
  return v;
}

function inRange(n: number, name: string, min: number, max: number): number {
  if (n < min || n > max) throw bad(`${name} ${n} is not between ${min} and ${max}`);
  return n;
}

function ip(v: unknown, name: string, family: Family): IP | undefined {
  if (v === undefined) return undefined;
  const a = typeof v === "string" ? tryParseIP(v) : undefined;
  if (!a || a.family !== family) throw bad(`${name} ${show(v)} is not an IPv${family} address`);
  return toBig(a) === 0n ? undefined : a; // Go's zero value means "unset"
}

function network(v: unknown, name: string, family: Family): Prefix | undefined {
  if (v === undefined) return undefined;
  // Like Go's net.ParseCIDR, host bits are allowed and masked off.
  const m = typeof v === "string" ? /^([^/]+)\/(\d{1,3})$/.exec(v) : null;
  const a = m ? tryParseIP(m[1]!) : undefined;
  const len = m ? Number(m[2]) : -1;
  if (!a || a.family !== family || len > bits(family)) throw bad(`${name} ${show(v)} is not an IPv${family} network like ${family === 4 ? "10.244.0.0/16" : "fc00::/48"}`);
  return makePrefix(a, len);
}

interface FamilySpec {
  family: Family;
  enable: string; network: string; len: string; min: string; max: string;
  /** The default subnet length, used when the network is at most `bigNet` long. */
  defaultLen: number; bigNet: number;
}

const V4: FamilySpec = { family: 4, enable: "EnableIPv4", network: "Network", len: "SubnetLen", min: "SubnetMin", max: "SubnetMax", defaultLen: 24, bigNet: 22 };
const V6: FamilySpec = { family: 6, enable: "EnableIPv6", network: "IPv6Network", len: "IPv6SubnetLen", min: "IPv6SubnetMin", max: "IPv6SubnetMax", defaultLen: 64, bigNet: 62 };

interface FamilyConfig { network?: Prefix; subnetLen: number; subnetMin?: Prefix; subnetMax?: Prefix }

function parseFamily(obj: Json, s: FamilySpec, enabled: boolean): FamilyConfig {
  const w = bits(s.family);
  const net = network(field(obj, s.network), s.network, s.family);
  const givenLen = int(field(obj, s.len), s.len) || undefined; // 0 = unset, as in Go
  const min = ip(field(obj, s.min), s.min, s.family);
  const max = ip(field(obj, s.max), s.max, s.family);
  if (!enabled) return { ...(net && { network: net }), subnetLen: givenLen ?? s.defaultLen };
  if (!net) throw bad(`${s.network} is missing (${s.enable} is true${s.family === 4 ? '; set "EnableIPv4": false for an IPv6-only network' : ""})`);

  // A subnet needs room for a tunnel and a bridge address (at most /30, /126);
  // the network needs at least four subnets (the first one is never used).
  if (net.len > w - 4) throw bad(`${s.network} ${formatPrefix(net)} is too small: the smallest usable network is a /${w - 4}`);
  const len = givenLen !== undefined
    ? inRange(givenLen, s.len, net.len + 2, w - 2)
    : net.len <= s.bigNet ? s.defaultLen : net.len + 2;

  const first = makePrefix(net.ip, len);
  const count = 1n << BigInt(len - net.len);
  const subnetMin = checkBound(s.min, min, net, len) ?? nextSubnet(first, 1n);
  const subnetMax = checkBound(s.max, max, net, len) ?? nextSubnet(first, count - 1n);
  if (compareIP(subnetMin.ip, subnetMax.ip) > 0) {
    throw bad(`${s.min} ${formatIP(subnetMin.ip)} is above ${s.max} ${formatIP(subnetMax.ip)}`);
  }
  return { network: net, subnetLen: len, subnetMin, subnetMax };
}

function checkBound(name: string, a: IP | undefined, net: Prefix, len: number): Prefix | undefined {
  if (!a) return undefined;
  if (!prefixContainsIP(net, a)) throw bad(`${name} ${formatIP(a)} is not inside ${formatPrefix(net)}`);
  const p = makePrefix(a, len);
  if (toBig(p.ip) !== toBig(a)) throw bad(`${name} ${formatIP(a)} is not on a /${len} boundary`);
  return p;
}

/** The backend types twill implements, as flannel names them. */
export const BACKEND_TYPES = ["vxlan", "host-gw"] as const;

function parseBackend(obj: Json): Backend {
  const raw = field(obj, "Backend");
  if (raw === undefined) return { type: "vxlan", vni: 1, port: 8472, directRouting: false, mtu: 0, gbp: false, learning: false };
  if (typeof raw !== "object" || Array.isArray(raw)) throw bad(`Backend ${show(raw)} is not a JSON object`);
  const b = raw as Json;
  const given = field(b, "Type") ?? "vxlan";
  if (typeof given !== "string") throw bad(`Backend.Type ${show(given)} is not a string`);
  // flannel's backend manager lower-cases the type ("VXLAN" is vxlan).
  const type = given.toLowerCase();
  if (type === "host-gw") return { type: "host-gw" };
  if (type !== "vxlan") throw bad(`Backend.Type ${show(given)} is not supported: twill implements ${BACKEND_TYPES.map((t) => `"${t}"`).join(" and ")}`);
  const f = (n: string) => field(b, n);
  const mtu = int(f("MTU"), "Backend.MTU") ?? 0;
  if (mtu !== 0) inRange(mtu, "Backend.MTU", 68, 65535); // 0 = derive from the underlay
  return {
    type: "vxlan",
    vni: inRange(int(f("VNI"), "Backend.VNI") ?? 1, "Backend.VNI", 0, 0xffffff),
    port: inRange(int(f("Port"), "Backend.Port") || 8472, "Backend.Port", 1, 65535), // 0 = the kernel's default
    directRouting: bool(f("DirectRouting"), "Backend.DirectRouting", false),
    mtu,
    gbp: bool(f("GBP"), "Backend.GBP", false),
    learning: bool(f("Learning"), "Backend.Learning", false),
  };
}

/**
 * flannel's MTU arithmetic. vxlan: Backend.MTU is the underlay MTU (0 = the
 * interface's); the device gets it minus the encapsulation (50 bytes; an
 * IPv6 underlay's vxlan device 70, the most the kernel allows it) and
 * FLANNEL_MTU is it minus 50 for every family (flannel's MTU() is one
 * number: an IPv6 pod's packet that does not fit its device gets ICMPv6
 * "packet too big" from the host). host-gw: no device, FLANNEL_MTU is the
 * interface's MTU (Backend.MTU does not apply).
 */
export function flannelMTU(be: Backend, ifaceMTU: number): { device: (family: 4 | 6) => number; subnetFile: number } {
  if (be.type === "host-gw") return { device: () => ifaceMTU, subnetFile: ifaceMTU };
  const underlay = be.mtu || ifaceMTU;
  return { device: (family) => underlay - (family === 4 ? 50 : 70), subnetFile: underlay - 50 };
}

/** Parses flannel's network config JSON; throws ERR_INVALID_CONFIG naming the field and value. */
export function parseNetConfig(text: string): NetConfig {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new TwillError("ERR_INVALID_CONFIG", `Cannot parse network config: malformed JSON (${(e as Error).message})`, { cause: e });
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw bad(`the config ${show(parsed)} is not a JSON object`);
  const obj = parsed as Json;
  const enableIPv4 = bool(field(obj, V4.enable), V4.enable, true);
  const enableIPv6 = bool(field(obj, V6.enable), V6.enable, false);
  if (!enableIPv4 && !enableIPv6) throw bad("EnableIPv4 and EnableIPv6 are both false");
  const v4 = parseFamily(obj, V4, enableIPv4);
  const v6 = parseFamily(obj, V6, enableIPv6);
  return {
    enableIPv4, enableIPv6,
    ...(v4.network && { network: v4.network }),
    subnetLen: v4.subnetLen,
    ...(v4.subnetMin && { subnetMin: v4.subnetMin, subnetMax: v4.subnetMax }),
    ...(v6.network && { ipv6Network: v6.network }),
    ipv6SubnetLen: v6.subnetLen,
    ...(v6.subnetMin && { ipv6SubnetMin: v6.subnetMin, ipv6SubnetMax: v6.subnetMax }),
    backend: parseBackend(obj),
    enableNFTables: bool(field(obj, "EnableNFTables"), "EnableNFTables", false),
  };
}

export function tryParseNetConfig(text: string): NetConfig | undefined {
  try {
    return parseNetConfig(text);
  } catch {
    return undefined;
  }
}
