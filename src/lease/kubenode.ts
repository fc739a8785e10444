/**
 * Kubernetes Node ↔ flannel lease: the pure half of the kube subnet manager
 * (no I/O; kubesource.ts does the API calls).
 *
 * How it works, as flannel's pkg/subnet/kube:
 *  1) A node's subnets are spec.podCIDRs (at most one per family), else
 *     spec.podCIDR. Only the families enabled in the network config count,
 *     and the lease key is flannel's etcd key for them (formatLeaseKey), so
 *     the daemon treats a node exactly like an etcd lease.
 *  2) A node is a lease once its owner has written the annotations
 *     (<prefix>/kube-subnet-manager = "true"); before that it is skipped, not
 *     an error. Then, per family in its key: public-ip / public-ipv6 is
 *     required; for backend-type "vxlan", backend-data / backend-v6-data
 *     ({"VNI":1,"VtepMAC":".."}) is required and checked like a lease value
 *     (parseMAC). Another backend type is still a lease (it holds its
 *     subnet), just not a vxlan peer.
 *  3) Our own lease (ownLease): the subnets must lie in the config's
 *     networks; the public address is the public-ip(v6)-overwrite annotation
 *     when set, else the detected one; the VTEP MAC is the one already in our
 *     backend-data annotation when it is valid (flannel's
 *     GetStoredMacAddresses), so peers keep a valid entry across restarts.
 *  4) leaseAnnotations/annotationChanges give the annotations our lease needs
 *     and which of them differ from the node's; the caller patches only
 *     those (flannel patches nothing when nothing differs).
 *  5) storedPublicIPs reads node-public-ip / node-public-ipv6 (flannel's
 *     GetStoredPublicIP; flannel reads them nowhere else: not for peers,
 *     not in its update handler). nodeClaim/conflictError are the node side
 *     of kubeclaims.ts (two nodes with one podCIDR).
 * Errors: ERR_INVALID_LEASE "Cannot parse node <name>: <field> <value> <why>"
 * or "Cannot acquire a lease for node <name>: ..."; a bad annotation prefix
 * is ERR_INVALID_FLAG; a bad node-public-ip(v6) is ERR_INVALID_IP;
 * ERR_LEASE_CONFLICT "node <b> has podCIDR <p>, already held by node <a>".
 */
import { TwillError, isTwillError, showValue } from "../errors.js";
import { formatIP, formatPrefix, parsePrefix, prefixContains, prefixEqual, toBig, type Family, type IP, type Prefix, tryParseIP } from "../net/ip.js";
import type { Claim, Denial } from "./kubeclaims.js";
import type { AcquireOptions } from "./source.js";
import { parseMAC, tryParseMAC } from "./mac.js";
import { formatLeaseKey, type LeaseSubnets } from "./parse.js";
import type { Lease, NetConfig, VxlanLeaseData } from "./types.js";

export const DEFAULT_ANNOTATION_PREFIX = "flannel.alpha.coreos.com";

/** The parts of a v1 Node that twill reads (the API's JSON shape). */
export interface NodeLike {
  readonly metadata?: { readonly name?: string; readonly creationTimestamp?: string; readonly annotations?: Readonly<Record<string, string>> };
  readonly spec?: { readonly podCIDR?: string; readonly podCIDRs?: readonly string[] };
}

/** The full annotation names, as flannel's newAnnotations builds them. */
export interface AnnotationNames {
  /** What every name below starts with ("flannel.alpha.coreos.com/"): annotations without it are never read. */
  readonly prefix: string;
  readonly kubeSubnetManager: string;
  readonly backendType: string;
  readonly backendData: string;
  readonly backendV6Data: string;
  readonly publicIP: string;
  readonly publicIPv6: string;
  readonly publicIPOverwrite: string;
  readonly publicIPv6Overwrite: string;
  /** The address the node's tunnel must use, set by the admin (k3s, several NICs); read once at start. */
  readonly nodePublicIP: string;
  readonly nodePublicIPv6: string;
}

/** Which families the network config enables (a NetConfig is one). */
export type Families = Pick<NetConfig, "enableIPv4" | "enableIPv6">;

const show = (v: unknown) => showValue(v);

/**
 * flannel's newAnnotations: "example.com" → "example.com/<name>",
 * "example.com/x" → "example.com/x-<name>". Throws ERR_INVALID_FLAG.
 */
