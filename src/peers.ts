/**
 * From leases to peers: which leases the dataplane may program.
 *
 * How it works: every lease the store returns is already well-formed JSON
 * (lease/parse.ts); here it is checked against the cluster: it must be a
 * vxlan lease, its subnet must lie in the cluster network with the
 * configured length, it must not be ours (a lease claiming our subnet with
 * another public IP is a conflict, never a route to ourselves), and it must
 * not overlap a lease accepted before it (leases are visited in key order,
 * so every node decides alike). Each family of a lease becomes one Peer.
 * Rejections are returned with a stable code and a sentence for the log.
 */
import type { NetConfig, Lease, VxlanLeaseData } from "./lease/types.js";
import { formatIP, formatPrefix, prefixContains, prefixOverlaps, ipEqual, type IP, type Prefix } from "./net/ip.js";
import type { Peer } from "./dataplane/types.js";
import type { ErrorCode } from "./errors.js";

export interface Rejected { readonly key: string; readonly code: ErrorCode; readonly reason: string }

export interface OwnLease { readonly key: string; readonly subnet?: Prefix; readonly ipv6Subnet?: Prefix }

interface FamilyView {
  readonly subnet?: Prefix;
  readonly publicIP?: IP;
  readonly data?: VxlanLeaseData;
  readonly network?: Prefix;
  readonly len: number;
  readonly enabled: boolean;
  readonly own?: Prefix;
  readonly tag: string;
}

function views(l: Lease, c: NetConfig, own: OwnLease): FamilyView[] {
  return [
    { subnet: l.subnet, publicIP: l.publicIP, data: l.backendData, network: c.network, len: c.subnetLen, enabled: c.enableIPv4, own: own.subnet, tag: "" },
    { subnet: l.ipv6Subnet, publicIP: l.publicIPv6, data: l.backendV6Data, network: c.ipv6Network, len: c.ipv6SubnetLen, enabled: c.enableIPv6, own: own.ipv6Subnet, tag: "V6" },
  ];
}

/** Why one family of a lease cannot be programmed, or undefined if it can. */
function check(v: FamilyView, accepted: readonly Prefix[]): { code: ErrorCode; reason: string } | undefined {
  const s = v.subnet!;
  const at = formatPrefix(s);
  if (!v.network || !prefixContains(v.network, s)) return { code: "ERR_INVALID_LEASE", reason: `subnet ${at} is outside the network ${v.network ? formatPrefix(v.network) : "(none)"}` };
  if (s.len !== v.len) return { code: "ERR_INVALID_LEASE", reason: `subnet ${at} has length ${s.len}, the network uses ${v.len}` };
  if (!v.publicIP) return { code: "ERR_INVALID_LEASE", reason: `PublicIP${v.tag === "V6" ? "v6" : ""} is missing` };
  if (!v.data) return { code: "ERR_INVALID_LEASE", reason: `Backend${v.tag}Data is missing` };
  if (v.own && prefixOverlaps(v.own, s)) return { code: "ERR_LEASE_CONFLICT", reason: `subnet ${at} is ours, but this lease gives PublicIP ${formatIP(v.publicIP)}` };
  const clash = accepted.find((a) => prefixOverlaps(a, s));
  if (clash) return { code: "ERR_LEASE_CONFLICT", reason: `subnet ${at} overlaps the lease for ${formatPrefix(clash)}` };
  return undefined;
}

export function leasesToPeers(leases: readonly Lease[], config: NetConfig, own: OwnLease, direct: (ip: IP) => boolean = () => false): { peers: Peer[]; rejected: Rejected[] } {
  const peers: Peer[] = [];
  const rejected: Rejected[] = [];
  const accepted: Prefix[] = [];
  const sorted = [...leases].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  for (const l of sorted) {
    if (l.key === own.key || l.backendType !== "vxlan") continue;
    const fams = views(l, config, own).filter((v) => v.enabled && v.subnet);
    const problems = fams.map((v) => check(v, accepted)).filter((x) => x !== undefined);
    if (problems.length) {
      rejected.push({ key: l.key, code: problems[0]!.code, reason: problems.map((p) => p.reason).join("; ") });
      continue;
    }
    for (const v of fams) {
      accepted.push(v.subnet!);
      peers.push({ subnet: v.subnet!, publicIP: v.publicIP!, vtepMAC: v.data!.vtepMAC, vni: v.data!.vni, direct: direct(v.publicIP!) });
    }
  }
  return { peers, rejected };
}

/** True when a lease is the node's own and still names our public IP(s). */
export function ownLeaseIntact(l: Lease | undefined, publicIP?: IP, publicIPv6?: IP): boolean {
  if (!l) return false;
  if (publicIP && !(l.publicIP && ipEqual(l.publicIP, publicIP))) return false;
  if (publicIPv6 && l.ipv6Subnet && !(l.publicIPv6 && ipEqual(l.publicIPv6, publicIPv6))) return false;
  return true;
}
