/**
 * From leases to peers: which leases the dataplane may program.
 *
 * How it works: every lease a source returns is already well-formed
 * (lease/parse.ts); here it is checked against the cluster: it must be a
 * lease of our backend type (vxlan or host-gw, as flannel ignores the
 * others), its subnet must lie in the cluster network with the
 * configured length (Kubernetes podCIDRs may have any length), it must not
 * be ours (a lease claiming our subnet with another public IP is a
 * conflict, never a route to ourselves), and it must not overlap a lease
 * accepted before it. `leasesToPeers` visits leases in key order, so every
 * node decides alike on a fresh full list; given the leases a node accepted
 * before (a re-list), those go first, so a conflict keeps its first owner
 * rather than whichever key sorts first; `leasePeers` checks one lease against a
 * SubnetIndex of the others, for events. The index answers "does anything
 * overlap this prefix" with one map lookup per distinct prefix length, so
 * 10,000 leases cost 10,000 lookups, not 50 million comparisons. Keys are
 * built from the address bytes (a number for IPv4, eight code units for
 * IPv6), never from text: a subnet is formatted only for a rejection.
 * Each family of a lease becomes one Peer. A host-gw peer is always direct
 * (routed via its PublicIP, no VTEP): one whose PublicIP is not on a
 * network of our underlay interface is rejected (ERR_PEER_UNREACHABLE), as
 * the kernel refuses flannel's host-gw route to it.
 * A public IP must be one a peer can have (publicip.ts: not loopback,
 * multicast, broadcast, unspecified, link-local unless allowed, not ours,
 * not inside the cluster network: ERR_INVALID_PUBLIC_IP), and only one
 * lease may claim it: flannel's acquire reuses the lease of its public IP,
 * so a second lease naming the same address is stale or hostile. The index
 * also holds the accepted public IPs with their lease key; the lease that
 * comes later (by arrival for events; on a full list after the leases the
 * node already holds, then in key order) is
 * rejected with ERR_PUBLIC_IP_CONFLICT and the first owner kept (the
 * daemon holds it back and tries it again once the first lets go).
 */
import type { NetConfig, Lease, VxlanLeaseData } from "./lease/types.js";
import { formatIP, formatPrefix, prefixContains, prefixEqual, prefixOverlaps, ipEqual, type IP, type Prefix } from "./net/ip.js";
import type { Peer } from "./dataplane/types.js";
import type { ErrorCode } from "./errors.js";
import { publicIPProblem, type PublicIPRules } from "./publicip.js";

export interface Rejected { readonly key: string; readonly code: ErrorCode; readonly reason: string }

export interface OwnLease { readonly key: string; readonly subnet?: Prefix; readonly ipv6Subnet?: Prefix }

export interface PeerRules {
  readonly config: NetConfig;
  readonly own: OwnLease;
  /** Whether a peer's public IP is reached directly (DirectRouting). */
  readonly direct?: (ip: IP) => boolean;
  /** Require SubnetLen / IPv6SubnetLen (false for Kubernetes podCIDRs). */
  readonly checkLength?: boolean;
  /** This node's own public IP(s): no peer may claim them. */
  readonly ownPublicIPs?: readonly (IP | undefined)[];
  /** --allow-link-local-public-ip: accept a link-local PublicIP(v6). */
  readonly allowLinkLocalPublicIP?: boolean;
}

/** One (family, length) of a SubnetIndex: accepted prefixes by network key. */
interface Bucket {
  readonly family: number;
  readonly len: number;
  readonly byNet: Map<number | string, { prefix: Prefix; key: string }>;
}

/**
 * The key of a network in its bucket, built without text formatting: an IPv4
 * address as an unsigned 32-bit number, an IPv6 address as a string of its
 * eight 16-bit groups, one UTF-16 code unit each. `len` masks the address
 * first (a lookup); without it the address is taken as it is (a stored
 * prefix, which has no host bits).
 */