export function annotationNames(prefix: string = DEFAULT_ANNOTATION_PREFIX): AnnotationNames {
  const slashes = prefix.split("/").length - 1;
  let p = prefix;
  if (slashes === 0) p += "/";
  if (!p.endsWith("/") && !p.endsWith("-")) p += "-";
  // flannel's pattern, anchored at both ends (flannel's is anchored at the end
  // only, so it lets "Example.com" through for the API server to refuse later).
  if (slashes > 1 || !/^(?:[a-z0-9_-]+\.)+[a-z0-9_-]+\/(?:[a-z0-9_-]+-)?$/.test(p)) {
    throw new TwillError("ERR_INVALID_FLAG", `invalid value ${show(prefix)} for --kube-annotation-prefix: want an FQDN with at most one slash, like flannel.alpha.coreos.com`);
  }
  return {
    prefix: p,
    kubeSubnetManager: `${p}kube-subnet-manager`,
    backendType: `${p}backend-type`,
    backendData: `${p}backend-data`,
    backendV6Data: `${p}backend-v6-data`,
    publicIP: `${p}public-ip`,
    publicIPv6: `${p}public-ipv6`,
    publicIPOverwrite: `${p}public-ip-overwrite`,
    publicIPv6Overwrite: `${p}public-ipv6-overwrite`,
    nodePublicIP: `${p}node-public-ip`,
    nodePublicIPv6: `${p}node-public-ipv6`,
  };
}

export function nodeName(n: NodeLike): string {
  return n.metadata?.name ?? "";
}

const nodeError = (n: NodeLike, detail: string, cause?: unknown) =>
  new TwillError("ERR_INVALID_LEASE", `Cannot parse node ${nodeName(n)}: ${detail}`, cause === undefined ? {} : { cause });

/** The node's pod subnets, one per family ({} when none is assigned yet); throws ERR_INVALID_LEASE. */
export function podSubnets(n: NodeLike): LeaseSubnets {
  const list = n.spec?.podCIDRs?.length ? n.spec.podCIDRs : n.spec?.podCIDR ? [n.spec.podCIDR] : [];
  const field = n.spec?.podCIDRs?.length ? "spec.podCIDRs" : "spec.podCIDR";
  if (list.length > 2) throw nodeError(n, `${field} has ${list.length} entries (want one per family)`);
  const out: { subnet?: Prefix; ipv6Subnet?: Prefix } = {};
  list.forEach((text, i) => {
    const at = list.length > 1 || field === "spec.podCIDRs" ? `${field}[${i}]` : field;
    let p: Prefix;
    try {
      p = parsePrefix(text, `${at}`, true);
    } catch (e) {
      throw nodeError(n, isTwillError(e) ? e.message : `${at} ${show(text)} is not a network`, e);
    }
    const slot = p.ip.family === 4 ? "subnet" : "ipv6Subnet";
    if (out[slot]) throw nodeError(n, `${field} has two IPv${p.ip.family} networks`);
    out[slot] = p;
  });
  return out;
}

/** The subnets of the enabled families: what the lease key is made of. */
export function enabledSubnets(s: LeaseSubnets, fam: Families): LeaseSubnets {
  return { ...(fam.enableIPv4 && s.subnet && { subnet: s.subnet }), ...(fam.enableIPv6 && s.ipv6Subnet && { ipv6Subnet: s.ipv6Subnet }) };
}

/** The lease key for a node, or undefined when its pod subnets are missing or unreadable. */
export function tryNodeLeaseKey(n: NodeLike, fam: Families): string | undefined {
  try {
    const s = enabledSubnets(podSubnets(n), fam);
    return s.subnet || s.ipv6Subnet ? formatLeaseKey(s.subnet, s.ipv6Subnet) : undefined;
  } catch {
    return undefined;
  }
}

/** True once the node's owner (flannel or twill) has annotated it. */
export function isManaged(n: NodeLike, names: AnnotationNames): boolean {
  return n.metadata?.annotations?.[names.kubeSubnetManager] === "true";
}

/** Go encoding/json field lookup: exact key first, else case-insensitive; null = absent. */
function jsonField(obj: Record<string, unknown>, name: string): unknown {
  if (Object.hasOwn(obj, name)) return obj[name] ?? undefined;
  const k = Object.keys(obj).find((x) => x.toLowerCase() === name.toLowerCase());
  return k === undefined ? undefined : obj[k] ?? undefined;
}

/** Parses a backend-data annotation value; throws Error(detail). */
function parseBackendData(text: string): VxlanLeaseData {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new Error(`malformed JSON (${(e as Error).message})`);
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new Error(`${show(v)} is not a JSON object like {"VNI":1,"VtepMAC":"8e:d0:f8:0a:41:19"}`);
  const vni = jsonField(v as Record<string, unknown>, "VNI");
  if (typeof vni !== "number" || !Number.isInteger(vni) || vni < 0 || vni > 0xffffff) {
    throw new Error(`VNI ${vni === undefined ? "is missing" : `${show(vni)} is not an integer between 0 and 16777215`}`);
  }
  return { vni, vtepMAC: parseMAC(jsonField(v as Record<string, unknown>, "VtepMAC"), "VtepMAC") };
}

