/**
 * Whether an address can be a peer's public IP: the one check every lease
 * source's leases go through (peers.ts calls it for each family of a lease).
 *
 * How it works: a peer's PublicIP (PublicIPv6) is where we send its
 * encapsulated traffic (vxlan) or route its subnet (host-gw, DirectRouting),
 * so it must be a unicast address another host can have. Refused, in this
 * order, each with a reason naming the field and the value ("PublicIP
 * 127.0.0.1 is loopback"):
 * 1) by its bytes alone: unspecified (0.0.0.0, ::), loopback (127/8, ::1),
 *    multicast (224/4, ff00::/8), the limited broadcast 255.255.255.255, and
 *    link-local (169.254/16, fe80::/10) unless --allow-link-local-public-ip;
 * 2) against this node: one of our own public IPs (a lease naming our
 *    address would make us tunnel to ourselves; flannel reuses the lease of
 *    our IP, so another one naming it is stale or hostile);
 * 3) against the cluster: inside Network or IPv6Network (a pod address as
 *    an underlay next hop: the route to the peer would go through itself).
 * Each of these is ERR_INVALID_PUBLIC_IP. One public IP claimed by two
 * leases is a conflict between leases, not a property of the address: the
 * SubnetIndex (peers.ts) answers it.
 */
import { formatIP, ipEqual, prefixContainsIP, type IP, type Prefix } from "./net/ip.js";

export interface PublicIPRules {
  /** This node's own public IP(s). */
  readonly own?: readonly (IP | undefined)[];
  /** The cluster network(s): Network and IPv6Network. */
  readonly networks?: readonly (Prefix | undefined)[];
  /** --allow-link-local-public-ip. */
  readonly allowLinkLocal?: boolean;
}

/** Whether every byte of `b` from `from` is `x` (a loop: this runs for every lease of a full list). */
function all(b: Uint8Array, x: number, from = 0, to = b.length): boolean {
  for (let i = from; i < to; i++) if (b[i] !== x) return false;
  return true;
}

/** What kind of address `ip` is, when it is not one a host can have as a public IP; undefined for ordinary unicast (and link-local). */
export function addressKind(ip: IP): "unspecified" | "loopback" | "multicast" | "broadcast" | "link-local" | undefined {
  const b = ip.bytes;
  if (all(b, 0)) return "unspecified";
  if (ip.family === 4) {
    if (b[0] === 127) return "loopback";
    if (b[0]! >= 224 && b[0]! <= 239) return "multicast";
    if (all(b, 255)) return "broadcast";
    if (b[0] === 169 && b[1] === 254) return "link-local";
    return undefined;
  }
  if (b[15] === 1 && all(b, 0, 0, 15)) return "loopback";
  if (b[0] === 0xff) return "multicast";
  if (b[0] === 0xfe && (b[1]! & 0xc0) === 0x80) return "link-local";
  return undefined;
}

/**
 * Why `ip`, the value of the lease field `field` ("PublicIP" or
 * "PublicIPv6"), cannot be a peer's public IP; undefined when it can.
 */
export function publicIPProblem(ip: IP, field: string, rules: PublicIPRules): string | undefined {
  const at = () => `${field} ${formatIP(ip)}`;
  const kind = addressKind(ip);
  if (kind === "link-local") {
    if (!rules.allowLinkLocal) return `${at()} is link-local (allow it with --allow-link-local-public-ip)`;
  } else if (kind) {
    return kind === "broadcast" ? `${at()} is the broadcast address` : `${at()} is ${kind}`;
  }
  for (const o of rules.own ?? []) if (o && ipEqual(o, ip)) return `${at()} is this node's own public IP`;
  for (const n of rules.networks ?? []) if (n && prefixContainsIP(n, ip)) return `${at()} is inside the cluster network ${formatIP(n.ip)}/${n.len}`;
  return undefined;
}
