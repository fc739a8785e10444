/**
 * The typed shapes of flannel's network config and subnet leases.
 *
 * How it works: these are the only forms the core sees. They are produced
 * from untyped JSON/text exactly once, by `parseNetConfig` (config/netconf.ts)
 * and `parseLease` (lease/parse.ts), which reject bad input with a
 * TwillError naming the field and value. A lease may carry an IPv4 subnet,
 * an IPv6 subnet, or both (flannel's dual-stack key "A-24&B-64").
 */
import type { IP, Prefix } from "../net/ip.js";

export interface VxlanBackend {
  readonly type: "vxlan";
  readonly vni: number;
  readonly port: number;
  readonly directRouting: boolean;
  /**
   * The underlay MTU, as flannel reads Backend.MTU (0 = the underlay
   * interface's): the vxlan device gets it minus the encapsulation (50;
   * 70 over an IPv6 underlay) and FLANNEL_MTU is it minus 50.
   */
  readonly mtu: number;
  readonly gbp: boolean;
  readonly learning: boolean;
}

/** flannel's host-gw backend: no device, no options; every peer is routed via its PublicIP on one L2 segment. */
export interface HostGwBackend {
  readonly type: "host-gw";
}

export type Backend = VxlanBackend | HostGwBackend;

export interface NetConfig {
  readonly enableIPv4: boolean;
  readonly enableIPv6: boolean;
  readonly network?: Prefix;
  readonly subnetLen: number;
  readonly subnetMin?: Prefix;
  readonly subnetMax?: Prefix;
  readonly ipv6Network?: Prefix;
  readonly ipv6SubnetLen: number;
  readonly ipv6SubnetMin?: Prefix;
  readonly ipv6SubnetMax?: Prefix;
  readonly backend: Backend;
  /** flannel's EnableNFTables: masquerade and forward rules as nftables tables (net/nft.ts) instead of iptables chains. */
  readonly enableNFTables: boolean;
}

/** flannel's BackendData for vxlan: {"VNI":1,"VtepMAC":"8e:d0:f8:0a:41:19"}. */
export interface VxlanLeaseData {
  readonly vni: number;
  /** Lower-case, colon separated, unicast. */
  readonly vtepMAC: string;
}

export interface Lease {
  /** The store key's last element, e.g. "10.244.1.0-24" or "10.244.1.0-24&fc00:0:0:1::-64". */
  readonly key: string;
  readonly subnet?: Prefix;
  readonly ipv6Subnet?: Prefix;
  readonly publicIP?: IP;
  readonly publicIPv6?: IP;
  /** "vxlan", "host-gw", ...: only "vxlan" leases are vxlan peers. */
  readonly backendType: string;
  readonly backendData?: VxlanLeaseData;
  readonly backendV6Data?: VxlanLeaseData;
  /** Expiry (ms since epoch) if the store has one. */
  readonly expiration?: number;
}