interface FamilyKeys {
  readonly family: Family;
  readonly slot: "subnet" | "ipv6Subnet";
  readonly ip: keyof AnnotationNames;
  readonly data: keyof AnnotationNames;
  readonly overwrite: keyof AnnotationNames;
}
const FAMILIES: readonly FamilyKeys[] = [
  { family: 4, slot: "subnet", ip: "publicIP", data: "backendData", overwrite: "publicIPOverwrite" },
  { family: 6, slot: "ipv6Subnet", ip: "publicIPv6", data: "backendV6Data", overwrite: "publicIPv6Overwrite" },
];

/** An IP annotation of one family; undefined when absent or empty; throws Error(detail). */
function ipAnnotation(value: string | undefined, family: Family): IP | undefined {
  if (value === undefined || value === "") return undefined;
  const ip = tryParseIP(value);
  if (!ip || ip.family !== family) throw new Error(`${show(value)} is not an IPv${family} address`);
  return toBig(ip) === 0n ? undefined : ip;
}

/**
 * A peer's lease from its Node: undefined when the node is not annotated yet
 * (or has no pod subnet of an enabled family); throws ERR_INVALID_LEASE
 * naming the node and the field for bad values.
 */
export function nodeToLease(n: NodeLike, names: AnnotationNames, fam: Families): Lease | undefined {
  if (!isManaged(n, names)) return undefined;
  const all = podSubnets(n);
  if (!all.subnet && !all.ipv6Subnet) throw nodeError(n, `it is annotated ${names.kubeSubnetManager}=true but has no spec.podCIDR`);
  const subnets = enabledSubnets(all, fam);
  if (!subnets.subnet && !subnets.ipv6Subnet) return undefined; // nothing in the families we run
  const ann = n.metadata?.annotations ?? {};
  const backendType = ann[names.backendType] ?? "";
  const lease: { -readonly [K in keyof Lease]: Lease[K] } = { key: formatLeaseKey(subnets.subnet, subnets.ipv6Subnet), backendType, ...subnets };
  for (const f of FAMILIES) {
    if (!subnets[f.slot]) continue;
    const at = (k: keyof AnnotationNames) => `annotation ${names[k]}`;
    let ip: IP | undefined;
    try {
      ip = ipAnnotation(ann[names[f.ip]], f.family);
    } catch (e) {
      throw nodeError(n, `${at(f.ip)}: ${(e as Error).message}`);
    }
    if (!ip) throw nodeError(n, `${at(f.ip)} is ${ann[names[f.ip]] === undefined ? "missing" : show(ann[names[f.ip]])} but the node has an IPv${f.family} podCIDR`);
    if (f.family === 4) lease.publicIP = ip;
    else lease.publicIPv6 = ip;
    if (backendType !== "vxlan") continue;
    const text = ann[names[f.data]];
    if (text === undefined || text === "" || text === "null") throw nodeError(n, `${at(f.data)} is missing (a vxlan node needs {"VNI":..,"VtepMAC":".."})`);
    let data: VxlanLeaseData;
    try {
      data = parseBackendData(text);
    } catch (e) {
      throw nodeError(n, `${at(f.data)}: ${(e as Error).message}`, isTwillError(e) ? e : undefined);
    }
    if (f.family === 4) lease.backendData = data;
    else lease.backendV6Data = data;
  }
  return lease;
}

/** The VTEP MACs already in the node's backend-data annotations (only valid ones). */
export function storedVtepMACs(n: NodeLike, names: AnnotationNames): { v4?: string; v6?: string } {
  const mac = (k: keyof AnnotationNames): string | undefined => {
    const text = n.metadata?.annotations?.[names[k]];
    if (!text) return undefined;
    try {
      const v: unknown = JSON.parse(text);
      return typeof v === "object" && v !== null ? tryParseMAC(jsonField(v as Record<string, unknown>, "VtepMAC")) : undefined;
    } catch {
      return undefined;
    }
  };
  const v4 = mac("backendData"), v6 = mac("backendV6Data");
  return { ...(v4 && { v4 }), ...(v6 && { v6 }) };
}