function netKey(ip: IP, len?: number): number | string {
  const b = ip.bytes;
  const keep = (bit: number, width: number) => (len === undefined || len >= bit + width ? -1 : len <= bit ? 0 : -1 << (bit + width - len));
  if (ip.family === 4) return (((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) & keep(0, 32)) >>> 0;
  let s = "";
  for (let i = 0; i < 16; i += 2) s += String.fromCharCode(((b[i]! << 8) | b[i + 1]!) & keep(i * 8, 16) & 0xffff);
  return s;
}

/** Accepted subnets by prefix, with the lease key that owns each. */
export class SubnetIndex {
  /** Buckets by slot (length, plus 33 for IPv6), for add and delete. */
  private readonly slots: (Bucket | undefined)[] = [];
  /** The same buckets in the order they were made: `clash` reports the first hit in this order. */
  private readonly order: Bucket[] = [];
  /** Accepted public IPs (by the netKey of the address) and the lease key that owns each. */
  private readonly publicIPs = new Map<number | string, string>();

  private bucket(family: number, len: number, create = false): Bucket | undefined {
    const slot = family === 4 ? len : 33 + len;
    let b = this.slots[slot];
    if (!b && create) {
      b = { family, len, byNet: new Map() };
      this.slots[slot] = b;
      this.order.push(b);
    }
    return b;
  }
  add(p: Prefix, key: string): void {
    this.bucket(p.ip.family, p.len, true)!.byNet.set(netKey(p.ip), { prefix: p, key });
  }
  delete(p: Prefix, key: string): void {
    const b = this.bucket(p.ip.family, p.len);
    const k = netKey(p.ip);
    if (b?.byNet.get(k)?.key === key) b.byNet.delete(k);
  }
  /** Adds an accepted peer: its subnet, and its public IP unless another lease owns it already. */
  addPeer(p: Peer, key: string): void {
    this.add(p.subnet, key);
    const k = netKey(p.publicIP);
    if (!this.publicIPs.has(k)) this.publicIPs.set(k, key);
  }
  /** Removes a peer of lease `key` (what another lease owns stays). */
  deletePeer(p: Peer, key: string): void {
    this.delete(p.subnet, key);
    const k = netKey(p.publicIP);
    if (this.publicIPs.get(k) === key) this.publicIPs.delete(k);
  }
  /** The key of another lease whose accepted peer has public IP `ip`, if any. */
  publicIPOwner(ip: IP, key: string): string | undefined {
    const owner = this.publicIPs.get(netKey(ip));
    return owner !== undefined && owner !== key ? owner : undefined;
  }
  /** An accepted prefix of another lease that overlaps `p`, if any. */
  clash(p: Prefix, key: string): Prefix | undefined {
    for (const { family, len, byNet } of this.order) {
      if (family !== p.ip.family || byNet.size === 0) continue;
      if (len <= p.len) {
        const hit = byNet.get(netKey(p.ip, len));
        if (hit && hit.key !== key) return hit.prefix;
      } else {
        for (const { prefix, key: k } of byNet.values()) if (k !== key && prefixContains(p, prefix)) return prefix;
      }
    }
    return undefined;
  }
}

/**
 * What checking a lease needs from the rules, derived once per batch: a
 * full list checks 100,000 leases against the same rules, and an object
 * (or closure) made per lease is most of what such a list leaves for the
 * collector.
 */
interface Checker {
  readonly rules: PeerRules;
  readonly hostGw: boolean;
  readonly checkLength: boolean;
  readonly ipRules: PublicIPRules;
}

function checker(rules: PeerRules): Checker {
  return {
    rules, hostGw: rules.config.backend.type === "host-gw", checkLength: rules.checkLength ?? true,
    ipRules: { own: rules.ownPublicIPs, networks: [rules.config.network, rules.config.ipv6Network], allowLinkLocal: rules.allowLinkLocalPublicIP ?? false },
  };
}

/**
 * Why one family of a lease (its subnet, public IP and backend data; the
 * cluster's network, subnet length and our own subnet of that family)
 * cannot be programmed, or undefined if it can. Plain arguments, not an
 * object per family: this runs once per lease of a full list.
 */
function check(
  s: Prefix, publicIP: IP | undefined, data: VxlanLeaseData | undefined, network: Prefix | undefined, len: number, own: Prefix | undefined,
  v6: boolean, key: string, index: SubnetIndex, c: Checker,
): { code: ErrorCode; reason: string } | undefined {
  // The subnet's text only for a rejection: formatting it for every lease is most of the cost of a large list.
  const at = () => formatPrefix(s);
  if (!network || !prefixContains(network, s)) return { code: "ERR_INVALID_LEASE", reason: `subnet ${at()} is outside the network ${network ? formatPrefix(network) : "(none)"}` };
  if (c.checkLength && s.len !== len) return { code: "ERR_INVALID_LEASE", reason: `subnet ${at()} has length ${s.len}, the network uses ${len}` };
  const field = v6 ? "PublicIPv6" : "PublicIP";
  if (!publicIP) return { code: "ERR_INVALID_LEASE", reason: `${field} is missing` };
  const bad = publicIPProblem(publicIP, field, c.ipRules);
  if (bad) return { code: "ERR_INVALID_PUBLIC_IP", reason: `${bad} (subnet ${at()})` };
  if (!data && !c.hostGw) return { code: "ERR_INVALID_LEASE", reason: `Backend${v6 ? "V6" : ""}Data is missing` };
  if (own && prefixOverlaps(own, s)) return { code: "ERR_LEASE_CONFLICT", reason: `subnet ${at()} is ours, but this lease gives PublicIP ${formatIP(publicIP)}` };
  const clash = index.clash(s, key);
  if (clash) return { code: "ERR_LEASE_CONFLICT", reason: `subnet ${at()} overlaps the lease for ${formatPrefix(clash)}` };
  const owner = index.publicIPOwner(publicIP, key);
  if (owner !== undefined) return { code: "ERR_PUBLIC_IP_CONFLICT", reason: `${field} ${formatIP(publicIP)} of subnet ${at()} is already the public IP of lease ${owner}` };
  if (c.hostGw && !c.rules.direct?.(publicIP)) {
    return { code: "ERR_PEER_UNREACHABLE", reason: `host-gw: PublicIP${v6 ? "v6" : ""} ${formatIP(publicIP)} of subnet ${at()} is not on a network of our underlay interface (host-gw needs every node on one L2 segment)` };
  }
  return undefined;
}

/** One family's peer (its checks passed). */
function peerOf(c: Checker, subnet: Prefix, publicIP: IP, data: VxlanLeaseData | undefined): Peer {
  if (c.hostGw) return { subnet, publicIP, vtepMAC: NO_VTEP, vni: 0, direct: true };
  const direct = c.rules.direct;
  return { subnet, publicIP, vtepMAC: data!.vtepMAC, vni: data!.vni, direct: direct ? direct(publicIP) : false };
}

/** leasePeers with the rules' checker made already. */
function peersOf(l: Lease, c: Checker, index: SubnetIndex): Peer[] | Rejected {
  const { config, own } = c.rules;
  // flannel's backends ignore leases of another type ("Ignoring non-vxlan subnet").
  if (l.key === own.key || l.backendType !== config.backend.type) return [];
  const s4 = config.enableIPv4 ? l.subnet : undefined, s6 = config.enableIPv6 ? l.ipv6Subnet : undefined;
  const p4 = s4 && check(s4, l.publicIP, l.backendData, config.network, config.subnetLen, own.subnet, false, l.key, index, c);
  const p6 = s6 && check(s6, l.publicIPv6, l.backendV6Data, config.ipv6Network, config.ipv6SubnetLen, own.ipv6Subnet, true, l.key, index, c);
  if (p4 || p6) return { key: l.key, code: (p4 ?? p6)!.code, reason: p4 && p6 ? `${p4.reason}; ${p6.reason}` : (p4 ?? p6)!.reason };
  const out: Peer[] = [];
  if (s4) out.push(peerOf(c, s4, l.publicIP!, l.backendData));
  if (s6) out.push(peerOf(c, s6, l.publicIPv6!, l.backendV6Data));
  return out;
}

/**
 * The peers of one lease: [] when it is not a vxlan peer (or is ours), or a
 * rejection. Does not add the lease to the index.
 */
export function leasePeers(l: Lease, rules: PeerRules, index: SubnetIndex): Peer[] | Rejected {
  return peersOf(l, checker(rules), index);
}

/** Whether two versions of a lease say the same in every field but the expiry (every field leasePeers reads, and more). */
export function sameLease(a: Lease, b: Lease): boolean {
  return a.key === b.key && a.backendType === b.backendType && samePrefix(a.subnet, b.subnet) && samePrefix(a.ipv6Subnet, b.ipv6Subnet) &&
    sameIP(a.publicIP, b.publicIP) && sameIP(a.publicIPv6, b.publicIPv6) && sameData(a.backendData, b.backendData) && sameData(a.backendV6Data, b.backendV6Data);
}
const samePrefix = (a: Prefix | undefined, b: Prefix | undefined): boolean => (a && b ? prefixEqual(a, b) : a === b);
const sameIP = (a: IP | undefined, b: IP | undefined): boolean => (a && b ? ipEqual(a, b) : a === b);
const sameData = (a: VxlanLeaseData | undefined, b: VxlanLeaseData | undefined): boolean => (a && b ? a.vni === b.vni && a.vtepMAC === b.vtepMAC : a === b);

/** A host-gw peer has no VTEP: its (unused) MAC. */
export const NO_VTEP = "00:00:00:00:00:00";

export const isRejected = (r: Peer[] | Rejected): r is Rejected => !Array.isArray(r);

/** All peers of a full list, by lease key: `incumbent` leases first, then key order (the same decision on every node that starts now). */
export function leasesToPeers(
  leases: readonly Lease[], rules: PeerRules, incumbent?: (l: Lease) => boolean,
): { byKey: Map<string, Peer[]>; peers: Peer[]; rejected: Rejected[]; index: SubnetIndex } {
  const byKey = new Map<string, Peer[]>();
  const rejected: Rejected[] = [];
  const index = new SubnetIndex();
  // A source usually lists in key order already: check that in one pass before paying for a sort.
  let inOrder = true;
  for (let i = 1; i < leases.length && inOrder; i++) inOrder = leases[i - 1]!.key <= leases[i]!.key;
  const sorted = inOrder ? leases : [...leases].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  const c = checker(rules);
  const take = (l: Lease): void => {
    const r = peersOf(l, c, index);
    if (isRejected(r)) {
      rejected.push(r);
      return;
    }
    if (!r.length) return;
    for (const p of r) index.addPeer(p, l.key);
    byKey.set(l.key, r);
  };
  // The first owner keeps what it holds: the leases accepted before this list (incumbent) claim their
  // subnets and public IPs first, then the others in key order (a re-list must not hand a node's
  // address to a newer lease that merely sorts first).
  if (incumbent) {
    for (const l of sorted) if (incumbent(l)) take(l);
    for (const l of sorted) if (!incumbent(l)) take(l);
  } else for (const l of sorted) take(l);
  let peers: Peer[] | undefined;
  return {
    byKey, rejected, index,
    // Built when asked (tests, status): the daemon reads byKey only.
    get peers() {
      return (peers ??= [...byKey.values()].flat());
    },
  };
}

/** True when a lease is the node's own and still names our public IP(s). */
export function ownLeaseIntact(l: Lease | undefined, publicIP?: IP, publicIPv6?: IP): boolean {
  if (!l) return false;
  if (publicIP && !(l.publicIP && ipEqual(l.publicIP, publicIP))) return false;
  if (publicIPv6 && l.ipv6Subnet && !(l.publicIPv6 && ipEqual(l.publicIPv6, publicIPv6))) return false;
  return true;
}

/**
 * Which of `leases` is this node's: one holding our subnet(s) (as the
 * subnet file or the dataplane says), preferring the one that still names
 * our public IP(s) — another lease holding our subnet is a conflict, never
 * ours. The daemon acquires exactly such a lease; `twill status` finds it
 * with this rule.
 */
export function findOwnLease(leases: readonly Lease[], own: { v4?: Prefix; v6?: Prefix }, publicIP?: IP, publicIPv6?: IP): Lease | undefined {
  const holds = (l: Lease) => (own.v4 && l.subnet && prefixEqual(l.subnet, own.v4)) || (own.v6 && l.ipv6Subnet && prefixEqual(l.ipv6Subnet, own.v6));
  const candidates = leases.filter(holds);
  return candidates.find((l) => ownLeaseIntact(l, publicIP, publicIPv6)) ?? candidates[0];
}