/**
 * flannel's GetStoredPublicIP: the addresses our node's node-public-ip /
 * node-public-ipv6 annotations pin (absent or empty: not pinned). They
 * replace --public-ip(v6) before the interface is chosen. Throws
 * ERR_INVALID_IP naming the node, the annotation and the value for anything
 * but an address of the annotation's family (flanneld fails to start on a
 * bad one too, later, when it looks for the interface).
 */
export function storedPublicIPs(n: NodeLike, names: AnnotationNames): { v4?: IP; v6?: IP } {
  const out: { v4?: IP; v6?: IP } = {};
  for (const [family, k] of [[4, "nodePublicIP"], [6, "nodePublicIPv6"]] as const) {
    const value = n.metadata?.annotations?.[names[k]];
    if (value === undefined || value === "") continue;
    const ip = tryParseIP(value.trim());
    if (!ip || ip.family !== family || toBig(ip) === 0n) {
      throw new TwillError("ERR_INVALID_IP", `Cannot use node ${nodeName(n)}'s annotation ${names[k]}: ${show(value)} is not ${ip?.family === family ? "a usable" : "an"} IPv${family} address`);
    }
    out[family === 4 ? "v4" : "v6"] = ip;
  }
  return out;
}

/**
 * The node's claim on its pod subnets (kubeclaims.ts): every node that is a
 * lease, or would be but for a bad annotation, claims the subnets of the
 * enabled families; undefined when it claims nothing. `lease`: the node's
 * lease when it has one (saves parsing its podCIDRs again).
 */
export function nodeClaim(n: NodeLike, names: AnnotationNames, fam: Families, lease?: Lease): Claim | undefined {
  if (!isManaged(n, names)) return undefined;
  let s: LeaseSubnets;
  try {
    s = lease ?? enabledSubnets(podSubnets(n), fam); // the node's lease, when it has one, holds its subnets already
  } catch {
    return undefined; // an unreadable podCIDR holds nothing (the node is reported as unreadable)
  }
  const subnets = [s.subnet, s.ipv6Subnet].filter((p): p is Prefix => !!p);
  if (!subnets.length) return undefined;
  return { name: nodeName(n), created: n.metadata?.creationTimestamp ?? "", subnets };
}

/**
 * ERR_LEASE_CONFLICT for a node whose podCIDR another node holds
 * (kubeclaims.ts), naming both nodes and both subnets.
 */
export function conflictError(n: NodeLike, d: Denial): TwillError {
  const same = prefixEqual(d.subnet, d.holderSubnet);
  const theirs = same ? "" : ` (overlapping its ${formatPrefix(d.holderSubnet)})`;
  const created = (c: string | undefined) => c || "no creationTimestamp";
  const why = d.holder.own
    ? "it is our own node's subnet"
    : `the node created first keeps it, then the first by name: ${d.holder.name} ${created(d.holder.created)}, ${nodeName(n)} ${created(n.metadata?.creationTimestamp)}`;
  return new TwillError(
    "ERR_LEASE_CONFLICT",
    `node ${nodeName(n)} has podCIDR ${formatPrefix(d.subnet)}, already held by node ${d.holder.name}${theirs}: ignored while ${d.holder.name} holds it (${why})`,
  );
}

/** What ownLease did besides the obvious, for the caller's log. */
export interface OwnLeaseNotes {
  /** Families whose VTEP MAC came from the node's annotation (and differs from the one offered). */
  readonly restoredMAC: Family[];
  /** Families whose public address came from public-ip(v6)-overwrite. */
  readonly overwrittenIP: Family[];
}

/**
 * Our own lease from our Node (whose pod subnets are assigned) and what the
 * daemon offers (AcquireOptions). Throws ERR_INVALID_LEASE.
 */
export function ownLease(n: NodeLike, names: AnnotationNames, config: NetConfig, opts: AcquireOptions): { lease: Lease; notes: OwnLeaseNotes } {
  const bad = (detail: string) => new TwillError("ERR_INVALID_LEASE", `Cannot acquire a lease for node ${nodeName(n)}: ${detail}`);
  const all = podSubnets(n);
  const subnets = enabledSubnets(all, config);
  const networks = { subnet: config.network, ipv6Subnet: config.ipv6Network };
  const enabled = { subnet: config.enableIPv4, ipv6Subnet: config.enableIPv6 };
  const ann = n.metadata?.annotations ?? {};
  const stored = storedVtepMACs(n, names);
  const backendType = opts.backendType ?? "vxlan";
  const lease: { -readonly [K in keyof Lease]: Lease[K] } = { key: "", backendType };
  const notes = { restoredMAC: [] as Family[], overwrittenIP: [] as Family[] };
  for (const f of FAMILIES) {
    const s = subnets[f.slot];
    if (!enabled[f.slot]) continue;
    // flannel leaves a family's subnet unset when the node has none; the network
    // config asks for this family, so say so instead of running half a stack.
    if (!s) throw bad(`the network config enables IPv${f.family} but spec.podCIDR(s) ${show(n.spec?.podCIDRs ?? n.spec?.podCIDR)} has no IPv${f.family} network`);
    const net = networks[f.slot];
    if (!net || !prefixContains(net, s)) {
      throw bad(`podCIDR ${formatPrefix(s)} is outside the network ${net ? formatPrefix(net) : "(none)"} of the network config`);
    }
    lease[f.slot] = s;
    let ip: IP | undefined;
    try {
      ip = ipAnnotation(ann[names[f.overwrite]], f.family);
    } catch (e) {
      throw bad(`annotation ${names[f.overwrite]}: ${(e as Error).message}`);
    }
    if (ip) notes.overwrittenIP.push(f.family);
    ip ??= f.family === 4 ? opts.publicIP : opts.publicIPv6;
    if (!ip || ip.family !== f.family) throw bad(`the node has an IPv${f.family} podCIDR but no public IPv${f.family} address was found (--public-ip${f.family === 6 ? "v6" : ""}, --iface)`);
    if (f.family === 4) lease.publicIP = ip;
    else lease.publicIPv6 = ip;
    const offered = f.family === 4 ? opts.backendData : opts.backendV6Data;
    if (!offered) {
      if (backendType === "vxlan") throw bad(`a vxlan lease needs backend data (VNI, VTEP MAC) for IPv${f.family}`);
      continue;
    }
    const restored = f.family === 4 ? stored.v4 : stored.v6;
    if (restored && restored !== offered.vtepMAC) notes.restoredMAC.push(f.family);
    const data = { vni: offered.vni, vtepMAC: restored ?? offered.vtepMAC };
    if (f.family === 4) lease.backendData = data;
    else lease.backendV6Data = data;
  }
  if (!lease.subnet && !lease.ipv6Subnet) throw bad("no family is enabled");
  lease.key = formatLeaseKey(lease.subnet, lease.ipv6Subnet);
  return { lease, notes };
}

/** flannel's backend-data annotation: Go's json.Marshal of {VNI, VtepMAC}. */
export function formatBackendData(d: VxlanLeaseData): string {
  return `{"VNI":${d.vni},"VtepMAC":"${d.vtepMAC.toLowerCase()}"}`;
}

/** The annotations that describe our lease, as flannel's AcquireLease writes them. */
export function leaseAnnotations(lease: Lease, names: AnnotationNames): Record<string, string> {
  const out: Record<string, string> = { [names.kubeSubnetManager]: "true", [names.backendType]: lease.backendType };
  // host-gw has no backend data: flannel writes Go's marshalling of a nil RawMessage, "null".
  const data = (d: VxlanLeaseData | undefined) => (d ? formatBackendData(d) : lease.backendType !== "vxlan" ? "null" : undefined);
  if (lease.subnet && lease.publicIP) {
    const d = data(lease.backendData);
    if (d !== undefined) out[names.backendData] = d;
    out[names.publicIP] = formatIP(lease.publicIP);
  }
  if (lease.ipv6Subnet && lease.publicIPv6) {
    const d = data(lease.backendV6Data);
    if (d !== undefined) out[names.backendV6Data] = d;
    out[names.publicIPv6] = formatIP(lease.publicIPv6);
  }
  return out;
}

/** The entries of `desired` that `current` lacks or holds differently, keys sorted (as Go marshals maps). */
export function annotationChanges(current: Readonly<Record<string, string>> | undefined, desired: Readonly<Record<string, string>>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of Object.keys(desired).sort()) if (current?.[k] !== desired[k]) out[k] = desired[k]!;
  return out;
}

/** Go's metav1.Time JSON: RFC 3339, whole seconds, UTC. */
export function kubeTime(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, "Z");
}

/**
 * flannel's CompleteLease condition. We keep flannel's reason and message so
 * that a node looks the same whichever of the two runs on it (drop-in: what
 * matches on "FlannelIsUp" keeps working); twill identifies itself in its
 * logs and metrics instead.
 */
export const NETWORK_READY_REASON = "FlannelIsUp";
export const NETWORK_READY_MESSAGE = "Flannel is running on this node";

export function networkReadyCondition(now: Date): Record<string, string> {
  const t = kubeTime(now);
  return { type: "NetworkUnavailable", status: "False", lastHeartbeatTime: t, lastTransitionTime: t, reason: NETWORK_READY_REASON, message: NETWORK_READY_MESSAGE };
}
